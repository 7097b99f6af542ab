"""Llama-like families with one twist each, handled here:
  Apertus   q/k norms over one head's dimensions (shared by all heads: nothing to slice)
  SmolLM3   no rotary embedding in some layers (nothing head-specific)
  Granite   logits divided by logits_scaling; attention, embedding and residual multipliers
  StableLM  optional per-head q/k LayerNorms (one module per head, which go with their heads)
"""
from __future__ import annotations

import copy

from torch import nn

from .base import Adapter


class Apertus(Adapter):
    family = "apertus"
    model_types = ("apertus",)


class SmolLM3(Adapter):
    family = "smollm3"
    model_types = ("smollm3",)


class Granite(Adapter):
    family = "granite"
    model_types = ("granite",)

    def postprocess_logits(self, model, logits):
        return logits / model.config.get_text_config().logits_scaling


class StableLm(Adapter):
    family = "stablelm"
    model_types = ("stablelm",)

    def slice_attention(self, attn, layout, kv_kept, slots) -> None:
        source = [s for s in slots if s is not None]
        q_src = [source[0] if s is None else s for s in slots]
        super().slice_attention(attn, layout, kv_kept, slots)
        if getattr(attn, "qk_layernorm", False):
            # a padding slot copies a kept head's norm: its own module, so no tensor is saved twice
            attn.q_layernorm.norms = nn.ModuleList([copy.deepcopy(attn.q_layernorm.norms[h]) for h in q_src])
            attn.k_layernorm.norms = nn.ModuleList([attn.k_layernorm.norms[h] for h in kv_kept])
            attn.q_layernorm.num_heads, attn.k_layernorm.num_heads = len(q_src), len(kv_kept)
        attn.num_heads, attn.num_key_value_heads = len(slots), len(kv_kept)
