"""Mixtures of experts whose attention is llama-like: Mixtral, Qwen3-MoE (q/k norms over one
head's dimensions, shared by all heads). Heads are cut as in any llama-like layer; the experts
are untouched (routing sees the changed hidden states, as the masked model does)."""
from __future__ import annotations

from .base import Adapter


class Mixtral(Adapter):
    family = "mixtral"
    model_types = ("mixtral",)


class Qwen3Moe(Adapter):
    family = "qwen3_moe"
    model_types = ("qwen3_moe",)
