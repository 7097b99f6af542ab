"""Neuron groups through the same engine as heads: the fast path against zeroed weights on
every family with one MLP output projection, a scan end to end, and the refusals."""

import contextlib
import importlib.util
import json

import numpy as np
import pandas as pd
import pytest
import torch

import langheads
from langheads import nll, synthetic
from langheads.cli import main
from langheads.components import component_for
from langheads.errors import LangheadsError
from langheads.scoring import ExactAblation, GradientAttribution

from .conftest import SAMPLE

TEXTS = SAMPLE["en"][:3] + SAMPLE["hi"][:3] + ["x", "ab"]


@contextlib.contextmanager
def _zeroed_group(component, model, layer: int, unit: int):
    """The group's neurons removed from the weights while inside the block: their input columns
    of the MLP output projection zeroed, or of their expert's slice of a mixture's stacked down."""
    proj, g = component.target(model, layer), component.group
    if component.experts:
        expert, group = divmod(unit, component.layout.n_units // component.experts)
        weight, index = (
            proj.down_proj,
            (expert, slice(None), slice(group * g, group * g + g)),
        )  # [experts, hidden, width]
    elif type(proj).__name__ == "Conv1D":  # GPT-2 keeps [in, out]
        weight, index = proj.weight, slice(unit * g, unit * g + g)
    else:
        weight, index = proj.weight, (slice(None), slice(unit * g, unit * g + g))
    kept = weight.data.clone()
    weight.data[index] = 0
    try:
        yield
    finally:
        weight.data = kept


@pytest.mark.parametrize("arch", synthetic.ARCHS)
def test_neuron_group_ablation_equals_zeroed_weights(arch):
    """Every family, mixtures of experts included (a group of one expert's neurons)."""
    model = synthetic.tiny(arch)
    ids = nll.tokenize(synthetic.byte_tokenizer(), TEXTS)
    component = component_for(model, "neuron", 16)
    layout = component.layout  # [layers, groups]: 96 or 256 neurons in groups of 16 (MoE: 4 experts x 96 or 32)
    method = ExactAblation(chunk_tokens=5, batch_tokens=160)
    method.component = component
    out = method.score_language(model, layout, nll.make_batches(ids, 40), len(ids))
    reference = nll.reference_nll(model, ids).double().numpy()
    units = (0, layout.n_units // (component.experts or 2), layout.n_units - 1)  # MoE: expert 0, 1 and the last
    for layer in (0, layout.n_layers - 1):
        for unit in units:
            with _zeroed_group(component, model, layer, unit):
                ablated = nll.reference_nll(model, ids).double().numpy()
            assert np.abs(out.values[layer, unit] - (ablated - reference)).max() < 1e-4, (layer, unit)
    assert not np.allclose(out.values, 0)  # the groups do something


@pytest.mark.parametrize("arch", ["llama", "mixtral"])
def test_neuron_attribution_is_minus_the_gate_gradient(arch):
    """First order: a group's attribution predicts the NLL change of scaling it by 1 - eps."""
    model = synthetic.tiny(arch, dtype=torch.float64)  # a finite difference needs the digits
    if arch == "mixtral":
        model.set_experts_implementation("eager")  # transformers' grouped matmul takes no float64
    ids = nll.tokenize(synthetic.byte_tokenizer(), TEXTS[:4])
    component = component_for(model, "neuron", 16)
    method = GradientAttribution()
    method.component = component
    batches = nll.make_batches(ids, 4096)
    out = method.score_language(model, component.layout, batches, len(ids))
    eps, layer, group = 1e-3, 1, 2  # RMSNorm computes in float32: a smaller step drowns in its rounding
    factors = torch.ones(component.layout.n_units, dtype=torch.float64)
    factors[group] = 1 - eps
    plain = _nll64(model, ids)
    with component.scaled(model, {layer: factors}):
        nudged = _nll64(model, ids)
    change = (nudged - plain) / eps  # d NLL / d(-gate), by a finite difference in float64
    assert np.abs(change).max() > 1e-6  # a change to predict
    assert np.allclose(out.values[layer, group], change, rtol=0.05, atol=2e-6)


def _nll64(model, token_lists) -> np.ndarray:
    out = []
    with torch.no_grad():
        for ids in token_lists:
            x = torch.tensor([ids])
            logits = model(input_ids=x, use_cache=False).logits[0, :-1].double()
            out.append(float(torch.nn.functional.cross_entropy(logits, x[0, 1:])))
    return np.array(out)


def test_neuron_scan_end_to_end(tiny_dirs, sample_data, tmp_path, capsys):
    out = tmp_path / "neurons"
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
                "--component",
                "neuron",
                "--neuron-group",
                "16",
                "--bootstrap",
                "50",
                "--quiet",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert "18 neuron groups, 2 languages" in capsys.readouterr().out
    scores = pd.read_csv(out / "scores.csv")
    assert len(scores) == 3 * 6 * 2 and set(scores.component) == {"neuron"}
    assert scores.loc[scores["head"] == 5, "neurons"].eq("80-95").all()
    info = json.loads((out / "run.json").read_text())
    assert info["component"] == {"name": "neuron", "units_per_layer": 6, "unit_width": 16, "neurons_per_group": 16}
    assert len(info["heads"]) == 18 and info["model"]["heads"] == 4  # the model's own heads stay recorded
    run = langheads.read_run(out)
    assert run.n_heads == 6 and run.grid("en").shape == (3, 6)
    capsys.readouterr()
    heads = tmp_path / "heads"
    langheads.scan_model(
        heads,
        model=str(tiny_dirs["llama"]),
        data=str(sample_data),
        languages=["en", "fr"],
        bootstrap=20,
        progress=False,
    )
    assert main(["compare", str(out), str(heads)]) == 2
    assert "different units (A: neuron groups of 16; B: heads)" in capsys.readouterr().err
    assert main(["report", str(out), "--out", str(tmp_path / "page")]) == 0  # a neuron run's page is drawn
    page = (tmp_path / "page" / "report.html").read_text()
    assert "Kinds of neuron groups" in page and "Top neuron groups per language" in page


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--neuron-group", "7"], "--neuron-group 7 does not divide the MLP width 96"),
        (["--method", "switch"], "--method switch scores heads only"),
        (["--neuron-group", "0"], "--neuron-group must be a whole number >= 1"),
    ],
)
def test_neuron_scan_refusals(argv, message, tiny_dirs, sample_data, tmp_path, capsys):
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
                "--component",
                "neuron",
                *argv,
                "--out",
                str(tmp_path / "x"),
            ]
        )
        == 2
    )
    assert message in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("arch", ["qwen3_moe", "mixtral"])
