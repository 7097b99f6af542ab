"""Physical pruning: equal to masking, reloads with both loaders, chooses within its rules."""

import copy
import json

import pytest
import torch

from langheads import archs, models, synthetic
from langheads import heads as H
from langheads.edit import candidates, pruning, surgery
from langheads.errors import LangheadsError
from langheads.manifest import read_manifest

from .conftest import run_cli

# Layer 0 uneven groups (group 0 keeps 1 head, group 1 keeps 2), layer 1 all heads gone,
# layer 2 one KV group gone entirely.
REMOVED = [(0, 1), (1, 0), (1, 1), (1, 2), (1, 3), (2, 0), (2, 1)]


def _ids():
    return torch.randint(4, synthetic.VOCAB, (3, 19), generator=torch.Generator().manual_seed(5))


def _masked_logits(model, removed, ids=None):
    with torch.no_grad(), H.masked_heads(model, removed):
        return model(input_ids=_ids() if ids is None else ids).logits


def _close(a, b):
    return (a - b).abs().max().item() <= 1e-5 * b.abs().max().item()


@pytest.mark.parametrize("arch", [a for a in synthetic.ARCHS if a not in synthetic.NOT_PRUNABLE])
def test_pruned_model_equals_masked_and_reloads(arch, tiny_dirs, tmp_path):
    loaded = models.load_model(str(tiny_dirs[arch]))
    expected = _masked_logits(loaded.model, REMOVED)
    before = sum(p.numel() for p in loaded.model.parameters())
    pruning.save(loaded, tmp_path / "p", {"note": "test"}, heads=REMOVED)
    assert sum(p.numel() for p in loaded.model.parameters()) < before
    with torch.no_grad():
        assert _close(loaded.model(input_ids=_ids()).logits, expected)
    reloaded = models.load_model(str(tmp_path / "p"))
    with torch.no_grad():
        assert _close(reloaded.model(input_ids=_ids()).logits, expected)
    [edit] = read_manifest(tmp_path / "p").edits
    assert edit["op"] == "remove_heads" and edit["removed"] == {"0": [1], "1": [0, 1, 2, 3], "2": [0, 1]}
    if arch not in synthetic.NO_GQA:
        adapter, layout = archs.adapter_for(reloaded.model), H.head_layout(reloaded.model)
        layer2 = adapter.attention_of(H.decoder_layers(reloaded.model)[2])
        assert adapter.head_counts(layer2, layout) == (2, 1)  # KV group 0 went with both its query heads
        assert edit["padding_heads"] == 1  # layer 0: group 0 padded to the width of group 1
    assert not list(tmp_path.glob("*.safetensors")) and not list((tmp_path / "p").glob("*.bin"))


@pytest.mark.parametrize("arch", synthetic.NOT_PRUNABLE)
def test_inexact_pruning_is_refused_with_the_reason(arch, tiny_dirs, tmp_path):
    loaded = models.load_model(str(tiny_dirs[arch]))
    with pytest.raises(LangheadsError, match="not exact .*span all heads"):
        pruning.save(loaded, tmp_path / "p", {}, heads=REMOVED)
    assert not (tmp_path / "p").exists()


def test_empty_choice_gives_the_original(tiny_dirs, tmp_path):
    loaded = models.load_model(str(tiny_dirs["qwen2"]))
    with torch.no_grad():
        original = loaded.model(input_ids=_ids()).logits
    pruning.save(loaded, tmp_path / "p", {}, heads=[])
    with torch.no_grad():
        assert torch.equal(models.load_model(str(tmp_path / "p")).model(input_ids=_ids()).logits, original)


def test_generation_works_after_pruning(tiny_dirs):
    loaded = models.load_model(str(tiny_dirs["gemma3"]))
    surgery.remove_heads_(loaded.model, {0: [0, 1, 2, 3], 1: [2]})
    x = torch.tensor([[1, 50, 60, 70]])
    out = loaded.model.generate(input_ids=x, max_new_tokens=5, do_sample=False)
    with torch.no_grad():  # the cached decode agrees with a full forward
        full = loaded.model(input_ids=out[:, :-1]).logits[0, -1].argmax()
    assert out.shape == (1, 9) and full == out[0, -1]


