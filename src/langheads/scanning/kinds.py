"""Sorting heads into kinds, with the rule written down once so outputs can quote it.

Our rule (the paper's four kinds, generalised to N languages): a head *matters* for a
language when the lower end of the 95% bootstrap interval of its relative NLL increase is
above `threshold`. Then, with n = the number of languages it matters for:
  language-specific  n == 1
  language-group     1 < n < ceil(agnostic_share * N)   (the languages are recorded)
  language-agnostic  n >= ceil(agnostic_share * N)
  miscellaneous      n == 0

`--fdr Q` replaces "the interval's lower end is above the threshold" by a test over all
head-language pairs at once: each pair's bootstrap p-value for "the relative increase exceeds
the threshold", and Benjamini-Hochberg at false discovery rate Q over every pair of the run.
The kinds follow from "matters" as above.

LAHIS's rule (arXiv 2511.07498) is offered beside it: a head is in a language's top set
when its score is above that language's `quantile` over all heads; language-general when
it is in the top set of at least `min_languages` languages; language-specific (to each of
its languages) when in 1 to min_languages-1 top sets; other when in none.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

KINDS = ("language-specific", "language-group", "language-agnostic", "miscellaneous")
LAHIS_KINDS = ("language-specific", "language-general", "other")


@dataclass(frozen=True)
class IntervalRule:
    threshold: float = 0.01
    agnostic_share: float = 0.75
    level: float = 0.95

    @classmethod
    def from_settings(cls, s) -> IntervalRule:
        """The rule a scan's settings (settings.ScanSettings) ask for."""
        return cls(s.threshold, s.agnostic_share)

    def describe(self, n_languages: int, n_heads: int, unit: str = "head") -> dict:
        """The rule in words, for `unit`s (head, neuron group, block) of n_languages languages."""
        n_intervals = n_languages * n_heads
        one_sided = (1 - self.level) / 2
        return {
            "name": "interval",
            "text": (
                f"a {unit} matters for a language when the lower end of the {self.level:.0%} bootstrap interval "
                f"of its relative NLL increase is above {self.threshold:.2%}; language-specific: matters for "
                f"exactly 1 language; language-group: for 2 up to fewer than {self.agnostic_min(n_languages)}; "
                f"language-agnostic: for at least {self.agnostic_min(n_languages)} "
                f"({self.agnostic_share:.0%} of {n_languages}); miscellaneous: for none"
            ),
            "threshold": self.threshold,
            "agnostic_share": self.agnostic_share,
            "level": self.level,
            "n_intervals": n_intervals,
            "false_matters_bound": (
                f"each interval's lower end exceeds a true increase at or below the threshold with probability "
                f"at most {one_sided:.3f}, so at most {one_sided * n_intervals:.1f} of the {n_intervals} "
                f"{unit}-language pairs are expected to be called 'matters' falsely (fewer where true effects sit "
                f"below the threshold); no multiple-comparison correction is applied"
            ),
        }

    def agnostic_min(self, n_languages: int) -> int:
        return max(1, math.ceil(self.agnostic_share * n_languages - 1e-9))

    def kind_of(self, n: int, n_languages: int) -> str:
        """The kind of a head that matters for n of n_languages languages."""
        if n == 0:
            return "miscellaneous"
        if n == 1:
            return "language-specific"
        return "language-agnostic" if n >= self.agnostic_min(n_languages) else "language-group"

    def matters(self, scores: pd.DataFrame) -> pd.Series:
        """Per row of scores: does this head matter for this language? An adaptive scan's
        early calls (column stopped: matters | below | futile) stand, only "matters"
        counting; pairs it scored on every text (stopped: last) get the interval."""
        called = scores["rel_ci_low"] > self.threshold
        if "stopped" in scores:
            called = called.where(scores["stopped"] == "last", scores["stopped"] == "matters")
        return called

    def classify(self, scores: pd.DataFrame, languages: list[str]) -> list[dict]:
        """One entry per head: layer, head, kind, the languages it matters for."""
        out = []
        scores = scores.assign(_matters=self.matters(scores))
        for (layer, head), rows in scores.groupby(["layer", "head"], sort=True):
            yes = dict(zip(rows["language"], rows["_matters"]))
            matters = [lang for lang in languages if yes[lang]]
            out.append(
                {
                    "layer": int(layer),
                    "head": int(head),
                    "kind": self.kind_of(len(matters), len(languages)),
                    "languages": matters,
                }
            )
        return out


