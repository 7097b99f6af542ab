"""What a scan scores and a pruning removes, named one way everywhere.

A unit is (component, layer, index): an attention head ("head", 3, 2), a group of MLP neurons
("neuron", 3, 2: the group's index), or a whole block ("block", 3, 0 | 1: the layer's attention
| its MLP). A run's component record (components.Component.record: units per layer, neurons
per group, experts) says how an index maps to neurons. `name` is what summaries, scores.csv's
`unit` column, the report, the savings lines and the manifests call a unit: L3H2, L3N128-191
(L3E1N0-15 for one of expert 1's groups), L3 attention, L3 MLP.
"""

from __future__ import annotations

from dataclasses import dataclass

COMPONENTS = ("head", "neuron", "block")
BLOCKS = ("attention", "mlp")  # a block's index in its layer
NOUNS = {"head": "heads", "neuron": "neuron groups", "block": "blocks"}
SINGULAR = {"head": "head", "neuron": "neuron group", "block": "block"}
HEAD = {"name": "head"}  # the component record of a head scan (runs before components wrote none)


@dataclass(frozen=True)
class UnitLayout:
    """What a scan scores in each layer: n_units units of unit_width features each (query heads
    of head size, neuron groups of so many neurons, or the layer's 2 blocks). The model's own
    heads, KV groups included, are heads.head_layout's (archs.HeadLayout)."""

    component: str  # head | neuron | block
    n_layers: int
    n_units: int  # units per layer
    unit_width: int  # features per unit: head size, neurons per group, a block's width

    @property
    def n_total(self) -> int:
        return self.n_layers * self.n_units


def name(component: dict, layer: int, index: int) -> str:
    """L3H2 (a head), L3N128-191 (a neuron group), L3E1N0-15 (one of expert 1's), L3 attention
    or L3 MLP (a block)."""
    if component["name"] == "neuron":
        expert, first, last = group_span(component, index)
        return f"L{layer}{'' if expert is None else f'E{expert}'}N{first}-{last}"
    if component["name"] == "block":
        return f"L{layer} {('attention', 'MLP')[index]}"
    return f"L{layer}H{index}"


def group_span(component: dict, index: int) -> tuple[int | None, int, int]:
    """(expert or None, first, last neuron in it) of a neuron group; a mixture of experts'
    groups are expert-major."""
    g, experts = component["neurons_per_group"], component.get("experts")
    if not experts:
        return None, index * g, index * g + g - 1
    expert, group = divmod(index, component["units_per_layer"] // experts)
    return expert, group * g, group * g + g - 1


def neurons_of(component: dict, index: int) -> str:
    """A neuron group's neurons, first-last (128-191), or its expert and its neurons in the
    expert (E1:0-15)."""
    expert, first, last = group_span(component, index)
    return f"{first}-{last}" if expert is None else f"E{expert}:{first}-{last}"


def of_pruning(unit, group: int | None) -> str:
    """The name of a unit a pruning removed ((component, layer, index); neuron groups of `group`)."""
    kind, layer, index = unit
    return name({"name": kind, "neurons_per_group": group}, layer, index)


def pruned_units(record: dict) -> list[tuple[str, int, int]]:
    """The units a pruning removed, in the order chosen; records written before the one walk
    listed a head walk's heads as removed_heads."""
    if "removed_units" in record:
        return [tuple(u) for u in record["removed_units"]]
    return [("head", *x) for x in record["removed_heads"]]


def count_phrase(units: list, group: int | None) -> str:
    """'3 heads, 2 neuron groups (128 MLP neurons), 1 block (L3 MLP)', or 'nothing'."""
    count = {kind: sum(1 for u in units if u[0] == kind) for kind in COMPONENTS}
    blocks = ", ".join(of_pruning(u, group) for u in units if u[0] == "block")
    parts = (
        [f"{count['head']} head{'s' * (count['head'] != 1)}"] * bool(count["head"])
        + [
            f"{count['neuron']} neuron group{'s' * (count['neuron'] != 1)} ({count['neuron'] * (group or 0)} MLP "
            "neurons)"
        ]
        * bool(count["neuron"])
        + [f"{count['block']} block{'s' * (count['block'] != 1)} ({blocks})"] * bool(count["block"])
    )
    return ", ".join(parts) or "nothing"
