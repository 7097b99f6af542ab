"""LAHIS head importance (arXiv 2511.07498), to compare with the published method.

Per text, the gate gradient times the gate, g = dL/dm * m at m = 1. A head's score is the
mean over texts of |g| times the share of texts where g < 0. The passes are attribution's;
only the sign of the kept value and the aggregate differ.
"""

from __future__ import annotations

import numpy as np

from .attribution import GradientAttribution


class Lahis(GradientAttribution):
    name = "lahis"
    value_meaning = "dNLL/dgate * gate at gate 1 (LAHIS per-text value; score = mean |g| * share(g < 0))"
    sign = 1.0

    def aggregate(self, values):
        return np.abs(values).mean(axis=-1) * (values < 0).mean(axis=-1)
