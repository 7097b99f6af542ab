"""Head access for every supported architecture (each family's details live in `archs/`), and
how to scale one head at a time.

Every supported decoder concatenates its heads' outputs ([..., heads * head_dim]) and feeds
them to one output projection (`o_proj`, or `c_proj` for GPT-2). Scaling a head's slice of
that projection's *input* is the only place where "remove head h" is exact: after the
projection the heads are mixed. A hook there changes no weight and is removed cleanly.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from .archs import HeadLayout, adapter_for, text_config
from .archs.base import get

__all__ = ["HeadLayout", "adapter_for", "text_config"]  # re-exported: callers read layouts and configs through here


def head_layout(model: nn.Module) -> HeadLayout:
    return adapter_for(model).layout(text_config(model))


def parameters(model: nn.Module) -> int:
    """Every parameter the model holds (what a saved folder's weights count): the one count
    that `info`, the scan's cost model and a pruning's savings use."""
    return sum(p.numel() for p in model.parameters())


def position_limit(model: nn.Module) -> int | None:
    """The most tokens one text may have in this model (None: no hard limit)."""
    return adapter_for(model).position_limit(text_config(model))


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    return get(model, adapter_for(model).layers)


def decoder_body(model: nn.Module) -> nn.Module:
    """The decoder stack without the output layer (returns hidden states)."""
    return get(model, adapter_for(model).body)


def final_norm(model: nn.Module) -> nn.Module:
    return get(model, adapter_for(model).final_norm)


def output_projection(model: nn.Module, layer: int) -> nn.Module:
    """The module whose input is the concatenation of layer `layer`'s head outputs."""
    adapter = adapter_for(model)
    return getattr(adapter.attention_of(decoder_layers(model)[layer]), adapter.out_proj)


def logits_from_hidden(model: nn.Module, hidden: torch.Tensor) -> torch.Tensor:
    """Final-normed hidden states -> logits, with each architecture's post-processing."""
    return postprocess_logits(model, model.lm_head(hidden))


def postprocess_logits(model: nn.Module, logits: torch.Tensor) -> torch.Tensor:
    """What each architecture does to the output layer's result (elementwise)."""
    return adapter_for(model).postprocess_logits(model, logits)


def compile_outside_attention(model: nn.Module) -> None:
    """torch.compile every part of each decoder layer except attention (MLP, norms) and the
    final norm, in place: fuses their elementwise work on GPUs. Attention stays eager, so head
    hooks on the output projection keep working without recompiling."""
    import torch._dynamo

    torch._dynamo.config.cache_size_limit = max(
        torch._dynamo.config.cache_size_limit, 64 + 4 * len(decoder_layers(model))
    )
    attn = adapter_for(model).attention
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
    with scaled_inputs(
        {layer: output_projection(model, layer) for layer in factors}, factors, layout.n_heads, layout.head_dim
    ):
        yield


@contextlib.contextmanager
def scaled_inputs(modules: dict[int, nn.Module], factors: dict[int, torch.Tensor], n_units: int, width: int):
    """Multiply each of `n_units` slices (`width` features each) of `modules[layer]`'s input by
    `factors[layer]` ([n_units], or [batch, n_units]: one row per batch row) while inside the
    block: heads at the attention output projection, neuron groups at the MLP's (components.py)."""

    def make_hook(factor: torch.Tensor):
        def hook(module, args):
            x = args[0]
            shape = x.shape
            f = factor.to(dtype=x.dtype, device=x.device)
            if f.dim() == 1:
                f = f.view(n_units, 1)
            else:  # one row of factors per batch row; broadcast over sequence positions
                f = f.view(f.shape[0], *([1] * (x.dim() - 2)), n_units, 1)
            scaled = (x.view(*shape[:-1], n_units, width) * f).view(shape)  # [..., units, width] scaled
            return (scaled, *args[1:])

        return hook

    handles = []
    try:
        for layer, factor in factors.items():
            handles.append(modules[layer].register_forward_pre_hook(make_hook(factor)))
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
