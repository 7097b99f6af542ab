"""Language switch: does the model leave the prompt's language when one head alone is removed?

LIHA (arXiv 2606.22361) zeroes one head at a time and counts how often the output leaves
the prompt's language. Here each prompt is the first `prompt_tokens` tokens of a selection
text; the model continues it greedily for `new_tokens` tokens, once unmodified and once per
removed head (all heads of a layer in one batched generation, each copy with its own mask),
and a language identifier (py3langid) judges each continuation. A text's value for a head is
switched-with-the-head-removed minus switched-unmodified (-1, 0 or 1), so the score is the
increase of the switch rate, and the base is the unmodified switch rate.
"""

from __future__ import annotations

import numpy as np
import torch

from .. import heads as H
from ..generate import greedy
from .base import ScoringMethod, UnitScores


class LanguageSwitch(ScoringMethod):
    name = "switch"
    components = ("head",)  # generations per head; neuron groups would multiply them by the groups per head
    value_meaning = (
        "1 if the greedy continuation of the text's first tokens leaves its language when the head alone "
        "is removed, minus the same for the unmodified model"
    )
    layers_per_unit = 1
    needs_backward = False
    relative = False  # scores are differences of shares already
    part = "selection"
    prompt_tokens = 16
    new_tokens = 16

    def __init__(self, chunk_tokens: int = 1024, batch_tokens: int = 4096, component=None):
        super().__init__(chunk_tokens, batch_tokens, component)
        self.tokenizer = None
        self._base = None  # (batch, unmodified switched per row)

    def prepare(self, loaded):
        self.tokenizer = loaded.tokenizer

    def copies_per_forward(self, layout):
        return layout.n_units

    def unit_flops(self, layout, batch, layers, body, head):
        rows = batch.input_ids.shape[0] * layout.n_units
        tokens = rows * (self.prompt_tokens + self.new_tokens)
        return 2 * tokens * (body + head) * len(layers)

    def _generate(self, model, prompts: torch.Tensor, factors: dict | None = None) -> list[str]:
        with H.scaled_heads(model, factors or {}):
            return greedy(model, self.tokenizer, prompts, self.new_tokens)

    def _switched(self, texts: list[str], lang: str) -> np.ndarray:
        from ..evaluation.metrics import switched

        return np.array([switched(t, lang) for t in texts])

    def _prompts(self, model, batch) -> torch.Tensor:
        width = int(min(self.prompt_tokens, batch.lengths.min()))
        return batch.input_ids[:, :width].to(next(model.parameters()).device)

    @torch.no_grad()
    def score_unit(self, model, layout, batch, layers):
        if self.tokenizer is None:
            raise RuntimeError("LanguageSwitch.prepare(loaded) was not called")
        prompts = self._prompts(model, batch)
        if self._base is None or self._base[0] is not batch:
            self._base = (batch, self._switched(self._generate(model, prompts), batch.lang))
        base = self._base[1]
        rows = prompts.shape[0]
        values = np.zeros((len(layers), layout.n_units, rows))
        device = prompts.device
        for i, layer in enumerate(layers):
            factors = torch.ones(layout.n_units, rows, layout.n_units, device=device)
            for head in range(layout.n_units):
                factors[head, :, head] = 0.0
            texts = self._generate(model, prompts.repeat(layout.n_units, 1), {layer: factors.view(-1, layout.n_units)})
            values[i] = self._switched(texts, batch.lang).reshape(layout.n_units, rows) - base
        return UnitScores(base.astype(float), values)
