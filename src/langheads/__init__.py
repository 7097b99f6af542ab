"""langheads: which attention heads serve which language, for multilingual causal LLMs."""

from . import api
from ._version import __version__
from .api import *  # noqa: F403 (one entry per command and its settings: api.__all__)
from .api import ScanSettings, scan
from .errors import LangheadsError
from .models import load_model
from .runs import read_run


def scan_model(out_dir, overwrite: bool = False, progress: bool = True, store=None, **settings):
    """`langheads.scan` with the settings given by name (ScanSettings' fields): score heads and
    write a run folder. `store`: where finished units are kept (default: OUT.units), as `--store`."""
    return scan(ScanSettings(**settings), out_dir, store=store, overwrite=overwrite, progress=progress)


__all__ = ["LangheadsError", "load_model", "read_run", "scan_model", "__version__", *api.__all__]