def test_uniform_reloads_with_plain_transformers(tiny_dirs, tmp_path):
    from transformers import AutoModelForCausalLM

    loaded = models.load_model(str(tiny_dirs["llama"]))
    removed = [(l, h) for l in range(3) for h in (1, 3)]  # one head from each KV group of each layer
    expected = _masked_logits(loaded.model, removed)
    pruning.save(loaded, tmp_path / "u", {}, heads=removed, uniform=True)
    plain = AutoModelForCausalLM.from_pretrained(tmp_path / "u").eval()
    assert plain.config.num_attention_heads == 2 and plain.config.num_key_value_heads == 2
    with torch.no_grad():
        assert _close(plain(input_ids=_ids()).logits, expected)
        assert _close(models.load_model(str(tmp_path / "u")).model(input_ids=_ids()).logits, expected)


def test_uniform_is_refused_with_the_reason(tmp_path):
    uneven = models.load_model(str(synthetic.save_tiny("llama", tmp_path / "m")))
    with pytest.raises(LangheadsError, match="same number of query heads"):
        pruning.save(uneven, tmp_path / "a", {}, heads=[(0, 1)], uniform=True)
    # 6 query heads in 2 groups of 3, hidden size 42: removing one per group leaves 4 heads,
    # and transformers' config validator wants the hidden size to be a multiple of the head count.
    six = models.load_model(
        str(
            synthetic.save_tiny("llama", tmp_path / "six", hidden_size=42, num_attention_heads=6, num_key_value_heads=2)
        )
    )
    with pytest.raises(LangheadsError, match="cannot express 4 query heads.*not a multiple"):
        pruning.save(six, tmp_path / "b", {}, heads=[(l, h) for l in range(3) for h in (0, 3)], uniform=True)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_candidate_order():
    import pandas as pd

    heads = [
        {"layer": 0, "head": 0, "kind": "language-specific", "languages": ["en"]},
        {"layer": 0, "head": 1, "kind": "language-specific", "languages": ["fr"]},
        {"layer": 0, "head": 2, "kind": "miscellaneous", "languages": []},
        {"layer": 0, "head": 3, "kind": "language-group", "languages": ["fr", "hi"]},
        {"layer": 1, "head": 0, "kind": "miscellaneous", "languages": []},
    ]
    rel = {(0, 0): 0.05, (0, 1): 0.003, (0, 2): 0.001, (0, 3): 0.002, (1, 0): 0.0005}
    scores = pd.DataFrame(
        [
            {"layer": l, "head": h, "language": lang, "rel_increase": r}
            for (l, h), r in rel.items()
            for lang in ["en", "fr", "hi"]
        ]
    )
    order = candidates.ordered(candidates.candidate_tiers(heads, ["fr", "hi"]), candidates.head_harm(scores, ["en"]))
    assert order == [(0, 3), (0, 1), (1, 0), (0, 2)]  # dropped-only by harm, then miscellaneous by harm


