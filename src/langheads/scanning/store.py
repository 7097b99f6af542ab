"""The work-in-progress store of a scan: one file per finished unit, kept across attempts.

A unit's file holds its per-text values and the ids of its texts; it is written under a
temporary name and renamed, so a unit is either whole or absent, whatever kills the process.
The store is keyed on what changes the values (model, corpus, method, texts, token cut,
precision, batching) and nothing else: thresholds, rules, the bootstrap and the language list
are applied at the end, so a rescan with other ones reuses every finished unit. A store of
another scan is refused, never deleted or mixed; `overwrite` replaces our own.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import time
from pathlib import Path

import numpy as np

from ..errors import LangheadsError
from ..folders import atomic_file, check_replaceable, mark, write_json_atomically
from ..scoring.base import UnitScores, WorkUnit

KEY_FILE = "scan-key.json"


def store_dir(out: Path) -> Path:
    """`<out>.units` beside the run folder (the same shared folder for every process)."""
    out = Path(out).resolve()
    return out.with_name(out.name + ".units")


class UnitStore:
    def __init__(self, folder: Path, key: dict):
        self.folder, self.key = Path(folder), key
        self.attempt = f"{socket.gethostname()}-{os.getpid()}-{time.time_ns()}"  # names this attempt's log

    @classmethod
    def open(cls, folder: Path, key: dict, overwrite: bool = False) -> UnitStore:
        """Make the store, or check that an existing one holds this scan's work."""
        folder = Path(folder)
        if folder.exists():
            check_replaceable(folder, "store", "--store (or --out)")  # a store replaces only a store
            try:
                stored = json.loads((folder / KEY_FILE).read_text())
            except (OSError, json.JSONDecodeError):
                stored = None
            if stored != key and not overwrite:
                if stored is None:
                    why = f"is damaged (no readable {KEY_FILE})"
                else:
                    differ = sorted(k for k in set(stored) | set(key) if stored.get(k) != key.get(k))
                    why = f"holds work of another scan ({', '.join(differ)} differ)"
                raise LangheadsError(
                    f"{folder} {why}; it is left in place: rerun with --overwrite to replace it, "
                    "or choose another --out"
                )
            if stored != key:
                shutil.rmtree(folder)  # a store of ours, and the user asked to replace it
        folder.mkdir(parents=True, exist_ok=True)
        mark(folder, "store")
        write_json_atomically(folder / KEY_FILE, key)
        return cls(folder, key)

    def path(self, unit: WorkUnit) -> Path:
        path = self.folder / unit.lang / f"{unit.name}.npz"
        if path.resolve().parent.parent != self.folder.resolve():  # codes are checked at the door; never leave
            raise LangheadsError(f"unit {unit.lang}/{unit.name} would be written outside {self.folder}")
        return path

    def save(
        self, unit: WorkUnit, scores: UnitScores, text_ids: list[str], rank: int = 0, seconds: float = 0.0
    ) -> None:
        """Write one finished unit (whole or not at all), and note in this process's log who
        computed it and how long it took."""
        path = self.path(unit)
        path.parent.mkdir(exist_ok=True)
        extra = {} if scores.heads is None else {"heads": np.array(scores.heads)}  # an adaptive scan's open heads
        with atomic_file(path, suffix=".npz") as tmp:  # np.savez adds .npz to any other name
            np.savez(tmp, base=scores.base_nll, values=scores.values, text_ids=np.array(text_ids), **extra)
        log = self.folder / "log" / f"rank{rank}-{self.attempt}.txt"
        log.parent.mkdir(exist_ok=True)
        with open(log, "a") as f:
            f.write(f"{unit.lang}/{unit.name} {seconds:.3f}\n")

    def computed(self) -> dict[str, list[str]]:
        """Per attempt of each process (log name: rank, host, pid, start), oldest first: the
        units it computed, in order."""
        logs = sorted((self.folder / "log").glob("*.txt"), key=lambda p: (int(p.stem.rsplit("-", 1)[1]), p.name))
        return {p.stem: [line.split()[0] for line in p.read_text().splitlines()] for p in logs}

    def load(self, unit: WorkUnit, text_ids: list[str], n_heads: int, overwrite: bool = False) -> UnitScores | None:
        """A finished unit, checked against what it must hold; None if absent (or damaged and
        `overwrite`, so it is computed again). A unit of an adaptive scan may hold only some
        heads (`heads`; the others' values are NaN)."""
        path = self.path(unit)
        if not path.exists():
            return None
        try:
            with np.load(path) as f:
                heads = [int(h) for h in f["heads"]] if "heads" in f.files else None
                scores = UnitScores(f["base"], f["values"], heads)
                ok = (
                    list(f["text_ids"]) == list(text_ids)
                    and scores.base_nll.shape == (len(text_ids),)
                    and scores.values.shape == (unit.stop - unit.first, n_heads, len(text_ids))
                    and all(0 <= h < n_heads for h in heads or [])
                )
        except Exception:  # a truncated or foreign file: np.load raises many kinds
            ok = False
        if ok:
            return scores
        if overwrite:
            return None
        raise LangheadsError(
            f"{path} is damaged or does not match this scan's texts; rerun with --overwrite to compute it again"
        )