def benjamini_hochberg(p: np.ndarray, q: float) -> np.ndarray:
    """Which hypotheses the Benjamini-Hochberg step-up procedure rejects at false discovery rate
    q: those whose BH-adjusted p-value (scipy's) is at most q."""
    from scipy.stats import false_discovery_control

    p = np.asarray(p, dtype=float)
    return false_discovery_control(p, method="bh") <= q if len(p) else np.zeros(0, dtype=bool)


@dataclass(frozen=True)
class FdrRule(IntervalRule):
    """The interval rule's kinds, with "matters" decided by Benjamini-Hochberg over every
    head-language pair's bootstrap p-value (column p_value of scores)."""

    q: float = 0.05
    n_boot: int = 1000

    @classmethod
    def from_settings(cls, s) -> FdrRule:
        return cls(s.threshold, s.agnostic_share, q=s.fdr, n_boot=s.bootstrap)

    def matters(self, scores: pd.DataFrame) -> pd.Series:
        return pd.Series(benjamini_hochberg(scores["p_value"].to_numpy(), self.q), index=scores.index)

    def describe(self, n_languages: int, n_heads: int, unit: str = "head") -> dict:
        out = super().describe(n_languages, n_heads, unit)
        n = out["n_intervals"]
        out.update(
            {
                "name": "fdr",
                "q": self.q,
                "text": out["text"].replace(
                    f"the lower end of the {self.level:.0%} bootstrap interval of its relative NLL increase is above "
                    f"{self.threshold:.2%}",
                    f"Benjamini-Hochberg at false discovery rate {self.q:g}, over all {n} {unit}-language pairs, "
                    f"rejects 'relative NLL increase <= {self.threshold:.2%}' (bootstrap p-values)",
                ),
                "false_matters_bound": (
                    f"among the pairs called 'matters', the expected share of false ones is at most {self.q:g} "
                    f"(Benjamini-Hochberg over {n} pairs); bootstrap p-values are no smaller than 1/{self.n_boot + 1}, "
                    f"so with --bootstrap {self.n_boot} a pair needs rank k with k/{n} x {self.q:g} >= "
                    f"{1 / (self.n_boot + 1):.1e} to be called"
                ),
            }
        )
        out.pop("level", None)
        return out


@dataclass(frozen=True)
class LahisRule:
    quantile: float = 0.96
    min_languages: int = 4

    @classmethod
    def from_settings(cls, s) -> LahisRule:
        return cls(s.lahis_quantile, s.lahis_min_languages)

    def describe(self, n_languages: int, n_heads: int, unit: str = "head") -> dict:
        return {
            "name": "lahis",
            "text": (
                f"a {unit} is in a language's top set when its score is above that language's {self.quantile} quantile "
                f"over all {n_heads} {unit}s; language-general: in the top set of at least {self.min_languages} "
                f"languages; language-specific: in 1 to {self.min_languages - 1}; other: in none"
            ),
            "quantile": self.quantile,
            "min_languages": self.min_languages,
        }

    def classify(self, scores: pd.DataFrame, languages: list[str]) -> list[dict]:
        cut = scores.groupby("language")["score"].quantile(self.quantile)
        out = []
        for (layer, head), rows in scores.groupby(["layer", "head"], sort=True):
            score = dict(zip(rows["language"], rows["score"]))
            top = [lang for lang in languages if score[lang] > cut[lang]]
            kind = "other" if not top else "language-general" if len(top) >= self.min_languages else "language-specific"
            out.append({"layer": int(layer), "head": int(head), "kind": kind, "languages": top})
        return out


RULES = {"interval": IntervalRule, "fdr": FdrRule, "lahis": LahisRule}
