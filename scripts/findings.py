"""Turn the folders scripts/findings.sh made into FINDINGS.md (docs/findings.md's numbers) and copy
the figures docs/findings.md shows; with --two, set two models' findings side by side.

Usage: python scripts/findings.py RUNS_DIR DOCS_DIR
       python scripts/findings.py --two RUNS_A RUNS_B OUT.md"""

from __future__ import annotations

import shutil
import sys
from collections import Counter
from pathlib import Path

import numpy as np

from langheads.reporting.compare import compare_runs
from langheads.runs import read_eval, read_pruned, read_run
from langheads.scanning.kinds import LahisRule

FAMILIES = {
    "Germanic": "en de nl sv",
    "Romance": "fr es it pt",
    "Slavic": "ru uk pl cs",
    "Indo-Iranian": "hi bn ur fa",
    "Semitic": "ar he",
    "CJK": "zh ja ko",
}


def main(runs: Path, docs: Path) -> None:
    docs.mkdir(parents=True, exist_ok=True)
    exact, lahis, fdr = read_run(runs / "exact"), read_run(runs / "exact-lahis"), read_run(runs / "exact-fdr")
    langs = exact.languages
    lines = [f"# Findings on {exact.info['model']['id']} ({len(langs)} languages)", ""]
    texts = {lang: exact.texts(lang) for lang in langs}
    lines.append(
        f"Exact ablation of all {exact.n_layers * exact.n_heads} heads; {min(texts.values())} scoring texts "
        f"per language cut to {exact.info['settings']['max_tokens']} tokens; {len(langs)} languages: "
        f"{', '.join(langs)}."
    )
    lines.append("")
    lines.append("| rule | " + " | ".join(exact.info["counts"]) + " |")
    lines.append("|---|" + "---|" * len(exact.info["counts"]))
    for name, run in (("interval (ours, default)", exact), ("--fdr 0.05", fdr)):
        lines.append(
            f"| {name} | " + " | ".join(str(run.info["counts"].get(k, 0)) for k in exact.info["counts"]) + " |"
        )
    lines.extend(_adaptive_lines(exact, runs))  # its table row, a blank line, what it cost
    lines.append("")
    lines.append("LAHIS rule on the same scores: " + ", ".join(f"{k} {v}" for k, v in lahis.info["counts"].items()))

    # specific heads per language, and the groups that share heads
    specific = Counter(h["languages"][0] for h in exact.info["heads"] if h["kind"] == "language-specific")
    lines.append("")
    lines.append(
        "Language-specific heads per language: " + ", ".join(f"{lang} {specific.get(lang, 0)}" for lang in langs)
    )
    groups = [h["languages"] for h in exact.info["heads"] if h["kind"] == "language-group"]
    sizes = Counter(len(g) for g in groups)
    lines.append(
        "Language-group heads by group size: " + ", ".join(f"{k} languages: {v}" for k, v in sorted(sizes.items()))
    )
    lines.append("")
    lines.append("Families inside group heads (how often a family's languages come together):")
    for family, members in FAMILIES.items():
        members = [m for m in members.split() if m in langs]
        pair_share = []
        for g in groups:
            inside = [m for m in members if m in g]
            if len(inside) >= 2:
                pair_share.append(len(inside) / len(g))
        lines.append(
            f"- {family} ({', '.join(members)}): {len(pair_share)} group heads hold two or more of them"
            + (f"; on those, {np.mean(pair_share):.0%} of the group is this family" if pair_share else "")
        )

    # similarity: mean within-family vs across-family correlation
    vectors = {lang: exact.grid(lang).ravel() for lang in langs}
    corr = {(a, b): float(np.corrcoef(vectors[a], vectors[b])[0, 1]) for a in langs for b in langs if a < b}
    family_of = {m: f for f, ms in FAMILIES.items() for m in ms.split()}
    within = [c for (a, b), c in corr.items() if family_of.get(a) and family_of.get(a) == family_of.get(b)]
    across = [c for (a, b), c in corr.items() if not (family_of.get(a) and family_of.get(a) == family_of.get(b))]
    lines.append("")
    lines.append(
        f"Correlation of head-importance vectors: within a family {np.mean(within):.2f} on average "
        f"({len(within)} pairs), across families {np.mean(across):.2f} ({len(across)} pairs)."
    )
    best = sorted(corr.items(), key=lambda kv: -kv[1])[:6]
    worst = sorted(corr.items(), key=lambda kv: kv[1])[:4]
    lines.append(
        "Most alike: "
        + ", ".join(f"{a}-{b} {c:.2f}" for (a, b), c in best)
        + "; least alike: "
        + ", ".join(f"{a}-{b} {c:.2f}" for (a, b), c in worst)
        + "."
    )
    for family, members in FAMILIES.items():
        ms = [m for m in members.split() if m in langs]
        vals = [corr[tuple(sorted((a, b)))] for i, a in enumerate(ms) for b in ms[i + 1 :]]
        if vals:
            lines.append(f"- {family}: mean within-family correlation {np.mean(vals):.2f}")

    # our kinds against the LAHIS rule
    ours = {(h["layer"], h["head"]): h for h in exact.info["heads"]}
    theirs = {(h["layer"], h["head"]): h for h in lahis.info["heads"]}
    both_specific = sum(
        1
        for k in ours
        if ours[k]["kind"] == "language-specific"
        and theirs[k]["kind"] == "language-specific"
        and ours[k]["languages"] == theirs[k]["languages"]
    )
    lahis_top = {(k, lang) for k, h in theirs.items() for lang in h["languages"]}
    ours_matter = {(k, lang) for k, h in ours.items() for lang in h["languages"]}
    lines.append("")
    lines.append(
        f"Against the LAHIS rule (top {100 * (1 - LahisRule().quantile):.0f}% of heads per language): "
        f"{len(lahis_top)} head-language pairs are in a LAHIS top set, of which {len(lahis_top & ours_matter)} "
        f"also 'matter' by our interval rule; our rule calls {len(ours_matter)} pairs 'matter'. "
        f"{both_specific} heads are specific to the same language under both rules."
    )

    # methods
    table = compare_runs(runs / "exact", runs / "attribution", 10)
    lines.append(
        f"Attribution vs exact: Spearman {table['spearman'].mean():.2f} on average over languages "
        f"(from {table['spearman'].min():.2f} to {table['spearman'].max():.2f}); top-10 overlap "
        f"{table.iloc[:, 2].mean():.0%}."
    )

    # pruning and its cost
    if not (runs / "eval" / "eval.json").exists():
        return _finish(lines, runs, docs)
    pruned, ev = read_pruned(_pruned_folder(runs)), read_eval(runs / "eval")
    first, last = pruned.curve[0]["nll"], pruned.curve[-1]["nll"]
    lines.append("")
    lines.append(
        f"`--keep {','.join(pruned.kept)}` pruning: {len(pruned.removed)} heads removed "
        f"({', '.join(f'L{a}H{b}' for a, b in pruned.removed)}); stopped: {pruned.record['stopped']}."
    )
    lines.append(
        "Selection-text NLL change: "
        + ", ".join(f"{lang} {100 * (last[lang] / first[lang] - 1):+.1f}%" for lang in first)
        + "."
    )
    vocab = pruned.manifest.records.get("trim_vocab")
    if vocab:
        lines.append(f"Vocabulary {vocab['original_size']:,} -> {vocab['kept']:,} tokens.")
    lines.append("")
    lines.append("| language | texts | NLL per byte before | after | change (95% CI) |")
    lines.append("|---|---|---|---|---|")
    for r in ev.table.itertuples():
        lines.append(
            f"| {r.language} | {r.n_texts} | {r.nll_per_byte_before:.4f} | {r.nll_per_byte_after:.4f} | "
            f"{100 * r.per_byte_rel_change:+.2f}% ({100 * r.per_byte_rel_ci_low:+.2f}% .. "
            f"{100 * r.per_byte_rel_ci_high:+.2f}%) |"
        )
    _finish(lines, runs, docs)


