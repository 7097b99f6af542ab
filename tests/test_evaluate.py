"""evaluate: answer metrics by hand, question answering with masked heads, lm-evaluation-harness
on a local task (the text evaluation and the certificate: test_pruning, test_certificate)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from langheads.cli import main


def test_answer_metrics_by_hand():
    from langheads.evaluation.metrics import Metric, chrf, exact_match, token_f1

    assert exact_match("The River!", "river") == 1.0 and exact_match("a stream", "river") == 0.0
    assert token_f1("at nine sharp", "at nine") == pytest.approx(2 * (2 / 3) * 1 / (2 / 3 + 1))
    assert token_f1("नदी के पास", "नदी") == pytest.approx(0.5)
    assert token_f1("天空是蓝色", "蓝色") == pytest.approx(2 * (2 / 5) * 1 / (2 / 5 + 1))  # characters
    assert chrf("river", "river") == 1.0 and 0 < chrf("rivers", "river") < 1
    m = Metric("em", np.array([1.0, 0.0, 1.0, 1.0]), np.array([0.0, 0.0, 1.0, 0.0]))
    out = m.paired(seed=1, n_boot=500)
    assert out["before"] == 0.75 and out["after"] == 0.25 and out["change"] == -0.5
    assert out["ci_low"] <= -0.5 <= out["ci_high"] and out["ci_high"] <= 0


def test_evaluate_qa_with_masked_heads(tiny_dirs, qa_jsonl, tmp_path, capsys):
    import pandas as pd

    from langheads.runs import read_eval

    out = tmp_path / "qa"
    argv = [
        "evaluate",
        "--baseline",
        str(tiny_dirs["llama"]),
        "--languages",
        "en,fr",
        "--qa",
        str(qa_jsonl),
        "--new-tokens",
        "4",
        "--out",
        str(out),
    ]
    assert main([*argv, "--mask", "0.1,2.3"]) == 0
    printed = capsys.readouterr().out
    ev = read_eval(out)
    assert ev.kind == "qa" and ev.info["mask"] == [[0, 1], [2, 3]]
    assert set(ev.table["metric"]) == {"exact_match", "token_f1", "chrf", "language_switch"}
    assert (ev.table["items"] > 0).all() and (
        (ev.table["ci_low"] <= ev.table["change"] + 1e-12) & (ev.table["change"] <= ev.table["ci_high"] + 1e-12)
    ).all()
    assert "language_switch" in printed and "masked 0.1,2.3" in printed
    gens = pd.DataFrame(ev.generations)
    assert set(gens.columns) >= {"language", "reference", "before", "after"}
    # masking nothing: after == before, item for item, so every change is exactly 0
    assert (
        main(
            [
                "evaluate",
                "--model",
                str(tiny_dirs["llama"]),
                "--baseline",
                str(tiny_dirs["llama"]),
                "--languages",
                "en",
                "--qa",
                str(qa_jsonl),
                "--new-tokens",
                "4",
                "--out",
                str(tmp_path / "same"),
            ]
        )
        == 0
    )
    same = read_eval(tmp_path / "same")
    assert (same.table["change"] == 0).all()
    assert [g["before"] for g in same.generations] == [g["after"] for g in same.generations]
    capsys.readouterr()
    assert main([*argv, "--mask", "9.9", "--overwrite"]) == 2
    assert "--mask: no head 9.9" in capsys.readouterr().err
    assert main([*argv[:-2], "--out", str(tmp_path / "x")]) == 2  # neither --model nor --mask
    assert "give --model" in capsys.readouterr().err


def test_lm_eval_on_a_local_task_with_masked_heads(tiny_dirs, tmp_path, capsys):
    pytest.importorskip("lm_eval")
    rows = [
        {"question": q, "choices": c, "label": l}
        for q, c, l in [
            ("The sky is", [" blue", " green"], 0),
            ("Snow is", [" black", " white"], 1),
            ("Fire is", [" hot", " cold"], 0),
            ("Ice is", [" hot", " cold"], 1),
            ("Grass is", [" green", " red"], 0),
        ]
    ]
    (tmp_path / "toy.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "toy.yaml").write_text(
        "task: langheads_toy\ndataset_path: json\ndataset_kwargs:\n  data_files:\n"
        f"    test: {tmp_path / 'toy.jsonl'}\ntest_split: test\noutput_type: multiple_choice\n"
        "doc_to_text: '{{question}}'\ndoc_to_choice: '{{choices}}'\ndoc_to_target: '{{label}}'\n"
        "metric_list:\n  - metric: acc\n  - metric: acc_norm\n"
    )
    from langheads.runs import read_eval

    base = [
        "evaluate",
        "--baseline",
        str(tiny_dirs["llama"]),
        "--lm-eval",
        "langheads_toy",
        "--lm-eval-include",
        str(tmp_path),
    ]
    assert main([*base, "--mask", "0.0,1.1,2.2", "--out", str(tmp_path / "masked")]) == 0
    ev = read_eval(tmp_path / "masked")
    assert ev.kind == "lm-eval" and set(ev.table["metric"]) == {"acc", "acc_norm"}
    assert (ev.table["items"] == 5).all() and ev.table["before"].between(0, 1).all()
    assert main([*base, "--model", str(tiny_dirs["llama"]), "--out", str(tmp_path / "same")]) == 0
    assert (read_eval(tmp_path / "same").table["change"] == 0).all()  # the same model, unmasked: no change
    capsys.readouterr()
    assert (
        main(
            [
                "evaluate",
                "--baseline",
                str(tiny_dirs["llama"]),
                "--mask",
                "0.0",
                "--lm-eval",
                "no_such_task",
                "--out",
                str(tmp_path / "x"),
            ]
        )
        == 2
    )
    assert "--lm-eval: unknown task no_such_task" in capsys.readouterr().err
