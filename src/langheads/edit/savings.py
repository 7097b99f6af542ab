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
from ..heads import parameters
from .surgery import layer_plan


def active_parameters(model) -> int:
    """Parameters one token runs through: all of them, but for a mixture of experts' experts
    the chosen share (archs' active_share)."""
    adapter, total = H.adapter_for(model), parameters(model)
    share = adapter.active_share(H.text_config(model))
    if share is None:
        return total
    experts = sum(parameters(get(layer, adapter.mlp_out)) for layer in H.decoder_layers(model))
    return total - round(experts * (1 - share))


@dataclass(frozen=True)
class HeadCosts:
    """Parameters of one query slot (its rows of q, its columns of o) and of one KV head (its
    rows of k and v), from the model's shape; biases are left out of this estimate."""

    per_query: int
    per_kv: int

    @classmethod
    def of(cls, model) -> HeadCosts:
        cfg = H.text_config(model)
        hidden = getattr(cfg, "hidden_size", None) or cfg.n_embd
        head_dim = H.head_layout(model).head_dim
        return cls(2 * hidden * head_dim, 2 * hidden * head_dim)


def by_layer_lists(heads) -> dict[int, list[int]]:
    """Heads as {layer: [heads]}, from that form or from [(layer, head)]."""
    if isinstance(heads, dict):
        return {int(l): list(hs) for l, hs in heads.items()}
    return {l: sorted(hs) for l, hs in by_layer(heads).items()}


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


@dataclass(frozen=True)
class Counted:
    """What a model held before a removal, and the heads (original numbering) the removal takes,
    whole attention blocks and dropped layers included: what `saved` compares the result with."""

    parameters: int
    active: int
    layout: H.HeadLayout
    heads: tuple

    @classmethod
    def of(cls, model, removal: tuple[dict, dict, dict]) -> Counted:
        """removal: (heads, neurons, blocks) by layer, as edit.blocks removes them."""
        from .blocks import body_plan

        layout = H.head_layout(model)
        gone, heads, _ = body_plan(model, *removal)
        pairs = [(l, h) for l, hs in heads.items() for h in hs] + [(l, h) for l in gone for h in range(layout.n_heads)]
        return cls(parameters(model), active_parameters(model), layout, tuple(sorted(pairs)))

    def saved(self, model, context: int = 1024) -> dict:
        """What the model lost, counted on its weights: parameters, the projections' FLOPs per
        token (2 per parameter a token runs through), and the attention's own FLOPs per token at
        `context` tokens (4 x context x head size per query slot: scores and the weighted sum)."""
        after = parameters(model)
        q, kv = slots_saved(self.layout, self.heads)
        return {
            "heads_removed": len(self.heads),
            "query_slots_saved": q,
            "kv_heads_saved": kv,
            "padding_heads": sum(
                len(layer_plan(self.layout, hs)[1]) - (self.layout.n_heads - len(hs))
                for hs in by_layer(self.heads).values()
            ),
            "parameters_before": self.parameters,
            "parameters_after": after,
            "parameters_saved": self.parameters - after,
            "share_saved": (self.parameters - after) / self.parameters if self.parameters else 0.0,
            "projection_flops_per_token_saved": 2 * (self.active - active_parameters(model)),
            "attention_flops_per_token_saved": 4 * context * self.layout.head_dim * q,
            "context": context,
        }


def describe(record: dict) -> str:
    """Two lines: what a pruning removed (units.py names), and what that saved, counted on the
    saved weights (also for records written before the one walk: heads only, or a body walk's)."""
    from ..units import count_phrase, pruned_units

    units = pruned_units(record)
    saved = record["saved"]
    cut = saved["parameters_before"] - saved["parameters_after"]
    flops = saved.get("projection_flops_per_token_saved", saved.get("flops_per_token", 2 * cut))
    line = (
        f"{cut:,} parameters saved ({cut / saved['parameters_before']:.2%} of {saved['parameters_before']:,}); "
        f"{_flop(flops)} per token fewer in the projections"
    )
    if saved.get("query_slots_saved"):
        line += (
            f"; {saved['query_slots_saved']} query slots and {saved['kv_heads_saved']} KV heads fewer, "
            f"{_flop(saved['attention_flops_per_token_saved'])} per token in attention at "
            f"{saved['context']:,} tokens of context"
        )
    if saved.get("padding_heads"):
        line += f"; {saved['padding_heads']} zero-output padding heads keep uneven KV groups even and save nothing"
    return f"removed {count_phrase(units, record.get('neurons_per_group'))}\n{line}"


def _flop(n: float) -> str:
    for unit, size in (("GFLOP", 1e9), ("MFLOP", 1e6), ("kFLOP", 1e3)):
        if n >= size:
            return f"{n / size:,.1f} {unit}"
    return f"{n:,.0f} FLOP"
