"""The scan's loops: score every work unit the store lacks (this process's share under
torchrun), or, with --adaptive, score texts in rounds and stop each head-language pair once its
call is made. Each finished unit goes to the store (store.py, `<out>.units/`) at once, a pure
function of the model, the texts and the settings: a scan started again after a crash computes
only the missing units, whatever the order or process that computed the others."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import LangheadsError
from ..scoring.base import UnitScores, WorkUnit
from .distributed import Ranks
from .plan import LanguageWork, Plan
from .sequential import CALLS, OPEN, StoppingRule
from .store import UnitStore


def values_key(plan: Plan) -> dict:
    """What the per-text values depend on, and nothing else: thresholds, rules, the bootstrap
    and the language list are applied at the end and never invalidate finished units.
    batch_tokens decides which texts share a unit."""
    s = plan.settings
    return {
        "format_version": 1,
        "model_hash": plan.loaded.model_hash,
        "corpus": plan.corpus.sha256,
        "method": s.method,
        "texts": s.texts,
        "max_tokens": s.max_tokens,
        "dtype": s.dtype,
        "load_in": s.load_in,
        "batch_tokens": s.batch_tokens,
        **({"signal": plan.signal} if s.signal != "text" else {}),
        **({"rounds": {"first_look": s.first_look, "step": 1}} if s.adaptive else {}),
        **({"component": plan.component.record()} if plan.component and plan.component.name != "head" else {}),
    }


def open_store(plan: Plan, folder: Path, overwrite: bool = False) -> tuple[UnitStore, dict]:
    """Open the store and check every finished unit of this scan in it (before any scoring,
    so a refusal is one line); returns the store and the finished units' values."""
    key = (Path(folder).resolve(), overwrite)
    if key in plan.opened:  # the CLI checks the store before it prints; the scan reuses that reading
        return plan.opened[key]
    store = UnitStore.open(folder, values_key(plan), overwrite)
    finished = {}
    for unit in plan.work_units():
        got = store.load(unit, plan.text_ids_of(unit), plan.layout.n_units, overwrite)
        if got is not None:
            finished[unit] = got
    plan.opened[key] = (store, finished)
    return store, finished


def score_units(
    plan: Plan, folder: Path, progress: bool = True, overwrite: bool = False, ranks: Ranks | None = None
) -> dict[str, dict] | None:
    """Compute this process's share of the units the store lacks, then (rank 0 only) return
    every language's per-text values {"base": [n], "values": [L, H, n]}; other ranks get None."""
    from tqdm.auto import tqdm

    ranks = ranks or Ranks()
    units = plan.work_units()
    store, finished = _open_for_ranks(plan, folder, overwrite, ranks)
    missing = ranks.from_main([u for u in units if u not in finished] if ranks.main else None)
    mine = [missing[i] for i in ranks.share([plan.unit_flops(u) for u in missing])]
    bar = tqdm(
        total=len(units),
        initial=len(units) - len(missing),
        unit="unit",
        desc=f"scan ({plan.settings.method})" + (f", {ranks.world} processes" if ranks.world > 1 else ""),
        disable=not (progress and ranks.main),
    )
    for unit in mine:
        bar.set_postfix_str(f"{unit.lang} {unit.name}")
        start = time.perf_counter()
        out = plan.method.score_unit(plan.loaded.model, plan.layout, plan.batch_of(unit), unit.layers)
        store.save(unit, out, plan.text_ids_of(unit), ranks.rank, time.perf_counter() - start)
        if ranks.world == 1:
            bar.update(1)
        else:  # rank 0's bar counts every rank's units in the shared store
            bar.update(_count_done(store, missing) + len(units) - len(missing) - bar.n)
    ranks.barrier()
    bar.update(len(units) - bar.n)
    bar.close()
    return _assemble(plan, store, finished) if ranks.main else None


def _count_done(store: UnitStore, units: list[WorkUnit]) -> int:
    names = {(u.lang, u.name + ".npz") for u in units}
    langs = {u.lang for u in units}
    return sum(
        (lang, p.name) in names
        for lang in langs
        if (store.folder / lang).is_dir()
        for p in (store.folder / lang).iterdir()
    )


