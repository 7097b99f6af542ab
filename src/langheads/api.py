"""One library entry per command, used by the CLI and the Python API alike:

    import langheads
    from langheads.scanning.settings import ScanSettings
    result = langheads.scan(ScanSettings(languages=["en", "hi"]), "runs/x")

Each entry takes the command's settings dataclass (its `__post_init__` has already refused bad
values), claims its output (check, lock, atomic write: `folders.claim`) and returns what it
wrote. The CLI only parses, calls one of these, and prints.
"""

from __future__ import annotations

from pathlib import Path

from .deploy.export import ExportSettings, export
from .edit.heal import HealSettings, heal
from .edit.pruning import PruneSettings, prune
from .edit.vocab import TrimSettings, trim
from .evaluation.run import EvaluateSettings, evaluate
from .reporting.report import ReportSettings, report
from .scanning.settings import ScanSettings


def scan(
    settings: ScanSettings,
    out,
    *,
    store=None,
    overwrite: bool = False,
    progress: bool = True,
    ranks=None,
    announce=None,
):
    """Library entry point for `langheads scan`: plan, score every unit (resuming from the
    store: default OUT.units), write the run folder. Under torchrun every process calls it
    (`ranks`: default from the environment); rank 0 claims `out` and returns the result, the
    others return None. `announce(text)` receives the plan's description before work starts."""
    from .folders import check_makeable
    from .scanning.distributed import Ranks
    from .scanning.scan import scan as recipe
    from .scanning.settings import resolve_device

    if store is not None:
        check_makeable(Path(store), "--store")
    own = ranks is None
    ranks = Ranks.from_env(resolve_device(settings.device)) if own else ranks
    try:
        if not ranks.main:  # rank 0 holds the lock and writes the run folder
            return recipe(settings, Path(out), store, overwrite, progress, ranks, announce)
        from .folders import claim

        with claim(Path(out), overwrite, "run"):
            return recipe(settings, Path(out), store, overwrite, progress, ranks, announce)
    finally:
        if own:
            ranks.close()


def plan(settings: ScanSettings, n_ranks: int = 1) -> str:
    """`langheads scan --dry-run`: the work units, time and memory per process, as text."""
    from .scanning.distributed import Ranks
    from .scanning.plan import describe_plan, plan_scan

    return describe_plan(plan_scan(settings, ranks=Ranks()), n_ranks)


__all__ = [
    "scan",
    "plan",
    "prune",
    "trim",
    "heal",
    "export",
    "evaluate",
    "report",
    "ScanSettings",
    "PruneSettings",
    "TrimSettings",
    "HealSettings",
    "ExportSettings",
    "EvaluateSettings",
    "ReportSettings",
]
