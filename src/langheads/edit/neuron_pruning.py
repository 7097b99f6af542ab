"""Choose the MLP neuron groups the kept languages do not need (from a `--component neuron`
scan), remove them from the weights and save the model.

Candidates are the groups that matter for no kept language (by the scan's rule): those that
matter only for dropped languages first, then the miscellaneous ones, each tier least harmful
to the kept languages first. Every group of a layer saves the same parameters (a row of each
input projection and a column of the output projection per neuron), so harm per parameter
orders them as harm does. After each candidate the kept languages are re-measured on their
selection texts with every chosen group masked; a group whose removal could raise a kept
language by more than the budget (by the upper end of the paired 95% bootstrap interval over
its selection texts: the one-at-a-time walk otherwise fits those few texts) is not removed
and the walk goes on; every layer keeps at least one group (with `--heads N`, here a number
of groups, it stops once N are removed).
"""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import torch

from .. import nll
from ..components import Component, component_for
from ..errors import LangheadsError
from .candidates import PruneResult, candidate_tiers, head_harm, ordered, selection_tokens


def choose_groups(loaded, settings, run, drop: list[str], progress: bool = True) -> tuple[PruneResult, Component]:
    """The groups to remove ((layer, group) pairs in PruneResult.removed) and the component."""
    from tqdm.auto import tqdm

    group = run.info["component"]["neurons_per_group"]
    component = component_for(loaded.model, "neuron", group)
    order = ordered(candidate_tiers(run.info["heads"], drop), head_harm(run.scores, settings.keep))
    tokens = selection_tokens(loaded, run.info, run.languages)
    pad = loaded.tokenizer.pad_token_id or 0

    def per_text(removed, languages):
        with component.scaled(loaded.model, _factors(component, removed)):
            return {lang: nll.per_text_nll(loaded.model, tokens[lang], settings.batch_tokens, settings.chunk_tokens,
                                           pad).double().numpy() for lang in languages}

    base_texts = per_text([], run.languages)
    base = _means(base_texts)
    result = PruneResult([], [{"step": 0, "groups": [], "nll": base, "rel_kept": {l: 0.0 for l in settings.keep},
                               "parameters_saved": 0}])
    per_group = _parameters_per_group(loaded.model, component)
    others = [lang for lang in run.languages if lang not in settings.keep]
    for unit in tqdm(order, desc="prune (neuron groups tried)", disable=not progress):
        if settings.heads is not None and len(result.removed) == settings.heads:
            break
        if sum(l == unit[0] for l, _ in result.removed) == component.layout.n_heads - 1:
            continue  # a layer keeps one group at least: a whole MLP is a block, not neurons
        texts = per_text(result.removed + [unit], settings.keep)
        now = _means(texts)
        rel = {l: now[l] / base[l] - 1 for l in settings.keep}
        bad = {l: _bad_end(base_texts[l], texts[l]) for l in settings.keep}  # the 95% interval's upper end
        if settings.heads is None and max(bad.values()) > settings.max_increase:
            result.rejected.append({"group": list(unit), "after_step": len(result.removed), "rel_kept": rel,
                                    "rel_kept_upper": bad})
            continue
        result.removed.append(unit)
        now.update(_means(per_text(result.removed, others)))
        result.curve.append({"step": len(result.removed), "groups": [list(unit)], "nll": now, "rel_kept": rel,
                             "rel_kept_upper": bad,
                             "parameters_saved": per_group * len(result.removed)})
    result.stopped = (f"removed the {settings.heads} groups asked for" if settings.heads is not None and
                      len(result.removed) == settings.heads else
                      f"tried all {len(order)} candidate groups (groups that matter for no kept language): "
                      f"{len(result.removed)} removed, {len(result.rejected)} not removed because they could raise "
                      f"a kept language by more than {settings.max_increase:.2%} (the upper end of its 95% "
                      "interval over the selection texts)")
    return result, component


def _means(per_text: dict) -> dict[str, float]:
    """Each language's mean NLL over its selection texts."""
    return {lang: float(v.mean()) for lang, v in per_text.items()}


def _bad_end(before, after) -> float:
    """The upper end of the paired 95% bootstrap interval of the relative NLL change over the
    selection texts: a removal is judged by what the texts allow, not by their mean alone."""
    from ..bootstrap import paired_interval

    return float(paired_interval(before, after, 0, 400)[1][1])


def _factors(component: Component, removed: list[tuple[int, int]]) -> dict[int, torch.Tensor]:
    factors: dict[int, torch.Tensor] = {}
    for layer, unit in removed:
        factors.setdefault(layer, torch.ones(component.layout.n_heads))[unit] = 0.0
    return factors


def _parameters_per_group(model, component: Component) -> int:
    """What one group's removal saves: per neuron a row of each input projection (and its
    bias) and a column of the output projection."""
    from ..heads import adapter_for, decoder_layers
    from ..archs.base import get

    adapter, layer = adapter_for(model), decoder_layers(model)[0]
    per_neuron = sum(get(layer, p).weight.shape[1] + (get(layer, p).bias is not None) for p in adapter.mlp_in)
    return component.group * (per_neuron + get(layer, adapter.mlp_out).weight.shape[0])


def check_neuron_settings(settings) -> None:
    """What a neuron pruning cannot do, refused before any model loads."""
    if settings.uniform or settings.trim_vocab or settings.max_vocab is not None:
        raise LangheadsError("--uniform, --trim-vocab and --max-vocab go with head pruning; prune the neurons, "
                             "then `langheads trim` the saved folder")


def prune_neurons(loaded, settings, run, drop: list[str], out: Path, overwrite: bool, progress: bool):
    """Walk, remove the chosen groups' neurons, save; (result, the manifest's record). The
    caller has refused what a neuron pruning cannot do (check_neuron_settings)."""
    from ..manifest import read_manifest
    from .neurons import save_without_neurons

    result, component = choose_groups(loaded, settings, run, drop, progress)
    g = component.group
    neurons: dict[int, list[int]] = {}
    for layer, unit in result.removed:
        neurons.setdefault(layer, []).extend(range(unit * g, unit * g + g))
    record = {"scan": str(Path(settings.scan).resolve()), "model": run.info["model"], "kept": settings.keep,
              "dropped": drop, "settings": asdict(settings), "removed_groups": [list(x) for x in result.removed],
              "neurons_per_group": g, "stopped": result.stopped, "rejected": result.rejected, "curve": result.curve,
              "selection_texts": "selection part of " + run.info["corpus"]["source"]}
    from ..models import DTYPES

    loaded.model.to(DTYPES[settings.dtype])
    save_without_neurons(loaded, neurons, out, record, overwrite)
    return result, read_manifest(out).records["remove_neurons"]
