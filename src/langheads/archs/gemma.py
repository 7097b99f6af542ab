"""Gemma 1-3: logit soft-capping (Gemma 2), sliding and full layers, q/k norms over one head's
dimensions (Gemma 3, shared by all heads, so they need no slicing), RMSNorm as x * (1 + w)."""

from __future__ import annotations

from ..errors import LangheadsError
from .base import Adapter, GGUFFamily, Tiny


class Gemma(Adapter):
    family = "gemma"
    tiny = {"gemma": Tiny("GemmaConfig")}
    model_types = ("gemma",)
    gguf = GGUFFamily("gemma", norm_plus_one=True, permute_qk=False, narrow_q=True, transformers_reads=True)

    def postprocess_logits(self, model, logits):
        softcap = getattr(model.config.get_text_config(), "final_logit_softcapping", None)
        if softcap is not None:
            logits = logits.div(softcap).tanh().mul(softcap)
        return logits


class Gemma2(Gemma):
    family = "gemma2"
    tiny = {
        "gemma2": Tiny(
            "Gemma2Config",
            dict(sliding_window=8, final_logit_softcapping=30.0, attn_logit_softcapping=50.0),
            eager=True,
        )
    }
    model_types = ("gemma2",)
    gguf = GGUFFamily("gemma2", norm_plus_one=True, permute_qk=False, narrow_q=True, transformers_reads=True)

    def gguf_metadata(self, w, config, layout) -> None:
        _refuse_query_scale(config, layout, "gemma2")
        super().gguf_metadata(w, config, layout)
        w.add_attn_logit_softcapping(config.attn_logit_softcapping)
        w.add_final_logit_softcapping(config.final_logit_softcapping)
        w.add_sliding_window(config.sliding_window)


class Gemma3(Gemma):
    family = "gemma3"
    tiny = {
        "gemma3": Tiny(
            "Gemma3TextConfig",
            dict(  # sliding and full layers alternate; 1/sqrt(head size) as llama.cpp
                num_hidden_layers=4,
                sliding_window=8,
                query_pre_attn_scalar=16,
                layer_types=["sliding_attention", "full_attention"] * 2,
            ),
        )
    }
    model_types = ("gemma3", "gemma3_text")
    gguf = GGUFFamily("gemma3", norm_plus_one=True, permute_qk=False, narrow_q=True, transformers_reads=True)

    def check_config(self, config) -> None:
        super().check_config(config)
        if getattr(config, "use_bidirectional_attention", False):
            raise LangheadsError("gemma3: use_bidirectional_attention=True is an embedding model, not a causal LM")

    def gguf_metadata(self, w, config, layout) -> None:
        if config.num_hidden_layers != 62:  # 62 layers: llama.cpp scales by 1/sqrt(hidden / heads) instead
            _refuse_query_scale(config, layout, "gemma3")
        if getattr(config, "attn_logit_softcapping", None):
            raise LangheadsError("GGUF export: llama.cpp's gemma3 graph has no attention logit soft-capping")
        rope = getattr(config, "rope_parameters", None) or {}
        w.add_rope_freq_base(rope.get("full_attention", {}).get("rope_theta", 1_000_000.0))
        if getattr(config, "sliding_window", None):
            w.add_sliding_window(config.sliding_window)
            w.add_sliding_window_pattern([t == "sliding_attention" for t in config.layer_types])
            w.add_rope_freq_base_swa(rope.get("sliding_attention", {}).get("rope_theta", 10_000.0))
        if getattr(config, "final_logit_softcapping", None):
            w.add_final_logit_softcapping(config.final_logit_softcapping)


def _refuse_query_scale(config, layout, graph: str) -> None:
    """llama.cpp's Gemma graphs scale attention by 1/sqrt(head size): another query_pre_attn_scalar
    would read differently there."""
    if config.query_pre_attn_scalar != layout.head_dim:
        raise LangheadsError(
            f"GGUF export: query_pre_attn_scalar {config.query_pre_attn_scalar} differs from the "
            f"head size {layout.head_dim}, which llama.cpp's {graph} graph assumes"
        )
