"""The one interface every head-scoring method implements.

A scan is cut into fixed units: one language's text batch at a range of layers. A method
scores one unit at a time (`score_unit`), from nothing but the model and the batch, so any
process can take any unit and the numbers do not depend on who computed them or in which
order. How per-text values become one score per head (`aggregate`) is the method's too, so
the bootstrap in scan.py works the same for all of them.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .. import heads as H
from ..nll import Batch
from ..units import UnitLayout


@dataclass(frozen=True)
class WorkUnit:
    """One fixed piece of a scan: batch `batch` of `lang`'s texts, layers first..stop-1."""

    lang: str
    batch: int
    first: int
    stop: int

    @property
    def layers(self) -> range:
        return range(self.first, self.stop)

    @property
    def name(self) -> str:
        return f"b{self.batch:04d}-l{self.first:03d}-{self.stop:03d}"


@dataclass
class UnitScores:
    base_nll: np.ndarray  # [rows] the unmodified model's mean token NLL per text of the batch
    values: np.ndarray  # [stop - first, n_heads, rows] the method's per-text value per head
    heads: list[int] | None = None  # the heads scored (None: all; the others' values are NaN)

    def place(self, unit: WorkUnit, rows, base: np.ndarray, values: np.ndarray, heads=None) -> None:
        """The one unit assembly: write this unit into its language's arrays, base [n_texts]
        and values [n_layers, n_heads, n_texts], at the batch's text positions `rows` (only
        `heads`, when given)."""
        base[rows] = self.base_nll
        if heads is None:
            values[unit.first : unit.stop][:, :, rows] = self.values
        else:
            layers = range(unit.stop - unit.first)
            values[unit.first : unit.stop][np.ix_(layers, heads, rows)] = self.values[:, heads]


@dataclass
class LanguageScores:
    base_nll: np.ndarray  # [n_texts] the unmodified model's mean token NLL per text
    values: np.ndarray  # [n_layers, n_heads, n_texts] the method's per-text value per head


class ScoringMethod(ABC):
    name: str
    value_meaning: str  # what one per-text value is, written into the run record
    layers_per_unit: int | None = None  # None: every layer in one unit (one backward gives them all)
    needs_backward: bool = True  # keeps every layer's activations (for memory estimates)
    relative: bool = True  # rel_increase = score / base (False: values are already shares)
    part: str = "scoring"  # which part of the data the scan scores on
    component = None  # components.Component whose units are scored (None: heads), given at init
    components = ("head", "neuron", "block")  # which components the method can score

    def prepare(self, loaded) -> None:  # noqa: B027 (a hook: most methods need nothing here)
        """Take what the method needs from the loaded model beyond its weights (a tokenizer)."""

    def __init__(self, chunk_tokens: int = 1024, batch_tokens: int = 4096, component=None):
        self.chunk_tokens = chunk_tokens
        self.batch_tokens = batch_tokens
        self.component = component  # None: heads

    def scaled(self, model, factors: dict):
        """Scale the scored component's units (heads unless a component was given)."""
        return H.scaled_heads(model, factors) if self.component is None else self.component.scaled(model, factors)

    @abstractmethod
    def score_unit(self, model, layout: UnitLayout, batch: Batch, layers: range) -> UnitScores:
        """Per-text values of every head in `layers`, for the texts of one batch."""

    def score_units(
        self, model, layout: UnitLayout, batch: Batch, wanted: list[tuple[range, list[int]]]
    ) -> list[UnitScores]:
        """Several units of one text batch, each (layers, heads to score): one UnitScores each.
        A method may share work between them (exact ablation: one output-layer pass)."""
        return [self.score_unit(model, layout, batch, layers, heads=heads) for layers, heads in wanted]

    def unit_flops(self, layout: UnitLayout, batch: Batch, layers: range, body: int, head: int) -> float:
        """Rough FLOPs of one unit, given the decoder's and the output layer's parameter counts
        (for the dry run's estimate and for sharing units evenly among processes)."""
        return 3 * 2 * batch.n_tokens * (body + head)  # one forward and its backward

    def copies_per_forward(self, layout: UnitLayout) -> int:
        """How many copies of a text batch one forward holds (sizes the text batches)."""
        return 1

    def layer_ranges(self, layout: UnitLayout) -> list[range]:
        step = self.layers_per_unit or layout.n_layers
        return [range(f, min(f + step, layout.n_layers)) for f in range(0, layout.n_layers, step)]

    def work_units(self, lang: str, layout: UnitLayout, n_batches: int) -> list[WorkUnit]:
        return [WorkUnit(lang, b, r.start, r.stop) for b in range(n_batches) for r in self.layer_ranges(layout)]

    def score_language(
        self,
        model,
        layout: UnitLayout,
        batches: list[Batch],
        n_texts: int,
        advance: Callable[[int], None] = lambda k: None,
    ) -> LanguageScores:
        """Every unit of one language in this process (tests and benchmarks; scans go through scan.py)."""
        base = np.zeros(n_texts)
        values = np.zeros((layout.n_layers, layout.n_units, n_texts))
        for unit in self.work_units("", layout, len(batches)):
            batch = batches[unit.batch]
            self.score_unit(model, layout, batch, unit.layers).place(unit, batch.index, base, values)
            advance(1)
        return LanguageScores(base, values)

    def aggregate(self, values: np.ndarray) -> np.ndarray:
        """Per-text values [..., n_texts] -> one score per head (default: the mean)."""
        return values.mean(axis=-1)
