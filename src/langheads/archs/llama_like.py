"""Llama-like families with one twist each, handled here:
Apertus   q/k norms over one head's dimensions (shared by all heads: nothing to slice)
SmolLM3   no rotary embedding in some layers (nothing head-specific)
Granite   logits divided by logits_scaling; attention, embedding and residual multipliers
StableLM  optional per-head q/k LayerNorms (one module per head, which go with their heads)
"""

from __future__ import annotations

import copy
import re

from torch import nn

from ..errors import LangheadsError
from .base import Adapter, GGUFFamily, Tiny, head_size_is_tied

_PER_HEAD_NORM = re.compile(r"(.*\.[qk]_layernorm)\.norms\.(\d+)\.(\w+)")  # StableLM: one norm module per head


class Apertus(Adapter):
    family = "apertus"
    tiny = {"apertus": Tiny("ApertusConfig")}
    model_types = ("apertus",)
    mlp_in = ("mlp.up_proj",)  # no gate: down(act(up(x)))
    gguf_note = "llama.cpp's apertus graph reads xIELU activation parameters per layer, not written yet"


class SmolLM3(Adapter):
    family = "smollm3"
    tiny = {"smollm3": Tiny("SmolLM3Config", dict(no_rope_layers=[1, 0, 1]))}
    model_types = ("smollm3",)
    gguf = GGUFFamily("smollm3", norm_plus_one=False, permute_qk=True, narrow_q=True)

    def gguf_metadata(self, w, config, layout) -> None:
        # llama.cpp's smollm3 graph has no key for it: every 4th layer is without rotary embedding
        expected = [int((i + 1) % 4 != 0) for i in range(config.num_hidden_layers)]
        if list(config.no_rope_layers) != expected:
            raise LangheadsError(
                f"GGUF export: llama.cpp's smollm3 graph leaves out rotary embedding in every 4th "
                f"layer ({expected}); this model's no_rope_layers is {list(config.no_rope_layers)}"
            )
        super().gguf_metadata(w, config, layout)


class Granite(Adapter):
    family = "granite"
    tiny = {
        "granite": Tiny(
            "GraniteConfig",
            dict(
                logits_scaling=2.0,
                attention_multiplier=0.1,
                embedding_multiplier=2.0,
                residual_multiplier=0.5,
                attention_bias=True,
            ),
        )
    }
    model_types = ("granite",)
    gguf = GGUFFamily("granite", norm_plus_one=False, permute_qk=True, narrow_q=True)

    def postprocess_logits(self, model, logits):
        return logits / model.config.get_text_config().logits_scaling

    def gguf_metadata(self, w, config, layout) -> None:
        super().gguf_metadata(w, config, layout)
        w.add_attention_scale(config.attention_multiplier)
        w.add_embedding_scale(config.embedding_multiplier)
        w.add_residual_scale(config.residual_multiplier)
        w.add_logit_scale(config.logits_scaling)


class StableLm(Adapter):
    family = "stablelm"
    tiny = {"stablelm": Tiny("StableLmConfig", dict(qk_layernorm=True, use_qkv_bias=True, partial_rotary_factor=0.5))}
    model_types = ("stablelm",)
    gguf = GGUFFamily("stablelm", norm_plus_one=False, permute_qk=False)

    def uniform_config(self, config, n_heads):
        raise head_size_is_tied("StableLM", "hidden_size / num_attention_heads")

    def gguf_state(self, model):
        """Per-head q/k LayerNorms (one module per head) stacked into one [heads, head size] tensor
        per norm and parameter, in head order."""
        import torch

        stacks: dict[str, list] = {}
        for name, tensor in model.state_dict().items():
            per_head = _PER_HEAD_NORM.fullmatch(name)
            if per_head:
                stacks.setdefault(f"{per_head[1]}.{per_head[3]}", []).append((int(per_head[2]), tensor))
            else:
                yield name, tensor
        for name, heads in stacks.items():
            yield name, torch.stack([t for _, t in sorted(heads, key=lambda h: h[0])])

    def gguf_metadata(self, w, config, layout) -> None:
        rope = config.rope_parameters
        w.add_rope_freq_base(rope.get("rope_theta", 10000.0))
        w.add_rope_dimension_count(int(rope.get("partial_rotary_factor", 1.0) * layout.head_dim))
        w.add_parallel_residual(bool(config.use_parallel_residual))

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
