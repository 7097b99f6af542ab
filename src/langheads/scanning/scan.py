"""The scan, top to bottom: plan (check every input, load the model, tokenise, cut the work
into units), open the store (`<out>.units/`: what a crashed or interrupted scan finished is
kept and not scored again), score the units the store lacks (loops.py; this process's share
under torchrun, or in rounds with --adaptive), assemble the scores (one bootstrap, the kinds by
the rule) and write the run folder, which appears only when whole.

    settings.py  what a scan is asked (ScanSettings)    plan.py      the plan and its cost
    loops.py     the scoring loops and the store          assemble.py  values -> scores, kinds
"""

from __future__ import annotations

from pathlib import Path

from .assemble import ScanResult, assemble
from .distributed import Ranks
from .loops import open_store, score_adaptive, score_units
from .plan import check_memory, describe_plan, plan_scan
from .settings import ScanSettings
from .store import store_dir


def scan(
    settings: ScanSettings,
    out: Path,
    store: Path | None = None,
    overwrite: bool = False,
    progress: bool = True,
    ranks: Ranks | None = None,
    announce=None,
) -> ScanResult | None:
    """Plan, score, assemble, write (see the module doc); rank 0 returns the result, the other
    ranks None once their units are in the store. `announce(text)`: the plan, before work starts."""
    from ..runs import write_run

    ranks = ranks or Ranks()
    plan = plan_scan(settings, ranks=ranks)
    store = Path(store).resolve() if store else store_dir(Path(out))
    check_memory(plan)  # before anything is announced: a refusal is one line
    if ranks.main:
        open_store(plan, store, overwrite)  # every finished unit checked before any scoring
        if announce is not None:
            announce(describe_plan(plan, ranks.world))
    pairs = raw = None
    if settings.adaptive:
        pairs = score_adaptive(plan, store, progress, overwrite, ranks)
        raw = None if pairs is None else {lang: {"base": p.base, "values": p.values} for lang, p in pairs.items()}
    else:
        raw = score_units(plan, store, progress, overwrite, ranks)
    if raw is None:  # not rank 0: the others' units are in the store
        return None
    result = assemble(plan, raw, pairs)
    write_run(result, Path(out), overwrite)
    return result
