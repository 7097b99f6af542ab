"""One adapter per architecture family (see base.py for what an adapter says), and the registry.

Adding a family: a file here with an Adapter subclass (its tiny test model in `tiny`) and its
line in FAMILIES; the test matrix (synthetic.ARCHS) then covers it.
"""

from __future__ import annotations

import re

from ..errors import LangheadsError
from .base import Adapter, GGUFFamily, HeadLayout, NoAttention
from .bloom import Bloom
from .cohere import Cohere, Cohere2, CohereQKNorm
from .falcon import Falcon
from .gemma import Gemma, Gemma2, Gemma3
from .gpt2 import GPT2
from .llama import Llama, Mistral
from .llama_like import Apertus, Granite, SmolLM3, StableLm
from .moe import Mixtral, Qwen3Moe
from .olmo import Olmo2
from .phi3 import Phi3
from .qwen import Qwen2, Qwen3
from .xglm import XGLM

FAMILIES: list[Adapter] = [
    Llama(),
    Mistral(),
    Mixtral(),
    Qwen2(),
    Qwen3(),
    Qwen3Moe(),
    Gemma(),
    Gemma2(),
    Gemma3(),
    Cohere(),
    Cohere2(),
    Phi3(),
    Olmo2(),
    Apertus(),
    SmolLM3(),
    Granite(),
    StableLm(),
    XGLM(),
    Bloom(),
    Falcon(),
    GPT2(),
]
REGISTRY: dict[str, Adapter] = {t: a for a in FAMILIES for t in a.model_types}
# Adapters a config option selects within a family (adapter_for picks them).
_COHERE_QK = CohereQKNorm()
VARIANTS: list[Adapter] = [_COHERE_QK]


def layer_index_pattern() -> re.Pattern:
    """Matches a weight name's layer index under any family's decoder layers (model.layers.3.,
    transformer.h.3.): what models.check_weights counts a checkpoint's layers by."""
    names = sorted({a.layers.rsplit(".", 1)[-1] for a in FAMILIES + VARIANTS})
    return re.compile(r"\.(?:" + "|".join(map(re.escape, names)) + r")\.(\d+)\.")


def text_config(model_or_config):
    config = getattr(model_or_config, "config", model_or_config)
    return config.get_text_config() if hasattr(config, "get_text_config") else config


def adapter_for(model_or_config) -> Adapter:
    """The family's adapter, after it has checked the config; one line naming what is wrong
    otherwise. Resolved once per model: the answer is kept on the model object, so head helpers
    called many times in a pruning walk do not check the config again."""
    known = getattr(model_or_config, "__dict__", {}).get("_langheads_adapter")
    if known is not None:
        return known
    adapter = _resolve(text_config(model_or_config))
    if hasattr(model_or_config, "config"):  # a model (a config may still change): remember its family
        model_or_config.__dict__["_langheads_adapter"] = adapter
    return adapter


def _resolve(config) -> Adapter:
    adapter = REGISTRY.get(config.model_type)
    if adapter is None:
        raise LangheadsError(
            f"unsupported architecture '{config.model_type}'; supported: {', '.join(sorted(REGISTRY))}"
        )
    if config.model_type == "cohere" and getattr(config, "use_qk_norm", False):
        adapter = _COHERE_QK
    adapter.check_config(config)
    return adapter


__all__ = [
    "Adapter",
    "FAMILIES",
    "VARIANTS",
    "GGUFFamily",
    "HeadLayout",
    "NoAttention",
    "REGISTRY",
    "adapter_for",
    "text_config",
]
