"""Mixtures of experts whose attention is llama-like: Mixtral, Qwen3-MoE (q/k norms over one
head's dimensions, shared by all heads). Heads are cut as in any llama-like layer; the experts
are untouched by a head pruning (routing sees the changed hidden states, as the masked model does).

Neurons: transformers 5 runs a layer's experts in one module over stacked weights, so no hook
sees one expert's neurons. While a neuron scan (or LAPE) needs them, the experts module runs
`experts_forward` instead: transformers' own eager loop over the chosen experts, with the
neurons' activations scaled (or counted) per token between act(gate) * up and down. A layer's
units are expert-major: expert e's neurons are units e x width .. (e + 1) x width - 1."""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from ..errors import LangheadsError
from .base import Adapter, GGUFFamily, Tiny, get, refuse_sliding_window


def experts_forward(
    experts: nn.Module,
    hidden: torch.Tensor,
    top_k_index: torch.Tensor,
    top_k_weights: torch.Tensor,
    scale=None,
    tap=None,
) -> torch.Tensor:
    """transformers' eager MoE expert loop (MixtralExperts.forward). hidden: [tokens, hidden];
    scale(expert, token_idx): [tokens of the expert, width] factors on their neurons;
    tap(expert, token_idx, act(gate) [tokens of the expert, width]) sees the activations."""
    final = torch.zeros_like(hidden)
    with torch.no_grad():
        mask = nn.functional.one_hot(top_k_index, num_classes=experts.num_experts + 1).permute(
            2, 1, 0
        )  # [E+1, k, tokens]
        hit = torch.greater(mask.sum(dim=(-1, -2)), 0).nonzero()  # [experts chosen by some token, 1]
    for expert in hit[:, 0].tolist():
        if expert == experts.num_experts:
            continue
        top_k_pos, token_idx = torch.where(mask[expert])
        gate, up = nn.functional.linear(hidden[token_idx], experts.gate_up_proj[expert]).chunk(2, dim=-1)
        activated = experts.act_fn(gate)  # [tokens of the expert, width]
        if tap is not None:
            tap(expert, token_idx, activated)
        act = activated * up
        if scale is not None:
            act = act * scale(expert, token_idx).to(act.dtype)
        out = nn.functional.linear(act, experts.down_proj[expert]) * top_k_weights[token_idx, top_k_pos, None]
        final.index_add_(0, token_idx, out.to(final.dtype))
    return final


@contextlib.contextmanager
def _replaced_forwards(modules: dict, make):
    """Run modules[layer] with make(layer, module)'s forward while inside the block."""
    try:
        for layer, module in modules.items():
            module.forward = make(layer, module)
        yield
    finally:
        for module in modules.values():
            module.__dict__.pop("forward", None)


def scaled_experts(modules: dict, factors: dict, n_units: int, width: int):
    """heads.scaled_inputs for a layer's experts: factors[layer] ([units] or [rows, units], rows
    the batch rows) scale `n_units` equal slices of the layer's experts' neurons, expert-major."""

    def make(layer, experts):
        def forward(hidden, top_k_index, top_k_weights):
            f = factors[layer].to(device=hidden.device)
            f = f.view(1, n_units) if f.dim() == 1 else f  # [rows, units]
            per_neuron = f.repeat_interleave(width, dim=1).view(f.shape[0], experts.num_experts, -1)  # [rows, E, width]
            row_of = torch.arange(hidden.shape[0], device=hidden.device) // (hidden.shape[0] // f.shape[0])  # [tokens]
            return experts_forward(
                experts,
                hidden,
                top_k_index,
                top_k_weights,
                scale=lambda expert, token_idx: per_neuron[row_of[token_idx], expert],
            )

        return forward

    return _replaced_forwards(modules, make)


def tapped_experts(modules: dict, taps: dict):
    """Call taps[layer](active [tokens, experts x width]: act(gate) > 0, False where the expert
    was not chosen) once per forward of each layer's experts (what LAPE counts)."""

    def make(layer, experts):
        def forward(hidden, top_k_index, top_k_weights):
            seen = torch.zeros(
                hidden.shape[0], experts.num_experts, experts.intermediate_dim, dtype=torch.bool, device=hidden.device
            )

            def tap(expert, token_idx, act):
                seen[token_idx, expert] = act > 0

            out = experts_forward(experts, hidden, top_k_index, top_k_weights, tap=tap)
            taps[layer](seen.view(hidden.shape[0], -1))
            return out

        return forward

    return _replaced_forwards(modules, make)