def test_prune_and_evaluate_cli(tiny_dirs, sample_data, tmp_path):
    run = tmp_path / "scan"
    r = run_cli(
        "scan",
        "--model",
        str(tiny_dirs["gemma3"]),
        "--data",
        str(sample_data),
        "--languages",
        "en,fr,hi",
        "--out",
        str(run),
        "--bootstrap",
        "50",
        "--threshold",
        "0.002",
        "--quiet",
    )
    assert r.returncode == 0, r.stderr
    r = run_cli("prune", "--scan", str(run), "--keep", "en", "--heads", "2", "--out", str(tmp_path / "m"), "--quiet")
    assert r.returncode == 0, r.stderr
    info = read_manifest(tmp_path / "m").records["remove_heads"]
    assert info["kept"] == ["en"] and info["dropped"] == ["fr", "hi"]
    assert sum(len(step["units"]) for step in info["curve"]) == len(info["removed_units"]) == 2
    assert {u[0] for u in info["removed_units"]} == {"head"} and info["curve"][-1]["step"] == len(info["curve"]) - 1
    assert info["saved"]["parameters_saved"] > 0  # every move saves parameters
    assert all(set(step["nll"]) == {"en", "fr", "hi"} for step in info["curve"])
    r = run_cli(
        "prune",
        "--scan",
        str(run),
        "--keep",
        "en",
        "--max-increase",
        "0.5",
        "--out",
        str(tmp_path / "b"),
        "--quiet",
        "--dtype",
        "bfloat16",
    )
    assert r.returncode == 0, r.stderr
    from safetensors import safe_open

    [weights] = (tmp_path / "b").glob("*.safetensors")
    with safe_open(str(weights), "pt") as f:
        assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.bfloat16}
    assert models.load_model(str(tmp_path / "b"), "bfloat16").model.dtype == torch.bfloat16
    r = run_cli(
        "evaluate",
        "--model",
        str(tmp_path / "m"),
        "--baseline",
        str(tiny_dirs["gemma3"]),
        "--languages",
        "en,fr",
        "--data",
        str(sample_data),
        "--out",
        str(tmp_path / "e"),
        "--prompts",
        "1",
        "--new-tokens",
        "4",
    )
    assert r.returncode == 0, r.stderr
    ev = json.loads((tmp_path / "e" / "eval.json").read_text())
    assert [row["language"] for row in ev["table"]] == ["en", "fr"] and ev["part"] == "report"
    cert = ev["certificate"]  # kept languages and budget read from the pruned folder's record
    assert cert["kept"] == ["en"] and cert["budget"] == 0.02
    assert {(r["language"], r["role"]) for r in cert["rows"]} == {("en", "kept"), ("fr", "dropped")}
    assert "certificate: kept en" in r.stdout
    for row in ev["table"]:
        assert row["change_ci_low"] <= row["change"] <= row["change_ci_high"]
        assert row["nll_per_byte_before"] > 0
    assert (
        "not in the scan: de"
        in run_cli("prune", "--scan", str(run), "--keep", "de", "--out", str(tmp_path / "x")).stderr
    )
    from langheads.cli import main

    assert (
        main(
            [
                "prune",
                "--scan",
                str(run),
                "--keep",
                "en,hi",
                "--units",
                "2",
                "--trim-vocab",
                "--out",
                str(tmp_path / "t"),
                "--quiet",
            ]
        )
        == 0
    )
    trimmed = read_manifest(tmp_path / "t")
    assert [e["op"] for e in trimmed.edits] == ["remove_heads", "trim_vocab"]
    assert trimmed.records["trim_vocab"]["scripts"] == {"en": {"LATIN": 1.0}, "hi": {"DEVANAGARI": 1.0}}


@pytest.mark.slow
def test_default_model_pruned_equals_masked(default_model):
    """Gemma 3 270M: heads from several layers, one layer emptied entirely (its KV head goes)."""
    model, tok = default_model.model, default_model.tokenizer
    removed = [(0, 2), (3, 1), (3, 3), (9, 0), (9, 1), (9, 2), (9, 3), (17, 1)]
    ids = torch.tensor([tok("All human beings are born free and equal in dignity and rights.")["input_ids"]])
    expected = _masked_logits(model, removed, ids)
    pruned = copy.deepcopy(model)
    shapes = surgery.remove_heads_(pruned, {l: [h for ll, h in removed if ll == l] for l, _ in removed})
    assert shapes[9]["kv_heads"] == [] and isinstance(H.decoder_layers(pruned)[9].self_attn, surgery.NoAttention)
    with torch.no_grad():
        assert _close(pruned(input_ids=ids).logits, expected)


def test_damaged_pruned_folder_is_named_not_loaded(tiny_dirs, tmp_path):
    """A weight missing outside the replayed layers, or one of the wrong shape inside them, is
    refused in one error naming it (never left randomly initialised)."""
    from safetensors.torch import load_file, save_file

    pruning.save(models.load_model(str(tiny_dirs["llama"])), tmp_path / "p", {}, heads=REMOVED)
    [file] = (tmp_path / "p").glob("*.safetensors")
    state = load_file(file)
    for damage, name in [
        (lambda s: s.pop("model.norm.weight"), "model.norm.weight"),
        (
            lambda s: s.update(
                {"model.layers.0.self_attn.q_proj.weight": s["model.layers.0.self_attn.q_proj.weight"][:8]}
            ),
            "q_proj",
        ),
    ]:
        broken = dict(state)
        damage(broken)
        save_file(broken, str(file), metadata={"format": "pt"})
        with pytest.raises(LangheadsError, match=f"weights do not match langheads.json .*{name}"):
            models.load_model(str(tmp_path / "p"))


