"""Put two runs side by side: how alike are their head rankings, per language?

Used to check a cheap method against the exact one (attribution vs exact, LAHIS vs exact).
Spearman's rank correlation of the head scores, and the overlap of the top-k heads.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import LangheadsError
from ..runs import NOUNS, read_run


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rho with average ranks for ties (scipy); NaN where either side is constant."""
    from scipy.stats import spearmanr

    a, b = np.asarray(a, float), np.asarray(b, float)
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    return float(spearmanr(a, b).statistic)


def mean_spearman(table: pd.DataFrame) -> str:
    """The mean over languages whose Spearman is defined, saying which are not (never a
    mean that quietly leaves languages out)."""
    rho = table["spearman"]
    undefined = table.loc[rho.isna(), "language"].tolist()
    if rho.notna().sum() == 0:
        return "mean spearman undefined (every language's scores are constant in one run)"
    note = (
        f" over {rho.notna().sum()} of {len(rho)} languages; undefined (constant scores): {','.join(undefined)}"
        if undefined
        else ""
    )
    return f"mean spearman {rho.mean():.3f}{note}"


def compare_runs(run_a: str | Path, run_b: str | Path, top: int = 10) -> pd.DataFrame:
    """Per shared language: Spearman of score over heads, and |top-k(a) & top-k(b)| / k."""
    if isinstance(top, bool) or not isinstance(top, int) or top < 1:
        raise LangheadsError(f"--top must be a whole number >= 1, not {top!r}")
    run_a, run_b = read_run(run_a), read_run(run_b)
    shared = comparable(run_a, run_b)
    a, b = run_a.scores, run_b.scores
    rows = []
    for lang in shared:
        sa = a[a.language == lang].set_index(["layer", "head"])["score"]
        sb = b[b.language == lang].set_index(["layer", "head"])["score"].reindex(sa.index)
        k = min(top, len(sa))
        top_a, top_b = set(sa.nlargest(k).index), set(sb.nlargest(k).index)
        rows.append(
            {
                "language": lang,
                "spearman": spearman(sa.to_numpy(), sb.to_numpy()),
                f"top{k}_overlap": len(top_a & top_b) / k,
            }
        )
    table = pd.DataFrame(rows)
    table.attrs.update(languages_a=run_a.languages, languages_b=run_b.languages)
    return table


def comparable(run_a, run_b) -> list[str]:
    """The languages two runs share, once they are checked to be comparable (one line each
    otherwise): the same model, the same kind of unit, the same shape; for `compare` and
    `report --compare` alike."""
    if run_a.model_hash != run_b.model_hash:
        raise LangheadsError("the two runs scanned different models")
    units = [run.info.get("component", {"name": "head"}) for run in (run_a, run_b)]
    if units[0] != units[1]:
        raise LangheadsError(
            f"the two runs scanned different units (A: {_units(units[0])}; B: {_units(units[1])}): "
            "compare two runs of the same --component"
        )
    shared = [lang for lang in run_a.languages if lang in run_b.languages]
    if not shared:
        raise LangheadsError(
            f"the two runs share no language (A: {','.join(run_a.languages)}; B: {','.join(run_b.languages)})"
        )
    if (run_a.n_layers, run_a.n_heads) != (run_b.n_layers, run_b.n_heads):
        raise LangheadsError(
            f"the two runs' models differ in shape ({run_a.n_layers}x{run_a.n_heads} heads vs "
            f"{run_b.n_layers}x{run_b.n_heads})"
        )
    return shared


def _units(component: dict) -> str:
    group = component.get("neurons_per_group")
    return NOUNS[component["name"]] + (f" of {group}" if group else "")
