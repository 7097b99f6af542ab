"""Mixtures of experts whose attention is llama-like: Mixtral, Qwen3-MoE (q/k norms over one
head's dimensions, shared by all heads). Heads are cut as in any llama-like layer; the experts
are untouched (routing sees the changed hidden states, as the masked model does)."""
from __future__ import annotations

from ..errors import LangheadsError
from .base import Adapter, GGUFFamily, refuse_sliding_window


class _FusedExperts(Adapter):
    """transformers 5 fuses each layer's experts ([experts, 2 x width, hidden], gate rows then up
    rows; down [experts, hidden, width]); llama.cpp reads them as three stacked tensors."""

    mlp_out = None
    mlp_act = None
    mlp_in = None  # physical neuron removal is written for separate gate/up projections only
    mlp_note = ("its experts run in one fused module, so no hook sees one expert's neurons: scan its heads "
                "(--component head)")

    def gguf_state(self, model):
        for name, tensor in model.state_dict().items():
            if name.endswith("mlp.experts.gate_up_proj"):
                gate, up = tensor.chunk(2, dim=1)
                yield name.replace("gate_up_proj", "gate_proj.weight"), gate
                yield name.replace("gate_up_proj", "up_proj.weight"), up
            elif name.endswith("mlp.experts.down_proj"):
                yield name + ".weight", tensor
            else:
                yield name, tensor


class Mixtral(_FusedExperts):
    family = "mixtral"
    model_types = ("mixtral",)
    gguf = GGUFFamily("llama", norm_plus_one=False, permute_qk=True, narrow_q=True)  # llama.cpp runs Mixtral as llama + experts

    def gguf_metadata(self, w, config, layout) -> None:
        refuse_sliding_window(config, "Mixtral")
        super().gguf_metadata(w, config, layout)
        w.add_expert_count(config.num_local_experts)
        w.add_expert_used_count(config.num_experts_per_tok)


class Qwen3Moe(_FusedExperts):
    family = "qwen3_moe"
    model_types = ("qwen3_moe",)
    gguf = GGUFFamily("qwen3moe", norm_plus_one=False, permute_qk=False, narrow_q=True)

    def gguf_metadata(self, w, config, layout) -> None:
        if not config.norm_topk_prob or config.mlp_only_layers or config.decoder_sparse_step != 1:
            raise LangheadsError("GGUF export: llama.cpp's qwen3moe graph has experts in every layer and renormalises "
                                 "the chosen experts' weights (norm_topk_prob); this config differs")
        super().gguf_metadata(w, config, layout)
        w.add_expert_count(config.num_experts)
        w.add_expert_used_count(config.num_experts_per_tok)
        w.add_expert_feed_forward_length(config.moe_intermediate_size)
