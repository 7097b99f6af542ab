"""Gemma 1-3: logit soft-capping (Gemma 2), sliding and full layers, q/k norms over one head's
dimensions (Gemma 3, shared by all heads, so they need no slicing), RMSNorm as x * (1 + w)."""
from __future__ import annotations

from ..errors import LangheadsError
from .base import Adapter, GGUFFamily


class Gemma(Adapter):
    family = "gemma"
    model_types = ("gemma", "gemma2")

    def postprocess_logits(self, model, logits):
        softcap = getattr(model.config.get_text_config(), "final_logit_softcapping", None)
        if softcap is not None:
            logits = logits.div(softcap).tanh().mul(softcap)
        return logits


class Gemma3(Gemma):
    family = "gemma3"
    model_types = ("gemma3", "gemma3_text")
    gguf = GGUFFamily("gemma3", norm_plus_one=True, permute_qk=False)

    def check_config(self, config) -> None:
        super().check_config(config)
        if getattr(config, "use_bidirectional_attention", False):
            raise LangheadsError("gemma3: use_bidirectional_attention=True is an embedding model, not a causal LM")
