"""Every setting of a scan (the CLI's `scan` options are generated from ScanSettings' fields),
checked once in __post_init__ for the library and the CLI alike, and the two checks made before
a model loads: the device, and a model whose layers differ in shape."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from ..builtin import MODEL_HELP
from ..errors import LangheadsError
from ..models import DTYPES, Placement
from ..options import check_choices, option
from ..scoring import METHODS, ScoringMethod
from ..units import COMPONENTS
from .kinds import RULES
from .sequential import StoppingRule


def refuse_uneven(spec: str) -> None:
    """A model folder whose layers differ in shape (uneven heads or MLP widths, a layer without
    attention) is refused in one line before it loads: the scan reads one layout from the config."""
    from ..manifest import read_manifest

    manifest = read_manifest(spec) if Path(spec).is_dir() else None
    if manifest is not None and manifest.needs_replay():
        raise LangheadsError(
            f"{spec}: its layers keep different numbers of heads or MLP neurons, and a scan reads one "
            "layout for every layer; scan the model it was pruned from (its manifest names it), or "
            "a pruning made with --uniform"
        )


@dataclass
class ScanSettings:
    """Every setting of a scan; the CLI's `scan` options are generated from these fields."""

    model: str = option("default", help=MODEL_HELP)
    languages: list[str] = option(
        factory=lambda: ["en", "hi", "fr", "de", "es", "zh", "ar", "ru"], help="comma-separated ISO 639-1 codes"
    )
    method: str = option(
        "exact",
        choices=lambda: tuple(METHODS),
        help="switch: language switch rate of greedy continuations, prompts from the selection texts; "
        "lape: neurons' activation probability, forward only",
    )
    component: str = option(
        "head",
        choices=COMPONENTS,
        help="attention heads, groups of --neuron-group MLP neurons (each group removed as a whole), or "
        "blocks (each layer's whole attention and whole MLP)",
    )
    neuron_group: int = option(64, help="with --component neuron: neurons per group")
    data: str | None = option(
        None,
        help="a folder of <lang>.txt files, a JSONL file (texts, or lang/context/question/"
        "answer items), a SQuAD-format .json, or cloze (default: bundled UDHR; with --signal "
        "answer, cloze)",
    )
    data_lang: str | None = option(None, help="the language of a SQuAD-format file whose name does not say it")
    signal: str = option(
        "text",
        choices=("text", "answer"),
        help="NLL of running text, or NLL of the reference answer given the prompt (the paper's protocol)",
    )
    chat_template: str = option(
        "auto", help="with --signal answer: auto (the model's own, else plain) | none (plain) | a Jinja file"
    )
    texts: int | None = option(None, help="at most this many scoring texts (or items) per language")
    max_tokens: int | None = option(None, help="cut each text to this many tokens")
    seed: int = option(0, help="seeds every bootstrap")
    bootstrap: int = option(1000, help="bootstrap resamples per interval")
    rule: str = option("interval", choices=lambda: tuple(RULES), help="interval is ours")
    threshold: float = option(0.01, help="relative NLL increase that matters (0.01 = 1%%)")
    fdr: float = 0.05  # with rule fdr: the false discovery rate (the CLI's --fdr Q sets both)
    agnostic_share: float = option(0.75, help="share of the languages a head must matter for to be agnostic")
    lahis_quantile: float = option(0.96, help="rule lahis: a language's top set is above this quantile")
    lahis_min_languages: int = option(4, help="rule lahis: top sets a head needs to be language-general")
    batch_tokens: int = option(4096, help="padded positions per forward (bounds memory)")
    chunk_tokens: int = option(1024, help="positions per chunk of full-vocabulary logits")
    device: str = option("cpu", help="cpu | cuda | auto")
    dtype: str = option("float32", choices=lambda: tuple(DTYPES), help="")
    device_map: str | None = option(None, help="auto: spread one model over several GPUs (accelerate)")
    load_in: str | None = option(None, help="4bit | 8bit: quantise with bitsandbytes (pip install 'langheads[quant]')")
    compile: bool = option(False, help="torch.compile MLPs, norms and the loss (worth it on GPUs)")
    adaptive: bool = option(
        False,
        help="exact only: score texts in rounds and stop each head-language pair once "
        "its call is settled (a sequential test; docs/scan.md)",
    )
    first_look: int = option(2, help="with --adaptive: texts scored before the first look")
    early_alpha: float = option(
        0.005,
        help="with --adaptive: what early 'matters' calls may add to the chance of a false 'matters', over all looks",
    )
    futility: float = option(
        0.05,
        help="with --adaptive: stop a pair as 'does not matter' when its chance of "
        "'matters' after the last text is below this",
    )

    def __post_init__(self):
        """Refuse bad values here, once, for the library and the CLI alike."""
        from .. import checks

        checks.languages(self, "languages")
        check_choices(self)
        checks.count(self, "neuron_group")
        if self.component not in METHODS[self.method].components:
            raise LangheadsError(
                f"--method {self.method} scores {' and '.join(METHODS[self.method].components)}s "
                f"only, not --component {self.component}"
            )
        checks.count(self, "texts", minimum=2, optional=True)  # an interval needs at least 2 texts
        checks.count(self, "max_tokens", minimum=2, optional=True)  # BOS and one token to predict
        checks.count(self, "seed", minimum=0)
        checks.count(self, "bootstrap")
        checks.count(self, "lahis_min_languages")
        checks.count(self, "batch_tokens")
        checks.count(self, "chunk_tokens")
        checks.number(self, "threshold", 0.0)
        checks.number(self, "fdr", 0.0, 1.0, low_open=True, high_open=True)
        checks.number(self, "agnostic_share", 0.0, 1.0, low_open=True)
        checks.number(self, "lahis_quantile", 0.0, 1.0, low_open=True, high_open=True)
        checks.count(self, "first_look", minimum=2)  # a t-test needs two texts
        checks.number(self, "early_alpha", 0.0, 1.0, low_open=True, high_open=True)
        checks.number(self, "futility", 0.0, 1.0, high_open=True)
        if self.adaptive and self.method != "exact":
            raise LangheadsError(
                f"--adaptive stops exact ablations early; --method {self.method} scores every head "
                "in one pass per batch, so there is nothing to stop"
            )
        if self.adaptive and self.rule != "interval":
            raise LangheadsError(
                f"--adaptive calls pairs by the interval rule; --rule {self.rule} needs every pair "
                "scored on every text: scan without --adaptive"
            )
        resolve_device(self.device)  # refuses an unknown device, or CUDA without one
        Placement(device_map=self.device_map, load_in=self.load_in).check()

    def make_rule(self):
        if self.rule not in RULES:
            raise LangheadsError(f"unknown rule '{self.rule}'; choose one of {', '.join(RULES)}")
        return RULES[self.rule].from_settings(self)

    def stopping(self, n_texts: int) -> StoppingRule:
        """The adaptive scan's stopping rule for a language with n_texts scoring texts."""
        return StoppingRule(self.threshold, n_texts, self.first_look, 1, self.early_alpha, self.futility)

    def make_method(self, component=None) -> ScoringMethod:
        """The scoring method, scoring `component`'s units (components.Component; None: heads)."""
        if self.method not in METHODS:
            raise LangheadsError(f"unknown method '{self.method}'; choose one of {', '.join(METHODS)}")
        unit = None if component is None or component.name == "head" else component
        return METHODS[self.method](chunk_tokens=self.chunk_tokens, batch_tokens=self.batch_tokens, component=unit)


def resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device not in {"cpu", "cuda"} and not device.startswith("cuda:"):
        raise LangheadsError(f"unknown device '{device}'; choose cpu, cuda or auto")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise LangheadsError("--device cuda asked for, but torch sees no CUDA device")
    return device