def test_moe_neurons_scanned_per_expert_and_removed_alike_from_every_expert(arch, sample_data, tmp_path, capsys):
    """Units name their expert; prune takes one group from every expert of one layer per move
    (layers may then differ: load_model replays them, the model equals the masked original, the
    GGUF export refuses), or with --uniform from every expert of every layer: the config says
    the new expert width (plain transformers loads it), the model equals the masked original, the
    summary's FLOPs count the chosen experts only, and llama.cpp runs the export."""
    from transformers import AutoModelForCausalLM

    from langheads import heads as H
    from langheads.deploy import export
    from langheads.manifest import read_manifest
    from langheads.units import name

    out, pruned = tmp_path / "experts", tmp_path / "pruned"
    folder = synthetic.save_tiny(
        arch,
        tmp_path / arch,
        tokenizer={"qwen3_moe": "qwen2", "mixtral": "byte_fallback"}[arch],
        **({"norm_topk_prob": True} if arch == "qwen3_moe" else {}),
    )  # as llama.cpp runs it
    assert (
        main(
            [
                "scan",
                "--model",
                str(folder),
                "--data",
                str(sample_data),
                "--languages",
                "en,fr",
                "--component",
                "neuron",
                "--neuron-group",
                "16",
                "--bootstrap",
                "20",
                "--quiet",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    info = json.loads((out / "run.json").read_text())
    width = {"qwen3_moe": 32, "mixtral": 96}[arch]  # one expert's neurons; 4 experts, 2 chosen per token
    assert info["component"] == {
        "name": "neuron",
        "units_per_layer": 4 * width // 16,
        "unit_width": 16,
        "neurons_per_group": 16,
        "experts": 4,
    }
    scores = pd.read_csv(out / "scores.csv")
    per = width // 16
    assert scores.loc[scores["head"] == per + 1, "neurons"].eq("E1:16-31").all()
    assert name(info["component"], 2, 4 * per - 1) == f"L2E3N{width - 16}-{width - 1}"
    assert (
        scores.loc[(scores["layer"] == 2) & (scores["head"] == 4 * per - 1), "unit"]
        .eq(f"L2E3N{width - 16}-{width - 1}")
        .all()
    )  # scores.csv names each unit as the summary does
    original = langheads.load_model(str(folder)).model
    component = component_for(original, "neuron", 16)
    ids = torch.tensor([nll.tokenize(langheads.load_model(str(folder)).tokenizer, [SAMPLE["en"][0]])[0]])

    def masked_logits(units):
        factors = {
            l: torch.ones(component.layout.n_units).index_fill_(
                0, torch.tensor([g for _, x, g in units if x == l], dtype=torch.long), 0.0
            )
            for l in range(3)
        }
        with torch.no_grad(), component.scaled(original, factors):
            return original(input_ids=ids).logits

    # without --uniform a move takes one group from each expert of one layer: layers may differ
    assert (
        main(
            [
                "prune",
                "--scan",
                str(out),
                "--keep",
                "en",
                "--heads",
                "8",
                "--max-increase",
                "1",
                "--out",
                str(tmp_path / "per-layer"),
                "--quiet",
            ]
        )
        == 0
    )
    units = read_manifest(tmp_path / "per-layer").pruning_record()["removed_units"]
    moves = [units[:4], units[4:]]
    assert len(units) == 8 and all(
        len({l for _, l, _ in m}) == 1 and sorted(g // per for *_, g in m) == [0, 1, 2, 3] for m in moves
    )
    reloaded = langheads.load_model(str(tmp_path / "per-layer")).model
    widths = [layer.mlp.experts.intermediate_dim for layer in H.decoder_layers(reloaded)]
    assert sorted(widths) == sorted([width - 16 * sum(l == x for _, l, _ in units) // 4 for x in range(3)])
    want = masked_logits(units)
    with torch.no_grad():
        assert (reloaded(input_ids=ids).logits - want).abs().max() <= 1e-5 * want.abs().max()
    assert len(set(widths)) > 1  # two moves, three layers
    with pytest.raises(LangheadsError, match="experts keep different widths"):  # llama.cpp reads one expert width
        export.export_gguf(langheads.load_model(str(tmp_path / "per-layer")), tmp_path / "uneven.gguf", "f32")
    capsys.readouterr()
    assert (
        main(
            [
                "prune",
                "--scan",
                str(out),
                "--keep",
                "en",
                "--uniform",
                "--heads",
                "12",
                "--max-increase",
                "1",
                "--out",
                str(pruned),
                "--quiet",
            ]
        )
        == 0
    )
    said = capsys.readouterr().out
    record = read_manifest(pruned).pruning_record()
    units = record["removed_units"]
    assert len(units) == 12 and sorted((l, g // per) for _, l, g in units) == [
        (l, e) for l in range(3) for e in range(4)
    ]
    cut = 3 * 4 * 16 * 3 * 64  # layers x experts x neurons x (gate row, up row, down column) x hidden
    assert f"{cut:,} parameters saved" in said and "36.9 kFLOP per token fewer" in said
    assert record["saved"]["projection_flops_per_token_saved"] == cut  # 2 x cut x 2 of 4 experts
    plain = AutoModelForCausalLM.from_pretrained(pruned, dtype=torch.float32)
    assert sum(p.numel() for p in original.parameters()) - sum(p.numel() for p in plain.parameters()) == cut
    masked = masked_logits(units)
    with torch.no_grad():
        assert (plain(input_ids=ids).logits - masked).abs().max() <= 1e-5 * masked.abs().max()
    if importlib.util.find_spec("llama_cpp"):  # the llamacpp extra
        loaded = langheads.load_model(str(pruned))
        gap = export.llama_cpp_gap(loaded, export.export_gguf(loaded, tmp_path / "m.gguf", "f32"), SAMPLE["en"][:2])
        assert gap["same_tokens"] == 2 and gap["max_logprob_gap"] < 2e-3
    with pytest.raises(LangheadsError, match=f"does not divide the MLP width of each expert {width}"):
        component_for(original, "neuron", 64 if arch == "qwen3_moe" else 36)


@pytest.mark.parametrize("arch", ["llama", "gemma3", "gpt2", "falcon", "mixtral"])
def test_block_ablation_equals_zeroed_projections(arch):
    """A layer's whole attention (or MLP) removed equals its output projection's weight zeroed."""
    model = synthetic.tiny(arch)
    ids = nll.tokenize(synthetic.byte_tokenizer(), TEXTS)
    component = component_for(model, "block")
    method = ExactAblation(chunk_tokens=5, batch_tokens=160)
    method.component = component
    out = method.score_language(model, component.layout, nll.make_batches(ids, 40), len(ids))
    reference = nll.reference_nll(model, ids).double().numpy()
    from langheads import heads as H

    for layer in (0, component.layout.n_layers - 1):
        for unit, proj in enumerate((H.output_projection(model, layer), component.target(model, layer))):
            weight = proj.down_proj if component.target(model, layer) is proj and arch == "mixtral" else proj.weight
            kept = weight.data
            weight.data = torch.zeros_like(kept)  # a mixture: every expert's down projection
            try:
                ablated = nll.reference_nll(model, ids).double().numpy()
            finally:
                weight.data = kept
            assert np.abs(out.values[layer, unit] - (ablated - reference)).max() < 1e-4, (layer, unit)


def test_block_scan_names_its_units(tiny_dirs, sample_data, tmp_path, capsys):
    out = tmp_path / "blocks"
    assert (
        main(
            [
                "scan",
                "--model",
                str(tiny_dirs["gemma3"]),
                "--data",
                str(sample_data),
                "--languages",
                "en,hi",
                "--component",
                "block",
                "--bootstrap",
                "50",
                "--quiet",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    scores = pd.read_csv(out / "scores.csv")
    assert len(scores) == 4 * 2 * 2 and set(scores.block) == {"attention", "mlp"}
    assert (scores.loc[scores["head"] == 0, "block"] == "attention").all()
    assert json.loads((out / "run.json").read_text())["component"]["units"] == ["attention", "mlp"]
    capsys.readouterr()
    assert (
        main(
            [
                "prune",
                "--scan",
                str(out),
                "--keep",
                "en",
                "--max-increase",
                "0.5",
                "--out",
                str(tmp_path / "p"),
                "--quiet",
            ]
        )
        == 0
    )  # a block scan prunes whole blocks (test_walk)
    from langheads.manifest import read_manifest

    record = read_manifest(tmp_path / "p").pruning_record()
    assert {u[0] for u in record["removed_units"]} <= {"block"} and record["scans"] == [str(out.resolve())]
    assert "blocks" in capsys.readouterr().out


@pytest.mark.parametrize("arch", ["llama", "phi3", "gpt2", "bloom", "xglm", "apertus"])
def test_lape_counts_active_neurons_by_hand(arch):
    """The share of a group's (token, neuron) activations above zero, against the activation
    module's output captured directly, one text at a time."""
    from langheads import heads as H
    from langheads.archs.base import get
    from langheads.scoring import Lape

    model = synthetic.tiny(arch)
    ids = nll.tokenize(synthetic.byte_tokenizer(), TEXTS[:4])
    component = component_for(model, "neuron", 16)
    out = Lape().score_language(model, component.layout, nll.make_batches(ids, 4096), len(ids))
    act = get(H.decoder_layers(model)[1], H.adapter_for(model).mlp_act)
    for t in (0, 3):
        seen = []
        handle = act.register_forward_hook(lambda m, a, o, seen=seen: seen.append(o[0]))
        with torch.no_grad():
            model(input_ids=torch.tensor([ids[t]]))
        handle.remove()
        share = (seen[0] > 0).double().view(len(ids[t]), -1, 16).mean(dim=(0, 2)).numpy()  # [groups]
        assert np.allclose(out.values[1, :, t], share), (arch, t)
    assert 0 < out.values.mean() < 1


def test_lape_counts_an_experts_active_neurons_by_hand():
    """In a mixture of experts, a neuron is active on a token where the router chose its expert
    and act(gate) > 0: computed here from the experts module's input and the stacked weights."""
    from langheads.scoring import Lape

    model = synthetic.tiny("qwen3_moe")
    ids = nll.tokenize(synthetic.byte_tokenizer(), TEXTS[:4])
    component = component_for(model, "neuron", 16)
    out = Lape().score_language(model, component.layout, nll.make_batches(ids, 4096), len(ids))
    experts = component.target(model, 1)
    for t in (0, 3):
        seen = []
        handle = experts.register_forward_pre_hook(lambda m, args, seen=seen: seen.append(args[:2]))
        with torch.no_grad():
            model(input_ids=torch.tensor([ids[t]]))
        handle.remove()
        hidden, chosen = seen[0]  # [tokens, hidden], [tokens, top-k]
        width = experts.intermediate_dim
        gate = torch.einsum("th,eih->tei", hidden, experts.gate_up_proj[:, :width].detach())  # [tokens, experts, width]
        routed = torch.zeros(gate.shape[:2], dtype=torch.bool).scatter_(1, chosen, True)  # [tokens, experts]
        active = (experts.act_fn(gate) > 0) & routed[..., None]
        share = active.double().view(len(ids[t]), -1, 16).mean(dim=(0, 2)).numpy()  # [experts x groups]
        assert np.allclose(out.values[1, :, t], share), t
        assert routed.sum(dim=1).eq(2).all() and 0 < share.max()
    assert 0 < out.values.mean() < 0.5  # at most the chosen 2 of 4 experts' neurons are active


@pytest.mark.parametrize("arch", ["llama", "gemma3", "qwen3", "apertus"])
def test_neurons_removed_from_the_weights_equal_the_masked_model_and_reload(arch, tiny_dirs, tmp_path):
    """Uneven MLP widths: the pruned model equals the masked original within 1e-5 x the largest
    logit, is smaller by exactly the removed rows and columns, and reloads through its manifest."""
    from langheads import heads as H
    from langheads.edit.pruning import save
    from langheads.manifest import read_manifest

    loaded = langheads.load_model(str(tiny_dirs[arch]))
    model = loaded.model
    ids = torch.tensor([nll.tokenize(loaded.tokenizer, TEXTS[:1])[0]])
    removed = {0: list(range(32)), 2: [5, 17, *range(40, 48)]}  # 32 and 10 of 96 neurons
    width = H.adapter_for(model).mlp_width(component_for(model, "neuron", 16).target(model, 0))
    targets = {l: component_for(model, "neuron", 16).target(model, l) for l in removed}
    factors = {l: torch.ones(width) for l in removed}
    for l, gone in removed.items():
        factors[l][gone] = 0.0
    before = sum(p.numel() for p in model.parameters())
    with torch.no_grad(), H.scaled_inputs(targets, factors, width, 1):  # one unit per neuron
        masked = model(input_ids=ids).logits
    save(loaded, tmp_path / "pruned", neurons=removed)
    with torch.no_grad():
        pruned = model(input_ids=ids).logits
    assert (pruned - masked).abs().max() <= 1e-5 * masked.abs().max()
    per_neuron = len(H.adapter_for(model).mlp_in) + 1  # a row of each input projection, a column of down
    hidden = model.config.hidden_size
    assert before - sum(p.numel() for p in model.parameters()) == 42 * per_neuron * hidden
    again = langheads.load_model(str(tmp_path / "pruned"))
    with torch.no_grad():
        reloaded = again.model(input_ids=ids).logits
    assert torch.equal(reloaded, pruned)
    assert read_manifest(tmp_path / "pruned").edits[-1]["widths"] == {"0": 64, "2": 86}
    assert "42 MLP neurons removed" in read_manifest(tmp_path / "pruned").describe()


def test_neuron_removal_is_refused_where_the_mlp_is_fused(tiny_dirs, tmp_path):
    from langheads.edit.pruning import save

    with pytest.raises(LangheadsError, match="separate gate/up"):
        save(langheads.load_model(str(tiny_dirs["phi3"])), tmp_path / "x", neurons={0: [1]})
    assert not (tmp_path / "x").exists()


def test_prune_a_neuron_scan_within_the_budget(tiny_dirs, sample_data, tmp_path, capsys):
    """prune walks a neuron scan's groups, re-measures the kept language, removes the chosen
    neurons from the weights; the folder reloads and is smaller by what the summary says."""
    run, out = tmp_path / "neurons", tmp_path / "pruned"
    assert (
        main(
            [
                "scan",
                "--model",
                str(tiny_dirs["llama"]),
                "--data",
                str(sample_data),
                "--languages",
                "en,fr,hi",
                "--component",
                "neuron",
                "--neuron-group",
                "16",
                "--bootstrap",
                "50",
                "--quiet",
                "--out",
                str(run),
            ]
        )
        == 0
    )
    capsys.readouterr()
    assert main(["prune", "--scan", str(run), "--keep", "en", "--heads", "3", "--out", str(out), "--quiet"]) == 0
    said = capsys.readouterr().out
    assert "removed 3 neuron groups (48 MLP neurons)" in said
    from langheads.manifest import read_manifest

    manifest = read_manifest(out)
    neurons = manifest.removed_neurons()
    assert sum(map(len, neurons.values())) == 48
    before = sum(p.numel() for p in langheads.load_model(str(tiny_dirs["llama"])).model.parameters())
    after = sum(p.numel() for p in langheads.load_model(str(out)).model.parameters())
    assert before - after == 48 * 3 * 64 and f"{48 * 3 * 64:,} parameters saved" in said
    record = manifest.pruning_record()
    assert record["kept"] == ["en"] and len(record["removed_units"]) == 3
    assert sum(len(step["units"]) for step in record["curve"]) == 3 < len(record["curve"]) + 2  # in batches
    assert (
        main(
            [
                "prune",
                "--scan",
                str(run),
                "--keep",
                "en",
                "--max-increase",
                "0.5",
                "--out",
                str(tmp_path / "budget"),
                "--quiet",
            ]
        )
        == 0
    )
    capsys.readouterr()
    walked = read_manifest(tmp_path / "budget").pruning_record()
    for step in walked["curve"][1:]:  # every removal made: the interval's bad end within the budget
        assert max(step["rel_kept_upper"].values()) <= 0.5 and step["rel_kept_upper"]["en"] >= step["rel_kept"]["en"]
    assert all(max(r["rel_kept_upper"].values()) > 0.5 for r in walked["rejected"])
    from langheads.evaluation.certificate import deployment_of

    assert deployment_of(str(out)) == (["en"], 0.02)  # evaluate's certificate reads a neuron pruning's record
