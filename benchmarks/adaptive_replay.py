"""Replay the adaptive scan's stopping rule on a full exact scan's per-text values (not a test).

An adaptive scan scores the same values as the full scan on the texts it scores (tested to
1e-5 nats), so a full scan's per_text.parquet says, without a model, what any stopping
setting would have cost and called: head-language-text triples scored, when pairs stopped,
and which heads' kinds differ from the full scan's. With --screen ATTRIBUTION_RUN it also
tries first-order attribution as a screen in front of the exact scan. Rows "kinds" also stop
a head once its kind is settled (no outcome of its open pairs could change it); measured here,
not in the scan, because it saved 1% of the triples on the findings' 24 languages.

    python benchmarks/adaptive_replay.py runs/full-exact [--languages en,hi,...] [--screen runs/attribution]
"""

from __future__ import annotations

import argparse
import itertools

import numpy as np
import pandas as pd

from langheads.runs import read_run
from langheads.scanning.assemble import bootstrap_scores
from langheads.scanning.kinds import IntervalRule
from langheads.scanning.sequential import MATTERS, OPEN, StoppingRule
from langheads.scoring import METHODS

KIND = -3  # replay only: stopped with its head once its kind was settled


def arrays(per_text: pd.DataFrame, lang: str) -> tuple[np.ndarray, np.ndarray]:
    """(base [n], values [layers, heads, n]) of one language, texts in the scan's order."""
    rows = per_text[per_text.language == lang]
    ids = list(dict.fromkeys(rows.text_id))
    base = rows[rows.layer == -1].set_index("text_id").loc[ids, "value"].to_numpy()
    v = rows[rows.layer >= 0]
    L, H = v.layer.max() + 1, v["head"].max() + 1
    return base, v.pivot_table(index=["layer", "head"], columns="text_id", values="value")[ids].to_numpy().reshape(
        L, H, -1
    )


def kinds(matters: dict[str, np.ndarray], languages: list[str]) -> list[str]:
    n = sum(matters[lang].astype(int) for lang in languages).reshape(-1)
    return [IntervalRule().kind_of(int(k), len(languages)) for k in n]


def settled_heads(states: np.ndarray, n_languages: int) -> np.ndarray:
    """states [languages, heads] -> [heads]: True where a pair is still open and no outcome of
    the open pairs can change the head's kind (kinds are monotone in the number of languages a
    head matters for, so equal kinds with none and with every open pair called "matters")."""
    called, still = (states == MATTERS).sum(axis=0), (states == OPEN).sum(axis=0)  # [heads]
    kind_of = IntervalRule().kind_of
    low = np.array([kind_of(int(m), n_languages) for m in called])
    high = np.array([kind_of(int(m), n_languages) for m in called + still])
    return (still > 0) & (low == high)


