"""XGLM: q/k/v/out_proj under self_attn, no grouped-query attention, head size tied to
d_model / attention_heads (so a uniform pruning cannot be written into its config). Its
attention reshapes with num_heads and embed_dim, which follow the kept heads."""

from __future__ import annotations

from ..errors import LangheadsError
from .base import Adapter, HeadLayout, Tiny, head_size_is_tied


def _tiny_config(T, s, sizes, name):
    """XGLM's config names its sizes its own way (d_model, num_layers, attention_heads, ffn_dim)."""
    return T.XGLMConfig(
        vocab_size=s["vocab_size"],
        d_model=s["hidden_size"],
        num_layers=s["num_hidden_layers"],
        attention_heads=s["num_attention_heads"],
        ffn_dim=s["intermediate_size"],
        max_position_embeddings=s["max_position_embeddings"],
        bos_token_id=s["bos_token_id"],
        eos_token_id=s["eos_token_id"],
        pad_token_id=s["pad_token_id"],
        scale_embedding=True,
    )


class XGLM(Adapter):
    family = "xglm"
    tiny = {"xglm": Tiny(_tiny_config, gqa=False, eager=True)}
    model_types = ("xglm",)
    gguf_note = "llama.cpp has no XGLM graph"
    final_norm = "model.layer_norm"
    out_proj = "out_proj"
    mlp_out = "fc2"
    mlp_act = "activation_fn"
    mlp_in = None  # physical neuron removal is written for separate gate/up projections only

    def layout(self, config) -> HeadLayout:
        n = config.attention_heads
        return HeadLayout("xglm", config.num_layers, n, n, config.d_model // n)

    def check_config(self, config) -> None:
        if config.d_model % config.attention_heads:
            raise LangheadsError("xglm: d_model is not a multiple of attention_heads")

    def slice_attention(self, attn, layout, kv_kept, slots) -> None:
        super().slice_attention(attn, layout, kv_kept, slots)  # one KV head per query head: no padding
        attn.num_heads, attn.embed_dim = len(slots), len(slots) * layout.head_dim

    def head_counts(self, attn, layout):
        return (attn.num_heads, attn.num_heads) if hasattr(attn, "q_proj") else None

    def uniform_config(self, config, n_heads):
        raise head_size_is_tied("XGLM", "d_model / attention_heads")
