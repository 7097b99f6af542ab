"""Falcon: one fused query_key_value in one of three layouts, `dense` as the output projection.
  new_decoder_architecture (Falcon-40B/180B): per KV group, its query heads, then k, then v;
  multi_query (Falcon-7B): all query heads, then one k and one v;
  neither: per head, [q, k, v] (as BLOOM).
Falcon-RW's ALiBi (alibi=True) is refused by name: its slopes are not wired to follow heads."""

from __future__ import annotations

import torch

from ..errors import LangheadsError
from .base import GGUFFamily, HeadLayout, Tiny, TransformerH, head_size_is_tied, linear, projection_input


def _tiny_config(T, s, sizes, name):
    """Falcon's new decoder architecture with grouped KV heads, or (falcon_mqa) the old one with
    one KV head for all query heads."""
    layout = (
        dict(new_decoder_architecture=True, num_kv_heads=s["num_key_value_heads"])
        if name == "falcon"
        else dict(new_decoder_architecture=False, multi_query=True)
    )
    return T.FalconConfig(
        vocab_size=s["vocab_size"],
        hidden_size=s["hidden_size"],
        num_hidden_layers=s["num_hidden_layers"],
        num_attention_heads=s["num_attention_heads"],
        bias=sizes.get("bias", True),
        alibi=False,
        bos_token_id=s["bos_token_id"],
        eos_token_id=s["eos_token_id"],
        pad_token_id=s["pad_token_id"],
        max_position_embeddings=s["max_position_embeddings"],
        **layout,
    )


class Falcon(TransformerH):
    family = "falcon"
    tiny = {"falcon": Tiny(_tiny_config), "falcon_mqa": Tiny(_tiny_config, gqa=False)}
    model_types = ("falcon",)
    attention = "self_attention"
    out_proj = "dense"
    mlp_out = "mlp.dense_4h_to_h"
    mlp_act = "mlp.act"
    mlp_in = None  # physical neuron removal is written for separate gate/up projections only

    gguf = GGUFFamily("falcon", norm_plus_one=False, permute_qk=False)

    def gguf_state(self, model):
        """query_key_value as llama.cpp reads it: all queries, then the keys, then the values
        (Falcon keeps, per KV group, its queries then one key and one value; per-head [q, k, v]
        without GQA is the same with one query per group)."""
        layout = self.layout(model.config)
        layers = [self.head_counts(self.attention_of(layer), layout) for layer in model.transformer.h]
        for name, tensor in model.state_dict().items():
            if ".query_key_value." in name:
                q, kv = layers[int(name.split(".")[2])]
                groups = tensor.reshape(kv, q // kv + 2, layout.head_dim, *tensor.shape[1:])
                tensor = torch.cat(
                    [
                        groups[:, :-2].reshape(-1, *tensor.shape[1:]),
                        groups[:, -2].reshape(-1, *tensor.shape[1:]),
                        groups[:, -1].reshape(-1, *tensor.shape[1:]),
                    ]
                )
            yield name, tensor

    def gguf_metadata(self, w, config, layout) -> None:
        if config.bias:
            raise LangheadsError("GGUF export: llama.cpp's falcon graph has no attention or MLP biases (bias=True)")
        rope = getattr(config, "rope_parameters", None) or {}
        w.add_rope_freq_base(rope.get("rope_theta", 10000.0))
        w.add_rope_dimension_count(layout.head_dim)

    def gguf_ffn_length(self, config) -> int:
        return getattr(config, "ffn_hidden_size", None) or 4 * config.hidden_size

    def layout(self, config) -> HeadLayout:
        n = config.num_attention_heads
        kv = config.num_kv_heads if config.new_decoder_architecture else 1 if config.multi_query else n
        return HeadLayout("falcon", config.num_hidden_layers, n, kv, config.hidden_size // n)

    def check_config(self, config) -> None:
        super().check_config(config)
        if getattr(config, "alibi", False):
            raise LangheadsError(
                "falcon: alibi=True (Falcon-RW) is not supported: its ALiBi slopes would have to "
                "follow the pruned heads"
            )

    def _qkv_rows(self, attn, layout, kv_kept, q_src) -> list[int]:
        """Rows of query_key_value for the kept layout, in the order the attention splits them."""
        D, H = layout.head_dim, layout.n_heads
        span = lambda start: list(range(start * D, (start + 1) * D))  # noqa: E731
        if attn.new_decoder_architecture:  # blocks of (group + 2) heads per KV group
            width, group = len(q_src) // len(kv_kept), layout.group_size
            out = []
            for k, g in enumerate(kv_kept):
                block = g * (group + 2)
                out += [r for h in q_src[k * width : (k + 1) * width] for r in span(block + h - g * group)]
                out += span(block + group) + span(block + group + 1)
            return out
        if attn.multi_query:  # all query heads, then k, then v
            return [r for h in q_src for r in span(h)] + span(H) + span(H + 1)
        return [r for h in q_src for part in range(3) for r in span(3 * h + part)]  # per head [q, k, v]

    def slice_attention(self, attn, layout, kv_kept, slots) -> None:
        D = layout.head_dim
        o_w, q_src = projection_input(attn.dense.weight, slots, D, dim=1)
        idx = torch.tensor(self._qkv_rows(attn, layout, kv_kept, q_src), device=o_w.device)
        b = attn.query_key_value.bias
        attn.query_key_value = linear(
            attn.query_key_value.weight.index_select(0, idx), None if b is None else b.index_select(0, idx)
        )
        attn.dense = linear(o_w, attn.dense.bias)
        attn.num_heads = len(slots)
        if attn.new_decoder_architecture:
            attn.num_kv_heads = len(kv_kept)
        elif not attn.multi_query:
            attn.num_kv_heads = len(slots)
        # transformers >= 5.25 repeats each KV head num_key_value_groups times (its attention interface)
        attn.num_key_value_groups = attn.num_heads // self.head_counts(attn, layout)[1]

    def head_counts(self, attn, layout):
        if not hasattr(attn, "query_key_value"):
            return None
        return attn.num_heads, (attn.num_kv_heads if attn.new_decoder_architecture or not attn.multi_query else 1)

    def uniform_config(self, config, n_heads):
        raise head_size_is_tied("Falcon", "hidden_size / num_attention_heads")
