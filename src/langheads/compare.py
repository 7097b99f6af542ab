"""Put two runs side by side: how alike are their head rankings, per language?

Used to check a cheap method against the exact one (attribution vs exact, LAHIS vs exact).
Spearman's rank correlation of the head scores, and the overlap of the top-k heads.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .errors import LangheadsError
from .runs import read_run


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rho with average ranks for ties (no scipy needed)."""
    ra = pd.Series(a).rank().to_numpy()
    rb = pd.Series(b).rank().to_numpy()
    if ra.std() == 0 or rb.std() == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])


def compare_runs(run_a: str | Path, run_b: str | Path, top: int = 10) -> pd.DataFrame:
    """Per shared language: Spearman of delta_nll over heads, and |top-k(a) & top-k(b)| / k."""
    if isinstance(top, bool) or not isinstance(top, int) or top < 1:
        raise LangheadsError(f"--top must be a whole number >= 1, not {top!r}")
    run_a, run_b = read_run(run_a), read_run(run_b)
    if run_a.model_hash != run_b.model_hash:
        raise LangheadsError("the two runs scanned different models")
    a, b = run_a.scores, run_b.scores
    shared = [lang for lang in a["language"].unique() if lang in set(b["language"])]
    if not shared:
        raise LangheadsError("the two runs share no language")
    rows = []
    for lang in shared:
        sa = a[a.language == lang].set_index(["layer", "head"])["delta_nll"]
        sb = b[b.language == lang].set_index(["layer", "head"])["delta_nll"].reindex(sa.index)
        k = min(top, len(sa))
        top_a, top_b = set(sa.nlargest(k).index), set(sb.nlargest(k).index)
        rows.append({"language": lang, "spearman": spearman(sa.to_numpy(), sb.to_numpy()),
                     f"top{k}_overlap": len(top_a & top_b) / k})
    return pd.DataFrame(rows)