def _adaptive_lines(exact, runs: Path) -> list[str]:
    """The adaptive scan of the same map beside the full one: work, time, kinds that differ."""
    if not (runs / "adaptive" / "run.json").exists():
        return [""]
    adaptive = read_run(runs / "adaptive")
    record = adaptive.info["rule"]["adaptive"]
    kind = {(h["layer"], h["head"]): h["kind"] for h in exact.info["heads"]}
    differ = [
        f"L{h['layer']}H{h['head']} ({kind[h['layer'], h['head']]} -> {h['kind']})"
        for h in adaptive.info["heads"]
        if kind[h["layer"], h["head"]] != h["kind"]
    ]
    seconds = _timings(runs)
    ratio = (
        f"; wall time {seconds['scan_adaptive']} s against the full scan's {seconds['scan_exact']} s "
        f"({seconds['scan_adaptive'] / seconds['scan_exact']:.2f}x)"
        if {"scan_adaptive", "scan_exact"} <= set(seconds)
        else ""
    )
    counts = " | ".join(str(adaptive.info["counts"].get(k, 0)) for k in exact.info["counts"])
    return [
        f"| --adaptive (early-alpha {record['early_alpha']}) | {counts} |",
        "",
        f"The adaptive scan scored {record['pair_texts_scored']:,} of {record['pair_texts_full']:,} "
        f"head-language-text triples ({record['share']:.2f}){ratio}; {len(kind) - len(differ)} of {len(kind)} "
        "heads have the full scan's kind" + (f" (differ: {', '.join(differ)})." if differ else "."),
    ]


def _timings(runs: Path) -> dict[str, int]:
    """Step -> wall seconds, as scripts/findings.sh logs them (empty before any step ran)."""
    path = runs / "timings.txt"
    pairs = (line.split() for line in path.read_text().splitlines() if line.strip()) if path.exists() else ()
    return {name: int(value) for name, value in pairs}


