"""Where each architecture's per-head outputs live, and how to scale one head at a time.

Every supported decoder concatenates its heads' outputs ([..., heads * head_dim]) and feeds
them to one output projection (`o_proj`, or `c_proj` for GPT-2). Scaling a head's slice of
that projection's *input* is the only place where "remove head h" is exact: after the
projection the heads are mixed. A hook there changes no weight and is removed cleanly.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from torch import nn

from .errors import LangheadsError

# model_type -> (path to the decoder stack, path to the final norm, attention attr, projection attr)
_LLAMA_LIKE = ("model.layers", "model.norm", "self_attn", "o_proj")
ARCHITECTURES: dict[str, tuple[str, str, str, str]] = {
    "llama": _LLAMA_LIKE,
    "mistral": _LLAMA_LIKE,
    "qwen2": _LLAMA_LIKE,
    "qwen3": _LLAMA_LIKE,
    "gemma": _LLAMA_LIKE,
    "gemma2": _LLAMA_LIKE,
    "gemma3": _LLAMA_LIKE,
    "gemma3_text": _LLAMA_LIKE,
    "cohere": _LLAMA_LIKE,
    "gpt2": ("transformer.h", "transformer.ln_f", "attn", "c_proj"),
}


def _get(obj, dotted: str):
    for name in dotted.split("."):
        obj = getattr(obj, name)
    return obj


@dataclass(frozen=True)
class HeadLayout:
    """Head counts read from the config; query head h reads KV head h // group_size."""

    model_type: str
    n_layers: int
    n_heads: int
    n_kv_heads: int
    head_dim: int

    @property
    def group_size(self) -> int:
        return self.n_heads // self.n_kv_heads

    @property
    def n_total(self) -> int:
        return self.n_layers * self.n_heads


def text_config(model: nn.Module):
    config = model.config
    return config.get_text_config() if hasattr(config, "get_text_config") else config


def head_layout(model: nn.Module) -> HeadLayout:
    config = text_config(model)
    model_type = config.model_type
    if model_type not in ARCHITECTURES:
        raise LangheadsError(
            f"unsupported architecture '{model_type}'; supported: {', '.join(sorted(ARCHITECTURES))}"
        )
    if model_type == "gpt2":
        n_heads = config.n_head
        return HeadLayout(model_type, config.n_layer, n_heads, n_heads, config.n_embd // n_heads)
    n_heads = config.num_attention_heads
    n_kv = getattr(config, "num_key_value_heads", None) or n_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // n_heads
    return HeadLayout(model_type, config.num_hidden_layers, n_heads, n_kv, head_dim)


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    return _get(model, ARCHITECTURES[text_config(model).model_type][0])


def final_norm(model: nn.Module) -> nn.Module:
    return _get(model, ARCHITECTURES[text_config(model).model_type][1])


def output_projection(model: nn.Module, layer: int) -> nn.Module:
    """The module whose input is the concatenation of layer `layer`'s head outputs."""
    _, _, attn, proj = ARCHITECTURES[text_config(model).model_type]
    return getattr(getattr(decoder_layers(model)[layer], attn), proj)


def logits_from_hidden(model: nn.Module, hidden: torch.Tensor) -> torch.Tensor:
    """Final-normed hidden states -> logits, with each architecture's post-processing."""
    return postprocess_logits(model, model.lm_head(hidden))


def postprocess_logits(model: nn.Module, logits: torch.Tensor) -> torch.Tensor:
    """What each architecture does to the output layer's result (elementwise)."""
    config = text_config(model)
    softcap = getattr(config, "final_logit_softcapping", None)
    if softcap is not None:
        logits = torch.tanh(logits / softcap) * softcap
    if config.model_type == "cohere":
        logits = logits * model.logit_scale
    return logits


def compile_outside_attention(model: nn.Module) -> None:
    """torch.compile every part of each decoder layer except attention (MLP, norms) and the
    final norm, in place: fuses their elementwise work on GPUs. Attention stays eager, so head
    hooks on the output projection keep working without recompiling."""
    import torch._dynamo

    torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 64 + 4 * len(decoder_layers(model)))
    attn = ARCHITECTURES[text_config(model).model_type][2]
    for layer in decoder_layers(model):
        for name, child in layer.named_children():
            if name != attn:
                child.compile()
    final_norm(model).compile()


@contextlib.contextmanager
def scaled_heads(model: nn.Module, factors: dict[int, torch.Tensor]):
    """Multiply each head's slice of the projection input by a factor while inside the block.

    `factors[layer]` has shape [n_heads] (the same for every row) or [batch, n_heads] (one
    mask per row of the batch, so several head removals run in one forward). 0 removes a
    head, 1 leaves it bit-for-bit unchanged. The hooks are removed on exit, even on error.
    """
    layout = head_layout(model)
    handles = []

    def make_hook(factor: torch.Tensor):
        def hook(module, args):
            x = args[0]
            shape = x.shape
            f = factor.to(dtype=x.dtype, device=x.device)
            if f.dim() == 1:
                f = f.view(layout.n_heads, 1)
            else:  # one row of factors per batch row; broadcast over sequence positions
                f = f.view(f.shape[0], *([1] * (x.dim() - 2)), layout.n_heads, 1)
            scaled = (x.view(*shape[:-1], layout.n_heads, layout.head_dim) * f).view(shape)
            return (scaled, *args[1:])

        return hook

    try:
        for layer, factor in factors.items():
            handles.append(output_projection(model, layer).register_forward_pre_hook(make_hook(factor)))
        yield
    finally:
        for handle in handles:
            handle.remove()


def masked_heads(model: nn.Module, heads: list[tuple[int, int]]):
    """Remove the given (layer, head) pairs for every row while inside the block."""
    layout = head_layout(model)
    factors: dict[int, torch.Tensor] = {}
    for layer, head in heads:
        factors.setdefault(layer, torch.ones(layout.n_heads))[head] = 0.0
    return scaled_heads(model, factors)
