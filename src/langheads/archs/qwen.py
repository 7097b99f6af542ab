"""Qwen2 (q/k/v biases) and Qwen3 (q/k norms over one head's dimensions, shared by all heads,
so they need no slicing)."""

from __future__ import annotations

from .base import Adapter, GGUFFamily, Tiny


class Qwen2(Adapter):
    family = "qwen2"
    tiny = {"qwen2": Tiny("Qwen2Config")}
    model_types = ("qwen2",)
    # NeoX rotary (halves, as transformers) in llama.cpp's qwen2 graph; uneven shapes go through
    # deci, which loads q/k/v biases (create_tensor_qkv) and rotates pairs (rows permuted there)
    gguf = GGUFFamily("qwen2", norm_plus_one=False, permute_qk=False, deci=True, transformers_reads=True)


class Qwen3(Adapter):
    family = "qwen3"
    tiny = {"qwen3": Tiny("Qwen3Config")}
    model_types = ("qwen3",)
    gguf = GGUFFamily("qwen3", norm_plus_one=False, permute_qk=False, narrow_q=True)
