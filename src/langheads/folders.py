"""Which folders are langheads' own, and the rules for touching them.

Every folder langheads writes carries a marker: `.langheads` (run folders, evaluations, work in
progress) or its manifest `langheads.json` (model folders). `--overwrite` replaces only a marked
folder; anything else a user has at that path is refused and left alone, as is a
work-in-progress folder langheads did not make.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path

from .errors import LangheadsError

MARKER = ".langheads"
# The kinds of folder langheads writes, as a user would name them. `--overwrite` replaces a
# folder only with one of its own kind: a scan's store never replaces a model, a run never a report.
FOLDER_KINDS = {
    "run": "run folder",
    "evaluation": "evaluation folder",
    "report": "report folder",
    "model": "model folder",
    "store": "scan store (finished units)",
    "cache": "converted-model cache entry",
}
# What markers written before kinds were recorded say (their first words after "langheads").
_OLD_MARKERS = {"scan work in progress": "store", "converted model cache entry": "cache"}


def cache_dir() -> Path:
    """Where langheads keeps what it fetched or converted: $LANGHEADS_CACHE, else ~/.cache/langheads."""
    return Path(os.environ.get("LANGHEADS_CACHE") or Path.home() / ".cache" / "langheads")


def mark(folder: Path, kind: str) -> None:
    if kind not in FOLDER_KINDS:
        raise ValueError(f"unknown folder kind {kind!r}")
    (folder / MARKER).write_text(f"langheads {kind}\n")


def kind_of(folder: Path) -> str | None:
    """Which kind of langheads folder `folder` is (a key of FOLDER_KINDS), or None if not ours."""
    folder = Path(folder)
    if (folder / MARKER).is_file():
        try:
            said = (folder / MARKER).read_text(encoding="utf-8").split("\n", 1)[0].removeprefix("langheads ").strip()
        except (OSError, UnicodeDecodeError):
            return None
        if said in FOLDER_KINDS:
            return said
        return next((k for old, k in _OLD_MARKERS.items() if said.startswith(old)), None)
    if (folder / "langheads.json").is_file():
        return "model"
    if (folder / "langheads_source.json").is_file():  # a cache entry from before markers
        return "cache"
    try:  # a run folder from before markers (and before run.json): its heads.json names langheads as the writer
        return (
            "run"
            if "langheads" in json.loads((folder / "heads.json").read_text(encoding="utf-8"))["versions"]
            else None
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


def is_ours(folder: Path) -> bool:
    return kind_of(folder) is not None


def check_replaceable(folder: Path, kind: str, option: str) -> None:
    """The one rule for what `--overwrite` may replace: a folder langheads wrote, of `kind`."""
    found = kind_of(folder)
    if found is None:
        raise LangheadsError(
            f"{folder} already exists and is not a folder langheads wrote (no {MARKER} or "
            f"langheads.json); refusing to replace it: choose another {option}"
        )
    if found != kind:
        theirs, ours = _a(FOLDER_KINDS[found]), _a(FOLDER_KINDS[kind])
        raise LangheadsError(
            f"{folder} is {theirs} langheads wrote, not {ours}; --overwrite replaces only "
            f"{ours}, so it is left in place: choose another {option}"
        )


def _a(noun: str) -> str:
    return ("an " if noun[0] in "aeiou" else "a ") + noun


def check_makeable(folder: Path, option: str) -> None:
    """Refuse a folder that cannot be made because something above it is a file."""
    above = next((p for p in Path(folder).parents if p.exists()), None)
    if above is not None and not above.is_dir():
        raise LangheadsError(f"{folder}: {above} is a file, so no folder can be made under it; choose another {option}")


def check_out_dir(out: Path, overwrite: bool, kind: str) -> None:
    """Refuse an output path that is taken, unless asked to overwrite a folder langheads wrote
    of the same kind."""
    out = Path(out)
    check_makeable(out, "--out")
    if out.is_symlink():
        raise LangheadsError(f"{out} is a symbolic link; langheads writes no folder through one: choose another --out")
    if out.exists() and not out.is_dir():
        raise LangheadsError(f"{out} already exists and is a file; choose another --out")
    if out.exists():
        check_replaceable(out, kind, "--out")  # never advise --overwrite where it would be refused
        if not overwrite:
            raise LangheadsError(f"{out} already exists (an earlier run?); pass --overwrite to replace it")


def check_out_file(out: Path, overwrite: bool, option: str) -> None:
    """Refuse a file path that cannot be written, before any work: a folder (whatever
    --overwrite says), something under a file, or a file there without --overwrite."""
    out = Path(out)
    check_makeable(out, option)
    if out.is_dir():
        raise LangheadsError(f"{option} {out} is a folder; give a file name (--overwrite replaces only a file)")
    if out.exists() and not overwrite:
        raise LangheadsError(f"{out} already exists; pass --overwrite to replace it")


def usual_mode(path: Path, folder: bool = False) -> None:
    """The mode a plain open()/mkdir() would give (temporary files and folders are private)."""
    os.chmod(path, (0o777 if folder else 0o666) & ~_umask())


@contextlib.contextmanager
def new_folder(out: Path, overwrite: bool, kind: str):
    """The one way langheads writes a folder (run, model, evaluation, report): fill the yielded
    temporary folder beside `out` (already marked as ours); on success it takes `out`'s place
    in one rename, on any error it is removed. A crash never leaves half a folder at `out`, and
    an old `out` is only replaced once the new one is whole."""
    out = Path(out).resolve()  # "." has no name to put a temporary folder beside
    check_out_dir(out, overwrite, kind)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    old = None
    try:
        usual_mode(tmp, folder=True)  # mkdtemp makes it private; the folder gets the usual mode
        mark(tmp, kind)
        yield tmp
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old.", dir=out.parent))
            os.replace(out, old / "x")
        os.replace(tmp, out)
    except BaseException as e:
        disk = disk_error(e, out.parent)
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None and not out.exists():
            os.replace(old / "x", out)  # put the old folder back
        if disk is not None:
            raise disk from e
        raise
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


FULL = 1 << 20  # a file system with less free than this, when a write failed, was full


def disk_error(e: BaseException, folder: Path) -> OSError | None:
    """A writer's failure as the OSError(ENOSPC) it was, where the writer said it otherwise
    (safetensors, torch.save and gguf wrap it in their own errors), so the CLI says it in one
    line (numpy's short write is an OSError without errno); None for an OSError with its errno
    (the CLI reads it) and for other failures. Called
    before the half-written file is removed, while the disk is still full."""
    import errno

    if isinstance(e, KeyboardInterrupt) or (isinstance(e, OSError) and e.errno is not None):
        return None
    chain, cause = [], e
    while cause is not None and len(chain) < 8:
        chain.append(cause)
        cause = cause.__cause__ or cause.__context__
    said = any("No space left" in str(c) or "os error 28" in str(c) for c in chain)
    try:
        full = shutil.disk_usage(folder).free < FULL
    except OSError:
        full = False
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(folder)) if said or full else None


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_file(path: Path, suffix: str = ""):
    """The one way langheads writes a file: fill the yielded temporary path beside `path` (its
    own per process, so ranks never collide); on success it takes `path`'s name in one rename
    with the usual mode, on any error (a full disk, Ctrl-C) it is removed. Readers see the old
    file or the new one, never half of one."""
    path = Path(path)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{suffix}", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        usual_mode(tmp)  # mkstemp's file is private (0600)
        os.replace(tmp, path)
    except BaseException as e:
        disk = disk_error(e, path.parent)
        tmp.unlink(missing_ok=True)
        if disk is not None:
            raise disk from e
        raise


def write_json_atomically(path: Path, data, **dump) -> None:
    """Write JSON through atomic_file: readers see the old file or the new one."""
    with atomic_file(path) as tmp:
        tmp.write_text(json.dumps(data, **({"sort_keys": True} | dump)) + "\n", encoding="utf-8")


@contextlib.contextmanager
def writing(path: Path, what: str):
    """Hold the lock for writing `path` (an output folder, a cache entry; filelock): a second
    writer is told in one line who holds it. The lock file sits beside `path`, names its holder
    and goes when released."""
    import socket
    import time

    from filelock import FileLock, Timeout

    path = Path(path).resolve()
    lock_file = path.with_name(path.name + ".lock")
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(lock_file, timeout=0)
    try:
        lock.acquire()
    except Timeout:
        holder = lock_file.read_text(errors="replace").strip() if lock_file.exists() else ""
        raise LangheadsError(
            f"{what} {path} is being written by {holder or 'another process'}; wait for it to "
            "finish, or choose another --out"
        ) from None
    lock_file.write_text(f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%H:%M:%S')}")
    try:
        yield
    finally:
        lock_file.unlink(missing_ok=True)
        lock.release()


@contextlib.contextmanager
def claim(out: Path, overwrite: bool, kind: str):
    """The one start of every command that writes a folder: refuse a taken `out` (unless
    --overwrite may replace a folder of the same kind), then hold its lock while the work runs."""
    check_out_dir(Path(out), overwrite, kind)
    with writing(Path(out), f"{kind} folder"):
        yield Path(out)


def read_versioned_json(path: Path, what: str, versions: tuple[int, ...], needs: tuple[str, ...] = ()) -> dict:
    """A langheads JSON file with a format_version this version reads, and the keys `needs`;
    one line naming the file if not. The one reader of every versioned file langheads writes."""
    if not path.is_file():
        raise LangheadsError(f"{path.parent}: not {what} (no {path.name})")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        version = data["format_version"]
        for key in needs:
            data[key]  # noqa: B018 - what readers need
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError):
        raise LangheadsError(
            f"{path}: damaged, or written before format_version 1 (not the JSON langheads writes)"
        ) from None
    if version not in versions:
        raise LangheadsError(f"{path}: format_version {version}; this langheads reads {', '.join(map(str, versions))}")
    return data