def _finish(lines: list[str], runs: Path, docs: Path) -> None:
    seconds = _timings(runs)
    if seconds:
        lines.append("")
        lines.append("Wall time per step (s): " + ", ".join(f"{name} {value}" for name, value in seconds.items()))
    (docs / "FINDINGS.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    for name in ("kinds", "similarity", "heatmap", "prune_curve", "top_heads"):
        if (runs / "report" / "figures" / f"{name}.png").exists():
            shutil.copy(runs / "report" / "figures" / f"{name}.png", docs / f"{name}.png")
    print("\n".join(lines))


def _pruned_folder(runs: Path) -> Path:
    return runs / "pruned" if (runs / "pruned").exists() else runs / "en-hi"  # en-hi: runs before two models


def slack(run, keep: list[str], budget: float) -> int | None:
    """Heads whose removal alone raises no kept language by `budget` or more (the scan's mean)."""
    if not set(keep) <= set(run.languages):
        return None
    rel = run.scores[run.scores.language.isin(keep)].groupby(["layer", "head"])["rel_increase"].max()
    return int((rel < budget).sum())


def sharing(run) -> float:
    """Mean correlation of the languages' head-importance vectors over all pairs."""
    langs = run.languages
    vectors = {lang: run.grid(lang).ravel() for lang in langs}
    return float(np.mean([np.corrcoef(vectors[a], vectors[b])[0, 1] for a in langs for b in langs if a < b]))


def same_kinds(a, b) -> int:
    kinds = {(h["layer"], h["head"]): h["kind"] for h in a.info["heads"]}
    return sum(1 for h in b.info["heads"] if kinds[(h["layer"], h["head"])] == h["kind"])


def model_column(runs: Path) -> dict[str, str]:
    """One model's findings as the side-by-side table's cells."""
    exact, seconds = read_run(runs / "exact"), _timings(runs)
    n, c = exact.n_layers * exact.n_heads, exact.info["counts"]
    col = {
        "model": exact.info["model"]["id"],
        "scan": f"{len(exact.languages)} languages, {exact.info['settings']['texts']} texts of "
        f"{exact.info['settings']['max_tokens']} tokens; exact {seconds.get('scan_exact', '?')} s",
        "kinds (specific / group / agnostic / miscellaneous)": " / ".join(str(v) for v in c.values()) + f" of {n}",
        "English-specific heads": str(sum(1 for h in exact.info["heads"] if h["languages"] == ["en"]
                                          and h["kind"] == "language-specific")),
        "mean correlation of languages' head vectors": f"{sharing(exact):.2f}",
    }  # fmt: skip
    for keep in (["en", "zh"], ["en", "hi"]):
        fits = [slack(exact, keep, b) for b in (0.01, 0.02)]
        col[f"heads that fit 1% / 2% alone (--keep {','.join(keep)})"] = (
            "-" if fits[0] is None else f"{fits[0]} / {fits[1]} of {n}"
        )
    if _pruned_folder(runs).exists():
        pruned = read_pruned(_pruned_folder(runs))
        saved = pruned.record.get("saved", {})
        col[f"the walk (--keep {','.join(pruned.kept)}, 2%)"] = (
            f"{len(pruned.units)} heads, {saved.get('share_saved', 0):.2%} of the parameters; "
            f"{seconds.get('prune', '?')} s"
        )
    for name, folder in (("attribution", "attribution"), ("LAHIS score", "lahis")):
        if (runs / folder / "run.json").exists() or (runs / folder / "heads.json").exists():
            table, other = compare_runs(runs / "exact", runs / folder, 10), read_run(runs / folder)
            col[f"{name} vs exact: Spearman mean (range); same kind; time"] = (
                f"{table['spearman'].mean():.2f} ({table['spearman'].min():.2f}-{table['spearman'].max():.2f}); "
                f"{same_kinds(exact, other)} of {n}; {seconds.get('scan_' + folder, '?')} s"
            )
    if (runs / "adaptive" / "run.json").exists():
        adaptive = read_run(runs / "adaptive")
        share = adaptive.info["rule"]["adaptive"]["share"]
        col["adaptive vs exact: triples scored; same kind; time"] = (
            f"{share:.0%}; {same_kinds(exact, adaptive)} of {n}; {seconds.get('scan_adaptive', '?')} s"
        )
    return col


def two(a: Path, b: Path, out: Path) -> None:
    """The two models' findings side by side (docs/findings/TWO_MODELS.md)."""
    left, right = model_column(a), model_column(b)
    rows = ["| | " + left.pop("model") + " | " + right.pop("model") + " |", "|---|---|---|"]
    rows += [f"| {key} | {left.get(key, '-')} | {right.get(key, '-')} |" for key in dict.fromkeys([*left, *right])]
    out.write_text("# Two models side by side\n\n" + "\n".join(rows) + "\n", encoding="utf-8")
    print("\n".join(rows))


if __name__ == "__main__":
    if sys.argv[1] == "--two":
        two(Path(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4]))
    else:
        main(Path(sys.argv[1]), Path(sys.argv[2]))
