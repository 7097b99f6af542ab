"""Exact ablation: the NLL increase when one head alone is removed, reusing lower layers.

The unmodified model runs once per batch and keeps what enters each layer (nll.trace).
Removing a head in layer l changes nothing below l, so each removal recomputes layers l..L
and the loss only. Several removals share one forward: the batch is repeated once per head
and each copy carries its own head mask.
"""
from __future__ import annotations

import numpy as np
import torch

from .. import nll
from .base import LanguageScores, ScoringMethod


class ExactAblation(ScoringMethod):
    name = "exact"
    value_meaning = "increase of the text's mean token NLL (nats) when the head alone is removed"

    def __init__(self, chunk_tokens: int = 1024, batch_tokens: int = 4096, reuse: bool = True,
                 layers: list[int] | None = None):
        """`reuse=False` recomputes every layer for every head (the benchmark's baseline);
        `layers` scores only those layers (the others' values stay 0)."""
        super().__init__(chunk_tokens, batch_tokens)
        self.reuse = reuse
        self.layers = layers

    def work_units(self, layout, batches):
        return len(batches) * len(self.layers or range(layout.n_layers))

    @torch.no_grad()
    def score_language(self, model, layout, batches, n_texts, advance):
        base = np.zeros(n_texts)
        values = np.zeros((layout.n_layers, layout.n_heads, n_texts))
        device = next(model.parameters()).device
        for batch in batches:
            tr = nll.trace(model, batch)
            base_rows = nll.nll_from_hidden(model, tr.final_hidden, batch.input_ids, batch.lengths,
                                            self.chunk_tokens).double().cpu().numpy()
            base[batch.index] = base_rows
            rows = batch.input_ids.shape[0]
            per_forward = max(1, min(layout.n_heads, self.batch_tokens // batch.n_tokens))
            for layer in self.layers or range(layout.n_layers):
                for first in range(0, layout.n_heads, per_forward):
                    chosen = list(range(first, min(first + per_forward, layout.n_heads)))
                    factors = torch.ones(len(chosen), rows, layout.n_heads, device=device)
                    for k, head in enumerate(chosen):
                        factors[k, :, head] = 0.0
                    out = nll.resume(model, tr, layer if self.reuse else 0, {layer: factors.view(-1, layout.n_heads)},
                                     copies=len(chosen), chunk_tokens=self.chunk_tokens)
                    out = out.double().cpu().numpy().reshape(len(chosen), rows)
                    values[layer, chosen[0] : chosen[-1] + 1][:, batch.index] = out - base_rows
                advance(1)
        return LanguageScores(base, values)
