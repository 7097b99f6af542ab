"""Phi-3: one fused qkv_proj whose rows are all query heads, then all key heads, then all value
heads. Its attention reads the query width from the (shared) config at run time, so each
pruned layer gets its own copy of the config with its own head count."""
from __future__ import annotations

import copy

import torch

from .base import Adapter, linear, projection_input, rows


class Phi3(Adapter):
    family = "phi3"
    model_types = ("phi3",)

    def slice_attention(self, attn, layout, kv_kept, slots) -> None:
        D, H, KV = layout.head_dim, layout.n_heads, layout.n_kv_heads
        o_w, q_src = projection_input(attn.o_proj.weight, slots, D, dim=1)
        w = attn.qkv_proj.weight
        q, k, v = w[: H * D], w[H * D : (H + KV) * D], w[(H + KV) * D :]
        b = attn.qkv_proj.bias
        bias = None if b is None else torch.cat([rows(b[: H * D], q_src, D), rows(b[H * D : (H + KV) * D], kv_kept, D),
                                                 rows(b[(H + KV) * D :], kv_kept, D)])
        attn.qkv_proj = linear(torch.cat([rows(q, q_src, D), rows(k, kv_kept, D), rows(v, kv_kept, D)]), bias)
        attn.o_proj = linear(o_w, attn.o_proj.bias)
        attn.config = copy.copy(attn.config)
        attn.config.num_attention_heads = len(slots)
        attn.num_key_value_heads = len(kv_kept)
        attn.num_key_value_groups = len(slots) // len(kv_kept)

    def head_counts(self, attn, layout):
        if not hasattr(attn, "qkv_proj"):
            return None
        return attn.config.num_attention_heads, attn.num_key_value_heads
