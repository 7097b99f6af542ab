"""Metrics of an evaluation: one shape for all of them.

A metric is its per-item values before and after (the original model and the edited or
masked one, on the same items); `paired` gives the means and the paired bootstrap interval
of the change, the one bootstrap every evaluation interval comes from. Answer metrics (exact
match, token F1, chrF, language switch) each turn (answer, reference, language) into one
value per item.
"""

from __future__ import annotations

import re
import string
import unicodedata
from collections import Counter
from dataclasses import dataclass

import numpy as np

from ..bootstrap import paired_interval


@dataclass
class Metric:
    name: str
    before: np.ndarray  # per item, the original model
    after: np.ndarray  # per item, the edited (or masked) model
    higher_is_better: bool = True

    def paired(self, seed, n_boot: int = 1000) -> dict:
        (lo, hi), _ = paired_interval(self.before, self.after, seed, n_boot)
        return {
            "metric": self.name,
            "items": len(self.before),
            "before": float(self.before.mean()),
            "after": float(self.after.mean()),
            "change": float(self.after.mean() - self.before.mean()),
            "ci_low": float(lo),
            "ci_high": float(hi),
            "higher_is_better": self.higher_is_better,
        }


def normalize(text: str) -> str:
    """SQuAD-style answer normalisation, for every script: NFKC, lower case, punctuation
    (ASCII and Unicode) removed, English articles removed, spaces collapsed."""
    text = unicodedata.normalize("NFKC", text).lower()
    text = "".join(" " if unicodedata.category(c).startswith("P") or c in string.punctuation else c for c in text)
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def _tokens(text: str) -> list[str]:
    """Words; characters in scripts written without spaces (Chinese, Japanese, Thai)."""
    from ..corpus import NO_SPACES

    text = normalize(text)
    return list(text.replace(" ", "")) if NO_SPACES.search(text) else text.split()


def exact_match(answer: str, reference: str) -> float:
    return float(normalize(answer) == normalize(reference))


def token_f1(answer: str, reference: str) -> float:
    a, r = _tokens(answer), _tokens(reference)
    common = sum((Counter(a) & Counter(r)).values())
    if not a or not r or common == 0:
        return float(a == r)
    precision, recall = common / len(a), common / len(r)
    return 2 * precision * recall / (precision + recall)


def chrf(answer: str, reference: str) -> float:
    from sacrebleu.metrics import CHRF

    return CHRF().sentence_score(answer, [reference]).score / 100


def identify(text: str) -> str:
    """The language py3langid gives a text ("none" for an empty one)."""
    import py3langid

    return py3langid.classify(text)[0] if text.strip() else "none"


def switched(answer: str, lang: str) -> float:
    """1 when a language identifier does not put the answer in `lang` (an empty answer counts
    as switched: the model left the language)."""
    return float(identify(answer) != lang)


ANSWER_METRICS = {"exact_match": (exact_match, True), "token_f1": (token_f1, True), "chrf": (chrf, True)}


def answer_metrics(before: list[str], after: list[str], references: list[str], lang: str) -> list[Metric]:
    """Exact match, token F1, chrF (0-1) and the language switch rate of two models' answers."""
    out = [
        Metric(
            name,
            np.array([f(a, r) for a, r in zip(before, references)]),
            np.array([f(a, r) for a, r in zip(after, references)]),
            better,
        )
        for name, (f, better) in ANSWER_METRICS.items()
    ]
    out.append(
        Metric(
            "language_switch",
            np.array([switched(a, lang) for a in before]),
            np.array([switched(a, lang) for a in after]),
            higher_is_better=False,
        )
    )
    return out
