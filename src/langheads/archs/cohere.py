"""Cohere (Command R, Aya 23): logits scaled by logit_scale; with use_qk_norm (Command R+) the
q/k norms have one row of weights per head, which go with their heads. Cohere 2 (Command R7B,
Aya Expanse's generation): the same with sliding-window layers."""

from __future__ import annotations

from ..errors import LangheadsError
from .base import Adapter, GGUFFamily, Tiny


class Cohere(Adapter):
    family = "cohere"
    tiny = {"cohere": Tiny("CohereConfig", dict(logit_scale=0.5))}
    model_types = ("cohere",)
    # Command R's tokenizer splits digits one by one, then as GPT-2: llama.cpp calls that "command-r"
    gguf = GGUFFamily("command-r", norm_plus_one=False, permute_qk=False, pre_names=(("smollm", "command-r"),))

    def postprocess_logits(self, model, logits):
        return logits * model.logit_scale

    def gguf_metadata(self, w, config, layout) -> None:
        super().gguf_metadata(w, config, layout)
        w.add_logit_scale(config.logit_scale)


class CohereQKNorm(Cohere):
    family = "cohere (use_qk_norm)"
    tiny = {"cohere_qknorm": Tiny("CohereConfig", dict(logit_scale=0.5, use_qk_norm=True))}
    per_head_norms = ("q_norm", "k_norm")
    gguf_note = "64 layers or more only (llama.cpp reads Command R+'s q/k norms from 64 layers on)"

    def gguf_metadata(self, w, config, layout) -> None:
        if config.num_hidden_layers < 64:  # src/models/command-r.cpp: `if (n_layer >= 64)`
            raise LangheadsError(
                "GGUF export: llama.cpp's command-r graph reads q/k norms only in models of 64 "
                f"layers or more (Command R+), and this one has {config.num_hidden_layers}"
            )
        super().gguf_metadata(w, config, layout)


class Cohere2(Cohere):
    family = "cohere2"
    tiny = {
        "cohere2": Tiny(
            "Cohere2Config",
            dict(
                logit_scale=0.5,
                sliding_window=8,
                layer_types=["sliding_attention", "sliding_attention", "full_attention"],
            ),
        )
    }
    model_types = ("cohere2",)
    gguf = GGUFFamily("cohere2", norm_plus_one=False, permute_qk=False, pre_names=(("smollm", "command-r"),))

    def gguf_metadata(self, w, config, layout) -> None:
        super().gguf_metadata(w, config, layout)
        w.add_sliding_window(config.sliding_window)
        w.add_sliding_window_pattern([t == "sliding_attention" for t in config.layer_types])
