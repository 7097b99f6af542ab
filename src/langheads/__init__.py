"""langheads: which attention heads serve which language, for multilingual causal LLMs."""
from ._version import __version__

from .errors import LangheadsError  # noqa: E402
from .models import load_model  # noqa: E402
from .runs import load_run, read_run  # noqa: E402


def scan_model(out_dir, overwrite: bool = False, progress: bool = True, store=None, **settings):
    """Library entry point for `langheads scan`: score heads and write a run folder. `store`:
    where finished units are kept (default: OUT.units), as `--store`; settings: ScanSettings'."""
    from pathlib import Path

    from . import runs
    from .folders import check_out_dir, writing
    from .scanning.scan import ScanSettings, check_memory, plan_scan, run_scan
    from .scanning.store import store_dir

    out = Path(out_dir)
    check_out_dir(out, overwrite, "run")
    if store is not None:
        from .folders import check_makeable

        check_makeable(Path(store), "--store")
    with writing(out, "run folder"):
        plan = plan_scan(ScanSettings(**settings))
        check_memory(plan)
        result = run_scan(plan, Path(store).resolve() if store else store_dir(out), progress, overwrite)
        runs.write_run(result, out, overwrite)
    return result


__all__ = ["LangheadsError", "load_model", "load_run", "read_run", "scan_model", "__version__"]