def _assemble(plan: Plan, store: UnitStore, finished: dict) -> dict[str, dict]:
    """Every language's values: the units already read when the store was opened, and the
    ones computed since, read from the store."""
    out = {}
    for w in plan.work:
        base = np.zeros(len(w.text_ids))
        values = np.zeros((plan.layout.n_layers, plan.layout.n_units, len(w.text_ids)))
        for unit in plan.method.work_units(w.lang, plan.layout, len(plan.batches(w))):
            got = finished.get(unit) or store.load(unit, plan.text_ids_of(unit), plan.layout.n_units)
            if got is None:
                raise LangheadsError(
                    f"{store.path(unit)} is missing after every process finished: is "
                    f"{store.folder} on a file system all machines share?"
                )
            got.place(unit, plan.batch_of(unit).index, base, values)
        out[w.lang] = {"base": base, "values": values}
    return out


# ---- the adaptive scan -----------------------------------------------------------------


@dataclass
class OpenPairs:
    """One language's (head, language) pairs during an adaptive scan: which are still scored
    and what they have scored so far. Rounds take texts in order, so a pair's texts are always
    the language's first `stopped_at` texts."""

    rule: StoppingRule
    base: np.ndarray  # [n_texts] the unmodified NLL, NaN until scored
    values: np.ndarray  # [layers, heads, n_texts] NaN where not scored
    state: np.ndarray  # [layers, heads] OPEN, MATTERS, BELOW or FUTILE (sequential.py)
    stopped_at: np.ndarray  # [layers, heads] texts the pair was scored on

    @classmethod
    def start(cls, plan: Plan, w: LanguageWork) -> OpenPairs:
        L, Hn, n = plan.layout.n_layers, plan.layout.n_units, len(w.text_ids)
        return cls(
            plan.settings.stopping(n),
            np.full(n, np.nan),
            np.full((L, Hn, n), np.nan),
            np.full((L, Hn), OPEN),
            np.full((L, Hn), n),
        )

    def open_heads(self, layer: int) -> list[int]:
        return [int(h) for h in np.flatnonzero(self.state[layer] == OPEN)]

    def fill(self, unit: WorkUnit, got: UnitScores, heads: list[int], rows: list[int]) -> None:
        got.place(unit, rows, self.base, self.values, heads)

    def look(self, n: int) -> int:
        """After n texts: stop the open pairs the rule settles; returns the texts they skip."""
        if n >= self.rule.max_texts:
            return 0
        is_open = self.state == OPEN
        d = self.values[is_open][:, :n]  # [open pairs, n]
        decided = self.rule.decide(d, np.broadcast_to(self.base[:n], d.shape))
        self.state[is_open] = decided
        self.stopped_at[is_open] = np.where(decided == OPEN, self.rule.max_texts, n)
        return int((decided != OPEN).sum()) * (self.rule.max_texts - n)

    def stopped(self) -> np.ndarray:
        """Per pair, how it was called: matters | below | futile (early looks) | last."""
        return np.vectorize(CALLS.get, otypes=[object])(self.state)


def score_adaptive(
    plan: Plan, folder: Path, progress: bool = True, overwrite: bool = False, ranks: Ranks | None = None
) -> dict[str, OpenPairs] | None:
    """Score round after round, only the pairs still open (sequential.py), every unit through
    the store; rank 0 returns each language's pairs, other ranks None."""
    from tqdm.auto import tqdm

    ranks = ranks or Ranks()
    store, finished = _open_for_ranks(plan, folder, overwrite, ranks)
    pairs = {w.lang: OpenPairs.start(plan, w) for w in plan.work}
    bar = tqdm(
        total=sum(p.values.size for p in pairs.values()),
        unit="pair-text",
        desc="scan (exact, adaptive)",
        disable=not (progress and ranks.main),
    )
    for k in range(max(len(plan.round_batches(w)) for w in plan.work)):
        todo = [
            (WorkUnit(w.lang, b, layer, layer + 1), heads)
            for w in plan.work
            if k < len(plan.round_batches(w))
            for b in plan.round_batches(w)[k]
            for layer in range(plan.layout.n_layers)
            if (heads := pairs[w.lang].open_heads(layer))
        ]
        _score_some(plan, store, finished, todo, overwrite, ranks, bar)
        if ranks.main:
            for unit, heads in todo:
                pairs[unit.lang].fill(unit, finished[unit], heads, plan.batch_of(unit).index)
            for w in plan.work:
                if k < len(plan.round_batches(w)):
                    bar.update(pairs[w.lang].look(plan.round_texts(w)[k].stop))
        states = ranks.from_main({lang: p.state for lang, p in pairs.items()} if ranks.main else None)
        for lang, state in states.items():
            pairs[lang].state = state
    bar.update(bar.total - bar.n)
    bar.close()
    return pairs if ranks.main else None


