"""What a scan removes one unit at a time: attention heads (the default), groups of an MLP's
neurons, or whole blocks. Each is a slice of one module's input, the one place where removing
it is exact:

- a head: its slice of the attention output projection's input (the heads' outputs side by side);
- a neuron group: `group` consecutive intermediate neurons, a slice of the input of the MLP's
  output projection (down_proj, c_proj, dense_4h_to_h, fc2: `archs/` names it per family); in a
  mixture of experts, `group` neurons of one expert, scaled inside the experts' own loop
  (`archs/moe.py`), a layer's groups expert-major;
- a block: a layer's whole attention (all of its output projection's input: every head) or its
  whole MLP (all of the MLP output projection's input: every neuron); unit 0 and 1 of a layer.

A component gives the scan its units as a layout (units per layer, features per unit) and
scales its units where they are exact; the scan, store, intervals and kinds are the same."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

from torch import nn

from . import heads as H
from .archs.base import get
from .errors import LangheadsError
from .units import BLOCKS, COMPONENTS, UnitLayout


@dataclass(frozen=True)
class Component:
    name: str  # head | neuron | block
    layout: UnitLayout  # units per layer and each one's width
    group: int | None = None  # neurons per group (neuron only)
    experts: int | None = None  # experts per layer (a mixture of experts' neurons), groups expert-major

    def target(self, model: nn.Module, layer: int) -> nn.Module:
        """The module whose input holds layer `layer`'s units."""
        if self.name == "head":
            return H.output_projection(model, layer)
        return get(H.decoder_layers(model)[layer], H.adapter_for(model).mlp_out)

    def scaled(self, model: nn.Module, factors: dict):
        """Scale each unit of the given layers (factors[layer]: [units] or [rows, units])."""
        if self.name == "head":
            return H.scaled_heads(model, factors)
        if self.name == "block":
            return _scaled_blocks(model, factors)
        return _neuron_scaler(model)(
            {l: self.target(model, l) for l in factors}, factors, self.layout.n_units, self.group
        )

    def record(self) -> dict:
        """What the run record says of the units (a run's rows are layers x units x languages)."""
        return {
            "name": self.name,
            "units_per_layer": self.layout.n_units,
            "unit_width": self.layout.unit_width,
            **({"neurons_per_group": self.group} if self.name == "neuron" else {}),
            **({"experts": self.experts} if self.experts else {}),
            **({"units": list(BLOCKS)} if self.name == "block" else {}),
        }


def component_for(model: nn.Module, name: str = "head", group: int = 64) -> Component:
    """The model's heads, or its MLP neurons in groups of `group` (refused in one line where a
    family's MLP has no single output projection, or the width does not split into groups)."""
    layout = H.head_layout(model)
    if name == "head":
        return Component("head", UnitLayout("head", layout.n_layers, layout.n_heads, layout.head_dim))
    if name not in COMPONENTS:
        raise LangheadsError(f"unknown --component '{name}'; choose one of {', '.join(COMPONENTS)}")
    adapter = H.adapter_for(model)
    if adapter.mlp_out is None:
        raise LangheadsError(f"--component {name}: {layout.model_type} has no MLP output projection langheads knows")
    if name == "block":  # unit width: the MLP's, for the record (attention's is heads x head size)
        width = adapter.mlp_width(get(H.decoder_layers(model)[0], adapter.mlp_out))
        return Component("block", UnitLayout("block", layout.n_layers, 2, width))
    widths = {adapter.mlp_width(get(layer, adapter.mlp_out)) for layer in H.decoder_layers(model)}
    if len(widths) != 1:
        raise LangheadsError(
            f"--component neuron: the layers' MLPs differ in width ({sorted(widths)}); a neuron scan needs one width"
        )
    proj = get(H.decoder_layers(model)[0], adapter.mlp_out)
    width, per_expert = widths.pop(), adapter.expert_width(proj)
    if per_expert % group:
        each = " of each expert" if adapter.experts else ""
        raise LangheadsError(
            f"--neuron-group {group} does not divide the MLP width{each} {per_expert}; choose a "
            f"divisor (e.g. {_divisor_near(per_expert, group)})"
        )
    units = UnitLayout("neuron", layout.n_layers, width // group, group)
    return Component("neuron", units, group, width // per_expert if adapter.experts else None)


def _neuron_scaler(model: nn.Module):
    """What scales slices of a layer's neurons: the output projection's input, or the family's own."""
    return H.adapter_for(model).neuron_scaler or H.scaled_inputs


def _divisor_near(width: int, group: int) -> int:
    return min((d for d in range(1, width + 1) if width % d == 0), key=lambda d: (abs(d - group), d))


@contextlib.contextmanager
def _scaled_blocks(model: nn.Module, factors: dict):
    """factors[layer]: [2] or [rows, 2], the layer's attention then its MLP, each scaled whole."""
    heads = H.head_layout(model)
    adapter = H.adapter_for(model)
    with contextlib.ExitStack() as stack:
        for layer, f in factors.items():
            attention, mlp = f[..., 0:1], f[..., 1:2]  # [.., 1]: one unit as wide as the whole input
            stack.enter_context(
                H.scaled_inputs(
                    {layer: H.output_projection(model, layer)}, {layer: attention}, 1, heads.n_heads * heads.head_dim
                )
            )
            proj = get(H.decoder_layers(model)[layer], adapter.mlp_out)
            stack.enter_context(_neuron_scaler(model)({layer: proj}, {layer: mlp}, 1, adapter.mlp_width(proj)))
        yield
