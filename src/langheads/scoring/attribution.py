"""First-order attribution: one forward and one backward pass per batch.

Every head gets a gate of 1.0 per text (heads.scaled_heads with one row of factors per
text). Removing a head sets its gate to 0, so to first order the text's NLL changes by
-dNLL/dgate. Rows are independent, so one backward of the summed per-text NLLs gives every
text's own gradient. Weights are frozen: only the gates get gradients. One backward gives
every layer, so a unit is a whole batch.
"""

from __future__ import annotations

import torch

from .. import heads as H
from .. import nll
from .base import ScoringMethod, UnitScores


def gate_gradients(model, layout, batch, chunk_tokens, scaled=None):
    """(per-row NLL [rows], dNLL_row/dgate [rows, n_layers, n_heads]) at gates = 1; `scaled`:
    another component's gates (its `Component.scaled`; default: heads)."""
    device = next(model.parameters()).device
    rows = batch.input_ids.shape[0]
    gates = torch.ones(layout.n_layers, rows, layout.n_units, device=device, requires_grad=True)
    was = [p.requires_grad for p in model.parameters()]
    for p in model.parameters():
        p.requires_grad_(False)
    try:
        with torch.enable_grad(), (scaled or H.scaled_heads)(model, {l: gates[l] for l in range(layout.n_layers)}):
            hidden = nll.trace(model, batch).final_hidden
            per_row = nll.nll_from_hidden(
                model, hidden, batch.input_ids, batch.lengths, chunk_tokens, starts=batch.starts
            )
            (grad,) = torch.autograd.grad(per_row.sum(), gates)
    finally:
        for p, w in zip(model.parameters(), was):
            p.requires_grad_(w)
    return per_row.detach(), grad.permute(1, 0, 2)


class GradientAttribution(ScoringMethod):
    name = "attribution"
    value_meaning = "first-order estimate of the text's NLL increase when the head is removed: -dNLL/dgate at gate 1"
    sign = -1.0  # values are sign * dNLL/dgate

    def score_unit(self, model, layout, batch, layers):
        per_row, grad = gate_gradients(model, layout, batch, self.chunk_tokens, self.scaled)
        values = self.sign * grad.double().cpu().numpy().transpose(1, 2, 0)  # [layers, heads, rows]
        return UnitScores(per_row.double().cpu().numpy(), values[layers.start : layers.stop])
