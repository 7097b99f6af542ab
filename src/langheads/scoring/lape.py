"""LAPE (Tang et al. 2024, arXiv 2402.16438): language activation probability. A neuron's
activation probability for a language is the share of that language's tokens on which its
activation (the MLP's activation function applied to its pre-activation: act(gate) in gated
MLPs) is above zero; neurons whose probabilities concentrate on few languages (low entropy over
languages) are language-specific. Forward only: one pass per batch gives every layer.

Per text and neuron group, the value is the share of (token, neuron) pairs of the group that
are active on the text's tokens; a group's score is its mean over texts, the language's
activation probability of the group (in a mixture of experts, a neuron of an expert the
router did not choose for a token is inactive on it). The values are shares, so they are not divided by the
base NLL (rel_increase = score), and the interval rule's kinds read "active on more than the
threshold's share of tokens", not LAPE's entropy rule: use a lape run to rank groups
(`langheads compare` against an exact run), not for its kinds.
"""

from __future__ import annotations

import contextlib

import torch

from .. import heads as H
from .. import nll
from ..archs.base import get
from .base import ScoringMethod, UnitScores


class Lape(ScoringMethod):
    name = "lape"
    value_meaning = "share of the group's neuron activations above zero over the text's tokens (LAPE)"
    needs_backward = False
    relative = False
    components = ("neuron",)

    @torch.no_grad()
    def score_unit(self, model, layout, batch, layers):
        group = layout.unit_width
        counts = {}
        valid = (torch.arange(batch.input_ids.shape[1])[None, :] < batch.lengths[:, None]).to(
            next(model.parameters()).device
        )  # [rows, T] real tokens

        def keep(layer):
            def count(out):
                active = (out > 0) & valid[..., None]  # [rows, T, width]
                per_group = active.view(*active.shape[:2], -1, group).sum(dim=(1, 3))  # [rows, groups]
                counts[layer] = per_group.double() / (valid.sum(dim=1, keepdim=True) * group)

            return count

        with _watched(model, {i: keep(i) for i in layers}, valid.shape):
            hidden = nll.trace(model, batch).final_hidden
        base = nll.nll_from_hidden(
            model, hidden, batch.input_ids, batch.lengths, self.chunk_tokens, starts=batch.starts
        )
        values = torch.stack([counts[l] for l in layers]).permute(0, 2, 1)  # [layers, groups, rows]
        return UnitScores(base.double().cpu().numpy(), values.cpu().numpy())


@contextlib.contextmanager
def _watched(model, counts: dict, shape: tuple):
    """Call counts[layer](activations [rows, T, width]) on each listed layer's forward: a hook
    on the family's activation module, or its own tap (a mixture of experts' loop, which gives
    act > 0 as booleans: all that is counted)."""
    adapter = H.adapter_for(model)
    layers = {i: layer for i, layer in enumerate(H.decoder_layers(model)) if i in counts}
    if adapter.activation_tap is not None:
        taps = {i: lambda act, count=counts[i]: count(act.view(*shape, -1)) for i in layers}
        with adapter.activation_tap({i: get(layer, adapter.mlp_out) for i, layer in layers.items()}, taps):
            yield
        return
    handles = [
        get(layer, adapter.mlp_act).register_forward_hook(lambda m, a, out, count=counts[i]: count(out))
        for i, layer in layers.items()
    ]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
