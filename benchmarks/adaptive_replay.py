"""Replay the adaptive scan's stopping rule on a full exact scan's per-text values (not a test).

An adaptive scan scores the same values as the full scan on the texts it scores (tested to
1e-5 nats), so a full scan's per_text.parquet says, without a model, what any stopping
setting would have cost and called: head-language-text triples scored, when pairs stopped,
and which heads' kinds differ from the full scan's. With --screen ATTRIBUTION_RUN it also
tries first-order attribution as a screen in front of the exact scan.

    python benchmarks/adaptive_replay.py runs/full-exact [--screen runs/attribution]
"""
from __future__ import annotations

import argparse
import itertools

import numpy as np
import pandas as pd

from langheads.scanning.kinds import IntervalRule
from langheads.runs import read_run
from langheads.scanning.scan import bootstrap_scores
from langheads.scoring import METHODS
from langheads.scanning.sequential import MATTERS, OPEN, StoppingRule


def arrays(per_text: pd.DataFrame, lang: str) -> tuple[np.ndarray, np.ndarray]:
    """(base [n], values [layers, heads, n]) of one language, texts in the scan's order."""
    rows = per_text[per_text.language == lang]
    ids = list(dict.fromkeys(rows.text_id))
    base = rows[rows.layer == -1].set_index("text_id").loc[ids, "value"].to_numpy()
    v = rows[rows.layer >= 0]
    L, H = v.layer.max() + 1, v["head"].max() + 1
    return base, v.pivot_table(index=["layer", "head"], columns="text_id", values="value")[ids].to_numpy().reshape(L, H, -1)


def kinds(matters: dict[str, np.ndarray], languages: list[str]) -> list[str]:
    rule = IntervalRule()
    n = sum(matters[lang].astype(int) for lang in languages).reshape(-1)
    return ["misc" if k == 0 else "spec" if k == 1 else "agnostic" if k >= rule.agnostic_min(len(languages))
            else "group" for k in n]


def replay(rule: StoppingRule, base: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each pair's call (MATTERS, BELOW, FUTILE, OPEN) and the texts it was scored on."""
    d = values.reshape(-1, values.shape[-1])
    state, used = np.full(len(d), OPEN), np.full(len(d), rule.max_texts)
    for n in rule.looks():
        idx = np.flatnonzero(state == OPEN)
        decided = rule.decide(d[idx, :n], np.broadcast_to(base[:n], (len(idx), n)))
        state[idx], used[idx[decided != OPEN]] = decided, n
    return state, used


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", help="a full exact scan (not --adaptive)")
    p.add_argument("--screen", help="an attribution scan of the same texts: try it as a screen")
    args = p.parse_args()
    run = read_run(args.run)
    per_text = pd.read_parquet(f"{args.run}/per_text.parquet")
    data = {lang: arrays(per_text, lang) for lang in run.languages}
    method, t = METHODS["exact"](), run.info["settings"]["threshold"]
    full = {lang: (bootstrap_scores(method, lang, b, v, run.info["settings"]["seed"], run.info["settings"]["bootstrap"])
                   .rel_ci_low > t).to_numpy() for lang, (b, v) in data.items()}
    reference = kinds(full, run.languages)
    n_texts = next(iter(data.values()))[0].shape[0]
    print(f"{args.run}: {len(run.languages)} languages x {n_texts} texts, {len(reference)} heads")
    print(f"{'early_alpha':>11} {'futility':>8} {'first':>5} {'triples':>8} {'kinds differ':>12} "
          f"{'matters':>7} {'below':>5} {'futile':>6} {'last':>5}")
    for alpha, futility, first in itertools.product([0.01, 0.025], [0.05, 0.1], [2, 3]):
        rule = StoppingRule(t, n_texts, first, 1, alpha, futility)
        calls, used, matters = [], 0, {}
        for lang, (b, v) in data.items():
            state, texts = replay(rule, b, v)
            calls.append(state)
            used += texts.sum()
            matters[lang] = np.where(state == MATTERS, True, np.where(state == OPEN, full[lang], False))
        calls = np.concatenate(calls)
        differ = sum(a != b for a, b in zip(kinds(matters, run.languages), reference))
        print(f"{alpha:11} {futility:8} {first:5} {used / calls.size / n_texts:8.3f} {differ:12} "
              + " ".join(f"{int((calls == k).sum()):>{w}}" for k, w in ((1, 7), (-1, 5), (-2, 6), (0, 5))))
    straddle = sum(int(((s.rel_ci_low <= t) & (s.rel_ci_high > t)).sum()) for s in
                   [bootstrap_scores(method, lang, b, v, 0, 1000) for lang, (b, v) in data.items()])
    print(f"full scan: {straddle} of {len(reference) * len(run.languages)} pairs have an interval across the threshold")
    if args.screen:
        screen(run, read_run(args.screen), t, reference)


def screen(exact, attribution, t: float, reference: list[str]) -> None:
    """Attribution decides a pair when its interval is far from the threshold; the rest go to
    the exact scan (its full-scan call)."""
    e = exact.scores.set_index(["language", "layer", "head"]).sort_index()
    a = attribution.scores.set_index(["language", "layer", "head"]).sort_index()
    rho = {lang: round(float(a.loc[lang].rel_increase.corr(e.loc[lang].rel_increase, method="spearman")), 2)
           for lang in exact.languages}
    print(f"attribution vs exact, Spearman per language: {rho}")
    full = e.rel_ci_low > t
    for k in (2, 3, 5, 10):
        above, below = a.rel_ci_low > k * t, a.rel_ci_high < t / k
        sent = ~(above | below)
        call = full.where(sent, above)
        matters = {lang: call.loc[lang].to_numpy() for lang in exact.languages}
        differ = sum(x != y for x, y in zip(kinds(matters, exact.languages), reference))
        print(f"screen at {k}x / 1/{k} the threshold: {sent.mean():.0%} of pairs sent to exact, "
              f"{int((call != full).sum())} calls differ, {differ} kinds differ")


if __name__ == "__main__":
    main()
