"""Physical head removal: smaller q/k/v/o projections that compute what the masked model does.

Grouped-query attention: query head h reads KV head h // group. A KV head goes only when all
its query heads go. When a layer keeps uneven numbers of query heads per KV group, each kept
group is padded to the largest kept count with zero-output heads (a copy of a kept query row,
and zero columns in o_proj), so the layer keeps one group size and a small KV cache; the cost
is the padded heads' attention compute, reported as `padding_heads`. A layer with no heads left
computes no attention and adds only o_proj's bias.

How each family's projections are cut is its adapter's (archs/). Pruned layers may differ in
head counts, which no stock config can express; the manifest records the removed heads so
models.load_model can rebuild the shapes before loading the weights.
"""

from __future__ import annotations

import torch
from torch import nn

from .. import heads as H
from ..archs import NoAttention, adapter_for
from ..errors import LangheadsError

__all__ = ["NoAttention", "layer_plan", "remove_heads_", "remove_heads_edit"]


def layer_plan(layout: H.HeadLayout, removed: set[int]) -> tuple[list[int], list[int | None]]:
    """(kept KV heads, new query slots): each slot is an original query head or None (padding)."""
    kept = [h for h in range(layout.n_heads) if h not in removed]
    groups: dict[int, list[int]] = {}
    for h in kept:
        groups.setdefault(h // layout.group_size, []).append(h)
    width = max((len(v) for v in groups.values()), default=0)
    slots: list[int | None] = []
    for g in sorted(groups):
        slots += groups[g] + [None] * (width - len(groups[g]))
    return sorted(groups), slots


def remove_heads_(model: nn.Module, removed: dict[int, list[int]]) -> dict[int, dict]:
    """Remove the given query heads in place; returns each changed layer's new shape."""
    adapter = adapter_for(model)
    if not adapter.pruning_exact:
        raise LangheadsError(
            f"{adapter.family}: physical pruning is not exact ({adapter.pruning_note}); scan and mask its heads instead"
        )
    layout = H.head_layout(model)
    layers = H.decoder_layers(model)
    shapes = {}
    for layer_idx, heads in sorted(removed.items()):
        if not heads:
            continue
        kv_kept, slots = layer_plan(layout, set(heads))
        layer = layers[layer_idx]
        if not slots:
            adapter.empty_attention(layer, layer_idx, layout)
        else:
            adapter.slice_attention(adapter.attention_of(layer), layout, kv_kept, slots)
        shapes[layer_idx] = {
            "removed": sorted(heads),
            "query_slots": slots,
            "kv_heads": kv_kept,
            "padding_heads": sum(s is None for s in slots),
        }
    return shapes


def _uniform_config(model, removed: dict[int, list[int]]):
    """The stock config with fewer query heads, or a LangheadsError saying why not."""
    from transformers import AutoModelForCausalLM

    layout = H.head_layout(model)
    per_group = [
        [sum(1 for h in removed.get(l, []) if h // layout.group_size == g) for g in range(layout.n_kv_heads)]
        for l in range(layout.n_layers)
    ]
    if len({c for row in per_group for c in row}) != 1:
        raise LangheadsError(
            "--uniform needs the same number of query heads removed from every KV group of every "
            "layer; this choice removes " + ", ".join(str(row) for row in per_group[:4]) + " ..."
        )
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
        raise LangheadsError(
            f"--uniform: transformers cannot express {new_heads} query heads for this model "
            f"({reason}); save without --uniform"
        ) from None
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
    return {
        "op": "remove_heads",
        "uniform": uniform,
        "removed": {str(l): sorted(h) for l, h in sorted(by_layer.items())},
        "layers": {str(l): v for l, v in shapes.items()},
        "padding_heads": sum(v["padding_heads"] for v in shapes.values()),
    }
