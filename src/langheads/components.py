"""What a scan removes one unit at a time: attention heads (the default) or groups of an MLP's
neurons. Each is a slice of one module's input, the one place where removing it is exact:

- a head: its slice of the attention output projection's input (the heads' outputs side by side);
- a neuron group: `group` consecutive intermediate neurons, a slice of the input of the MLP's
  output projection (down_proj, c_proj, dense_4h_to_h, fc2: `archs/` names it per family).

A component gives the scan its units as a layout (units per layer, features per unit) and
scales its units where they are exact; the scan, store, intervals and kinds are the same."""
from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from . import heads as H
from .archs.base import get
from .errors import LangheadsError

COMPONENTS = ("head", "neuron")


@dataclass(frozen=True)
class Component:
    name: str            # head | neuron
    layout: H.HeadLayout  # for neurons: n_heads = groups per layer, head_dim = neurons per group
    group: int | None = None  # neurons per group (neuron only)

    def target(self, model: nn.Module, layer: int) -> nn.Module:
        """The module whose input holds layer `layer`'s units."""
        if self.name == "head":
            return H.output_projection(model, layer)
        return get(H.decoder_layers(model)[layer], H.adapter_for(model).mlp_out)

    def scaled(self, model: nn.Module, factors: dict):
        """Scale each unit of the given layers (factors[layer]: [units] or [rows, units])."""
        if self.name == "head":
            return H.scaled_heads(model, factors)
        return H.scaled_inputs({l: self.target(model, l) for l in factors}, factors, self.layout.n_heads, self.group)

    def record(self) -> dict:
        """What heads.json says of the units (a run's rows are layers x units x languages)."""
        return {"name": self.name, "units_per_layer": self.layout.n_heads, "unit_width": self.layout.head_dim,
                **({"neurons_per_group": self.group} if self.name == "neuron" else {})}


def component_for(model: nn.Module, name: str = "head", group: int = 64) -> Component:
    """The model's heads, or its MLP neurons in groups of `group` (refused in one line where a
    family's MLP has no single output projection, or the width does not split into groups)."""
    layout = H.head_layout(model)
    if name == "head":
        return Component("head", layout)
    if name != "neuron":
        raise LangheadsError(f"unknown --component '{name}'; choose one of {', '.join(COMPONENTS)}")
    adapter = H.adapter_for(model)
    if adapter.mlp_out is None:
        raise LangheadsError(f"--component neuron: {layout.model_type} {adapter.mlp_note}")
    widths = {adapter.mlp_width(get(layer, adapter.mlp_out)) for layer in H.decoder_layers(model)}
    if len(widths) != 1:
        raise LangheadsError(f"--component neuron: the layers' MLPs differ in width ({sorted(widths)}); "
                             "a neuron scan needs one width")
    width = widths.pop()
    if width % group:
        raise LangheadsError(f"--neuron-group {group} does not divide the MLP width {width}; choose a divisor "
                             f"(e.g. {_divisor_near(width, group)})")
    units = H.HeadLayout(layout.model_type, layout.n_layers, width // group, width // group, group)
    return Component("neuron", units, group)


def _divisor_near(width: int, group: int) -> int:
    return min((d for d in range(1, width + 1) if width % d == 0), key=lambda d: (abs(d - group), d))

