"""Scale-out and resume: units shared across torchrun processes (Gloo on the CPU), a scan
killed with SIGKILL resumed unit by unit, quantised and device-mapped loading."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest

from langheads import synthetic
from langheads.cli import main
from langheads.scanning.distributed import Ranks
from langheads.scanning.store import UnitStore, store_dir

from .conftest import run_process

RUN_FILES = ["scores.csv", "per_text.parquet", "run.json", "heatmap.png"]
ONE_THREAD = {"OMP_NUM_THREADS": "1"}  # what torchrun gives each process: same threads, same bytes


@pytest.fixture(scope="module")
def deep_model(tmp_path_factory):
    """A tiny Llama with 12 layers: enough units for a scan to be caught half done."""
    return synthetic.save_tiny("llama", tmp_path_factory.mktemp("deep") / "m", num_hidden_layers=12)


def _argv(model, data, out, languages="en,fr,hi", *extra):
    return [
        "scan",
        "--model",
        str(model),
        "--data",
        str(data),
        "--languages",
        languages,
        "--out",
        str(out),
        "--bootstrap",
        "30",
        "--batch-tokens",
        "64",
        "--quiet",
        *extra,
    ]


def _units(out) -> list[str]:
    return sorted(f"{p.parent.name}/{p.stem}" for p in store_dir(out).glob("*/*.npz") if not p.name.startswith("."))


def _same_files(a, b):
    for name in RUN_FILES:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name


def test_two_gloo_processes_write_what_one_process_writes(deep_model, sample_data, tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    r = run_process(*_argv(deep_model, sample_data, one), env=ONE_THREAD)
    assert r.returncode == 0, r.stderr
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc-per-node",
            "2",
            "-m",
            "langheads",
            *_argv(deep_model, sample_data, two),
        ],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    _same_files(one, two)  # byte for byte
    shares = UnitStore(store_dir(two), {}).computed()
    by_rank = {name.split("-")[0]: set(units) for name, units in shares.items()}
    assert sorted(by_rank) == ["rank0", "rank1"]
    assert by_rank["rank0"] and by_rank["rank1"] and not by_rank["rank0"] & by_rank["rank1"]
    assert by_rank["rank0"] | by_rank["rank1"] == set(_units(two)) and len(_units(two)) == 3 * 5 * 12
    # the default thread count changes rounding only
    assert main(_argv(deep_model, sample_data, tmp_path / "threads")) == 0
    a, b = pd.read_csv(one / "scores.csv"), pd.read_csv(tmp_path / "threads" / "scores.csv")
    assert np.abs(a["score"] - b["score"]).max() < 1e-5


def test_an_adaptive_scan_under_two_gloo_processes_writes_what_one_process_writes(deep_model, sample_data, tmp_path):
    """Rounds under torchrun: units shared per round, the stopping states from rank 0."""
    one, two = tmp_path / "one", tmp_path / "two"
    extra = ("--adaptive", "--first-look", "2")
    r = run_process(*_argv(deep_model, sample_data, one, "en,fr", *extra), env=ONE_THREAD)
    assert r.returncode == 0, r.stderr
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc-per-node",
            "2",
            "-m",
            "langheads",
            *_argv(deep_model, sample_data, two, "en,fr", *extra),
        ],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    for name in ("scores.csv", "per_text.parquet"):
        assert (one / name).read_bytes() == (two / name).read_bytes(), name
    by_rank = {name.split("-")[0] for name in UnitStore(store_dir(two), {}).computed()}
    assert by_rank == {"rank0", "rank1"}  # both processes scored


def test_sigkill_then_resume_computes_only_the_missing_units(deep_model, sample_data, tmp_path):
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    assert run_process(*_argv(deep_model, sample_data, whole), env=ONE_THREAD).returncode == 0
    total = len(_units(whole))
    proc = subprocess.Popen(
        [sys.executable, "-m", "langheads", *_argv(deep_model, sample_data, killed)],
        env={**os.environ, **ONE_THREAD},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 120
    while len(_units(killed)) < 10 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.002)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = _units(killed)
    assert 10 <= len(done) < total, f"{len(done)} of {total} units recorded when killed"
    assert not killed.exists()
    before = {u: os.stat(store_dir(killed) / f"{u}.npz") for u in done}
    logs_before = set(UnitStore(store_dir(killed), {}).computed())

    r = run_process(*_argv(deep_model, sample_data, killed), env=ONE_THREAD)
    assert r.returncode == 0, r.stderr
    new_logs = {k: v for k, v in UnitStore(store_dir(killed), {}).computed().items() if k not in logs_before}
    assert len(new_logs) == 1
    (recomputed,) = new_logs.values()
    assert sorted(recomputed) == sorted(set(_units(whole)) - set(done))  # the missing ones, each once
    for u, st in before.items():  # finished units were read, not written again
        now = os.stat(store_dir(killed) / f"{u}.npz")
        assert (now.st_ino, now.st_mtime_ns) == (st.st_ino, st.st_mtime_ns)
    _same_files(whole, killed)


def test_rescan_with_other_threshold_and_more_languages_reuses_every_unit(deep_model, sample_data, tmp_path):
    out = tmp_path / "run"
    assert main(_argv(deep_model, sample_data, out, "en,fr")) == 0
    first = sum(len(v) for v in UnitStore(store_dir(out), {}).computed().values())
    assert (
        main(
            _argv(
                deep_model,
                sample_data,
                out,
                "en,fr,hi",
                "--threshold",
                "0.05",
                "--bootstrap",
                "40",
                "--rule",
                "lahis",
                "--lahis-min-languages",
                "2",
                "--overwrite",
            )
        )
        == 0
    )
    logs = UnitStore(store_dir(out), {}).computed()
    assert first == 2 * 5 * 12 and sum(len(v) for v in logs.values()) == 3 * 5 * 12
    assert all(u.startswith("hi/") for u in list(logs.values())[-1])  # the rescan computed hi alone
    assert set(pd.read_csv(out / "scores.csv")["language"]) == {"en", "fr", "hi"}


def test_shares_are_contiguous_disjoint_and_balanced():
    rng = np.random.default_rng(0)
    costs = list(rng.uniform(1, 10, size=97))
    for world in (1, 2, 3, 8):
        shares = [Ranks(rank=r, world=world).share(costs) for r in range(world)]
        assert [i for s in shares for i in s] == list(range(97))
        loads = [sum(costs[i] for i in s) for s in shares]
        assert max(loads) - min(loads) <= 2 * max(costs)
    few = [len(Ranks(rank=r, world=4).share([1.0, 1.0])) for r in range(4)]  # more ranks than units
    assert sum(few) == 2 and max(few) == 1


def test_dry_run_says_units_time_and_memory_per_process(deep_model, sample_data, tmp_path, capsys):
    assert main(_argv(deep_model, sample_data, tmp_path / "x", "en,fr", "--dry-run", "--ranks", "3")) == 0
    err = capsys.readouterr().err
    assert "120 work units (one text batch at one layer)" in err
    shares = [int(line.split(": ")[1].split()[0]) for line in err.splitlines() if line.strip().startswith("rank ")]
    assert len(shares) == 3 and sum(shares) == 120 and min(shares) > 0
    assert "memory per process: weights" in err and not (tmp_path / "x").exists()


def test_quantised_scan_runs_and_edits_refuse_quantised_weights(sample_data, tmp_path, capsys):
    pytest.importorskip("bitsandbytes")
    # bitsandbytes' CPU kernels want in-features in whole blocks of 64
    model = synthetic.save_tiny("llama", tmp_path / "m", intermediate_size=128)
    plain, four = tmp_path / "plain", tmp_path / "four"
    assert main(_argv(model, sample_data, plain, "en,fr")) == 0
    assert main(_argv(model, sample_data, four, "en,fr", "--load-in", "4bit")) == 0
    a, b = pd.read_csv(plain / "scores.csv"), pd.read_csv(four / "scores.csv")
    assert a["score"].rank().corr(b["score"].rank()) > 0.8  # the same heads, 4-bit noise aside
    assert not np.allclose(a["score"], b["score"])  # and really quantised
    import json

    assert json.loads((four / "run.json").read_text())["settings"]["load_in"] == "4bit"
    # a saved 4-bit checkpoint: trimming and export need plain weights, and say so
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig

    q = AutoModelForCausalLM.from_pretrained(
        model,
        device_map={"": "cpu"},
        quantization_config=BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_compute_dtype=torch.float32),
    )
    q.save_pretrained(tmp_path / "q4")
    AutoTokenizer.from_pretrained(model).save_pretrained(tmp_path / "q4")
    capsys.readouterr()
    assert main(["trim", "--model", str(tmp_path / "q4"), "--keep", "en", "--out", str(tmp_path / "t")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "trimming the vocabulary needs unquantised weights" in err[0]
    assert main(["export", str(tmp_path / "q4"), "--gguf", str(tmp_path / "q.gguf")]) == 2
    assert "GGUF export needs unquantised weights" in capsys.readouterr().err


def test_missing_bitsandbytes_is_one_line(tiny_dirs, sample_data, tmp_path, monkeypatch, capsys):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "bitsandbytes" else real(name, *a)
    )
    assert main(_argv(tiny_dirs["llama"], sample_data, tmp_path / "x", "en", "--load-in", "4bit")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--load-in 4bit needs bitsandbytes: pip install 'langheads[quant]'" in err[0]
    assert main(_argv(tiny_dirs["llama"], sample_data, tmp_path / "x", "en", "--load-in", "2bit")) == 2
    assert "unknown --load-in '2bit'" in capsys.readouterr().err


def test_device_map_auto_gives_the_same_scores(tiny_dirs, sample_data, tmp_path):
    plain, mapped = tmp_path / "plain", tmp_path / "mapped"
    assert main(_argv(tiny_dirs["qwen2"], sample_data, plain, "en,fr")) == 0
    assert main(_argv(tiny_dirs["qwen2"], sample_data, mapped, "en,fr", "--device-map", "auto")) == 0
    a, b = pd.read_csv(plain / "scores.csv"), pd.read_csv(mapped / "scores.csv")
    assert np.abs(a["score"] - b["score"]).max() < 1e-6
