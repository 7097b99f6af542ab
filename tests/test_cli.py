"""The command line end to end on tiny models: outputs, determinism, resumption, bad input."""

import json

import numpy as np
import pandas as pd
import pytest

import langheads
from langheads.scoring import ExactAblation

from .conftest import run_cli, run_process

FILES = ["scores.csv", "per_text.parquet", "run.json", "heatmap.png"]


def _scan(model_dir, data, out, *extra, process=False):
    run = run_process if process else run_cli
    return run(
        "scan",
        "--model",
        str(model_dir),
        "--data",
        str(data),
        "--languages",
        "en,fr,hi",
        "--out",
        str(out),
        "--bootstrap",
        "200",
        "--quiet",
        *extra,
    )


def test_scan_outputs_and_determinism_across_processes(tiny_dirs, sample_data, tmp_path):
    first = _scan(tiny_dirs["gemma3"], sample_data, tmp_path / "a", process=True)  # another process, the same bytes
    assert first.returncode == 0, first.stderr
    second = _scan(tiny_dirs["gemma3"], sample_data, tmp_path / "b")
    assert second.returncode == 0, second.stderr
    for name in FILES:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    assert "kinds: language-specific" in first.stdout

    scores = langheads.read_run(tmp_path / "a").scores
    assert len(scores) == 4 * 4 * 3  # layers x heads x languages
    assert {"score", "ci_low", "ci_high", "rel_increase", "kind"} <= set(scores.columns)
    assert (scores["ci_low"] <= scores["score"]).all() and (scores["score"] <= scores["ci_high"]).all()
    per_text = pd.read_parquet(tmp_path / "a" / "per_text.parquet")
    base = per_text[per_text.layer == -1]
    assert set(base.language) == {"en", "fr", "hi"} and (base.value > 0).all()
    en = per_text[(per_text.language == "en") & (per_text.layer == 2) & (per_text["head"] == 1)]
    row = scores[(scores.language == "en") & (scores.layer == 2) & (scores["head"] == 1)].iloc[0]
    assert en.value.mean() == pytest.approx(row.score, rel=1e-6)

    info = json.loads((tmp_path / "a" / "run.json").read_text())
    assert info["rule"]["n_intervals"] == 48 and info["settings"]["seed"] == 0
    assert set(info["versions"]) == {"langheads", "torch", "transformers"}
    assert len(info["heads"]) == 16 and sum(info["counts"].values()) == 16
    kinds = {h["kind"] for h in info["heads"]}
    assert kinds <= {"language-specific", "language-group", "language-agnostic", "miscellaneous"}


def test_bootstrap_depends_on_seed_layer_head_language_only(tiny_dirs, sample_data, tmp_path):
    """Scanning fewer languages leaves the others' intervals unchanged."""
    common = dict(model=str(tiny_dirs["llama"]), data=str(sample_data), bootstrap=100, seed=3)
    full = langheads.scan_model(tmp_path / "full", languages=["en", "fr", "hi"], progress=False, **common).scores
    one = langheads.scan_model(tmp_path / "one", languages=["fr"], progress=False, **common).scores
    fr = full[full.language == "fr"].reset_index(drop=True)
    pd.testing.assert_frame_equal(fr, one.reset_index(drop=True))


def test_crash_keeps_finished_languages_and_no_half_run(tiny_dirs, sample_data, tmp_path, monkeypatch):
    out = tmp_path / "run"
    calls = []
    real = ExactAblation.score_unit

    def flaky(self, model, layout, batch, layers):
        calls.append(layers)
        if len(calls) == 4:  # en's 3 layers are done, fr's first is not
            raise KeyboardInterrupt
        return real(self, model, layout, batch, layers)

    monkeypatch.setattr(ExactAblation, "score_unit", flaky)
    settings = dict(
        model=str(tiny_dirs["qwen2"]), data=str(sample_data), languages=["en", "fr"], bootstrap=50, progress=False
    )
    with pytest.raises(KeyboardInterrupt):
        langheads.scan_model(out, **settings)
    assert not out.exists()
    assert sorted(p.parent.name for p in (tmp_path / "run.units").glob("*/*.npz")) == ["en"] * 3
    langheads.scan_model(out, **settings)
    assert len(calls) == 7  # en was not scored again: 3 + the interrupted one + fr's 3
    assert out.exists() and not (tmp_path / "run.partial").exists()


def test_dry_run_prints_plan_and_writes_nothing(tiny_dirs, sample_jsonl, tmp_path):
    r = run_cli(
        "scan",
        "--model",
        str(tiny_dirs["gpt2"]),
        "--data",
        str(sample_jsonl),
        "--languages",
        "en,hi",
        "--out",
        str(tmp_path / "x"),
        "--dry-run",
    )
    assert r.returncode == 0, r.stderr
    assert "12 heads" in r.stderr and "work units" in r.stderr and "min" in r.stderr
    assert not (tmp_path / "x").exists()


