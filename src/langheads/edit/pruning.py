"""Choose the heads a deployment's languages do not need, remove them, and save the model.

Candidates: heads that matter for no kept language (by the scan's rule); those that matter
only for dropped languages come first, then the miscellaneous ones. The walk tries *moves*,
sets of candidate heads of one layer whose removal saves parameters in the saved model
(savings.py): one head from each of the layer's widest KV groups (the layer's width drops by
one), or every head left in one KV group (the group and its KV head go). A single head from a
KV group of several is no move: the saved model would pad it back. Moves go by tier, then by
harm to the kept languages (the scan's relative increase) per parameter saved, and are tried
in batches (candidates.gallop): the kept languages are re-measured on their *selection* texts
(never the scoring texts the scan used, nor the report texts claims are made on) with the
batch removed. A batch keeps the budget when the upper end of each kept language's paired 95%
interval of the relative NLL rise stays within it (candidates.judged, the walk's one rule); a
batch that would break it is halved and a single move that would is not made; with a head
count, the walk stops once that many heads are removed. The dropped languages are measured once, at the end.
"""
from __future__ import annotations

import functools
from dataclasses import asdict, dataclass
from pathlib import Path

from .. import heads as H
from .. import nll
from . import savings
from ..errors import LangheadsError
from ..manifest import read_manifest, write_model_folder
from ..models import DTYPES, LoadedModel, load_model
from ..options import option
from ..runs import read_run
from .candidates import (PruneResult, candidate_tiers, dropped, gallop, head_harm, judged, means, moves, ordered,
                         selection_tokens)
from .surgery import remove_heads_edit


@dataclass
class PruneSettings:
    """Every setting of a pruning; the CLI's `prune` options are generated from these fields."""
    scan: list[str] = option(help="a run folder from `langheads scan`; again for another component's scan of "
                                  "the same model (heads, neurons, blocks: one walk across them)", repeat=True)
    keep: list[str] = option(help="languages the deployment serves, e.g. en,hi")
    drop: list[str] | None = option(None, help="languages it need not serve (default: every other scanned language)")
    max_increase: float = option(0.02, help="budget: largest relative NLL rise of a kept language")
    heads: int | None = option(None, help="remove this many heads instead of using the budget")
    dtype: str = option("float32", help="float32 | bfloat16 | float16 for the saved weights")
    uniform: bool = option(False, help="keep every layer alike, so the config says the shapes: the same number of "
                           "heads from every KV group of every layer; with neuron and block scans one group from "
                           "every layer (every expert of a mixture) at a time, whole layers only")
    patience: int = option(16, help="stop after this many single moves were refused by the budget since the "
                           "walk last made a batch of several (0: try every move)")
    one_move: bool = option(False, help="judge one move at a time (the walk before batching; slower)")
    batch_tokens: int = 4096
    chunk_tokens: int = 1024
    trim_vocab: bool = option(False, help="then keep only the kept languages' vocabulary (exact)")
    max_vocab: int | None = option(None, help="with --trim-vocab: at most this many tokens")
    vocab_texts: str | None = option(None, help="with --max-vocab: texts to count token rarity on")

    def __post_init__(self):
        from .. import checks

        if isinstance(self.scan, str):  # the library's one-scan form
            self.scan = [self.scan]
        if not self.scan:
            raise LangheadsError("--scan needs a run folder")
        checks.languages(self, "keep")
        if self.drop is not None:
            checks.languages(self, "drop")
        checks.number(self, "max_increase", 0.0)
        checks.count(self, "heads", optional=True)
        checks.count(self, "patience", minimum=0)
        checks.choice(self, "dtype", list(DTYPES))
        checks.count(self, "batch_tokens")
        checks.count(self, "chunk_tokens")
        checks.count(self, "max_vocab", optional=True)


def candidate_order(scores, heads: list[dict], keep: list[str], drop: list[str]) -> list[tuple[int, int]]:
    """Heads that matter for no kept language, in the order they may be removed."""
    return ordered(candidate_tiers(heads, drop), head_harm(scores, keep))


