"""Undecided pairs at equal time: a full exact scan against `--adaptive` given the same text
budget, side by side in one run, on the same texts (not a test).

    python benchmarks/adaptive_equal_time.py                         # default model, 8 languages, 15 texts
    python benchmarks/adaptive_equal_time.py --languages en,de,... --budget 15

Runs a full exact scan of `--budget` texts per language and an adaptive scan that may use up to
as many (no futility stop: its texts go to the pairs still open), each with a fresh store. From
the full scan's per-text values it then recomputes the full scan's intervals on its first N
texts for every N (the scan of N texts scores exactly those values), with that scan's time taken
as the full scan's x N / budget (a scan's work is linear in its texts), and prints, for each N,
the pairs left undecided (interval across the threshold), beside the adaptive scan's: at the
adaptive scan's wall time, how many pairs a full scan of the texts that time buys leaves open.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import pandas as pd
from adaptive_replay import arrays
from adaptive_vs_full import kinds_of, run, undecided

from langheads.scanning.assemble import bootstrap_scores
from langheads.scoring import METHODS


def open_on_first(data: dict, n: int, threshold: float, seed: int, n_boot: int) -> int:
    """Pairs whose full-scan interval on the first n texts of each language straddles the
    threshold; data[lang] = (base [texts], values [layers, heads, texts])."""
    method, count = METHODS["exact"](), 0
    for lang, (base, values) in data.items():
        s = bootstrap_scores(method, lang, base[:n], values[..., :n], seed, n_boot, threshold=threshold)
        count += int(((s.rel_ci_low <= threshold) & (s.rel_ci_high > threshold)).sum())
    return count


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="default")
    p.add_argument("--languages", default="en,hi,fr,de,es,zh,ar,ru")
    p.add_argument("--budget", type=int, default=15, help="texts per language (the scoring part has 15)")
    p.add_argument("--tokens", type=int, default=48)
    p.add_argument("--work", help="where the scans' folders go (default: a new temporary folder)")
    args = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="adaptive-equal-time-", dir=args.work))
    languages = args.languages.split(",")
    common = dict(model=args.model, languages=languages, max_tokens=args.tokens, texts=args.budget)
    t_full, full = run(work / "full", **common)
    print(f"full exact, {args.budget} texts: {t_full:.0f} s", flush=True)
    t_adaptive, adaptive = run(work / "adaptive", **common, adaptive=True, futility=0.0)
    print(f"adaptive, up to {args.budget} texts: {t_adaptive:.0f} s", flush=True)
    settings = full.plan.settings
    per_text = pd.read_parquet(work / "full" / "per_text.parquet")
    data = {lang: arrays(per_text, lang) for lang in languages}
    n_pairs = len(full.scores)
    print(
        f"\n{full.plan.loaded.model_id}; {len(languages)} languages, {n_pairs} head-language pairs, texts cut to "
        f"{args.tokens} tokens; work in {work}"
    )
    print(f"\n{'scan':34} {'seconds':>8} {'undecided':>10}")
    for n in range(2, args.budget + 1):
        left = open_on_first(data, n, settings.threshold, settings.seed, settings.bootstrap)
        print(
            f"{f'full exact, first {n} texts':34} {t_full * n / args.budget:8.0f} {left:10}"
            + ("  (measured)" if n == args.budget else "  (time: x n / budget)")
        )
    triples = adaptive.rule["adaptive"]["pair_texts_scored"]
    print(
        f"{f'adaptive, up to {args.budget} texts':34} {t_adaptive:8.0f} {undecided(adaptive):10}  (measured; "
        f"{triples:,} of {n_pairs * args.budget:,} head-language-text triples)"
    )
    same = args.budget * t_adaptive / t_full
    differ = sum(kinds_of(full)[k][0] != kinds_of(adaptive)[k][0] for k in kinds_of(full))
    print(
        f"\nat the adaptive scan's time a full scan affords {same:.1f} texts per language; "
        f"{differ} of {len(kinds_of(full))} heads' kinds differ from the full {args.budget}-text scan's"
    )


if __name__ == "__main__":
    main()
