"""Qwen2 (q/k/v biases) and Qwen3 (q/k norms over one head's dimensions, shared by all heads,
so they need no slicing)."""
from __future__ import annotations

from .base import Adapter


class Qwen2(Adapter):
    family = "qwen2"
    model_types = ("qwen2",)


class Qwen3(Adapter):
    family = "qwen3"
    model_types = ("qwen3",)
