"""The one bootstrap: texts (or items) resampled with replacement, percentile intervals. A
scan's per-head intervals (scanning.assemble.bootstrap_scores) and an evaluation's paired
before/after intervals (paired_interval) both resample through `resamples`."""

from __future__ import annotations

import numpy as np


def resamples(n: int, n_boot: int, seed) -> np.ndarray:
    """[n_boot, n] indices of n items drawn with replacement; `seed`: anything numpy's
    generator takes (a scan seeds each head with (seed, layer, head, language))."""
    return np.random.default_rng(seed).integers(0, n, size=(n_boot, n))


def interval(stat: np.ndarray, level: float = 0.95) -> np.ndarray:
    """The percentile interval (low, high) of a flat array of bootstrap statistics."""
    return np.percentile(stat, [100 * (1 - level) / 2, 100 * (1 + level) / 2])


def paired_interval(before: np.ndarray, after: np.ndarray, seed, n_boot: int = 1000, level: float = 0.95):
    """Percentile intervals of mean(after - before) and mean(after) / mean(before) - 1,
    resampling items (the same resample for both models: the comparison is paired)."""
    idx = resamples(len(before), n_boot, seed)
    diff = (after[idx] - before[idx]).mean(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = after[idx].mean(axis=1) / before[idx].mean(axis=1) - 1
    q = [100 * (1 - level) / 2, 100 * (1 + level) / 2]
    return interval(diff, level), np.nanpercentile(rel, q) if np.isfinite(rel).any() else (np.nan, np.nan)
