"""From per-text values to a run's scores: the one bootstrap every interval of a scan comes
from, the kinds of its units by the settings' rule, the per-text table, and (adaptive) what
the stopping rule cost."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..corpus import language_key
from ..scoring import ScoringMethod
from ..units import SINGULAR
from .loops import OpenPairs
from .plan import LanguageWork, Plan
from .sequential import CALLS

# scores.csv's columns every run has (p_value since format 2; adaptive runs add stopped)
SCORE_COLUMNS = ["layer", "head", "language", "score", "ci_low", "ci_high", "rel_increase", "rel_ci_low",
                 "rel_ci_high", "base_nll", "n_texts"]  # fmt: skip


def bootstrap_scores(
    method: ScoringMethod,
    lang: str,
    base: np.ndarray,
    values: np.ndarray,
    seed: int,
    n_boot: int,
    level: float = 0.95,
    threshold: float = 0.01,
) -> pd.DataFrame:
    """Score, relative score and percentile intervals per head, resampling texts, and the
    bootstrap p-value of "the relative increase exceeds `threshold`": (1 + resamples at or
    below it) / (1 + n_boot). The one bootstrap every interval of a scan comes from.

    Each head's resamples come from a generator seeded with (seed, layer, head, language),
    so a head's interval is the same whatever else is scanned and in whatever order.
    """
    from ..bootstrap import interval, resamples

    n_layers, n_heads, _ = values.shape
    rows = []
    for layer in range(n_layers):
        for head in range(n_heads):
            # an adaptive scan stops some pairs early: each rests on its first n texts (NaN after)
            n = int(np.isfinite(values[layer, head]).sum())
            own, own_base = values[layer, head][:n], base[:n]
            base_mean = own_base.mean()
            idx = resamples(n, n_boot, [seed, layer, head, language_key(lang)])
            stat = method.aggregate(own[idx])
            # a method whose values are already shares (switch) is not divided by its base
            rel = stat / own_base[idx].mean(axis=1) if method.relative else stat
            score = float(method.aggregate(own))
            (lo, hi), (rlo, rhi) = interval(stat, level), interval(rel, level)
            p = (1 + np.count_nonzero(rel <= threshold)) / (1 + n_boot)
            rel_score = score / base_mean if method.relative else score
            rows.append((layer, head, lang, score, lo, hi, rel_score, rlo, rhi, base_mean, n, p))
    return pd.DataFrame(
        rows,
        columns=[*SCORE_COLUMNS, "p_value"],
    )


@dataclass
class ScanResult:
    scores: pd.DataFrame
    per_text: pd.DataFrame
    heads: list[dict]
    rule: dict
    plan: Plan


def assemble(plan: Plan, raw: dict[str, dict], pairs: dict[str, OpenPairs] | None = None) -> ScanResult:
    """Every language's per-text values ({"base": [n], "values": [L, U, n]}) as a run's scores:
    bootstrap intervals per unit, kinds by the settings' rule, the per-text table; `pairs`: an
    adaptive scan's stopped pairs (how each was called, and what the stopping rule cost)."""
    s = plan.settings
    rule = s.make_rule()
    frames, per_text = [], []
    for w in plan.work:
        base, values = raw[w.lang]["base"], raw[w.lang]["values"]
        frame = bootstrap_scores(plan.method, w.lang, base, values, s.seed, s.bootstrap, threshold=s.threshold)
        if pairs is not None:  # how each pair was called: early looks, or the interval rule after the last text
            frame["stopped"] = pairs[w.lang].stopped().reshape(-1)
        frames.append(frame)
        per_text.append(_per_text(w, base, values))
    scores = pd.concat(frames, ignore_index=True).sort_values(["layer", "head"], kind="stable", ignore_index=True)
    heads = rule.classify(scores, s.languages)
    described = rule.describe(len(s.languages), plan.layout.n_total, SINGULAR[plan.layout.component])
    if pairs is not None:
        described["adaptive"] = adaptive_record(plan, pairs)
    return ScanResult(scores, pd.concat(per_text, ignore_index=True), heads, described, plan)


def _per_text(w: LanguageWork, base: np.ndarray, values: np.ndarray) -> pd.DataFrame:
    """One row per scored (text, head) and per text's unmodified NLL (layer = head = -1)."""
    L, Hn, n = values.shape
    frame = pd.DataFrame(
        {
            "language": w.lang,
            "text_id": np.tile(w.text_ids, L * Hn + 1),
            "layer": np.concatenate([[-1] * n, np.repeat(np.arange(L), Hn * n)]),
            "head": np.concatenate([[-1] * n, np.tile(np.repeat(np.arange(Hn), n), L)]),
            "n_tokens": np.tile([len(t) for t in w.token_lists], L * Hn + 1),
            "value": np.concatenate([base, values.reshape(-1)]),
        }
    )
    scored = np.isfinite(frame["value"].to_numpy())
    return frame if scored.all() else frame[scored].reset_index(drop=True)


def adaptive_record(plan: Plan, pairs: dict[str, OpenPairs]) -> dict:
    """The stopping rule, its guarantee, and what it cost: pair-texts scored of all."""
    longest = max(plan.work, key=lambda w: len(w.text_ids))
    scored = int(sum(p.stopped_at.sum() for p in pairs.values()))
    full = int(sum(p.values.size for p in pairs.values()))
    stopped = np.concatenate([p.stopped().reshape(-1) for p in pairs.values()])
    return {
        **plan.settings.stopping(len(longest.text_ids)).describe(),
        "pair_texts_scored": scored,
        "pair_texts_full": full,
        "share": scored / full,
        "stopped": {k: int((stopped == k).sum()) for k in CALLS.values()},
    }
