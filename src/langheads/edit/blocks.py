"""Removing parts of the body from the weights in one go: attention heads, MLP neurons, and
whole blocks (a layer's attention, its MLP, or both, which removes the layer itself).

- a layer that loses both blocks and whose output projections add no bias computes nothing
  (the residual passes through): it is taken out of the stack (`remove_layers`); the config's
  layer count and its per-layer lists (layer types) say the rest, so that edit needs no replay
  and plain transformers loads it;
- a layer's whole attention: every head removed (NoAttention, which adds only the output
  projection's bias, as the masked attention does);
- a layer's whole MLP: every neuron removed (width 0: adds only the output projection's bias).

`remove_layers` comes first in the manifest; the head and neuron edits after it number the
layers as the saved model does (its `kept_layers` maps them back to the original's).
"""

from __future__ import annotations

from .. import heads as H
from ..archs.base import get


def drop_layers_(model, gone: list[int]) -> dict:
    """Take the layers `gone` out of the stack in place; the manifest edit."""
    layers = H.decoder_layers(model)  # nn.ModuleList: deleting renumbers the rest
    config = H.text_config(model)
    n = config.num_hidden_layers
    kept = [i for i in range(n) if i not in set(gone)]
    for i in sorted(set(gone), reverse=True):
        del layers[i]
    for new, layer in enumerate(layers):
        for module in layer.modules():  # the KV cache is indexed by layer_idx
            if hasattr(module, "layer_idx"):
                module.layer_idx = new
    for key in H.adapter_for(model).per_layer_config:
        value = getattr(config, key, None)
        if isinstance(value, list) and len(value) == n:
            setattr(config, key, [value[i] for i in kept])
    config.num_hidden_layers = len(kept)
    return {"op": "remove_layers", "kept_layers": kept, "original_layers": n}


def renumbered(by_layer: dict[int, list[int]], kept: list[int]) -> dict[int, list[int]]:
    """{original layer: units} -> {saved model's layer: units}, for the kept layers."""
    new = {old: i for i, old in enumerate(kept)}
    return {new[l]: units for l, units in by_layer.items() if l in new}


def body_plan(
    model, heads: dict[int, list[int]], neurons: dict[int, list[int]], blocks: dict[int, set[str]]
) -> tuple[list[int], dict, dict]:
    """(layers to drop, heads by layer, neurons by layer), original numbering: a whole block
    becomes all of its heads or neurons, a layer without both blocks is dropped."""
    layout = H.head_layout(model)
    adapter = H.adapter_for(model)
    heads = {l: sorted(set(h)) for l, h in heads.items() if h}
    neurons = {l: sorted(set(n)) for l, n in neurons.items() if n}
    for layer, which in blocks.items():
        if "attention" in which:
            heads[layer] = list(range(layout.n_heads))
        if "mlp" in which:
            width = adapter.mlp_width(get(H.decoder_layers(model)[layer], adapter.mlp_out))
            neurons[layer] = list(range(width))
    full_heads = {l for l, h in heads.items() if len(h) == layout.n_heads}
    gone = sorted(
        l
        for l in full_heads
        if l in neurons
        and adds_nothing(model, l)
        and len(neurons[l]) == adapter.mlp_width(get(H.decoder_layers(model)[l], adapter.mlp_out))
    )
    return gone, {l: h for l, h in heads.items() if l not in gone}, {l: n for l, n in neurons.items() if l not in gone}


def adds_nothing(model, layer: int) -> bool:
    """Whether layer `layer` with no heads and no neurons adds nothing to the residual: neither
    output projection has a bias (else the layer stays, adding its biases)."""
    out = [H.output_projection(model, layer), get(H.decoder_layers(model)[layer], H.adapter_for(model).mlp_out)]
    return all(getattr(p, "bias", None) is None or not p.bias.any() for p in out)


def remove_body_(
    model,
    heads: dict[int, list[int]],
    neurons: dict[int, list[int]],
    blocks: dict[int, set[str]],
    uniform: bool = False,
) -> list[dict]:
    """Remove heads, neurons and blocks (original numbering) in place; the manifest edits, in
    the order the loader replays them. `uniform`: the heads left must be the same count in
    every KV group of every layer, said in the stock config (surgery.remove_heads_edit)."""
    from .neurons import remove_neurons_
    from .surgery import remove_heads_edit

    gone, heads, neurons = body_plan(model, heads, neurons, blocks)
    edits = []
    kept = list(range(H.text_config(model).num_hidden_layers))
    if gone:
        edits.append(drop_layers_(model, gone))
        kept = edits[-1]["kept_layers"]
    if heads:
        edits.append(
            remove_heads_edit(model, [(l, h) for l, hs in renumbered(heads, kept).items() for h in hs], uniform)
        )
    if neurons:
        edits.append(remove_neurons_(model, renumbered(neurons, kept), whole=True))
    return edits
