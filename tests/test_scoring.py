"""Fast paths against the slow reference on the same inputs, for every architecture; the
switch method against one-head-at-a-time generation."""

import json

import numpy as np
import pytest
import torch

from langheads import heads as H
from langheads import nll, synthetic
from langheads.cli import main
from langheads.components import component_for
from langheads.corpus import split_of
from langheads.scoring import METHODS, ExactAblation, GradientAttribution, Lahis

from .conftest import SAMPLE

TEXTS = SAMPLE["en"][:3] + SAMPLE["hi"][:3] + ["x", "ab"]


def _setup(arch):
    model = synthetic.tiny(arch)
    ids = nll.tokenize(synthetic.byte_tokenizer(), TEXTS)
    return model, component_for(model).layout, ids


def test_batches_sorted_and_cover_every_text():
    ids = [[1] * n for n in (5, 9, 2, 9, 4)]
    batches = nll.make_batches(ids, batch_tokens=18)
    assert sorted(i for b in batches for i in b.index) == list(range(5))
    assert all(b.n_tokens <= 18 or len(b.index) == 1 for b in batches)
    longest = [b.input_ids.shape[1] for b in batches]
    assert longest == sorted(longest, reverse=True)


@pytest.mark.parametrize("arch", synthetic.ARCHS)
def test_exact_matches_naive_loop(arch):
    """Per-text NLL and per-head delta within 1e-4 nats of masking + a whole forward per text."""
    model, layout, ids = _setup(arch)
    reference = nll.reference_nll(model, ids).double().numpy()
    method = ExactAblation(chunk_tokens=5, batch_tokens=160)  # chunks smaller than a batch
    batches = nll.make_batches(ids, 40)
    assert len(batches) > 1
    out = method.score_language(model, layout, batches, len(ids), lambda k: None)
    assert np.abs(out.base_nll - reference).max() < 1e-4
    for layer in range(layout.n_layers):
        for head in range(layout.n_units):
            with H.masked_heads(model, [(layer, head)]):
                ablated = nll.reference_nll(model, ids).double().numpy()
            assert np.abs(out.values[layer, head] - (ablated - reference)).max() < 1e-4, (layer, head)


@pytest.mark.parametrize("arch", synthetic.ARCHS)
def test_units_of_one_batch_scored_together_equal_one_at_a_time(arch):
    """An adaptive round scores a batch's open heads of every layer with one loss pass
    (score_units); the values equal score_unit's per unit, whatever the heads per layer and
    wherever the pass is cut (chunk_tokens smaller than one copy, and larger than several)."""
    model, layout, ids = _setup(arch)
    batch = nll.make_batches(ids[:3], 4096)[0]
    wanted = [
        (range(0, 1), [0, layout.n_units - 1]),
        (range(1, 2), [1]),
        (range(layout.n_layers - 1, layout.n_layers), list(range(layout.n_units))),
    ]
    for chunk in (5, 10_000):
        together = ExactAblation(chunk_tokens=chunk).score_units(model, layout, batch, wanted)
        for (layers, heads), got in zip(wanted, together):
            alone = ExactAblation(chunk_tokens=chunk).score_units(model, layout, batch, [(layers, heads)])[0]
            assert got.heads == alone.heads
            assert np.isnan(got.values).sum() == np.isnan(alone.values).sum()
            assert np.nanmax(np.abs(got.values - alone.values)) < 1e-6, (arch, chunk, list(layers))


def test_vocab_blocks_and_chunks_do_not_change_the_loss():
    model, layout, ids = _setup("gemma2")  # soft-capped logits
    batch = nll.make_batches(ids, 10_000)[0]
    with torch.no_grad():
        hidden = nll.trace(model, batch).final_hidden
        whole = nll.nll_from_hidden(model, hidden, batch.input_ids, batch.lengths, 10_000, None)
        blocked = nll.nll_from_hidden(model, hidden, batch.input_ids, batch.lengths, 7, 37)
    assert torch.allclose(whole, blocked, atol=1e-5)


@pytest.mark.parametrize("arch", ["llama", "gemma3", "gpt2"])
def test_attribution_is_minus_the_gate_gradient(arch):
    """Per-text values equal -dNLL/dgate from a plain autograd pass, one text at a time."""
    model, layout, ids = _setup(arch)
    out = GradientAttribution(chunk_tokens=6).score_language(
        model, layout, nll.make_batches(ids, 60), len(ids), lambda k: None
    )
    for t in (0, 4):
        gates = torch.ones(layout.n_layers, layout.n_units, requires_grad=True)
        with H.scaled_heads(model, {l: gates[l] for l in range(layout.n_layers)}):
            x = torch.tensor([ids[t]])
            logits = model(input_ids=x).logits[0, :-1]
            loss = torch.nn.functional.cross_entropy(logits, x[0, 1:])
        (grad,) = torch.autograd.grad(loss, gates)
        assert np.allclose(out.values[:, :, t], -grad.numpy(), atol=1e-5)
    assert all(p.grad is None for p in model.parameters())