def test_prune_reads_the_scans_own_texts(tiny_dirs, tmp_path):
    """A scan of a SQuAD file whose name says no language (--data-lang en) prunes on that file's
    selection items: the run's corpus is read back through corpus.scan_corpus, --data-lang and
    the answer signal included (before, prune reloaded the file without them and failed)."""
    import json

    from langheads.cli import main

    from .conftest import SAMPLE

    paragraphs = [
        {
            "context": text,
            "qas": [{"id": f"q{i}", "question": "What is said?", "answers": [{"text": text.split()[-1]}]}],
        }
        for i, text in enumerate(SAMPLE["en"] * 2)
    ]
    data = tmp_path / "squad.json"
    data.write_text(json.dumps({"data": [{"paragraphs": paragraphs}]}))
    run = tmp_path / "run"
    assert (
        main(
            [
                "scan",
                "--model",
                str(tiny_dirs["llama"]),
                "--data",
                str(data),
                "--data-lang",
                "en",
                "--signal",
                "answer",
                "--languages",
                "en",
                "--out",
                str(run),
                "--bootstrap",
                "20",
                "--quiet",
            ]
        )
        == 0
    )
    assert (
        main(["prune", "--scan", str(run), "--keep", "en", "--heads", "1", "--out", str(tmp_path / "m"), "--quiet"])
        == 0
    )
    assert (tmp_path / "m" / "langheads.json").exists()


def test_savings_count_what_the_saved_model_loses():
    from langheads.edit import savings
    from langheads.heads import HeadLayout

    phi = HeadLayout("phi3", n_layers=2, n_heads=4, n_kv_heads=2, head_dim=8)  # groups {0, 1} and {2, 3}
    assert savings.slots_saved(phi, [(0, 0)]) == (0, 0)  # padded back: nothing saved
    assert savings.slots_saved(phi, [(0, 0), (0, 2)]) == (2, 0)  # one per group: the width drops
    assert savings.slots_saved(phi, [(0, 0), (0, 1)]) == (2, 1)  # a whole group, its KV head too
    assert savings.slots_saved(phi, [(0, 0), (1, 2)]) == (0, 0)  # scattered over layers: nothing
    moves = candidates.moves(phi, [(0, 1), (0, 3), (0, 0), (1, 2)], set())
    assert moves == [((0, 0), (0, 1)), ((0, 1), (0, 3))]  # the rest of group 0; one per group, least harm first
    assert candidates.moves(phi, [(0, 0)], set()) == []  # a lone head of a group of two is no move


def test_prune_saves_parameters_on_grouped_attention(tmp_path, sample_data):
    """Tiny Phi-3, 4 query heads in 2 KV groups: `--heads 2` removes a pair that saves
    parameters (the saved folder is smaller by what the record says), `--heads 1` removes
    nothing and says why, instead of padding one head back."""
    from langheads.cli import main

    model = synthetic.save_tiny("phi3", tmp_path / "phi3")
    run = tmp_path / "scan"
    assert (
        main(
            [
                "scan",
                "--model",
                str(model),
                "--data",
                str(sample_data),
                "--languages",
                "en,fr,hi",
                "--out",
                str(run),
                "--bootstrap",
                "50",
                "--threshold",
                "0.002",
                "--quiet",
            ]
        )
        == 0
    )
    original = sum(p.numel() for p in models.load_model(str(model)).model.parameters())
    for n in (2, 1):
        assert (
            main(
                [
                    "prune",
                    "--scan",
                    str(run),
                    "--keep",
                    "en",
                    "--heads",
                    str(n),
                    "--out",
                    str(tmp_path / f"m{n}"),
                    "--quiet",
                ]
            )
            == 0
        )
    saved = read_manifest(tmp_path / "m2").records["remove_heads"]["saved"]
    pruned = sum(p.numel() for p in models.load_model(str(tmp_path / "m2")).model.parameters())
    assert saved["heads_removed"] == 2 and saved["query_slots_saved"] == 2 and saved["padding_heads"] == 0
    assert saved["parameters_saved"] == original - pruned > 0
    one = read_manifest(tmp_path / "m1").pruning_record()
    assert one["removed_units"] == [] and one["saved"]["parameters_saved"] == 0
    assert "no further move of at most 1" in one["stopped"]


