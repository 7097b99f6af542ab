"""The kinds rules on hand-made scores (one head per kind), Benjamini-Hochberg by hand, and
the FDR rule through a scan."""

import json

import numpy as np
import pandas as pd

from langheads.cli import main
from langheads.scanning.kinds import IntervalRule, LahisRule, benjamini_hochberg

LANGS = ["en", "hi", "fr", "de"]


def _scores(lows: dict[tuple[int, int], list[float]]) -> pd.DataFrame:
    rows = [
        {"layer": l, "head": h, "language": lang, "rel_ci_low": low, "score": low}
        for (l, h), values in lows.items()
        for lang, low in zip(LANGS, values)
    ]
    return pd.DataFrame(rows)


def test_interval_rule_one_case_per_kind():
    scores = _scores(
        {
            (0, 0): [0.05, 0.0, -0.01, 0.009],  # only en above 1%
            (0, 1): [0.02, 0.03, 0.0, 0.0],  # en and hi: 2 of 4 < ceil(0.75 * 4) = 3
            (0, 2): [0.02, 0.03, 0.011, 0.0],  # 3 of 4: agnostic
            (0, 3): [0.01, 0.0, 0.005, -0.2],  # none strictly above 1%
        }
    )
    heads = {(h["layer"], h["head"]): h for h in IntervalRule(0.01, 0.75).classify(scores, LANGS)}
    assert heads[(0, 0)]["kind"] == "language-specific" and heads[(0, 0)]["languages"] == ["en"]
    assert heads[(0, 1)]["kind"] == "language-group" and heads[(0, 1)]["languages"] == ["en", "hi"]
    assert heads[(0, 2)]["kind"] == "language-agnostic" and heads[(0, 2)]["languages"] == ["en", "hi", "fr"]
    assert heads[(0, 3)]["kind"] == "miscellaneous" and heads[(0, 3)]["languages"] == []


def test_threshold_and_share_are_settings():
    scores = _scores({(0, 0): [0.02, 0.03, 0.0, 0.0]})
    assert IntervalRule(0.025, 0.75).classify(scores, LANGS)[0]["kind"] == "language-specific"
    assert IntervalRule(0.01, 0.5).classify(scores, LANGS)[0]["kind"] == "language-agnostic"


def test_two_languages_match_the_paper():
    scores = _scores({(0, 0): [0.05, 0.05, 0, 0]})
    rule = IntervalRule()
    assert rule.classify(scores, ["en", "hi"])[0]["kind"] == "language-agnostic"
    assert rule.describe(2, 72)["n_intervals"] == 144


def test_lahis_rule():
    lows = {(0, h): [0.0] * 4 for h in range(10)}
    lows[(0, 0)] = [1.0, 1.0, 1.0, 1.0]  # top in every language: general
    lows[(0, 1)] = [0.9, 0.0, 0.0, 0.0]  # top only in en: specific
    heads = {h["head"]: h for h in LahisRule(quantile=0.85, min_languages=4).classify(_scores(lows), LANGS)}
    assert heads[0]["kind"] == "language-general"
    assert heads[1]["kind"] == "language-specific" and heads[1]["languages"] == ["en"]
    assert heads[5]["kind"] == "other"


def test_benjamini_hochberg_against_a_hand_count():
    p = np.array([0.001, 0.008, 0.039, 0.041, 0.042, 0.06, 0.074, 0.205, 0.212, 0.216])
    # k/m*q at q=0.05: 0.005, 0.01, 0.015, 0.02, ... ; the largest k with p_(k) <= k/m*q is 2
    assert list(benjamini_hochberg(p, 0.05)) == [True, True] + [False] * 8
    assert benjamini_hochberg(p, 0.5).sum() == 10 - 0  # 0.216 <= 0.5: all
    assert not benjamini_hochberg(np.array([0.9, 0.8]), 0.05).any()


def test_fdr_rule_says_it_made_the_kinds(tiny_dirs, sample_data, tmp_path):
    out = tmp_path / "fdr"
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
                "--bootstrap",
                "200",
                "--quiet",
                "--fdr",
                "0.1",
                "--threshold",
                "0",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    info = json.loads((out / "run.json").read_text())
    assert info["rule"]["name"] == "fdr" and info["rule"]["q"] == 0.1 and "Benjamini-Hochberg" in info["rule"]["text"]
    scores = pd.read_csv(out / "scores.csv")
    called = benjamini_hochberg(scores["p_value"].to_numpy(), 0.1)
    matters = {(r.layer, r.head, r.language) for r, c in zip(scores.itertuples(), called) if c}
    from_heads = {(h["layer"], h["head"], lang) for h in info["heads"] for lang in h["languages"]}
    assert matters == from_heads
    assert ((scores["p_value"] > 0) & (scores["p_value"] <= 1)).all()


def test_the_rule_names_the_units_it_sorts():
    """A neuron or block scan's rule says what it sorts ('a block matters ...'), not 'a head'."""
    from langheads.scanning.kinds import FdrRule, IntervalRule, LahisRule

    for rule in (IntervalRule(), FdrRule(), LahisRule()):
        said = rule.describe(4, 48, "block")
        assert said["text"].startswith("a block ") and " head" not in said["text"] + said.get("false_matters_bound", "")
        assert rule.describe(4, 72)["text"].startswith("a head ")
