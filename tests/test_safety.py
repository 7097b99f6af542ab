"""Nothing that is not langheads' is deleted, and no finished work is thrown away: the data-loss
cases of the hardening issue, each shown safe."""

import pytest

from langheads import runs
from langheads.cli import main
from langheads.errors import LangheadsError
from langheads.scanning import plan as scan_plan
from langheads.scanning import settings as scan_settings
from langheads.scanning.store import store_dir
from langheads.scoring.exact import ExactAblation


@pytest.fixture
def crashed(tiny_dirs, sample_data, tmp_path, monkeypatch):
    """A scan of en,fr that died after scoring, before writing its run folder; returns
    (argv builder, out, store folder)."""
    out = tmp_path / "run"

    def argv(*extra, model="llama", languages="en,fr"):
        return [
            "scan",
            "--model",
            str(tiny_dirs[model]),
            "--data",
            str(sample_data),
            "--languages",
            languages,
            "--out",
            str(out),
            "--bootstrap",
            "20",
            "--quiet",
            *extra,
        ]

    def die(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(runs, "write_run", die)
    assert main(argv()) == 130  # Ctrl-C: one line, exit 130, finished languages kept
    monkeypatch.undo()
    partial = store_dir(out)
    assert sorted(p.parent.name for p in partial.glob("*/*.npz")) == ["en"] * 3 + ["fr"] * 3  # 3 layers each
    return argv, out, partial


def test_other_threshold_bootstrap_and_one_more_language_reuse_finished_work(crashed, monkeypatch):
    argv, out, partial = crashed
    scored = []
    real = ExactAblation.score_unit

    def counting(self, model, layout, batch, layers):
        scored.append(layers)
        return real(self, model, layout, batch, layers)

    monkeypatch.setattr(ExactAblation, "score_unit", counting)
    assert main(argv("--threshold", "0.05", "--bootstrap", "30", languages="en,fr,hi")) == 0
    assert len(scored) == 3  # only hi's 3 layers were computed
    assert (out / "scores.csv").exists() and not [p for p in out.parent.iterdir() if p.name.startswith(".run.")]
    import pandas as pd

    assert set(pd.read_csv(out / "scores.csv")["language"]) == {"en", "fr", "hi"}


def test_store_of_another_model_is_refused_and_kept(crashed, capsys):
    argv, out, partial = crashed
    before = sorted(p.name for p in partial.rglob("*"))
    assert main(argv(model="qwen2")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "holds work of another scan (model_hash differ)" in err[0] and "left in place" in err[0]
    assert sorted(p.name for p in partial.rglob("*")) == before
    assert main(argv("--overwrite", model="qwen2")) == 0  # ours, and asked for: replaced
    assert (out / "scores.csv").exists()


def test_a_store_folder_not_made_by_langheads_is_left_alone(tiny_dirs, sample_data, tmp_path, capsys):
    out = tmp_path / "run"
    stranger = store_dir(out)
    stranger.mkdir()
    (stranger / "notes.txt").write_text("mine")
    for extra in ([], ["--overwrite"]):
        assert (
            main(
                [
                    "scan",
                    "--model",
                    str(tiny_dirs["llama"]),
                    "--data",
                    str(sample_data),
                    "--languages",
                    "en",
                    "--out",
                    str(out),
                    "--quiet",
                    "--bootstrap",
                    "20",
                    *extra,
                ]
            )
            == 2
        )
        err = capsys.readouterr().err
        assert "is not a folder langheads wrote" in err and "refusing to replace it" in err
    assert (stranger / "notes.txt").read_text() == "mine" and not out.exists()


def test_damaged_work_in_progress_is_named_and_overwrite_recovers(crashed, capsys):
    argv, out, partial = crashed
    (partial / "en" / "b0000-l002-003.npz").write_bytes(b"truncated")
    assert main(argv()) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "b0000-l002-003.npz is damaged" in err[0] and "--overwrite" in err[0]
    (partial / "scan-key.json").write_text("{half")
    assert main(argv()) == 2
    assert "is damaged (no readable scan-key.json)" in capsys.readouterr().err
    assert main(argv("--overwrite")) == 0 and (out / "scores.csv").exists()


def test_cache_clear_leaves_a_running_conversion(tmp_path, monkeypatch):
    from langheads import models

    monkeypatch.setenv("LANGHEADS_CACHE", str(tmp_path))
    done = tmp_path / "models" / "abc"
    running = tmp_path / "models" / ".def.x1y2"
    for folder in (done, running):
        folder.mkdir(parents=True)
        (folder / "model.safetensors").write_bytes(b"x")
    (done / "langheads_source.json").write_text('{"gguf": "m.gguf"}')
    assert models.clear_cache() == 1
    assert not done.exists() and (running / "model.safetensors").exists()


def test_library_refuses_like_the_cli():
    with pytest.raises(LangheadsError, match="--texts must be a whole number >= 2"):
        scan_settings.ScanSettings(texts=1)
    from langheads import load_model

    with pytest.raises(LangheadsError, match="no CUDA device"):
        load_model("default", device="cuda")


def test_small_samples_are_said_to_be_small(tiny_dirs, sample_data, tmp_path, capsys):
    import json

    out = tmp_path / "run"
    assert (
        main(
            [
                "scan",
                "--model",
                str(tiny_dirs["llama"]),
                "--data",
                str(sample_data),
                "--languages",
                "en,fr",
                "--out",
                str(out),
                "--bootstrap",
                "20",
                "--quiet",
                "--texts",
                "3",
            ]
        )
        == 0
    )
    assert "note: intervals on fewer than 8 texts (en 3, fr 3)" in capsys.readouterr().out
    assert "fewer than 8 texts" in json.loads((out / "run.json").read_text())["sample_note"]


def test_one_writer_at_a_time(tiny_dirs, sample_data, tmp_path, capsys):
    """While one process writes a folder, a second writer is told who holds it, in one line."""
    from langheads.folders import writing

    out = tmp_path / "run"
    with writing(out, "run folder"):
        assert (
            main(
                [
                    "scan",
                    "--model",
                    str(tiny_dirs["llama"]),
                    "--data",
                    str(sample_data),
                    "--languages",
                    "en",
                    "--out",
                    str(out),
                    "--quiet",
                ]
            )
            == 2
        )
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "is being written by pid" in err[0]
        assert main(["trim", "--model", str(tiny_dirs["llama"]), "--keep", "en", "--out", str(out)]) == 2
    assert not out.exists() and not (tmp_path / "run.lock").exists()
    assert (
        main(
            [
                "scan",
                "--model",
                str(tiny_dirs["llama"]),
                "--data",
                str(sample_data),
                "--languages",
                "en",
                "--out",
                str(out),
                "--quiet",
                "--bootstrap",
                "20",
            ]
        )
        == 0
    )


def test_damaged_run_folders_are_named_not_read(tiny_dirs, sample_data, tmp_path, capsys):
    """A truncated scores.csv, a lost column or an unversioned run.json: one line naming the
    file, never a partial read."""
    import json

    run = tmp_path / "run"
    assert (
        main(
            [
                "scan",
                "--model",
                str(tiny_dirs["llama"]),
                "--data",
                str(sample_data),
                "--languages",
                "en,fr",
                "--out",
                str(run),
                "--quiet",
                "--bootstrap",
                "20",
            ]
        )
        == 0
    )
    assert len(runs.read_run(run).scores) == 3 * 4 * 2
    capsys.readouterr()
    scores = (run / "scores.csv").read_text()
    cases = [
        ("scores.csv", scores[: len(scores) // 2], "cut short"),
        ("scores.csv", scores.replace("ci_low", "lo", 1), "no column ci_low"),
        (
            "run.json",
            json.dumps({k: v for k, v in json.loads((run / "run.json").read_text()).items() if k != "format_version"}),
            "written before format_version 1",
        ),
    ]
    for name, text, message in cases:
        original = (run / name).read_text()
        (run / name).write_text(text)
        assert main(["compare", str(run), str(run)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], err
        (run / name).write_text(original)
    assert main(["compare", str(run), str(run)]) == 0


def test_memory_estimate_cannot_be_talked_down(tiny_dirs, sample_data):
    """A text longer than --batch-tokens still runs whole, so the estimate counts it whole."""
    plan = scan_plan.plan_scan(
        scan_settings.ScanSettings(
            model=str(tiny_dirs["llama"]), data=str(sample_data), languages=["en"], batch_tokens=1, chunk_tokens=1
        )
    )
    longest = max(len(t) for w in plan.work for t in w.token_lists)
    # one longest text's activations in the tiny llama (hidden 64, MLP 96, float32)
    assert plan.peak_bytes() >= longest * (8 * 64 + 3 * 96) * 4


def test_a_run_folder_from_before_markers_is_still_ours(tmp_path):
    import json

    from langheads.folders import is_ours

    old = tmp_path / "old-run"
    old.mkdir()
    (old / "heads.json").write_text(json.dumps({"versions": {"langheads": "0.1.0"}}))
    assert is_ours(old)
    (old / "heads.json").write_text(json.dumps({"versions": {"other": "1"}}))
    assert not is_ours(old)


def test_written_folders_get_the_usual_mode(tmp_path):
    """The atomic writer starts from a private temporary folder; the result is not private."""
    import os

    from langheads.folders import new_folder

    mask = os.umask(0o022)
    try:
        with new_folder(tmp_path / "out", False, "report") as tmp:
            (tmp / "a.txt").write_text("x")
    finally:
        os.umask(mask)
    assert (tmp_path / "out" / "a.txt").read_text() == "x"
    assert (tmp_path / "out").stat().st_mode & 0o777 == 0o755