@dataclass
class Candidates:
    """What the walk chooses from: the model's head layout and costs, the candidate heads'
    harm to the kept languages and their tier (and from these, their order)."""
    layout: H.HeadLayout
    costs: savings.HeadCosts
    harm: dict[tuple[int, int], float]
    tiers: dict[tuple[int, int], int]

    @functools.cached_property
    def order(self) -> list[tuple[int, int]]:
        return ordered(self.tiers, self.harm)

    def next_move(self, removed: list, tried: set, room: int | None):
        """The untried move that comes first: lowest tier, then least harm per parameter saved."""
        now = savings.parameters_saved(self.layout, self.costs, removed)

        def rank(move):
            gain = savings.parameters_saved(self.layout, self.costs, removed + list(move)) - now
            return (max(self.tiers[h] for h in move), sum(max(self.harm[h], 0.0) for h in move) / gain, move)

        options = [m for m in moves(self.layout, self.order, set(removed))
                   if m not in tried and (room is None or len(m) <= room)]
        return min(options, key=rank) if options else None


def choose(loaded: LoadedModel, settings: PruneSettings, progress: bool = True, run=None) -> tuple[PruneResult, list[str]]:
    """The heads to remove, and the dropped languages (given, or every other scanned one);
    `run`: the scan, when the caller has read it already."""
    run = run or read_run(settings.scan[0])
    info, scores, scanned = run.info, run.scores, run.languages
    drop = dropped(settings, run)
    candidates = Candidates(H.head_layout(loaded.model), savings.HeadCosts.of(loaded.model),
                            head_harm(scores, settings.keep), candidate_tiers(info["heads"], drop))
    tokens = selection_tokens(loaded, info, scanned)
    pad = loaded.tokenizer.pad_token_id or 0

    def measure(removed, languages):
        with H.masked_heads(loaded.model, removed):
            return {lang: nll.per_text_nll(loaded.model, tokens[lang], settings.batch_tokens, settings.chunk_tokens,
                                           pad).double().numpy() for lang in languages}

    # Moves are judged on the kept languages alone; the others are measured once, at the end.
    others = [lang for lang in scanned if lang not in settings.keep]
    base = measure([], scanned)
    result = PruneResult([], [{"step": 0, "heads": [], "nll": means(base), "rel_kept": {l: 0.0 for l in settings.keep},
                               "parameters_saved": 0}])
    _walk(candidates, settings, measure, base, result, progress)
    if len(result.curve) > 1:
        result.curve[-1]["nll"].update(means(measure(result.removed, others)))
    return result, drop


def _walk(candidates: Candidates, settings, measure, base, result, progress) -> None:
    """Make moves, in batches (candidates.gallop), until the budget, the head count or the
    moves run out (see the module doc)."""
    from tqdm.auto import tqdm

    tried: set = set()

    def plan(k):
        batch: list = []
        for _ in range(1 if settings.one_move else k):
            planned = [h for move in batch for h in move]
            room = None if settings.heads is None else settings.heads - len(result.removed) - len(planned)
            move = None if room == 0 else candidates.next_move(result.removed + planned, tried, room)
            if move is None:
                break
            batch.append(move)
        return batch

    def judge(batch):
        now = measure(result.removed + [h for move in batch for h in move], settings.keep)
        ok, rel, upper = judged(base, now, settings.max_increase)
        return settings.heads is not None or ok, (means(now), rel, upper)

    def accept(batch, measured):
        heads = [h for move in batch for h in move]
        result.removed = result.removed + heads
        result.curve.append({"step": len(result.removed), "heads": [list(h) for h in heads],
                             "nll": measured[0], "rel_kept": measured[1], "rel_kept_upper": measured[2],
                             "parameters_saved": savings.parameters_saved(candidates.layout, candidates.costs,
                                                                          result.removed)})

    def reject(move, measured):
        tried.add(move)
        result.rejected.append({"heads": [list(h) for h in move], "after_step": len(result.removed),
                                "rel_kept": measured[1], "rel_kept_upper": measured[2]})

    bar = tqdm(desc="prune (measurements)", unit="try", disable=not progress)
    why = gallop(plan, judge, accept, reject, settings.patience, bar)
    bar.close()
    result.stopped = _why_stopped(settings, candidates.order, result, len(tried), why)


def _why_stopped(settings, order, result, refused: int, why: str) -> str:
    if settings.heads is not None and len(result.removed) >= settings.heads:
        return f"removed the {settings.heads} heads asked for"
    if settings.heads is not None:
        return (f"asked for {settings.heads} heads; removed {len(result.removed)}: no further removal of at most "
                f"{settings.heads - len(result.removed)} candidate heads saves parameters (a query head alone goes "
                "only with one from each KV group of its layer, or with the rest of its group)")
    ending = (f"stopped after {settings.patience} single moves were refused since the last batch of several was made (--patience)" if why == "patience"
              else f"tried every move of the {len(order)} candidates (heads that matter for no kept language)")
    return (f"{ending}: {len(result.curve) - 1} batches of moves made ({len(result.removed)} heads), {refused} "
            f"moves not made because they could raise a kept language by more than {settings.max_increase:.2%} (the "
            "upper end of its 95% interval over the selection texts)")


