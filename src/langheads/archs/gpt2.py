"""GPT-2: one fused Conv1D c_attn ([in, 3 * heads * head_dim]: all q, then all k, then all v),
c_proj as the output projection, no grouped-query attention."""

from __future__ import annotations

import torch

from .base import GGUFFamily, HeadLayout, NoAttention, Tiny, TransformerH, head_size_is_tied, projection_input

_CONV1D = (".attn.c_attn.weight", ".attn.c_proj.weight", ".mlp.c_fc.weight", ".mlp.c_proj.weight")


def _tiny_config(T, s, sizes, name):
    """GPT-2's config names its sizes its own way (n_embd, n_layer, n_head, n_positions)."""
    return T.GPT2Config(
        vocab_size=s["vocab_size"],
        n_embd=s["hidden_size"],
        n_layer=s["num_hidden_layers"],
        n_head=s["num_attention_heads"],
        n_positions=s["max_position_embeddings"],
        bos_token_id=s["bos_token_id"],
        eos_token_id=s["eos_token_id"],
    )


class GPT2(TransformerH):
    family = "gpt2"
    tiny = {"gpt2": Tiny(_tiny_config, gqa=False)}
    model_types = ("gpt2",)
    attention = "attn"
    out_proj = "c_proj"
    mlp_out = "mlp.c_proj"
    mlp_act = "mlp.act"
    mlp_in = None  # physical neuron removal is written for separate gate/up projections only

    def mlp_width(self, proj) -> int:
        return proj.weight.shape[0]  # Conv1D keeps its weight as [in, out]

    gguf = GGUFFamily("gpt2", norm_plus_one=False, permute_qk=False)

    def gguf_state(self, model):
        """Conv1D keeps weights as [in, out]; llama.cpp reads them as Linear's [out, in]."""
        for name, tensor in model.state_dict().items():
            yield name, tensor.t() if name.endswith(_CONV1D) else tensor

    def gguf_metadata(self, w, config, layout) -> None:
        pass  # learned positions (wpe), no rotary keys

    def gguf_ffn_length(self, config) -> int:
        return config.n_inner or 4 * config.n_embd

    def layout(self, config) -> HeadLayout:
        return HeadLayout("gpt2", config.n_layer, config.n_head, config.n_head, config.n_embd // config.n_head)

    def position_limit(self, config) -> int:
        return config.n_positions  # learned positions (wpe): a longer text has no position to read

    def slice_attention(self, attn, layout, kv_kept, slots) -> None:
        from transformers.pytorch_utils import Conv1D

        D, E = layout.head_dim, layout.n_heads * layout.head_dim
        proj_rows, q_src = projection_input(attn.c_proj.weight, slots, D, dim=0)  # Conv1D: [in, out]
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

    def empty_attention(self, layer, layer_idx, layout) -> None:
        proj = layer.attn.c_proj
        layer.attn = NoAttention(proj.weight.shape[1], proj.bias, layer_idx, layout.head_dim)

    def head_counts(self, attn, layout):
        if not hasattr(attn, "c_attn"):
            return None
        n = attn.c_attn.weight.shape[1] // 3 // layout.head_dim
        return n, n

    def uniform_config(self, config, n_heads):
        raise head_size_is_tied("GPT-2", "n_embd / n_head")