def _open_for_ranks(plan: Plan, folder: Path, overwrite: bool, ranks: Ranks) -> tuple[UnitStore, dict]:
    """Rank 0 opens and checks the store (one line if it refuses); the others share it."""
    told = None
    if ranks.main:
        try:
            store, finished = open_store(plan, folder, overwrite)
        except LangheadsError as e:
            told = str(e)
    error = ranks.from_main(told)
    if error:
        raise LangheadsError(error)
    return (store, finished) if ranks.main else (UnitStore(folder, values_key(plan)), {})


def _score_some(
    plan: Plan,
    store: UnitStore,
    finished: dict,
    todo: list[tuple[WorkUnit, list[int]]],
    overwrite: bool,
    ranks: Ranks,
    bar,
) -> None:
    """Compute the (unit, heads) the store lacks, shared among the processes; afterwards rank
    0's `finished` holds every unit of `todo`."""

    def holds(got, heads):
        return got is not None and (got.heads is None or set(heads) <= set(got.heads))

    missing = ranks.from_main(
        [i for i, (u, heads) in enumerate(todo) if not holds(finished.get(u), heads)] if ranks.main else None
    )
    costs = [plan.unit_flops(todo[i][0]) * len(todo[i][1]) for i in missing]
    mine = [missing[j] for j in ranks.share(costs)]
    for group in _by_batch(todo, mine):  # one batch's units together: the method may share their loss
        _score_group(plan, store, finished, [todo[i] for i in group], overwrite, ranks.rank, bar)
    ranks.barrier()
    if ranks.main:
        for i in missing:
            unit = todo[i][0]
            if holds(finished.get(unit), todo[i][1]):  # computed here: already in memory
                continue
            finished[unit] = store.load(unit, plan.text_ids_of(unit), plan.layout.n_units)
            if not holds(finished[unit], todo[i][1]):
                raise LangheadsError(
                    f"{store.path(unit)} lacks heads after every process finished: is "
                    f"{store.folder} on a file system all machines share?"
                )
        for unit, heads in (todo[i] for i in set(range(len(todo))) - set(missing)):
            bar.update(len(heads) * len(plan.batch_of(unit).index))


def _by_batch(todo: list[tuple[WorkUnit, list[int]]], items: list[int]) -> list[list[int]]:
    """The items in groups of one text batch each (lang, batch), in their order."""
    groups: dict[tuple[str, int], list[int]] = {}
    for i in items:
        groups.setdefault((todo[i][0].lang, todo[i][0].batch), []).append(i)
    return list(groups.values())


def _score_group(
    plan: Plan,
    store: UnitStore,
    finished: dict,
    group: list[tuple[WorkUnit, list[int]]],
    overwrite: bool,
    rank: int,
    bar,
) -> None:
    """Score the heads each unit of one text batch lacks, in one call of the method, and store
    every unit (with what an earlier attempt scored); each unit's logged time is its share of
    the call's by its FLOPs."""
    batch = plan.batch_of(group[0][0])
    olds = [finished.get(u) or store.load(u, plan.text_ids_of(u), plan.layout.n_units, overwrite) for u, _ in group]
    needs = [
        sorted(set(heads) - set(old.heads if old and old.heads is not None else []))
        for (_, heads), old in zip(group, olds)
    ]
    start = time.perf_counter()
    news = plan.method.score_units(
        plan.loaded.model, plan.layout, batch, [(u.layers, need) for (u, _), need in zip(group, needs)]
    )
    seconds = time.perf_counter() - start
    flops = [plan.unit_flops(u) * max(1, len(need)) for (u, _), need in zip(group, needs)]
    for (unit, heads), old, new, f in zip(group, olds, news, flops):
        merged = _merge(old, new, plan.layout.n_units)
        store.save(unit, merged, plan.text_ids_of(unit), rank, seconds * f / sum(flops))
        finished[unit] = merged
        bar.update(len(heads) * len(batch.index))


def _merge(old: UnitScores | None, new: UnitScores, n_heads: int) -> UnitScores:
    """A unit's heads scored before and now, in one (what an earlier attempt scored is kept)."""
    if old is None or new.heads is None:
        return new
    values = old.values.copy()
    values[:, new.heads] = new.values[:, new.heads]
    heads = sorted(set(range(n_heads) if old.heads is None else old.heads) | set(new.heads))
    return UnitScores(new.base_nll, values, None if len(heads) == n_heads else heads)
