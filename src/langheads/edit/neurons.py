"""Removing MLP neurons from the weights: a neuron is a row of each input projection (gate and
up) and a column of the output projection (down), so removing it is slicing those, and the
model computes exactly what masking the neuron (zeroing its slice of down's input) computes.
Layers may keep different widths; the manifest's `remove_neurons` edit lists the removed
neurons per layer and the loader replays it (models._from_edited_folder)."""

from __future__ import annotations

import torch

from .. import heads as H
from ..archs.base import get
from ..errors import LangheadsError


def remove_neurons_(model, removed: dict[int, list[int]], whole: bool = False) -> dict:
    """Slice the removed neurons out of each listed layer's MLP in place; the manifest edit.
    `whole`: a layer may lose every neuron (its MLP removed as a block: width 0)."""
    adapter = H.adapter_for(model)
    if adapter.neuron_removal() == "none":
        raise LangheadsError(f"{H.head_layout(model).model_type}: {adapter.removal_note}")
    widths = {}
    for l, gone in removed.items():
        layer = H.decoder_layers(model)[l]
        width = adapter.mlp_width(get(layer, adapter.mlp_out))
        keep = torch.tensor(sorted(set(range(width)) - set(gone)), dtype=torch.long)
        if len(keep) == 0 and not whole:
            raise LangheadsError(f"layer {l}: every MLP neuron would go; remove the whole block instead")
        adapter.cut_mlp(layer, keep)
        widths[str(l)] = len(keep)
    uniform = _say_uniform_width(model)
    return {
        "op": "remove_neurons",
        "removed": {str(l): sorted(g) for l, g in sorted(removed.items())},
        "widths": widths,
        "uniform": uniform,
        **({"whole_blocks": True} if whole else {}),
    }


def _say_uniform_width(model) -> bool:
    """Where every layer now has one MLP width and the config can say it, say it there (plain
    transformers then loads the folder, and every llama.cpp graph takes it); whether it did."""
    adapter, config = H.adapter_for(model), H.text_config(model)
    widths = {adapter.mlp_width(get(layer, adapter.mlp_out)) for layer in H.decoder_layers(model)}
    keys = adapter.uniform_mlp_config(config, min(widths)) if len(widths) == 1 and min(widths) > 0 else None
    for key, value in (keys or {}).items():
        setattr(config, key, value)
    return keys is not None
