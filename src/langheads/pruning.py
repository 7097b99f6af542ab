"""Choose the heads a deployment's languages do not need, remove them, and save the model.

Choice: among heads that matter for no kept language (by the scan's rule), those that matter
only for dropped languages come first, then the miscellaneous ones; within each tier the
least harmful to the kept languages (by the scan's relative increase) first. Heads are tried
one at a time; after each step every scanned language is re-measured on its *selection* texts
(never the scoring texts the scan used, nor the report texts claims are made on). With a
budget on the largest relative rise of a kept language, a head that would break it stays and
the walk goes on to the next candidate; with a head count, the walk stops at that count.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from . import heads as H
from . import nll
from .archs import adapter_for
from .corpus import scan_corpus
from .errors import LangheadsError
from .folders import check_out_dir
from .manifest import write_model_folder
from .models import DTYPES, LoadedModel, load_model
from .runs import read_run
from .surgery import remove_heads_


@dataclass
class PruneSettings:
    scan: str
    keep: list[str]
    drop: list[str] | None = None       # default: every other scanned language
    max_increase: float = 0.02          # budget: relative rise of any kept language's NLL
    heads: int | None = None            # or: remove exactly this many (if that many are allowed)
    dtype: str = "float32"
    uniform: bool = False
    batch_tokens: int = 4096
    chunk_tokens: int = 1024
    trim_vocab: bool = False            # then keep only the kept languages' vocabulary
    max_vocab: int | None = None        # ... at most this many tokens (see vocab.py)
    vocab_texts: str | None = None      # texts to count token rarity on

    def __post_init__(self):
        from . import checks

        checks.languages(self, "keep")
        if self.drop is not None:
            checks.languages(self, "drop")
        checks.number(self, "max_increase", 0.0)
        checks.count(self, "heads", optional=True)
        checks.choice(self, "dtype", list(DTYPES))
        checks.count(self, "batch_tokens")
        checks.count(self, "chunk_tokens")
        checks.count(self, "max_vocab", optional=True)


def candidate_order(scores, heads: list[dict], keep: list[str], drop: list[str]) -> list[tuple[int, int]]:
    """Heads that matter for no kept language, in the order they may be removed."""
    rel = scores.set_index(["layer", "head", "language"])["rel_increase"]

    def harm(h):
        return max(rel[(h["layer"], h["head"], lang)] for lang in keep)

    dropped_only = [h for h in heads if h["languages"] and set(h["languages"]) <= set(drop)]
    misc = [h for h in heads if not h["languages"]]
    return [(h["layer"], h["head"]) for tier in (dropped_only, misc) for h in sorted(tier, key=harm)]


def selection_tokens(loaded: LoadedModel, info: dict, languages: list[str]) -> dict[str, list[list[int]]]:
    s = info["settings"]
    corpus = scan_corpus(s["data"], s.get("data_lang"), s.get("signal", "text"))  # the scan's own texts
    return {lang: nll.tokenize(loaded.tokenizer, [t.text for t in corpus.texts(lang, "selection")], s["max_tokens"],
                               H.position_limit(loaded.model))
            for lang in languages}


@dataclass
class PruneResult:
    removed: list[tuple[int, int]]
    curve: list[dict] = field(default_factory=list)  # per step: head, NLL per language, rel per kept language
    rejected: list[dict] = field(default_factory=list)  # candidates that would have broken the budget
    stopped: str = ""


def choose(loaded: LoadedModel, settings: PruneSettings, progress: bool = True) -> tuple[PruneResult, list[str]]:
    """The heads to remove, and the dropped languages (given, or every other scanned one)."""
    run = read_run(settings.scan)
    info, scores, scanned = run.info, run.scores, run.languages
    unknown = [lang for lang in settings.keep + (settings.drop or []) if lang not in scanned]
    if unknown:
        raise LangheadsError(f"not in the scan: {','.join(unknown)} (scanned: {','.join(scanned)})")
    if not settings.keep:
        raise LangheadsError("--keep needs at least one language")
    drop = settings.drop if settings.drop is not None else [l for l in scanned if l not in settings.keep]
    if set(drop) & set(settings.keep):
        raise LangheadsError("a language cannot be both kept and dropped")
    order = candidate_order(scores, info["heads"], settings.keep, drop)
    tokens = selection_tokens(loaded, info, scanned)
    pad = loaded.tokenizer.pad_token_id or 0

    def measure(removed, languages):
        with H.masked_heads(loaded.model, removed):
            return {lang: float(nll.per_text_nll(loaded.model, tokens[lang], settings.batch_tokens, settings.chunk_tokens, pad).mean())
                    for lang in languages}

    # A candidate is judged on the kept languages alone; the others are measured only for the
    # heads actually removed (the curve), not for every candidate tried.
    others = [lang for lang in scanned if lang not in settings.keep]

    from tqdm.auto import tqdm

    base = measure([], scanned)
    result = PruneResult([], [{"step": 0, "head": None, "nll": base, "rel_kept": {l: 0.0 for l in settings.keep}}])
    limit = settings.heads if settings.heads is not None else len(order)
    bar = tqdm(total=len(order), desc="prune (candidates tried)", unit="head", disable=not progress)
    for layer_head in order:
        if len(result.removed) >= limit:
            result.stopped = f"removed the {limit} heads asked for"
            break
        trial = result.removed + [layer_head]
        now = measure(trial, settings.keep)
        rel = {l: now[l] / base[l] - 1 for l in settings.keep}
        if settings.heads is None and max(rel.values()) > settings.max_increase:
            # Over budget with this head: keep it, and try the next candidate.
            result.rejected.append({"head": list(layer_head), "after_step": len(result.removed), "rel_kept": rel})
            bar.update(1)
            continue
        result.removed = trial
        now.update(measure(trial, others))
        result.curve.append({"step": len(trial), "head": list(layer_head), "nll": {l: now[l] for l in scanned},
                             "rel_kept": rel})
        bar.update(1)
    else:
        result.stopped = (f"tried all {len(order)} candidates (heads that matter for no kept language): "
                          f"{len(result.removed)} removed, {len(result.rejected)} kept because removing them "
                          f"would raise a kept language by more than {settings.max_increase:.2%}")
    bar.close()
    return result, drop


def _uniform_config(model, removed: dict[int, list[int]]):
    """The stock config with fewer query heads, or a LangheadsError saying why not."""
    from transformers import AutoModelForCausalLM

    layout = H.head_layout(model)
    per_group = [[sum(1 for h in removed.get(l, []) if h // layout.group_size == g) for g in range(layout.n_kv_heads)]
                 for l in range(layout.n_layers)]
    if len({c for row in per_group for c in row}) != 1:
        raise LangheadsError("--uniform needs the same number of query heads removed from every KV group of every "
                             "layer; this choice removes " + ", ".join(str(row) for row in per_group[:4]) + " ...")
    new_heads = layout.n_heads - per_group[0][0] * layout.n_kv_heads
    if new_heads == 0:
        raise LangheadsError("--uniform would remove every head")
    keys = adapter_for(model).uniform_config(H.text_config(model), new_heads)
    old = H.text_config(model)
    try:
        config = old.__class__.from_dict({**old.to_dict(), **keys})
        with torch.device("meta"):
            AutoModelForCausalLM.from_config(config)
    except Exception as e:  # the installed transformers refuses these head counts
        reason = str(getattr(e, "__cause__", None) or e).strip().splitlines()[-1]
        raise LangheadsError(f"--uniform: transformers cannot express {new_heads} query heads for this model "
                             f"({reason}); save without --uniform") from None
    return config


def remove_heads_edit(model, removed: list[tuple[int, int]], uniform: bool = False) -> dict:
    """Remove the heads physically, in place; returns the manifest edit that says so."""
    by_layer: dict[int, list[int]] = {}
    for layer, head in removed:
        by_layer.setdefault(layer, []).append(head)
    config = _uniform_config(model, by_layer) if uniform else None
    shapes = remove_heads_(model, by_layer)
    if config is not None:
        model.config = config
    return {"op": "remove_heads", "uniform": uniform,
            "removed": {str(l): sorted(h) for l, h in sorted(by_layer.items())},
            "layers": {str(l): v for l, v in shapes.items()},
            "padding_heads": sum(v["padding_heads"] for v in shapes.values())}


def save_pruned(loaded: LoadedModel, removed: list[tuple[int, int]], out: Path, record: dict,
                dtype: str = "float32", uniform: bool = False, overwrite: bool = False,
                vocab_choice=None) -> Path:
    """Remove the heads physically (then trim the vocabulary, if a choice is given) and write a
    folder that load_model (and, with --uniform, plain transformers) reloads: safetensors,
    config, tokenizer and the manifest of edits."""
    from .vocab import apply_trim

    check_out_dir(out, overwrite, "model")
    if dtype not in DTYPES:
        raise LangheadsError(f"unknown dtype '{dtype}'; choose one of {', '.join(DTYPES)}")
    edit = remove_heads_edit(loaded.model, removed, uniform)
    manifest = loaded.base_manifest().with_edit(edit, {**record, "dtype": dtype})
    save_tokenizer = loaded.tokenizer.save_pretrained
    if vocab_choice is not None:
        manifest, save_tokenizer = apply_trim(loaded, vocab_choice, manifest)
    loaded.model.to(DTYPES[dtype])
    return write_model_folder(loaded.model, save_tokenizer, out, manifest, overwrite)


def prune(settings: PruneSettings, out: Path, overwrite: bool = False, progress: bool = True) -> tuple[PruneResult, dict]:
    """Library entry point for `langheads prune`."""
    from .folders import writing

    check_out_dir(out, overwrite, "model")
    with writing(Path(out), "model folder"):
        return _prune(settings, Path(out), overwrite, progress)


def _prune(settings: PruneSettings, out: Path, overwrite: bool, progress: bool) -> tuple[PruneResult, dict]:
    check_out_dir(out, overwrite, "model")
    info = read_run(settings.scan).info
    trimming = settings.trim_vocab or settings.max_vocab is not None
    if trimming:
        from .vocab import choose_vocab, texts_for_trimming

        texts, extra = texts_for_trimming(settings.keep, info["settings"]["data"], settings.vocab_texts)
    loaded = load_model(info["settings"]["model"])
    loaded.require_plain("pruning")
    if loaded.model_hash != info["model"]["sha256"]:
        raise LangheadsError("the scan's model has changed since the scan (hash differs)")
    # The vocabulary is chosen on the unedited tokenizer, with the scripts measured on the scan's data.
    choice = choose_vocab(loaded.tokenizer, settings.keep, texts, settings.max_vocab, extra,
                          rows=loaded.model.get_input_embeddings().num_embeddings) if trimming else None
    result, drop = choose(loaded, settings, progress)
    record = {"scan": str(Path(settings.scan).resolve()), "model": info["model"], "kept": settings.keep,
              "dropped": drop, "settings": asdict(settings),
              "removed_heads": [list(x) for x in result.removed], "stopped": result.stopped,
              "rejected": result.rejected,
              "curve": result.curve, "selection_texts": "selection part of " + info["corpus"]["source"]}
    save_pruned(loaded, result.removed, out, record, settings.dtype, settings.uniform, overwrite, choice)
    return result, record