def save_pruned(loaded: LoadedModel, removed: list[tuple[int, int]], out: Path, record: dict,
                dtype: str = "float32", uniform: bool = False, overwrite: bool = False,
                vocab_choice=None) -> Path:
    """Remove the heads physically (then trim the vocabulary, if a choice is given) and write a
    folder that load_model (and, with --uniform, plain transformers) reloads: safetensors,
    config, tokenizer and the manifest of edits."""
    from .vocab import apply_trim

    if dtype not in DTYPES:
        raise LangheadsError(f"unknown dtype '{dtype}'; choose one of {', '.join(DTYPES)}")
    layout, before = H.head_layout(loaded.model), savings.parameters(loaded.model)
    edit = remove_heads_edit(loaded.model, removed, uniform)
    record = {**record, "saved": savings.measured(before, savings.parameters(loaded.model), layout, removed)}
    manifest = loaded.base_manifest().with_edit(edit, {**record, "dtype": dtype})
    save_tokenizer = loaded.tokenizer.save_pretrained
    if vocab_choice is not None:
        manifest, save_tokenizer = apply_trim(loaded, vocab_choice, manifest)
    loaded.model.to(DTYPES[dtype])
    return write_model_folder(loaded.model, save_tokenizer, out, manifest, overwrite)


def prune(settings: PruneSettings, out: Path, overwrite: bool = False, progress: bool = True) -> tuple[PruneResult, dict]:
    """Library entry point for `langheads prune`."""
    from ..folders import claim

    with claim(Path(out), overwrite, "model"):
        return _prune(settings, Path(out), overwrite, progress)


def _prune(settings: PruneSettings, out: Path, overwrite: bool, progress: bool) -> tuple[PruneResult, dict]:
    runs = [read_run(s) for s in settings.scan]
    run = runs[0]
    info = run.info
    component = info.get("component", {}).get("name", "head")
    if len(runs) > 1 or component != "head":
        return _prune_body(settings, runs, out, overwrite, progress)
    loaded, choice = _model_and_vocab(settings, run)
    result, drop = choose(loaded, settings, progress, run)
    record = {"scan": str(Path(settings.scan[0]).resolve()), "model": info["model"], "kept": settings.keep,
              "dropped": drop, "settings": asdict(settings),
              "removed_heads": [list(x) for x in result.removed], "stopped": result.stopped,
              "rejected": result.rejected,
              "curve": result.curve, "selection_texts": "selection part of " + info["corpus"]["source"]}
    save_pruned(loaded, result.removed, out, record, settings.dtype, settings.uniform, overwrite, choice)
    return result, read_manifest(out).records["remove_heads"]  # the record as written, savings counted


def _prune_body(settings: PruneSettings, runs: list, out: Path, overwrite: bool, progress: bool):
    """A walk over neuron groups or blocks, or across scans (edit/body_pruning.py)."""
    from .body_pruning import check_runs, prune_body

    check_runs(runs, settings)
    drop = dropped(settings, runs[0])
    loaded, choice = _model_and_vocab(settings, runs[0])
    return prune_body(loaded, settings, runs, drop, out, overwrite, progress, choice)


def _model_and_vocab(settings: PruneSettings, run):
    """The scan's model, checked unchanged, and the vocabulary to keep (None: not trimming),
    chosen on the unedited tokenizer with the scripts measured on the scan's data."""
    choice = None
    if settings.trim_vocab or settings.max_vocab is not None:
        from .vocab import choose_vocab, texts_for_trimming

        texts, extra = texts_for_trimming(settings.keep, run.info["settings"]["data"], settings.vocab_texts)
    loaded = load_model(run.info["settings"]["model"])
    loaded.require_plain("pruning")
    if loaded.model_hash != run.info["model"]["sha256"]:
        raise LangheadsError("the scan's model has changed since the scan (hash differs)")
    if settings.trim_vocab or settings.max_vocab is not None:
        choice = choose_vocab(loaded.tokenizer, settings.keep, texts, settings.max_vocab, extra,
                              rows=loaded.model.get_input_embeddings().num_embeddings)
    return loaded, choice
