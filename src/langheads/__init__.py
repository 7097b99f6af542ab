"""langheads: which attention heads serve which language, for multilingual causal LLMs."""

from ._version import __version__
from .api import (  # noqa: E402
    EvaluateSettings,
    ExportSettings,
    HealSettings,
    PruneSettings,
    ReportSettings,
    ScanSettings,
    TrimSettings,
    evaluate,
    export,
    heal,
    plan,
    prune,
    report,
    scan,
    trim,
)
from .errors import LangheadsError  # noqa: E402
from .models import load_model  # noqa: E402
from .runs import read_run  # noqa: E402


def scan_model(out_dir, overwrite: bool = False, progress: bool = True, store=None, **settings):
    """`langheads.scan` with the settings given by name (ScanSettings' fields): score heads and
    write a run folder. `store`: where finished units are kept (default: OUT.units), as `--store`."""
    return scan(ScanSettings(**settings), out_dir, store=store, overwrite=overwrite, progress=progress)


__all__ = [
    "LangheadsError",
    "load_model",
    "read_run",
    "scan_model",
    "__version__",
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
