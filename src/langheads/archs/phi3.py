"""Phi-3: one fused qkv_proj whose rows are all query heads, then all key heads, then all value
heads. Its attention reads the query width from the (shared) config at run time, so each
pruned layer gets its own copy of the config with its own head count."""

from __future__ import annotations

import copy

import torch

from ..errors import LangheadsError
from .base import Adapter, GGUFFamily, Tiny, linear, projection_input, rows


class Phi3(Adapter):
    mlp_act = "mlp.activation_fn"
    mlp_in = None  # physical neuron removal is written for separate gate/up projections only
    family = "phi3"
    tiny = {"phi3": Tiny("Phi3Config", dict(pad_token_id=0))}
    model_types = ("phi3",)
    gguf = GGUFFamily(
        "phi3", norm_plus_one=False, permute_qk=False, transformers_reads=True
    )  # fused qkv and gate_up, as llama.cpp reads them

    def slice_attention(self, attn, layout, kv_kept, slots) -> None:
        D, H, KV = layout.head_dim, layout.n_heads, layout.n_kv_heads
        o_w, q_src = projection_input(attn.o_proj.weight, slots, D, dim=1)
        w = attn.qkv_proj.weight
        q, k, v = w[: H * D], w[H * D : (H + KV) * D], w[(H + KV) * D :]
        b = attn.qkv_proj.bias
        bias = (
            None
            if b is None
            else torch.cat(
                [
                    rows(b[: H * D], q_src, D),
                    rows(b[H * D : (H + KV) * D], kv_kept, D),
                    rows(b[(H + KV) * D :], kv_kept, D),
                ]
            )
        )
        attn.qkv_proj = linear(torch.cat([rows(q, q_src, D), rows(k, kv_kept, D), rows(v, kv_kept, D)]), bias)
        attn.o_proj = linear(o_w, attn.o_proj.bias)
        attn.config = copy.copy(attn.config)
        attn.config.num_attention_heads = len(slots)
        attn.num_key_value_heads = len(kv_kept)
        attn.num_key_value_groups = len(slots) // len(kv_kept)

    def gguf_tokenizer_check(self, tokenizer) -> None:
        # llama.cpp's vocabulary loader looks these up by name in any model named like Phi-3
        missing = [t for t in ("<s>", "</s>", "<unk>", "<|endoftext|>") if t not in tokenizer.get_vocab()]
        if missing:
            raise LangheadsError(
                f"GGUF export: llama.cpp's vocabulary loader expects Phi-3's special tokens, and this "
                f"tokenizer lacks {', '.join(missing)}"
            )

    def head_counts(self, attn, layout):
        if not hasattr(attn, "qkv_proj"):
            return None
        return attn.config.num_attention_heads, attn.num_key_value_heads
