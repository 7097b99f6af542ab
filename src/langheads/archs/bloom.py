"""BLOOM and BLOOMZ: one fused query_key_value laid out per head ([heads, 3, head_dim] rows),
`dense` as the output projection, attention that adds the residual itself, and ALiBi.

ALiBi's slopes belong to heads: the model builds one bias per (batch row, head) from the
global head count and hands it to every layer, so a pruned layer keeps the rows of its own
heads (a pre-hook on its attention; replaying the manifest puts it back on reload).
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import LangheadsError
from .base import GGUFFamily, HeadLayout, Tiny, TransformerH, head_size_is_tied, linear, projection_input


def _tiny_config(T, s, sizes, name):
    """BLOOM's config names its sizes its own way (n_layer, n_head)."""
    return T.BloomConfig(
        vocab_size=s["vocab_size"],
        hidden_size=s["hidden_size"],
        n_layer=s["num_hidden_layers"],
        n_head=s["num_attention_heads"],
        bos_token_id=s["bos_token_id"],
        eos_token_id=s["eos_token_id"],
        pad_token_id=s["pad_token_id"],
    )


class BloomNoAttention(nn.Module):
    """A BLOOM layer's attention with every head removed: the residual plus dense's bias."""

    def __init__(self, bias: torch.Tensor, layer_idx: int):
        super().__init__()
        self.layer_idx = layer_idx
        self.register_buffer("bias", bias.detach().clone())

    def forward(self, hidden_states, residual, *args, **kwargs):
        cache = kwargs.get("layer_past")
        if cache is not None and hasattr(cache, "update"):  # keep the cache's length in step
            b, t = hidden_states.shape[:2]
            empty = hidden_states.new_zeros(b, 0, t, 1)
            cache.update(empty, empty, self.layer_idx)
        return residual + self.bias.to(residual.dtype), None


def keep_alibi_rows(attn, heads: list[int], n_heads: int) -> None:
    """Make `attn` read only its kept heads' rows of the [batch * n_heads, 1, len] ALiBi bias."""
    index = torch.tensor(heads)

    def hook(module, args, kwargs):
        alibi = kwargs["alibi"]
        rows = alibi.view(-1, n_heads, *alibi.shape[1:]).index_select(1, index.to(alibi.device))
        return args, {**kwargs, "alibi": rows.reshape(-1, *alibi.shape[1:])}

    attn.register_forward_pre_hook(hook, with_kwargs=True)


class Bloom(TransformerH):
    family = "bloom"
    tiny = {"bloom": Tiny(_tiny_config, gqa=False, eager=True)}
    model_types = ("bloom",)
    attention = "self_attention"
    out_proj = "dense"
    mlp_out = "mlp.dense_4h_to_h"
    mlp_act = "mlp.gelu_impl"
    mlp_in = None  # physical neuron removal is written for separate gate/up projections only
    head_major_kwargs = ("alibi",)
    gguf = GGUFFamily("bloom", norm_plus_one=False, permute_qk=False, transformers_reads=True)

    def gguf_state(self, model):
        """query_key_value's rows per head ([heads, 3, head size]) as llama.cpp reads them: all
        queries, then all keys, then all values (each layer with its own head count)."""
        layout = self.layout(model.config)
        for name, tensor in model.state_dict().items():
            if ".query_key_value." in name:
                tensor = tensor.reshape(-1, 3, layout.head_dim, *tensor.shape[1:]).transpose(0, 1).reshape(tensor.shape)
            yield name.removeprefix("transformer."), tensor  # gguf-py names BLOOM's tensors without it

    def gguf_metadata(self, w, config, layout) -> None:
        pass  # ALiBi: no rotary keys

    def gguf_ffn_length(self, config) -> int:
        return 4 * config.hidden_size

    def layout(self, config) -> HeadLayout:
        return HeadLayout("bloom", config.n_layer, config.n_head, config.n_head, config.hidden_size // config.n_head)

    def check_config(self, config) -> None:
        if getattr(config, "pretraining_tp", 1) > 1 and getattr(config, "slow_but_exact", False):
            raise LangheadsError("bloom: slow_but_exact with pretraining_tp > 1 splits dense by rank; load without it")

    def slice_attention(self, attn, layout, kv_kept, slots) -> None:
        D = layout.head_dim
        o_w, q_src = projection_input(attn.dense.weight, slots, D, dim=1)
        idx = torch.tensor([h * 3 * D + i for h in q_src for i in range(3 * D)], device=o_w.device)
        qkv = attn.query_key_value
        attn.query_key_value = linear(qkv.weight.index_select(0, idx), qkv.bias.index_select(0, idx))
        attn.dense = linear(o_w, attn.dense.bias)
        attn.num_heads = len(slots)
        keep_alibi_rows(attn, q_src, layout.n_heads)

    def empty_attention(self, layer, layer_idx, layout) -> None:
        layer.self_attention = BloomNoAttention(layer.self_attention.dense.bias, layer_idx)

    def head_counts(self, attn, layout):
        return (attn.num_heads, attn.num_heads) if hasattr(attn, "query_key_value") else None

    def uniform_config(self, config, n_heads):
        raise head_size_is_tied("BLOOM", "hidden_size / n_head")