def test_attribution_and_lahis_methods_run(tiny_dirs, sample_data, tmp_path):
    """Each method's scores are its per-text values' aggregate, and the methods differ."""
    values = {}
    for method, rule in [("attribution", "interval"), ("lahis", "lahis")]:
        r = _scan(
            tiny_dirs["cohere"],
            sample_data,
            tmp_path / method,
            "--method",
            method,
            "--rule",
            rule,
            "--lahis-min-languages",
            "2",
        )
        assert r.returncode == 0, r.stderr
        scores = langheads.read_run(tmp_path / method).scores.set_index(["language", "layer", "head"]).sort_index()
        per_text = pd.read_parquet(tmp_path / method / "per_text.parquet")
        means = per_text[per_text.layer >= 0].groupby(["language", "layer", "head"]).value.mean().sort_index()
        if method == "attribution":
            assert np.allclose(means.to_numpy(), scores.score.to_numpy(), rtol=1e-5, atol=1e-7)
        values[method] = scores.score.to_numpy()
        assert json.loads((tmp_path / method / "run.json").read_text())["rule"]["name"] == rule
    assert not np.allclose(values["attribution"], values["lahis"])


def _bad(*args):
    r = run_cli(*args)
    assert r.returncode == 2, (r.returncode, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("langheads: error: "), r.stderr
    return lines[0]


def test_overwrite_replaces_only_a_run_langheads_wrote(tiny_dirs, sample_data, tmp_path, capsys):
    """A user's folder is refused and kept whole; langheads' own run folder is replaced."""
    from langheads.cli import main

    mine = tmp_path / "mydata"
    mine.mkdir()
    (mine / "thesis.txt").write_text("years of work")
    argv = [
        "scan",
        "--model",
        str(tiny_dirs["mistral"]),
        "--data",
        str(sample_data),
        "--languages",
        "en,fr",
        "--bootstrap",
        "20",
        "--quiet",
        "--overwrite",
    ]
    assert main(argv + ["--out", str(mine)]) == 2
    assert "not a folder langheads wrote" in capsys.readouterr().err
    assert (mine / "thesis.txt").read_text() == "years of work"
    out = tmp_path / "run"
    assert main(argv + ["--out", str(out)]) == 0
    (out / "scores.csv").write_text("stale")
    assert main(argv + ["--out", str(out)]) == 0
    assert (out / "scores.csv").read_text().startswith("layer,head,language")


def test_info_and_languages(tiny_dirs):
    r = run_cli("info", str(tiny_dirs["qwen3"]))
    assert r.returncode == 0, r.stderr
    assert "qwen3" in r.stdout and "KV heads       2" in r.stdout and "head size      16" in r.stdout
    r = run_cli("languages")
    assert r.returncode == 0 and "zh " in r.stdout and "udhr:cmn_hans" in r.stdout


def test_hub_id_without_network_fails_fast(tmp_path):
    import time

    start = time.perf_counter()
    line = _bad("info", "someorg/somemodel")
    assert "not reachable" in line or "cannot fetch" in line
    assert time.perf_counter() - start < 30


def test_compare_runs(tiny_dirs, sample_data, tmp_path):
    from langheads.reporting.compare import compare_runs, spearman

    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    common = dict(
        model=str(tiny_dirs["llama"]), data=str(sample_data), languages=["en", "fr"], bootstrap=20, progress=False
    )
    langheads.scan_model(tmp_path / "exact", **common)
    langheads.scan_model(tmp_path / "attr", method="attribution", **common)
    same = compare_runs(tmp_path / "exact", tmp_path / "exact", top=5)
    assert (same.spearman == 1.0).all() and (same.top5_overlap == 1.0).all()
    r = run_cli("compare", str(tmp_path / "exact"), str(tmp_path / "attr"), "--top", "5")
    assert r.returncode == 0, r.stderr
    lines = {line.split()[0]: line for line in r.stdout.splitlines()[2:] if line.split()}
    for row in compare_runs(tmp_path / "exact", tmp_path / "attr", top=5).itertuples():
        assert f"{row.spearman:.3f}" in lines[row.language], (row, r.stdout)  # the CLI prints the library's table


def test_memory_estimate_refuses_up_front(tiny_dirs, sample_data, tmp_path):
    line = _bad(
        "scan",
        "--model",
        str(tiny_dirs["llama"]),
        "--data",
        str(sample_data),
        "--languages",
        "en",
        "--out",
        str(tmp_path / "o"),
        "--batch-tokens",
        str(10**12),
    )
    assert "--batch-tokens" in line


def test_cuda_without_a_gpu_is_refused(tiny_dirs, sample_data, tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    line = _bad(
        "scan",
        "--model",
        str(tiny_dirs["llama"]),
        "--data",
        str(sample_data),
        "--languages",
        "en",
        "--out",
        str(tmp_path / "o"),
        "--device",
        "cuda",
    )
    assert "no CUDA device" in line


def test_each_option_s_choices_make_its_help_and_its_check():
    """One list of choices per option (options.option(choices=...)): the help shows it and the
    settings refuse a value outside it, naming the same list."""
    import dataclasses

    from langheads.edit.pruning import PruneSettings
    from langheads.edit.vocab import TrimSettings
    from langheads.errors import LangheadsError
    from langheads.options import choices_of, help_of
    from langheads.scanning.settings import ScanSettings

    needed = {ScanSettings: {}, PruneSettings: {"scan": ["run"], "keep": ["en"]}, TrimSettings: {"keep": ["en"]}}
    seen = 0
    for cls, given in needed.items():
        for f in dataclasses.fields(cls):
            names = choices_of(f) if "help" in f.metadata else None
            if names is None:
                continue
            seen += 1
            assert help_of(f).startswith(" | ".join(names)), (cls.__name__, f.name)
            with pytest.raises(LangheadsError, match=f"choose one of {', '.join(names)}"):
                cls(**given, **{f.name: "no-such-value"})
    assert seen >= 8  # method, component, signal, rule, dtype (scan), dtype (prune), rarity, dtype (trim)
