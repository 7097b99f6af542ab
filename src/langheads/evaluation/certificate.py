"""The kept/dropped summary an evaluation ends with: did the kept languages stay within the
budget, and what did the dropped ones lose (loss, language switches)?

Kept languages pass when the upper end of the 95% interval of their NLL-per-byte change is
within the budget (text evaluations) or, for answer metrics, when the interval of the change
does not reach a loss larger than the budget times the original score (the language-switch
rate: a rise larger than the budget). Dropped languages are described, not judged: their loss
and how often the edited model's text or answers leave their language. A pruning that makes a
model answer a kept language in another shows up as a failed switch row.
"""

from __future__ import annotations

import pandas as pd

from ..manifest import read_manifest


def settle(model: str | None, keep: list[str] | None, budget: float | None) -> tuple[list[str] | None, float]:
    """The kept languages and budget to certify against: given, else the model's manifest's,
    else no languages (no certificate) and a 2% budget."""
    recorded, recorded_budget = deployment_of(model)
    return keep or recorded, budget if budget is not None else recorded_budget if recorded_budget is not None else 0.02


def deployment_of(model: str | None) -> tuple[list[str] | None, float | None]:
    """The kept languages and budget an edited model folder's manifest records, if any."""
    from pathlib import Path

    manifest = read_manifest(model) if model and Path(model).is_dir() else None
    if manifest is None:
        return None, None
    heads = manifest.pruning_record()
    vocab = manifest.records.get("trim_vocab", {})
    kept = heads.get("kept") or list(vocab.get("scripts", {})) or None
    return kept, heads.get("settings", {}).get("max_increase")


def edited_from(model: str | None) -> str | None:
    """The sha256 of the model an edited folder was made from (its manifest's source), if any."""
    from pathlib import Path

    manifest = read_manifest(model) if model and Path(model).is_dir() else None
    return None if manifest is None else manifest.source.get("sha256")


def heal_cautions(model: str | None, data: str | None) -> list[str]:
    """Why the certificate's NLL rows may be optimistic: the model was healed on text from the
    corpus the evaluated texts come from (heal's default data, the original's continuations of
    the bundled selection texts, and the bundled report texts are one document, UDHR). A heal
    adapts the model to that domain: its report-text NLL can fall below the original's."""
    from pathlib import Path

    manifest = read_manifest(model) if model and Path(model).is_dir() else None
    heal = {} if manifest is None else manifest.records.get("heal", {})
    if not heal:
        return []
    healed_on = heal.get("settings", {}).get("data")
    same = healed_on == data if healed_on is None or data is None else Path(healed_on).resolve() == Path(data).resolve()
    if not same:
        return []
    corpus = "the bundled corpus (UDHR)" if data is None else data
    return [
        f"the model was healed on text from {corpus}, the corpus these texts come from: a heal adapts to "
        "its domain, so the NLL changes here can be optimistic; judge a heal on other text (--data)"
    ]


def certificate(result: dict, kept: list[str], budget: float, source: str | None = None) -> dict:
    """One row per evaluated language and measure: role (kept | dropped), change with its
    interval, and for kept languages whether it is within the budget. It fails for a kept
    language it did not measure, and, given the edited model's `source` (its manifest's sha256
    of the model it was edited from), when the baseline is another model."""
    rows = _text_rows(result["table"]) if result["kind"] == "nll" else _answer_rows(result["table"])
    for row in rows:
        row["role"] = "kept" if row["language"] in kept else "dropped"
        row["within_budget"] = bool(_within(row, budget)) if row["role"] == "kept" else None
    failed = sorted({f"{r['language']} {r['measure']}" for r in rows if r["within_budget"] is False})
    failed += [f"{lang} not measured" for lang in kept if lang not in {r["language"] for r in rows}]
    if source is not None and result.get("baseline_sha256") not in (None, source):
        failed.append(f"the baseline {result['baseline']} is not the model this one was edited from")
    rows = [{k: (float(v) if hasattr(v, "dtype") else v) for k, v in row.items()} for row in rows]  # JSON-ready
    return {"kept": kept, "budget": budget, "rows": rows, "passed": not failed, "failed": failed}


def _text_rows(t: pd.DataFrame) -> list[dict]:
    rows = []
    for r in t.itertuples():
        rows.append(
            {
                "language": r.language,
                "measure": "NLL per byte",
                "before": r.nll_per_byte_before,
                "after": r.nll_per_byte_after,
                "change": r.per_byte_rel_change,
                "ci_low": r.per_byte_rel_ci_low,
                "ci_high": r.per_byte_rel_ci_high,
                "scale": "relative",
            }
        )
        rows.append(
            {
                "language": r.language,
                "measure": "generations in another language",
                "before": 1 - r.same_language_before,
                "after": 1 - r.same_language_after,
                "change": r.same_language_before - r.same_language_after,
                "ci_low": None,
                "ci_high": None,
                "scale": "share",
            }
        )
    return rows


def _answer_rows(t: pd.DataFrame) -> list[dict]:
    return [
        {
            "language": r.language,
            "measure": r.metric,
            "before": r.before,
            "after": r.after,
            "change": r.change,
            "ci_low": r.ci_low,
            "ci_high": r.ci_high,
            "scale": "score" if r.higher_is_better else "share",
        }
        for r in t.itertuples()
        if r.items
    ]


def _within(row: dict, budget: float) -> bool:
    """relative (NLL per byte): the interval's upper end at most the budget; score (exact
    match, F1, chrF, higher is better): its lower end loses at most budget x the original;
    share (language switches): its upper end rises by at most the budget. Without an interval
    the change itself is judged."""
    high = row["change"] if row["ci_high"] is None else row["ci_high"]
    low = row["change"] if row["ci_low"] is None else row["ci_low"]
    if row["scale"] == "score":
        return -low <= budget * abs(row["before"])
    return high <= budget


def describe(cert: dict) -> str:
    lines = [
        f"certificate: kept {','.join(cert['kept'])}, budget {cert['budget']:.2%}: "
        + ("every kept measure within it" if cert["passed"] else "over budget: " + "; ".join(cert["failed"]))
    ]
    lines += [f"  caution: {c}" for c in cert.get("cautions", [])]
    for r in cert["rows"]:
        ci = "" if r["ci_low"] is None else f" (95% CI {_fmt(r, r['ci_low'])} .. {_fmt(r, r['ci_high'])})"
        verdict = {True: "within budget", False: "OVER BUDGET", None: "dropped"}[r["within_budget"]]
        lines.append(
            f"  {r['language']:4} {r['role']:7} {r['measure']}: {r['before']:.4g} -> {r['after']:.4g}, "
            f"change {_fmt(r, r['change'])}{ci}: {verdict}"
        )
    return "\n".join(lines)


def _fmt(row: dict, value: float) -> str:
    return f"{value:+.3f}" if row["scale"] == "score" else f"{value:+.2%}"
