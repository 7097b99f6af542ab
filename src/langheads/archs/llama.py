"""Llama and Mistral: the plain llama-like decoder (Llama attention biases are sliced with the heads)."""

from __future__ import annotations

from ..errors import LangheadsError
from .base import Adapter, GGUFFamily, Tiny, refuse_sliding_window


class Llama(Adapter):
    family = "llama"
    tiny = {"llama": Tiny("LlamaConfig", dict(attention_bias=True))}
    model_types = ("llama",)
    gguf = GGUFFamily("llama", norm_plus_one=False, permute_qk=True, deci=True, narrow_q=True, transformers_reads=True)

    def check_config(self, config) -> None:
        super().check_config(config)
        if getattr(config, "pretraining_tp", 1) not in (None, 1):
            raise LangheadsError(
                f"llama: pretraining_tp={config.pretraining_tp} splits the projections; "
                "load the model with pretraining_tp=1"
            )


class Mistral(Adapter):
    family = "mistral"
    tiny = {"mistral": Tiny("MistralConfig", dict(sliding_window=None))}
    model_types = ("mistral",)
    gguf = GGUFFamily(
        "llama", norm_plus_one=False, permute_qk=True, deci=True, narrow_q=True
    )  # llama.cpp runs Mistral as llama

    def gguf_metadata(self, w, config, layout) -> None:
        refuse_sliding_window(config, "Mistral")
        super().gguf_metadata(w, config, layout)
