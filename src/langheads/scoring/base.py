"""The one interface every head-scoring method implements.

A method turns one language's batches into per-text values for every head (and the
unmodified model's per-text NLL). How values become one score per head (`aggregate`) is the
method's too, so the bootstrap in scan.py works the same for all of them.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Callable

import numpy as np

from ..heads import HeadLayout
from ..nll import Batch


@dataclass
class LanguageScores:
    base_nll: np.ndarray   # [n_texts] the unmodified model's mean token NLL per text
    values: np.ndarray     # [n_layers, n_heads, n_texts] the method's per-text value per head


class ScoringMethod(ABC):
    name: str
    value_meaning: str     # what one per-text value is, written into heads.json

    def __init__(self, chunk_tokens: int = 1024, batch_tokens: int = 4096):
        self.chunk_tokens = chunk_tokens
        self.batch_tokens = batch_tokens

    @abstractmethod
    def score_language(self, model, layout: HeadLayout, batches: list[Batch], n_texts: int,
                       advance: Callable[[int], None]) -> LanguageScores:
        """Per-text values for every head; call `advance(k)` as k units of work finish."""

    def work_units(self, layout: HeadLayout, batches: list[Batch]) -> int:
        """How many `advance` steps score_language will report (for progress bars)."""
        return len(batches)

    def aggregate(self, values: np.ndarray) -> np.ndarray:
        """Per-text values [..., n_texts] -> one score per head (default: the mean)."""
        return values.mean(axis=-1)