class _FusedExperts(Adapter):
    """transformers 5 fuses each layer's experts ([experts, 2 x width, hidden], gate rows then up
    rows; down [experts, hidden, width]); llama.cpp reads them as three stacked tensors."""

    mlp_out = "mlp.experts"  # the module over all experts; its units are every expert's neurons
    mlp_act = None  # one activation module serves every expert: LAPE taps experts_forward
    mlp_in = None
    experts = True
    neuron_scaler = staticmethod(scaled_experts)
    activation_tap = staticmethod(tapped_experts)
    width_key = "intermediate_size"  # the config's one expert width

    def mlp_width(self, experts: nn.Module) -> int:
        return experts.num_experts * experts.intermediate_dim

    def expert_width(self, experts: nn.Module) -> int:
        return experts.intermediate_dim

    def neuron_removal(self) -> str:
        return "experts-alike"

    def neuron_parameters(self, layer: nn.Module) -> int:
        experts = get(layer, self.mlp_out)
        return 3 * experts.hidden_dim  # its gate and up rows, its down column (no biases)

    def cut_mlp(self, layer: nn.Module, keep: torch.Tensor) -> None:
        """keep: indices into the experts' neurons side by side; every expert keeps as many."""
        experts = get(layer, self.mlp_out)
        width = experts.intermediate_dim
        expert_of = keep // width  # keep is expert-major
        per_expert = [keep[expert_of == e] - e * width for e in range(experts.num_experts)]
        if len({len(k) for k in per_expert}) != 1:
            raise LangheadsError(
                f"every expert of a layer keeps as many neurons (one [experts, width, hidden] "
                f"tensor); these keep {[len(k) for k in per_expert]}"
            )
        kept = torch.stack(per_expert)  # [experts, kept]
        gate_up = experts.gate_up_proj.data  # [experts, 2 x width, hidden]
        rows = torch.cat([kept, kept + width], dim=1)  # gate rows, then up rows
        experts.gate_up_proj = nn.Parameter(torch.stack([gate_up[e, r] for e, r in enumerate(rows)]))
        experts.down_proj = nn.Parameter(torch.stack([experts.down_proj.data[e][:, k] for e, k in enumerate(kept)]))
        experts.intermediate_dim = kept.shape[1]

    def uniform_mlp_config(self, config, width: int) -> dict | None:
        return {self.width_key: width // self.expert_count(config)}

    def active_share(self, config) -> float | None:
        return config.num_experts_per_tok / self.expert_count(config)

    def expert_count(self, config) -> int:
        return config.num_local_experts

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
    tiny = {"mixtral": Tiny("MixtralConfig", dict(num_local_experts=4, num_experts_per_tok=2, sliding_window=None))}
    model_types = ("mixtral",)
    gguf = GGUFFamily(
        "llama", norm_plus_one=False, permute_qk=True, narrow_q=True
    )  # llama.cpp runs Mixtral as llama + experts

    def gguf_metadata(self, w, config, layout) -> None:
        refuse_sliding_window(config, "Mixtral")
        super().gguf_metadata(w, config, layout)
        w.add_expert_count(config.num_local_experts)
        w.add_expert_used_count(config.num_experts_per_tok)


class Qwen3Moe(_FusedExperts):
    family = "qwen3_moe"
    tiny = {
        "qwen3_moe": Tiny(
            "Qwen3MoeConfig",
            dict(
                num_experts=4,
                num_experts_per_tok=2,
                moe_intermediate_size=32,
                decoder_sparse_step=1,
                mlp_only_layers=[],
            ),
        )
    }
    model_types = ("qwen3_moe",)
    width_key = "moe_intermediate_size"
    gguf = GGUFFamily("qwen3moe", norm_plus_one=False, permute_qk=False, narrow_q=True)

    def expert_count(self, config) -> int:
        return config.num_experts

    def gguf_metadata(self, w, config, layout) -> None:
        if not config.norm_topk_prob or config.mlp_only_layers or config.decoder_sparse_step != 1:
            raise LangheadsError(
                "GGUF export: llama.cpp's qwen3moe graph has experts in every layer and renormalises "
                "the chosen experts' weights (norm_topk_prob); this config differs"
            )
        super().gguf_metadata(w, config, layout)
        w.add_expert_count(config.num_experts)
        w.add_expert_used_count(config.num_experts_per_tok)
        w.add_expert_feed_forward_length(config.moe_intermediate_size)
