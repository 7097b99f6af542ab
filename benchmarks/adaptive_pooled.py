"""Pooled variances in the adaptive scan's t-test: replayed on a full scan and simulated under a
null with a shared text factor (not a test; measured, and not kept in the scan).

The stopping rule (scanning/sequential.py) tests each pair on its own texts: after 2 texts its
t-test has 1 degree of freedom and needs a statistic of several hundred. limma's moderated t
(Smyth 2004) would pool: each pair's variance is pulled towards the variance typical of the
language's open pairs, worth d0 extra degrees of freedom fitted from how their variances spread
("pooled"), or with that typical variance a quadratic in the pair's log mean |d| ("trend",
limma-trend). Replayed on a full scan it stops many pairs earlier. But a language's pairs are
scored on the same texts, and on the default model most of a pair's text-to-text spread is one
factor shared by all pairs (a text on which every head matters more): pooling then adds degrees
of freedom the data do not have, and under a null with such a factor the early "matters" calls
exceed their bound. This script prints both sides:

    python benchmarks/adaptive_pooled.py RUN [--languages en,hi,...]   # replay on a full exact scan
    python benchmarks/adaptive_pooled.py --simulate                    # the null, shared factor or not
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import numpy as np
import pandas as pd
from adaptive_replay import arrays, kinds, replay
from scipy import optimize, special, stats

from langheads.runs import read_run
from langheads.scanning.assemble import bootstrap_scores
from langheads.scanning.sequential import BELOW, FUTILE, MATTERS, OPEN, Z_FINAL, StoppingRule
from langheads.scoring import METHODS

MIN_POOLED = 10  # fewer open pairs than this: each keeps its own variance


def prior_variance(s2: np.ndarray, d: int, size: np.ndarray | None) -> tuple[np.ndarray, float] | None:
    """limma's fitFDist: a scaled inverse chi-square prior (s0^2 per pair, d0) fitted to sample
    variances s2 on d degrees of freedom by the moments of log s2, its centre a quadratic in
    log `size` where given. d0 = inf where log s2 spreads no more than sampling explains."""
    keep = s2 > 0
    if keep.sum() < MIN_POOLED:
        return None
    e = np.log(s2[keep]) - special.digamma(d / 2) + np.log(d / 2)
    c = np.zeros(len(s2)) if size is None else np.log(size)
    design = np.ones((len(s2), 1)) if size is None else np.column_stack([np.ones_like(c), c, c**2])
    beta, *_ = np.linalg.lstsq(design[keep], e, rcond=None)
    centre, resid = design @ beta, e - (design @ beta)[keep]
    excess = resid @ resid / max(1, len(e) - design.shape[1]) - special.polygamma(1, d / 2)  # trigamma(d0 / 2)
    if excess <= 0:
        return np.exp(centre), np.inf
    half = optimize.brentq(lambda h: special.polygamma(1, h) - excess, 1e-8, 1e8)
    return np.exp(centre + special.digamma(half) - np.log(half)), 2 * half


@dataclass(frozen=True)
class PooledRule(StoppingRule):
    """The scan's rule with a moderated variance: pair (the scan's own) | pooled | trend."""

    variance: str = "pooled"

    def decide(self, d: np.ndarray, b: np.ndarray) -> np.ndarray:
        n = d.shape[1]
        x = d - self.threshold * b  # [pairs, n]
        mean, s2 = x.mean(axis=1), x.var(axis=1, ddof=1)
        prior = (
            None
            if self.variance == "pair"
            else prior_variance(s2, n - 1, np.abs(d).mean(axis=1) + 1e-6 if self.variance == "trend" else None)
        )
        if prior is None:
            var, df = s2, n - 1
        else:
            s0, d0 = prior
            var, df = (s0, 1e6) if np.isinf(d0) else ((d0 * s0 + (n - 1) * s2) / (d0 + n - 1), d0 + n - 1)
        sd = np.sqrt(np.maximum(var, 1e-24))
        t = mean / (sd / np.sqrt(n))
        crit = stats.t.ppf(1 - self.alpha_per_look(), df)
        out = np.full(len(x), OPEN)
        out[t > crit] = MATTERS
        out[t < -crit] = BELOW
        # the scan's predictive probability of "matters" after the last text, on df degrees of freedom
        N = self.max_texts
        predictive = stats.t.cdf((mean - Z_FINAL * sd / np.sqrt(N)) / (sd * np.sqrt((N - n) / (N * n))), df)
        out[(out == OPEN) & (predictive < self.futility)] = FUTILE
        return out


def shared_share(v: np.ndarray) -> float:
    """Share of a language's per-text deviations (relative increases less each pair's mean) that
    its first principal component, one factor over the texts shared by all pairs, explains."""
    r = v.reshape(-1, v.shape[-1])
    r = r - r.mean(axis=1, keepdims=True)
    s = np.linalg.svd(r, compute_uv=False)
    return float(s[0] ** 2 / (s**2).sum())


def replay_run(run_dir: str, languages: list[str] | None) -> None:
    run = read_run(run_dir)
    per_text = pd.read_parquet(f"{run_dir}/per_text.parquet")
    languages = languages or run.languages
    data = {lang: arrays(per_text, lang) for lang in languages}
    t, method = run.info["settings"]["threshold"], METHODS["exact"]()
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
    shares = [shared_share(v / b) for b, v in data.values()]
    print(
        f"{run_dir}: {len(languages)} languages x {n_texts} texts; one shared text factor explains "
        f"{np.median(shares):.0%} of the per-text deviations (median; {min(shares):.0%} to {max(shares):.0%})"
    )
    print(
        f"{'variance':>8} {'early_alpha':>11} {'futility':>8} {'triples':>7} {'kinds differ':>12} "
        f"{'matters, full not':>17} {'stopped, full matters':>21}"
    )
    for variance in ("pair", "pooled", "trend"):
        for alpha, futility in ((0.005, 0.05), (0.01, 0.05)):
            got = replay(PooledRule(t, n_texts, 2, 1, alpha, futility, variance=variance), data)
            state = {lang: s for lang, (s, _) in got.items()}
            matters = {
                lang: np.where(s == MATTERS, True, np.where(s == OPEN, full[lang], False)) for lang, s in state.items()
            }
            differ = sum(a != b for a, b in zip(kinds(matters, languages), reference))
            used = sum(int(u.sum()) for _, u in got.values())
            early = sum(int(((s == MATTERS) & ~full[lang]).sum()) for lang, s in state.items())
            missed = sum(int(((s < 0) & full[lang]).sum()) for lang, s in state.items())
            print(
                f"{variance:>8} {alpha:11} {futility:8} {used / (len(reference) * len(languages) * n_texts):7.3f} "
                f"{differ:12} {early:17} {missed:21}"
            )


def null_language(rng, share: float, pairs: int = 72, n: int = 8, threshold: float = 0.01):
    """One language's pairs, every one at the threshold (true mean relative increase = 1%), with
    a share `share` of each pair's text-to-text spread coming from a factor all pairs share."""
    b = np.broadcast_to(rng.normal(3.0, 0.5, n), (pairs, n))
    scale = 0.03 * np.exp(rng.normal(0, 0.5, pairs))[:, None]  # each pair's spread
    shared = rng.normal(0, 1, n)[None] * np.sqrt(share)
    own = rng.normal(0, 1, (pairs, n)) * np.sqrt(1 - share)
    return threshold * b + scale * (shared + own), b