def _toy_walk(harm: list[float], budget: float, patience: int, one_move: bool):
    """gallop over moves whose harms add up, judged against `budget`; (kept moves, judgements)."""
    from langheads.edit.candidates import gallop

    kept, tried, calls = [], set(), []

    def plan(k):
        left = [i for i in range(len(harm)) if i not in kept and i not in tried]
        return left[: 1 if one_move else k]

    def judge(batch):
        calls.append(list(batch))
        total = sum(harm[i] for i in kept + batch)
        return total <= budget, total

    why = gallop(plan, judge, lambda b, m: kept.extend(b), lambda m, _: tried.add(m), patience)
    return kept, calls, why


def test_the_batched_walk_keeps_the_budget_in_fewer_measurements():
    """Batches double while they fit and halve when they do not; single moves are refused as
    the one-move walk refuses them, so on additive harms both keep the same moves; the batched
    one measures far less often; patience stops a run of refusals."""
    harm = [0.0001] * 60 + [0.004, 0.0001, 0.03, 0.0002] + [0.05] * 40
    one, one_calls, _ = _toy_walk(harm, 0.02, 0, one_move=True)
    batched, calls, why = _toy_walk(harm, 0.02, 0, one_move=False)
    assert sorted(batched) == sorted(one) and sum(harm[i] for i in batched) <= 0.02 and why == "moves"
    assert len(one_calls) == len(harm) and len(calls) < 0.7 * len(one_calls)
    assert max(len(c) for c in calls) >= 32  # it galloped
    patient, patient_calls, why = _toy_walk(harm, 0.02, 5, one_move=False)
    assert why == "patience" and sorted(patient) == sorted(one) and len(patient_calls) < len(calls)


def test_the_walk_judges_the_upper_end_of_the_interval_not_the_mean():
    """The one acceptance rule (candidates.judged): one selection text of eight rising 12% moves
    the mean by 1.5%, within a 2% budget, but the paired interval's upper end is far above it,
    so the move is refused (the head walk accepted it while it judged means); an even 1.5%
    rise on every text is accepted."""
    import numpy as np

    before = {"en": np.full(8, 2.0)}
    one_text = {"en": np.array([2.0] * 7 + [2.24])}
    ok, rel, upper = candidates.judged(before, one_text, 0.02)
    assert abs(rel["en"] - 0.015) < 1e-9 and upper["en"] > 0.03 and not ok
    ok, rel, upper = candidates.judged(before, {"en": np.full(8, 2.03)}, 0.02)
    assert ok and abs(upper["en"] - 0.015) < 1e-9


def test_every_step_of_a_budget_walk_keeps_the_interval_within_the_budget(tiny_dirs, sample_data, tmp_path):
    from langheads.cli import main

    run = tmp_path / "scan"
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
                "--bootstrap",
                "20",
                "--threshold",
                "0.5",
                "--quiet",
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "prune",
                "--scan",
                str(run),
                "--keep",
                "en",
                "--max-increase",
                "0.01",
                "--out",
                str(tmp_path / "m"),
                "--quiet",
            ]
        )
        == 0
    )
    record = read_manifest(tmp_path / "m").pruning_record()
    assert all(step["rel_kept_upper"]["en"] <= 0.01 for step in record["curve"][1:])
    assert all(r["rel_kept_upper"]["en"] > 0.01 for r in record["rejected"])
    assert record["curve"][1:] or record["rejected"]  # the walk decided something
