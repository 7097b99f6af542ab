"""Exact ablation: the NLL increase when one head alone is removed, reusing lower layers.

The unmodified model runs once per batch and keeps what enters each layer (nll.trace).
Removing a head in layer l changes nothing below l, so each removal recomputes layers l..L
and the loss only. Several removals share one forward: the batch is repeated once per head
and each copy carries its own head mask. A unit is one layer; consecutive units of the same
batch share its trace.
"""

from __future__ import annotations

import torch

from .. import nll
from .base import ScoringMethod, UnitScores


class ExactAblation(ScoringMethod):
    name = "exact"
    value_meaning = "increase of the text's mean token NLL (nats) when the head alone is removed"
    layers_per_unit = 1
    needs_backward = False

    def __init__(
        self,
        chunk_tokens: int = 1024,
        batch_tokens: int = 4096,
        component=None,
        reuse: bool = True,
        layers: list[int] | None = None,
    ):
        """`reuse=False` recomputes every layer for every head (the benchmark's baseline);
        `layers` scores only those layers (the others' values stay 0)."""
        super().__init__(chunk_tokens, batch_tokens, component)
        self.reuse = reuse
        self.layers = layers
        self._traced = None  # (batch, trace, base NLL per row) of the last batch seen

    def copies_per_forward(self, layout):
        return layout.n_units  # one copy of the batch per head of a layer

    def layer_ranges(self, layout):
        return [range(l, l + 1) for l in (self.layers or range(layout.n_layers))]

    def unit_flops(self, layout, batch, layers, body, head):
        L = layout.n_layers
        return sum(2 * batch.n_tokens * layout.n_units * (body * (L - l) / L + head) for l in layers)

    def _trace(self, model, batch):
        if self._traced is None or self._traced[0] is not batch:
            self._traced = None  # free the last batch's trace first
            tr = nll.trace(model, batch)
            base = nll.nll_from_hidden(
                model, tr.final_hidden, batch.input_ids, batch.lengths, self.chunk_tokens, starts=batch.starts
            )
            self._traced = (batch, tr, base.double().cpu().numpy())
        return self._traced[1], self._traced[2]

    def score_unit(self, model, layout, batch, layers, heads=None):
        """`heads`: score only these heads of the layers (an adaptive scan's open pairs); the
        others' values are NaN."""
        return self.score_units(
            model, layout, batch, [(layers, list(range(layout.n_units)) if heads is None else heads)]
        )[0]

    @torch.no_grad()
    def score_units(self, model, layout, batch, wanted):
        """Several units of one batch, each (layers, heads), their copies' loss computed together
        once at least `chunk_tokens` positions wait: an adaptive round's late units hold a few
        open heads per layer, and an output layer of a few dozen rows runs at about half the rate
        of one of a thousand (the loss is most of the work). A full scan's unit (every head of a
        layer) fills a loss pass by itself. Values row by row as each unit alone."""
        tr, base_rows = self._trace(model, batch)
        rows = batch.input_ids.shape[0]
        values = [
            torch.full((len(layers), layout.n_units, rows), float("nan"), dtype=torch.float64) for layers, _ in wanted
        ]
        waiting, where = [], []  # last-layer outputs [copies * rows, T, d]; (unit, layer index, heads) of each

        def flush():
            hidden = torch.cat(waiting)  # [all copies * rows, T, d]
            copies = hidden.shape[0] // rows
            nlls = nll.copies_nll(model, batch, hidden, copies, self.chunk_tokens).double().cpu().view(copies, rows)
            first = 0
            for u, i, chosen in where:
                values[u][i, chosen] = nlls[first : first + len(chosen)]
                first += len(chosen)
            waiting.clear(), where.clear()

        positions = int((batch.lengths - 1).sum())  # predicted positions per copy of the batch
        device = next(model.parameters()).device
        for u, (layers, heads) in enumerate(wanted):
            for i, layer in enumerate(layers):
                for chosen in self._forwards(sorted(heads), batch):
                    factors = self._factors(chosen, rows, layout, device)
                    waiting.append(
                        nll.resume_hidden(
                            model,
                            tr,
                            layer if self.reuse else 0,
                            {layer: factors},
                            copies=len(chosen),
                            scaled=self.scaled,
                        )
                    )
                    where.append((u, i, chosen))
                    if sum(len(c) for _, _, c in where) * positions >= self.chunk_tokens:
                        flush()
        if waiting:
            flush()
        return [
            UnitScores(base_rows, v.numpy() - base_rows, None if len(heads) == layout.n_units else sorted(heads))
            for v, (_, heads) in zip(values, wanted)
        ]

    def _forwards(self, heads: list[int], batch) -> list[list[int]]:
        """The heads in groups of as many copies as one forward of `batch_tokens` holds."""
        per_forward = max(1, min(len(heads), self.batch_tokens // batch.n_tokens))
        return [heads[first : first + per_forward] for first in range(0, len(heads), per_forward)]

    @staticmethod
    def _factors(chosen: list[int], rows: int, layout, device) -> torch.Tensor:
        """[copies * rows, heads]: copy k removes head chosen[k] alone."""
        factors = torch.ones(len(chosen), rows, layout.n_units, device=device)  # [copies, rows, heads]
        for k, head in enumerate(chosen):
            factors[k, :, head] = 0.0
        return factors.view(-1, layout.n_units)
