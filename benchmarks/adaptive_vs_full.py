"""A full exact scan and `--adaptive` side by side, in one run, on the same texts (not a test).

    python benchmarks/bench_scan.py --adaptive                       # default model, 8 languages, 8 texts
    python benchmarks/bench_scan.py --adaptive --languages en,de,...  --budget 15

Each scan gets a fresh store, so nothing is reused between them. Prints one table: wall time,
head-language-text triples scored, kinds, heads whose kind differs from the full scan's (and
which pairs' calls differ, and how the adaptive scan called them), and the pairs each scan leaves
undecided (interval across the threshold, or stopped as futile). With `--budget N` a third scan
gets up to N texts per language with no futility stop: the texts go to the pairs still open.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import pandas as pd

import langheads
from langheads.runs import count_kinds


def run(out: Path, **settings):
    start = time.perf_counter()
    result = langheads.scan_model(out, progress=False, **settings)
    return time.perf_counter() - start, result


def undecided(result) -> int:
    s, t = result.scores, result.plan.settings.threshold
    stopped = s["stopped"] if "stopped" in s else pd.Series("last", index=s.index)  # a full scan: all open to the end
    open_ = (stopped == "last") & (s.rel_ci_low <= t) & (s.rel_ci_high > t)
    return int(open_.sum() + (stopped == "futile").sum())


def kinds_of(result) -> dict:
    return {(h["layer"], h["head"]): (h["kind"], tuple(h["languages"])) for h in result.heads}


def differences(full, other) -> list[str]:
    """One line per head whose kind differs: both kinds and the pairs whose call differs."""
    a, b = kinds_of(full), kinds_of(other)
    rows = other.scores.set_index(["layer", "head", "language"])
    ref = full.scores.set_index(["layer", "head", "language"])
    lines = []
    for key in sorted(k for k in a if a[k][0] != b[k][0]):
        pairs = sorted(set(a[key][1]) ^ set(b[key][1]))
        why = ", ".join(
            f"{lang}: full {'matters' if lang in a[key][1] else 'not'} "
            f"(rel {ref.loc[(*key, lang), 'rel_increase']:+.2%}, "
            f"low {ref.loc[(*key, lang), 'rel_ci_low']:+.2%}), adaptive {rows.loc[(*key, lang), 'stopped']} "
            f"after {rows.loc[(*key, lang), 'n_texts']} texts"
            for lang in pairs
        )
        lines.append(f"  L{key[0]}H{key[1]}: {a[key][0]} -> {b[key][0]}; {why}")
    return lines


def compare(args) -> None:
    work = Path(tempfile.mkdtemp(prefix="adaptive-vs-full-", dir=args.work))
    common = dict(
        model=args.model,
        languages=args.languages.split(","),
        max_tokens=args.tokens,
        device=args.device,
        dtype=args.dtype,
        batch_tokens=args.batch_tokens,
        chunk_tokens=args.chunk_tokens,
    )
    scans = [
        ("full exact", "full", dict(texts=args.texts)),
        ("adaptive", "adaptive", dict(texts=args.texts, adaptive=True)),
    ]
    if args.budget:
        scans.append(
            (f"adaptive, up to {args.budget} texts", "budget", dict(texts=args.budget, adaptive=True, futility=0.0))
        )
    results = []
    for name, folder, extra in scans:
        seconds, result = run(work / folder, **common, **extra)
        results.append((name, seconds, result))
        print(f"{name}: {seconds:.0f} s", flush=True)
    full = results[0][2]
    n_pairs = len(full.scores)
    print(
        f"\n{full.plan.loaded.model_id}; {len(common['languages'])} languages, {n_pairs} head-language pairs, "
        f"texts cut to {args.tokens} tokens; {args.device}, {args.dtype}; work in {work}\n"
    )
    print(
        f"{'scan':28} {'seconds':>8} {'/ full':>7} {'triples':>9} {'kinds (spec/group/agn/misc)':>28} "
        f"{'differ':>7} {'undecided':>10}"
    )
    for name, seconds, result in results:
        a = result.rule.get("adaptive")
        triples = a["pair_texts_scored"] if a else int(result.scores.n_texts.sum())
        counts = "/".join(str(v) for v in count_kinds(result.heads).values())
        differ = sum(kinds_of(full)[k][0] != kinds_of(result)[k][0] for k in kinds_of(full))
        print(
            f"{name:28} {seconds:8.0f} {seconds / results[0][1]:7.2f} {triples:9,} {counts:>28} {differ:7} "
            f"{undecided(result):10}"
        )
    for name, _, result in results[1:]:
        print(f"\n{name}: " + ", ".join(f"{k} {v}" for k, v in result.rule["adaptive"]["stopped"].items()))
        print("\n".join(differences(full, result)) or "  every head's kind is the full scan's")