def replay(rule: StoppingRule, data: dict, settle: str = "pairs") -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per language, each pair's call (MATTERS, BELOW, FUTILE, KIND, OPEN) and the texts it was
    scored on; every language looks after the same numbers of texts, as the scan does."""
    d = {lang: v.reshape(-1, v.shape[-1]) for lang, (_, v) in data.items()}  # [heads, texts]
    state = {lang: np.full(len(x), OPEN) for lang, x in d.items()}
    used = {lang: np.full(len(x), rule.max_texts) for lang, x in d.items()}
    for n in rule.looks():
        for lang, (b, _) in data.items():
            idx = np.flatnonzero(state[lang] == OPEN)
            decided = rule.decide(d[lang][idx, :n], np.broadcast_to(b[:n], (len(idx), n)))
            state[lang][idx], used[lang][idx[decided != OPEN]] = decided, n
        if settle == "kinds":
            done = settled_heads(np.stack(list(state.values())), len(state))
            for lang in state:
                stop = done & (state[lang] == OPEN)
                state[lang][stop], used[lang][stop] = KIND, n
    return {lang: (state[lang], used[lang]) for lang in state}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", help="a full exact scan (not --adaptive)")
    p.add_argument("--languages", help="replay on these of the run's languages only (kinds among them)")
    p.add_argument("--screen", help="an attribution scan of the same texts: try it as a screen")
    args = p.parse_args()
    run = read_run(args.run)
    per_text = pd.read_parquet(f"{args.run}/per_text.parquet")
    languages = args.languages.split(",") if args.languages else run.languages
    data = {lang: arrays(per_text, lang) for lang in languages}
    method, t = METHODS["exact"](), run.info["settings"]["threshold"]
    full = {
        lang: (
            bootstrap_scores(
                method, lang, b, v, run.info["settings"]["seed"], run.info["settings"]["bootstrap"]
            ).rel_ci_low
            > t
        ).to_numpy()
        for lang, (b, v) in data.items()
    }
    reference = kinds(full, languages)
    n_texts = next(iter(data.values()))[0].shape[0]
    print(f"{args.run}: {len(languages)} languages x {n_texts} texts, {len(reference)} heads")
    print(
        f"{'settle':>6} {'early_alpha':>11} {'futility':>8} {'first':>5} {'triples':>8} {'kinds differ':>12} "
        f"{'matters':>7} {'below':>5} {'futile':>6} {'kind':>5} {'last':>5}"
    )
    grid = itertools.product(["pairs", "kinds"], [0.005, 0.01, 0.025], [0.05, 0.1], [2, 3])
    for settle, alpha, futility, first in grid:
        rule = StoppingRule(t, n_texts, first, 1, alpha, futility)
        replayed = replay(rule, data, settle)
        matters = {
            lang: np.where(state == MATTERS, True, np.where(state == OPEN, full[lang], False))
            for lang, (state, _) in replayed.items()
        }
        calls = np.concatenate([state for state, _ in replayed.values()])
        used = sum(int(texts.sum()) for _, texts in replayed.values())
        differ = sum(a != b for a, b in zip(kinds(matters, languages), reference))
        print(
            f"{settle:>6} {alpha:11} {futility:8} {first:5} {used / calls.size / n_texts:8.3f} {differ:12} "
            + " ".join(f"{int((calls == k).sum()):>{w}}" for k, w in ((1, 7), (-1, 5), (-2, 6), (KIND, 5), (0, 5)))
        )
    straddle = sum(
        int(((s.rel_ci_low <= t) & (s.rel_ci_high > t)).sum())
        for s in [bootstrap_scores(method, lang, b, v, 0, 1000) for lang, (b, v) in data.items()]
    )
    print(f"full scan: {straddle} of {len(reference) * len(languages)} pairs have an interval across the threshold")
    if args.screen:
        screen(run, read_run(args.screen), t, reference)


def screen(exact, attribution, t: float, reference: list[str]) -> None:
    """Attribution decides a pair when its interval is far from the threshold; the rest go to
    the exact scan (its full-scan call)."""
    e = exact.scores.set_index(["language", "layer", "head"]).sort_index()
    a = attribution.scores.set_index(["language", "layer", "head"]).sort_index()
    rho = {
        lang: round(float(a.loc[lang].rel_increase.corr(e.loc[lang].rel_increase, method="spearman")), 2)
        for lang in exact.languages
    }
    print(f"attribution vs exact, Spearman per language: {rho}")
    full = e.rel_ci_low > t
    for k in (2, 3, 5, 10):
        above, below = a.rel_ci_low > k * t, a.rel_ci_high < t / k
        sent = ~(above | below)
        call = full.where(sent, above)
        matters = {lang: call.loc[lang].to_numpy() for lang in exact.languages}
        differ = sum(x != y for x, y in zip(kinds(matters, exact.languages), reference))
        print(
            f"screen at {k}x / 1/{k} the threshold: {sent.mean():.0%} of pairs sent to exact, "
            f"{int((call != full).sum())} calls differ, {differ} kinds differ"
        )


if __name__ == "__main__":
    main()
