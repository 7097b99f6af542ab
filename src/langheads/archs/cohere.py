"""Cohere (Command R, Aya 23): logits scaled by logit_scale; with use_qk_norm (Command R+) the
q/k norms have one row of weights per head, which go with their heads. Cohere 2 (Command R7B,
Aya Expanse's generation): the same with sliding-window layers."""
from __future__ import annotations

from .base import Adapter


class Cohere(Adapter):
    family = "cohere"
    model_types = ("cohere",)

    def postprocess_logits(self, model, logits):
        return logits * model.logit_scale


class CohereQKNorm(Cohere):
    family = "cohere (use_qk_norm)"
    per_head_norms = ("q_norm", "k_norm")


class Cohere2(Cohere):
    family = "cohere2"
    model_types = ("cohere2",)
