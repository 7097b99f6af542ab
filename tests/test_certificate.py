"""The kept/dropped certificate an evaluation ends with."""

from __future__ import annotations

import pandas as pd

from langheads.evaluation.certificate import certificate, describe


def text_result(rows):
    cols = [
        "language",
        "nll_per_byte_before",
        "nll_per_byte_after",
        "per_byte_rel_change",
        "per_byte_rel_ci_low",
        "per_byte_rel_ci_high",
        "same_language_before",
        "same_language_after",
    ]
    return {"kind": "nll", "table": pd.DataFrame(rows, columns=cols)}


def test_kept_languages_are_judged_on_the_intervals_bad_end():
    result = text_result(
        [
            ["en", 0.50, 0.505, 0.010, 0.002, 0.019, 1.0, 1.0],  # within 2%
            ["hi", 0.40, 0.404, 0.010, -0.01, 0.031, 1.0, 1.0],  # mean within, interval not
            ["fr", 0.60, 0.90, 0.500, 0.40, 0.60, 1.0, 0.33],
        ]
    )  # dropped: described only
    cert = certificate(result, ["en", "hi"], 0.02)
    verdicts = {(r["language"], r["measure"]): r["within_budget"] for r in cert["rows"]}
    assert verdicts[("en", "NLL per byte")] is True and verdicts[("hi", "NLL per byte")] is False
    assert verdicts[("fr", "NLL per byte")] is None and not cert["passed"]
    assert cert["failed"] == ["hi NLL per byte"] and "OVER BUDGET" in describe(cert)
    fr_switch = next(r for r in cert["rows"] if r["language"] == "fr" and r["measure"].startswith("generations"))
    assert abs(fr_switch["change"] - 0.67) < 1e-9  # the dropped language's switch rate rose


def test_a_kept_language_that_switches_fails():
    result = text_result([["en", 0.50, 0.50, 0.0, -0.001, 0.001, 1.0, 0.67]])
    cert = certificate(result, ["en"], 0.02)
    assert cert["failed"] == ["en generations in another language"]


def test_answer_metrics_against_the_budget():
    t = pd.DataFrame(
        [
            {
                "language": "en",
                "metric": "token_f1",
                "items": 50,
                "before": 0.60,
                "after": 0.59,
                "change": -0.01,
                "ci_low": -0.011,
                "ci_high": 0.0,
                "higher_is_better": True,
            },
            {
                "language": "en",
                "metric": "language_switch",
                "items": 50,
                "before": 0.0,
                "after": 0.1,
                "change": 0.1,
                "ci_low": 0.02,
                "ci_high": 0.18,
                "higher_is_better": False,
            },
        ]
    )
    cert = certificate({"kind": "qa", "table": t}, ["en"], 0.02)
    assert [r["within_budget"] for r in cert["rows"]] == [True, False]  # F1 -1.1 points of 60 is within 2%


def test_a_kept_language_that_was_not_measured_fails_and_so_does_another_baseline():
    """Before: `--languages en,hi --keep de` passed with no de row; a certificate covers exactly the
    kept languages it measured, against the model the folder was edited from."""
    result = {
        **text_result([["en", 0.50, 0.50, 0.0, -0.001, 0.001, 1.0, 1.0]]),
        "baseline": "other",
        "baseline_sha256": "b" * 64,
    }
    cert = certificate(result, ["en", "de"], 0.02)
    assert not cert["passed"] and cert["failed"] == ["de not measured"] and "de not measured" in describe(cert)
    assert certificate(result, ["en"], 0.02, source="b" * 64)["passed"]
    moved = certificate(result, ["en"], 0.02, source="a" * 64)
    assert moved["failed"] == ["the baseline other is not the model this one was edited from"]
