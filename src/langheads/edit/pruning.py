"""`langheads prune`: choose what a deployment's languages do not need (edit/walk.py: one walk
over the candidates of the given scans, heads, neuron groups and blocks alike), remove it from
the weights, then trim the vocabulary if asked, and write a folder that load_model reloads.
The record of the walk (scans, kept and dropped languages, the units removed in the order
chosen, the curve, what was refused and why the walk stopped) and what the removal saved,
counted on the saved weights, go into the manifest.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from ..errors import LangheadsError
from ..manifest import read_manifest, write_model_folder
from ..models import DTYPES, LoadedModel, load_model
from ..options import check_choices, option
from ..runs import read_run
from . import savings
from .candidates import PruneResult, dropped


@dataclass
class PruneSettings:
    """Every setting of a pruning; the CLI's `prune` options are generated from these fields."""

    scan: list[str] = option(
        help="a run folder from `langheads scan`; again for another component's scan of "
        "the same model (heads, neurons, blocks: one walk across them)",
        repeat=True,
    )
    keep: list[str] = option(help="languages the deployment serves, e.g. en,hi")
    drop: list[str] | None = option(None, help="languages it need not serve (default: every other scanned language)")
    max_increase: float = option(0.02, help="budget: largest relative NLL rise of a kept language")
    units: int | None = option(
        None,
        help="remove this many units (heads, neuron groups, blocks) instead of using the budget",
        aliases=("--heads",),
    )
    dtype: str = option("float32", choices=lambda: tuple(DTYPES), help="the saved weights")
    uniform: bool = option(
        False,
        help="keep every layer alike, so the config says the shapes: one head from every "
        "KV group of every layer, one neuron group from every layer (every expert of a mixture) "
        "at a time, whole layers only",
    )
    patience: int = option(
        16,
        help="stop after this many single moves were refused by the budget since the "
        "walk last made a batch of several (0: try every move)",
    )
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
        checks.count(self, "units", optional=True)
        checks.count(self, "patience", minimum=0)
        check_choices(self)
        checks.count(self, "batch_tokens")
        checks.count(self, "chunk_tokens")
        checks.count(self, "max_vocab", optional=True)


def save(
    loaded: LoadedModel,
    out: Path,
    record: dict | None = None,
    *,
    heads=None,
    neurons: dict | None = None,
    blocks: dict | None = None,
    dtype: str = "float32",
    uniform: bool = False,
    overwrite: bool = False,
    vocab_choice=None,
) -> Path:
    """The one save of a pruning: remove heads ([(layer, head)] or {layer: [heads]}), MLP neurons
    ({layer: [neurons]}) and whole blocks ({layer: {"attention", "mlp"}}), original numbering,
    from `loaded`'s model in place (edit.blocks: a layer left with neither block leaves the
    stack), then trim the vocabulary if a choice is given, and write a folder that load_model
    (and, where the config says the shapes, plain transformers) reloads: safetensors, config,
    tokenizer and the manifest of edits. `record` (why) goes with the last edit, with what the
    removal saved counted on the weights; `uniform`: the stock config must say the head counts."""
    from .blocks import remove_body_
    from .vocab import apply_trim

    if dtype not in DTYPES:
        raise LangheadsError(f"unknown dtype '{dtype}'; choose one of {', '.join(DTYPES)}")
    removal = (savings.by_layer_lists(heads or {}), neurons or {}, blocks or {})
    before = savings.Counted.of(loaded.model, removal)
    edits = remove_body_(loaded.model, *removal, uniform=uniform)
    record = {**(record or {}), "saved": before.saved(loaded.model), "dtype": dtype}
    manifest = loaded.base_manifest()
    for i, edit in enumerate(edits):
        manifest = manifest.with_edit(edit, record if i == len(edits) - 1 else None)
    if not edits:  # nothing was removed: the record still says what was tried
        manifest = manifest.with_record("prune", record)
    save_tokenizer = loaded.tokenizer.save_pretrained
    if vocab_choice is not None:
        manifest, save_tokenizer = apply_trim(loaded, vocab_choice, manifest)
    loaded.model.to(DTYPES[dtype])
    return write_model_folder(loaded.model, save_tokenizer, Path(out), manifest, overwrite)


def prune(
    settings: PruneSettings, out: Path, overwrite: bool = False, progress: bool = True
) -> tuple[PruneResult, dict]:
    """Library entry point for `langheads prune`."""
    from ..folders import claim

    with claim(Path(out), overwrite, "model"):
        return _prune(settings, Path(out), overwrite, progress)


def _prune(settings: PruneSettings, out: Path, overwrite: bool, progress: bool):
    """Read the scans, walk, save; (the walk's result, the manifest's record as written)."""
    from .walk import as_removal, check_runs, walk

    runs = [read_run(s) for s in settings.scan]
    drop = dropped(settings, runs[0])
    check_runs(runs, settings)
    loaded, choice = _model_and_vocab(settings, runs[0])
    result, group = walk(loaded, settings, runs, drop, progress)
    record = {
        "scans": [str(Path(r.folder).resolve()) for r in runs],
        "model": runs[0].info["model"],
        "kept": settings.keep,
        "dropped": drop,
        "settings": asdict(settings),
        "removed_units": [list(u) for u in result.removed],
        "neurons_per_group": group,
        "stopped": result.stopped,
        "rejected": result.rejected,
        "curve": result.curve,
        "selection_texts": "selection part of " + runs[0].info["corpus"]["source"],
    }
    heads, neurons, blocks = as_removal(result.removed, group)
    save(
        loaded,
        out,
        record,
        heads=heads,
        neurons=neurons,
        blocks=blocks,
        dtype=settings.dtype,
        uniform=settings.uniform,
        overwrite=overwrite,
        vocab_choice=choice,
    )
    return result, read_manifest(out).pruning_record()


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
        choice = choose_vocab(
            loaded.tokenizer,
            settings.keep,
            texts,
            settings.max_vocab,
            extra,
            rows=loaded.model.get_input_embeddings().num_embeddings,
        )
    return loaded, choice