def simulate(languages: int = 1000, alpha: float = 0.005) -> None:
    rng = np.random.default_rng(11)
    print(
        f"null at the threshold, {languages} languages x 72 pairs x 8 texts, early_alpha {alpha}: "
        "share of pairs called 'matters' early (+- its standard error over languages)"
    )
    for share in (0.0, 0.5, 0.8):
        sims = [null_language(rng, share) for _ in range(languages)]
        row = []
        for variance in ("pair", "pooled", "trend"):
            rule = PooledRule(0.01, 8, 2, 1, alpha, 0.05, variance=variance)
            got = replay(rule, {k: (b[0], d[None]) for k, (d, b) in enumerate(sims)})
            rate = np.array([np.mean(s == MATTERS) for s, _ in got.values()])  # per language: pairs share texts
            row.append(f"{variance} {rate.mean():.4f} +- {rate.std() / np.sqrt(len(rate)):.4f}")
        print(f"  shared factor {share:.0%} of the spread: " + ", ".join(row))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", nargs="?", help="a full exact scan (not --adaptive)")
    p.add_argument("--languages", help="replay on these of the run's languages only")
    p.add_argument("--simulate", action="store_true", help="the null simulation instead")
    args = p.parse_args()
    if args.simulate or not args.run:
        simulate()
    else:
        replay_run(args.run, args.languages.split(",") if args.languages else None)


if __name__ == "__main__":
    main()
