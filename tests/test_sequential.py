"""The adaptive scan: its stopping rule's guarantee by simulation, and the scan itself on a
tiny model (same values as the full scan on the texts it scores, the store reused, refusals)."""

from __future__ import annotations

import numpy as np
import pytest

import langheads
from langheads.errors import LangheadsError
from langheads.scanning.assemble import bootstrap_scores
from langheads.scanning.sequential import FUTILE, MATTERS, OPEN, StoppingRule
from langheads.scanning.settings import ScanSettings
from langheads.scoring import METHODS

THRESHOLD = 0.01


def simulate(rule: StoppingRule, d: np.ndarray, b: np.ndarray, languages: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Run the rule's looks over pairs [pairs, N], each of `languages` equal blocks of pairs
    looked at together as a scan looks at one language's open pairs: each pair's state and
    texts used."""
    state, used = np.full(len(d), OPEN), np.full(len(d), rule.max_texts)
    for block in np.array_split(np.arange(len(d)), languages):
        for n in rule.looks():
            idx = block[state[block] == OPEN]
            decided = rule.decide(d[idx, :n], b[idx, :n])
            state[idx], used[idx[decided != OPEN]] = decided, n
    return state, used


def interval_matters(d: np.ndarray, b: np.ndarray, n_boot: int = 400) -> np.ndarray:
    """The full scan's call (kinds.IntervalRule) on every text, through the scan's own bootstrap."""
    scores = bootstrap_scores(METHODS["exact"](), "en", b[0], d[None], 0, n_boot)
    return (scores["rel_ci_low"] > THRESHOLD).to_numpy()


def null_pairs(rng, pairs: int, n: int, noise: str, languages: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Pairs whose true relative increase is exactly the threshold (E d = threshold x E b).
    shared: each pair's spread differs, and 80% of it is a factor of the text shared by all
    pairs of its language (as on the default model, where one such factor explains about half
    to four fifths of the per-text spread: benchmarks/adaptive_pooled.py)."""
    b = np.broadcast_to(rng.normal(3.0, 0.5, n), (pairs, n)).copy()
    scale = 0.02
    if noise == "shared":
        spread = scale * np.exp(rng.normal(0, 0.5, (pairs, 1)))
        factor = np.repeat(rng.normal(0, 1, (languages, n)), pairs // languages, axis=0)  # [pairs, n]
        return THRESHOLD * b + spread * (np.sqrt(0.8) * factor + np.sqrt(0.2) * rng.normal(0, 1, (pairs, n))), b
    eps = rng.normal(0, scale, (pairs, n)) if noise == "normal" else scale * rng.standard_t(3, (pairs, n)) / np.sqrt(3)
    return THRESHOLD * b + eps, b


@pytest.mark.parametrize("noise", ["normal", "heavy", "shared"])
def test_early_calls_add_at_most_early_alpha_under_a_null(noise):
    rng = np.random.default_rng(7)
    rule = StoppingRule(THRESHOLD, max_texts=8, first=2, early_alpha=0.02)
    languages = 300 if noise == "shared" else 1  # the 10 pairs of a language share its texts
    d, b = null_pairs(rng, 3000, 8, noise, languages)
    state, _ = simulate(rule, d, b, languages)
    full = interval_matters(d, b)
    adaptive = np.where(state == MATTERS, True, np.where(state == FUTILE, False, full))
    early_false = np.mean(state == MATTERS)
    assert early_false <= rule.early_alpha  # the union bound over the looks
    assert adaptive.mean() <= full.mean() + rule.early_alpha  # what adaptive adds to the full rule's error
    # the fixed-n interval looked at after every text (what the rule replaces) errs far more often
    naive = np.zeros(len(d), bool)
    for n in [*rule.looks(), 8]:
        naive |= interval_matters(d[:, :n], b[:, :n], 200)
    assert naive.mean() > adaptive.mean() + 0.05


def test_clear_pairs_stop_early_and_close_ones_stay_open():
    rng = np.random.default_rng(3)
    rule = StoppingRule(THRESHOLD, max_texts=8, first=2)
    b = np.broadcast_to(rng.normal(3.0, 0.5, 8), (300, 8)).copy()
    strong = 0.15 * b[:100] * (1 + rng.normal(0, 0.05, (100, 8)))  # +15%, consistent
    none = 0.0005 * b[100:200] + rng.normal(0, 0.0005, (100, 8))  # no effect
    close = THRESHOLD * b[200:] + rng.normal(0, 0.01, (100, 8))  # at the threshold
    state, used = simulate(rule, np.concatenate([strong, none, close]), b)
    assert (state[:100] == MATTERS).mean() > 0.9 and used[:100].mean() < 6
    assert (state[100:200] == FUTILE).mean() > 0.9 and used[100:200].mean() < 4
    assert (state[200:] == MATTERS).mean() < 0.05  # a pair at the threshold is not called early


def test_rounds_cover_every_text_once():
    rule = StoppingRule(max_texts=8, first=3)
    assert [list(r) for r in rule.rounds()] == [[0, 1, 2], [3], [4], [5], [6], [7]]
    assert rule.looks() == [3, 4, 5, 6, 7]
    assert StoppingRule(max_texts=2).rounds() == [range(0, 2)]  # no early look: the full scan


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory):
    from langheads import synthetic

    return synthetic.save_tiny("llama", tmp_path_factory.mktemp("seq") / "llama")


def common(model, data):
    # a low threshold, so that some tiny-model pairs matter and some do not
    return dict(
        model=str(model),
        data=str(data),
        languages=["en", "fr"],
        max_tokens=16,
        bootstrap=200,
        threshold=0.0005,
        texts=6,
    )


def test_adaptive_scores_equal_the_full_scan_on_the_texts_they_share(tiny_llama, sample_data, tmp_path):
    full = langheads.scan_model(tmp_path / "full", progress=False, **common(tiny_llama, sample_data))
    ad = langheads.scan_model(tmp_path / "ad", progress=False, adaptive=True, **common(tiny_llama, sample_data))
    a = ad.rule["adaptive"]
    assert (
        a["pair_texts_scored"]
        < a["pair_texts_full"]
        == ad.plan.layout.n_total * sum(len(w.text_ids) for w in ad.plan.work)
    )
    assert a["stopped"]["last"] < sum(a["stopped"].values()) == ad.plan.layout.n_total * 2
    keys = ["language", "text_id", "layer", "head"]
    both = ad.per_text.merge(full.per_text, on=keys, suffixes=("_ad", "_full"))
    assert len(both) == len(ad.per_text) < len(full.per_text)
    assert np.abs(both.value_ad - both.value_full).max() < 1e-5
    # each pair rests on the texts it was scored on; pairs open to the last text get the full call
    scored = ad.per_text[ad.per_text.layer >= 0].groupby(["language", "layer", "head"]).size()
    rows = ad.scores.set_index(["language", "layer", "head"])
    assert (rows.loc[scored.index, "n_texts"] == scored).all()
    last = ad.scores[ad.scores.stopped == "last"].index
    assert np.allclose(ad.scores.loc[last, "rel_ci_low"], full.scores.loc[last, "rel_ci_low"], atol=1e-6)


def test_adaptive_rescan_reuses_the_store(tiny_llama, sample_data, tmp_path):
    from langheads.scanning.store import UnitStore, store_dir

    first = langheads.scan_model(tmp_path / "a", progress=False, adaptive=True, **common(tiny_llama, sample_data))
    again = langheads.scan_model(
        tmp_path / "a", overwrite=True, progress=False, adaptive=True, **common(tiny_llama, sample_data)
    )
    logs = list(UnitStore(store_dir(tmp_path / "a"), {}).computed().values())
    assert len(logs) == 1 and logs[0]  # only the first attempt computed units (and logged them)
    assert first.heads == again.heads


@pytest.mark.parametrize(
    "extra, says",
    [
        ({"method": "attribution"}, "nothing to stop"),
        ({"rule": "lahis"}, "--rule lahis"),
        ({"early_alpha": 0.0}, "--early-alpha"),
        ({"first_look": 1}, "--first-look"),
    ],
)
def test_adaptive_refuses_what_it_cannot_do(extra, says):
    with pytest.raises(LangheadsError, match=says):
        ScanSettings(adaptive=True, **extra)