def test_attribution_tracks_exact_on_small_effects():
    """First order: for a small gate change the estimate and the exact change agree."""
    model, layout, ids = _setup("qwen2")
    out = GradientAttribution().score_language(model, layout, nll.make_batches(ids, 400), len(ids), lambda k: None)
    base = nll.reference_nll(model, ids).double().numpy()
    eps = 1e-3
    factors = {1: torch.tensor([1.0, 1.0 - eps, 1.0, 1.0])}
    with H.scaled_heads(model, factors):
        nudged = nll.reference_nll(model, ids).double().numpy()
    assert np.allclose((nudged - base) / eps, out.values[1, 1], atol=2e-3, rtol=0.05)


def test_lahis_score():
    values = np.array([[[-1.0, -3.0, 2.0, 0.0]]])  # one head, four texts
    assert Lahis().aggregate(values)[0, 0] == pytest.approx(np.mean([1, 3, 2, 0]) * 0.5)
    assert set(METHODS) == {"exact", "attribution", "lahis", "switch", "lape"}


def test_compiled_fast_path_matches_eager():
    """nll.compile_for_speed (used with --compile) changes speed, not the numbers."""
    model, layout, ids = _setup("qwen3")
    batches = nll.make_batches(ids, 60)
    eager = ExactAblation(chunk_tokens=8).score_language(model, layout, batches, len(ids), lambda k: None)
    nll.compile_for_speed(model)
    with torch.no_grad():
        compiled = ExactAblation(chunk_tokens=8).score_language(model, layout, batches, len(ids), lambda k: None)
        full_vocab = nll.per_text_nll(model, ids, 60, 8)  # CPU default is vocabulary blocks: also try whole
        batch = batches[0]
        hidden = nll.trace(model, batch).final_hidden
        whole = nll.nll_from_hidden(model, hidden, batch.input_ids, batch.lengths, 8, None)
    assert np.abs(eager.values - compiled.values).max() < 1e-5
    assert np.abs(eager.base_nll - full_vocab.numpy()).max() < 1e-5
    assert torch.allclose(whole.double(), torch.tensor(eager.base_nll[batch.index]), atol=1e-5)


def test_switch_method_matches_one_head_at_a_time_generation(tiny_dirs, sample_data, tmp_path):
    """The batched, per-row-masked generations give what masking one head and generating
    each prompt alone gives."""
    from langheads.evaluation.metrics import switched
    from langheads.scanning.plan import plan_scan
    from langheads.scanning.settings import ScanSettings

    plan = plan_scan(
        ScanSettings(
            model=str(tiny_dirs["llama"]), data=str(sample_data), languages=["fr"], method="switch", bootstrap=20
        )
    )
    method, model, tok = plan.method, plan.loaded.model, plan.loaded.tokenizer
    method.new_tokens = 5
    batch = plan.batches(plan.work[0])[0]
    out = method.score_unit(model, plan.layout, batch, range(1, 2))
    prompts = method._prompts(model, batch)

    def alone(removed):
        said = []
        for row in prompts:
            with H.masked_heads(model, removed):
                gen = model.generate(
                    input_ids=row[None],
                    attention_mask=torch.ones_like(row[None]),
                    do_sample=False,
                    max_new_tokens=5,
                    pad_token_id=tok.pad_token_id,
                )
            said.append(switched(tok.decode(gen[0, len(row) :], skip_special_tokens=True), "fr"))
        return np.array(said)

    base = alone([])
    np.testing.assert_array_equal(out.base_nll, base)
    for head in range(plan.layout.n_units):
        np.testing.assert_array_equal(out.values[0, head], alone([(1, head)]) - base)
    assert plan.work[0].text_ids and all(split_of(i) == "selection" for i in plan.work[0].text_ids)


def test_switch_scan_end_to_end(tiny_dirs, sample_data, tmp_path):
    out = tmp_path / "switch"
    assert (
        main(
            [
                "scan",
                "--model",
                str(tiny_dirs["qwen2"]),
                "--data",
                str(sample_data),
                "--languages",
                "en,fr",
                "--method",
                "switch",
                "--out",
                str(out),
                "--bootstrap",
                "30",
                "--quiet",
            ]
        )
        == 0
    )
    import pandas as pd

    scores = pd.read_csv(out / "scores.csv")
    assert ((scores["score"] >= -1) & (scores["score"] <= 1)).all()
    assert (scores["rel_increase"] == scores["score"]).all()  # shares are not divided by the base
    assert json.loads((out / "run.json").read_text())["method"]["name"] == "switch"
