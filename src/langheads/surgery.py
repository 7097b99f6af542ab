"""Physical head removal: smaller q/k/v/o projections that compute what the masked model does.

Grouped-query attention: query head h reads KV head h // group. A KV head goes only when all
its query heads go. When a layer keeps uneven numbers of query heads per KV group, each kept
group is padded to the largest kept count with zero-output heads (a copy of a kept query row,
and zero columns in o_proj), so the layer keeps one group size and a small KV cache; the cost
is the padded heads' attention compute, reported as `padding_heads`. A layer with no heads left
computes no attention and adds only o_proj's bias.

Pruned layers may differ in head counts, which no stock config can express; `layer_shapes`
records each layer's (query heads, KV heads) so models.load_model can rebuild the shapes before
loading the weights.
"""
from __future__ import annotations

import torch
from torch import nn

from . import heads as H


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


class NoAttention(nn.Module):
    """A layer's attention with every head removed: adds o_proj's bias (or nothing)."""

    def __init__(self, hidden_size: int, bias: torch.Tensor | None, layer_idx: int, head_dim: int):
        super().__init__()
        self.layer_idx, self.head_dim = layer_idx, head_dim
        self.register_buffer("bias", torch.zeros(hidden_size) if bias is None else bias.detach().clone())

    def forward(self, hidden_states, *args, **kwargs):
        cache = kwargs.get("cache", kwargs.get("past_key_values"))
        if cache is not None and hasattr(cache, "update"):  # keep the cache's length in step
            b, t = hidden_states.shape[:2]
            empty = hidden_states.new_zeros(b, 0, t, self.head_dim)
            cache.update(empty, empty, self.layer_idx)
        return self.bias.to(hidden_states.dtype).expand_as(hidden_states), None


def _linear(weight: torch.Tensor, bias: torch.Tensor | None) -> nn.Linear:
    layer = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None, device=weight.device, dtype=weight.dtype)
    with torch.no_grad():
        layer.weight.copy_(weight)
        if bias is not None:
            layer.bias.copy_(bias)
    return layer


def _rows(t: torch.Tensor | None, index: list[int], head_dim: int, dim: int = 0):
    if t is None:
        return None
    idx = torch.tensor([h * head_dim + i for h in index for i in range(head_dim)], device=t.device)
    return t.index_select(dim, idx)


def _projection_input(weight: torch.Tensor, slots: list[int | None], head_dim: int, dim: int):
    """The output projection's columns (dim=1) or rows (dim=0) for the new query slots, with
    padding slots zeroed so the padded heads add nothing; and the query head each slot copies."""
    first = next(s for s in slots if s is not None)
    source = [first if s is None else s for s in slots]
    picked = _rows(weight, source, head_dim, dim).clone()
    for i, s in enumerate(slots):
        if s is None:
            picked.narrow(dim, i * head_dim, head_dim).zero_()
    return picked, source


def _slice_llama_like(layer, layout: H.HeadLayout, kv_kept, slots) -> None:
    attn = layer.self_attn
    D = layout.head_dim
    o_w, q_src = _projection_input(attn.o_proj.weight, slots, D, dim=1)
    q_w, q_b = _rows(attn.q_proj.weight, q_src, D), _rows(attn.q_proj.bias, q_src, D)
    attn.q_proj = _linear(q_w, q_b)
    attn.k_proj = _linear(_rows(attn.k_proj.weight, kv_kept, D), _rows(attn.k_proj.bias, kv_kept, D))
    attn.v_proj = _linear(_rows(attn.v_proj.weight, kv_kept, D), _rows(attn.v_proj.bias, kv_kept, D))
    attn.o_proj = _linear(o_w, attn.o_proj.bias)
    attn.num_key_value_groups = len(slots) // len(kv_kept)


def _slice_gpt2(layer, layout: H.HeadLayout, slots) -> None:
    from transformers.pytorch_utils import Conv1D

    attn, D, E = layer.attn, layout.head_dim, layout.n_heads * layout.head_dim
    proj_rows, q_src = _projection_input(attn.c_proj.weight, slots, D, dim=0)  # Conv1D: [in, out]
    cols = [part * E + h * D + i for part in range(3) for h in q_src for i in range(D)]
    idx = torch.tensor(cols, device=attn.c_attn.weight.device)
    c_attn = Conv1D(len(cols), attn.c_attn.weight.shape[0]).to(attn.c_attn.weight)
    c_proj = Conv1D(attn.c_proj.weight.shape[1], proj_rows.shape[0]).to(attn.c_proj.weight)
    with torch.no_grad():
        c_attn.weight.copy_(attn.c_attn.weight.index_select(1, idx))
        c_attn.bias.copy_(attn.c_attn.bias.index_select(0, idx))
        c_proj.weight.copy_(proj_rows)
        c_proj.bias.copy_(attn.c_proj.bias)
    attn.c_attn, attn.c_proj = c_attn, c_proj
    attn.num_heads, attn.split_size = len(slots), len(slots) * D


def remove_heads_(model: nn.Module, removed: dict[int, list[int]]) -> dict[int, dict]:
    """Remove the given query heads in place; returns each changed layer's new shape."""
    layout = H.head_layout(model)
    layers = H.decoder_layers(model)
    shapes = {}
    for layer_idx, heads in sorted(removed.items()):
        if not heads:
            continue
        kv_kept, slots = layer_plan(layout, set(heads))
        layer = layers[layer_idx]
        is_gpt2 = layout.model_type == "gpt2"
        if not slots:
            attn_name = "attn" if is_gpt2 else "self_attn"
            proj = H.output_projection(model, layer_idx)
            hidden = proj.weight.shape[1] if is_gpt2 else proj.weight.shape[0]
            setattr(layer, attn_name, NoAttention(hidden, proj.bias, layer_idx, layout.head_dim))
        elif is_gpt2:
            _slice_gpt2(layer, layout, slots)
        else:
            _slice_llama_like(layer, layout, kv_kept, slots)
        shapes[layer_idx] = {"removed": sorted(heads), "query_slots": slots, "kv_heads": kv_kept,
                             "padding_heads": sum(s is None for s in slots)}
    return shapes
