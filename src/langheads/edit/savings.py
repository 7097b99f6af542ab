"""What removing heads really saves: query slots, KV heads, parameters, FLOPs per token.

A removal saves only what the saved model no longer holds. Under grouped-query attention a
pruned layer keeps one group size (surgery.layer_plan pads uneven groups with zero-output
heads), so removing one query head from a group of several saves nothing until every group
of the layer has lost one (the layer's width drops by one) or a whole group goes (its KV head
with it). The pruning walk ranks its candidate moves by harm per parameter saved with these
counts; the summary, the manifest and the report state what the saved model really lost,
counted on its weights.
"""
from __future__ import annotations

from dataclasses import dataclass

from .. import heads as H
from ..archs.base import get
from .surgery import layer_plan


def parameters(model) -> int:
    """Every parameter the model holds (what a saved folder's weights count)."""
    return sum(p.numel() for p in model.parameters())


def active_parameters(model) -> int:
    """Parameters one token runs through: all of them, but for a mixture of experts' experts
    the chosen share (archs' active_share)."""
    adapter, total = H.adapter_for(model), parameters(model)
    share = adapter.active_share(H.text_config(model))
    if share is None:
        return total
    experts = sum(parameters(get(layer, adapter.mlp_out)) for layer in H.decoder_layers(model))
    return total - round(experts * (1 - share))


def describe_body(record: dict) -> str:
    """One line: what a walk across components removed and what that saved, counted on the
    saved weights (2 FLOP per token per parameter of a projection)."""
    units = record["removed_units"]
    count = {name: sum(1 for u in units if u[0] == name) for name in ("head", "neuron", "block")}
    g = record["neurons_per_group"]
    blocks = " ".join(f"L{l}{'A' if b == 0 else 'M'}" for n, l, b in units if n == "block")
    parts = [f"{count['head']} heads"] * bool(count["head"]) + \
        [f"{count['neuron']} neuron groups ({count['neuron'] * g} MLP neurons)"] * bool(count["neuron"]) + \
        [f"{count['block']} blocks ({blocks}; A: a layer's attention, M: its MLP)"] * bool(count["block"])
    saved = record["saved"]
    cut = saved["parameters_before"] - saved["parameters_after"]
    flops = saved.get("flops_per_token", 2 * cut)  # a mixture of experts runs a token through its chosen experts
    return (f"removed {', '.join(parts) or 'nothing'}\n{cut:,} parameters saved "
            f"({cut / saved['parameters_before']:.2%} of {saved['parameters_before']:,}); {flops:,} FLOP per "
            "token fewer in the projections")


@dataclass(frozen=True)
class HeadCosts:
    """Parameters of one query slot (its rows of q, its columns of o) and of one KV head (its
    rows of k and v), from the model's shape; biases are left out of this estimate."""
    per_query: int
    per_kv: int

    @classmethod
    def of(cls, model) -> "HeadCosts":
        cfg = H.text_config(model)
        hidden = getattr(cfg, "hidden_size", None) or cfg.n_embd
        head_dim = H.head_layout(model).head_dim
        return cls(2 * hidden * head_dim, 2 * hidden * head_dim)


def by_layer(removed) -> dict[int, set[int]]:
    out: dict[int, set[int]] = {}
    for layer, head in removed:
        out.setdefault(int(layer), set()).add(int(head))
    return out


def slots_saved(layout: H.HeadLayout, removed) -> tuple[int, int]:
    """(query slots, KV heads) the saved model no longer holds, padding counted."""
    q = kv = 0
    for heads in by_layer(removed).values():
        kv_kept, slots = layer_plan(layout, heads)
        q += layout.n_heads - len(slots)
        kv += layout.n_kv_heads - len(kv_kept)
    return q, kv


def parameters_saved(layout: H.HeadLayout, costs: HeadCosts, removed) -> int:
    q, kv = slots_saved(layout, removed)
    return q * costs.per_query + kv * costs.per_kv


def measured(before: int, after: int, layout: H.HeadLayout, removed, context: int = 1024) -> dict:
    """What the saved model lost, counted on its weights: parameters, the projections' FLOPs
    per token (2 per parameter), and the attention's own FLOPs per token at `context` tokens
    (4 x context x head size per query slot: scores and the weighted sum)."""
    q, kv = slots_saved(layout, removed)
    heads = len({(int(l), int(h)) for l, h in removed})
    return {"heads_removed": heads, "query_slots_saved": q, "kv_heads_saved": kv,
            "padding_heads": sum(len(layer_plan(layout, hs)[1]) - (layout.n_heads - len(hs))
                                 for hs in by_layer(removed).values()),
            "parameters_before": before, "parameters_after": after, "parameters_saved": before - after,
            "share_saved": (before - after) / before if before else 0.0,
            "projection_flops_per_token_saved": 2 * (before - after),
            "attention_flops_per_token_saved": 4 * context * layout.head_dim * q, "context": context}


def describe(saved: dict) -> str:
    """One line: what was removed and what that saved."""
    line = (f"{saved['heads_removed']} heads removed: {saved['query_slots_saved']} query slots and "
            f"{saved['kv_heads_saved']} KV heads fewer, {saved['parameters_saved']:,} parameters saved "
            f"({saved['share_saved']:.2%} of {saved['parameters_before']:,}), "
            f"{_flop(saved['projection_flops_per_token_saved'])} per token in the projections and "
            f"{_flop(saved['attention_flops_per_token_saved'])} per token in attention at "
            f"{saved['context']:,} tokens of context")
    if saved["padding_heads"]:
        line += (f"; {saved['padding_heads']} zero-output padding heads keep uneven KV groups even and save "
                 "nothing")
    return line


def _flop(n: float) -> str:
    for unit, size in (("GFLOP", 1e9), ("MFLOP", 1e6), ("kFLOP", 1e3)):
        if n >= size:
            return f"{n / size:,.1f} {unit}"
    return f"{n:,.0f} FLOP"
