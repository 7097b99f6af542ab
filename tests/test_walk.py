"""Whole blocks and layers removed from the weights, and one pruning walk across components."""

from __future__ import annotations

import pytest
import torch

import langheads
from langheads import heads as H
from langheads import nll
from langheads.cli import main
from langheads.components import component_for
from langheads.manifest import read_manifest

from .conftest import SAMPLE

TEXT = SAMPLE["en"][0]


def _zero_output_biases(model, layer: int) -> None:
    for proj in (H.output_projection(model, layer), component_for(model, "block").target(model, layer)):
        if getattr(proj, "bias", None) is not None:
            proj.bias.data.zero_()


def _masked_logits(model, ids, blocks: dict, heads: list, neurons: dict):
    """The original model with the blocks, heads and neurons masked (the reference)."""
    factors = {
        l: torch.tensor([0.0 if "attention" in b else 1.0, 0.0 if "mlp" in b else 1.0]) for l, b in blocks.items()
    }
    width = H.adapter_for(model).mlp_width(component_for(model, "block").target(model, 0))
    neuron_factors = {l: torch.ones(width).index_fill_(0, torch.tensor(n), 0.0) for l, n in neurons.items()}
    targets = {l: component_for(model, "block").target(model, l) for l in neurons}
    with (
        torch.no_grad(),
        component_for(model, "block").scaled(model, factors),
        H.masked_heads(model, heads),
        H.scaled_inputs(targets, neuron_factors, width, 1),
    ):
        return model(input_ids=ids).logits


@pytest.mark.parametrize("arch", ["llama", "gemma3", "qwen3", "mistral"])
def test_blocks_removed_from_the_weights_equal_the_masked_model_and_reload(arch, tiny_dirs, tmp_path):
    """A layer without attention and MLP leaves the stack (the config says so), a layer's
    attention or MLP alone goes as a block, with heads and neurons of other layers: the saved
    model equals the masked original within 1e-5 x the largest logit and reloads."""
    from langheads.edit.pruning import save

    loaded = langheads.load_model(str(tiny_dirs[arch]))
    model = loaded.model
    _zero_output_biases(model, 0)  # so that layer 0 without its blocks adds nothing
    ids = torch.tensor([nll.tokenize(loaded.tokenizer, [TEXT])[0]])
    blocks = {0: {"attention", "mlp"}, 1: {"mlp"}, 2: {"attention"}}
    heads, neurons = [(1, 0)], {2: list(range(10, 30))}
    masked = _masked_logits(model, ids, blocks, heads, neurons)
    layers = H.text_config(model).num_hidden_layers
    save(loaded, tmp_path / "cut", {"why": "test"}, heads={1: [0]}, neurons=neurons, blocks=blocks)
    with torch.no_grad():
        pruned = model(input_ids=ids).logits
    assert (pruned - masked).abs().max() <= 1e-5 * masked.abs().max()
    manifest = read_manifest(tmp_path / "cut")
    assert manifest.kept_layers() == list(range(1, layers))
    assert [e["op"] for e in manifest.edits] == ["remove_layers", "remove_heads", "remove_neurons"]
    assert manifest.removed_neurons()[0] == list(range(96))  # layer 1 (now 0): its whole MLP
    again = langheads.load_model(str(tmp_path / "cut"))
    assert H.text_config(again.model).num_hidden_layers == layers - 1
    with torch.no_grad():
        assert torch.equal(again.model(input_ids=ids).logits, pruned)
        # the KV cache follows the renumbered layers: greedy generation with the cache runs
        out = again.model.generate(ids, max_new_tokens=4, do_sample=False, pad_token_id=0)
    assert out.shape[1] == ids.shape[1] + 4


def test_a_dropped_layer_alone_loads_with_plain_transformers(tiny_dirs, tmp_path):
    from transformers import AutoModelForCausalLM

    from langheads.edit.pruning import save

    loaded = langheads.load_model(str(tiny_dirs["gemma3"]))
    model = loaded.model
    _zero_output_biases(model, 1)
    ids = torch.tensor([nll.tokenize(loaded.tokenizer, [TEXT])[0]])
    masked = _masked_logits(model, ids, {1: {"attention", "mlp"}}, [], {})
    types = list(H.text_config(model).layer_types)
    save(loaded, tmp_path / "cut", {"why": "test"}, heads={}, neurons={}, blocks={1: {"attention", "mlp"}})
    assert not read_manifest(tmp_path / "cut").needs_replay()
    plain = AutoModelForCausalLM.from_pretrained(tmp_path / "cut", dtype=torch.float32).eval()
    assert plain.config.layer_types == types[:1] + types[2:]  # each kept layer keeps its window
    with torch.no_grad():
        logits = plain(input_ids=ids).logits
    assert (logits - masked).abs().max() <= 1e-5 * masked.abs().max()


def test_a_layer_whose_projections_add_a_bias_stays(tiny_dirs, tmp_path):
    """Without heads and neurons a layer still adds its output projections' biases, as the
    masked model does: it stays in the stack."""
    from langheads.edit.pruning import save

    loaded = langheads.load_model(str(tiny_dirs["llama"]))  # random biases
    ids = torch.tensor([nll.tokenize(loaded.tokenizer, [TEXT])[0]])
    masked = _masked_logits(loaded.model, ids, {0: {"attention", "mlp"}}, [], {})
    save(loaded, tmp_path / "cut", {"why": "test"}, heads={}, neurons={}, blocks={0: {"attention", "mlp"}})
    again = langheads.load_model(str(tmp_path / "cut"))
    assert again.manifest.kept_layers() is None
    with torch.no_grad():
        logits = again.model(input_ids=ids).logits
    assert (logits - masked).abs().max() <= 1e-5 * masked.abs().max()


@pytest.fixture(scope="module")
def three_scans(tiny_dirs, sample_data, tmp_path_factory):
    """A head, a neuron-group and a block scan of one tiny Llama (en, fr, hi)."""
    root = tmp_path_factory.mktemp("scans")
    for component in ("head", "neuron", "block"):
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
                    component,
                    "--neuron-group",
                    "16",
                    "--bootstrap",
                    "50",
                    "--quiet",
                    "--out",
                    str(root / component),
                ]
            )
            == 0
        )
    return {c: str(root / c) for c in ("head", "neuron", "block")}


def test_prune_walks_heads_neurons_and_blocks_in_one_walk(three_scans, tiny_dirs, tmp_path, capsys):
    """Every move made stays within the budget by its interval's upper end, the parameters
    saved grow with each move and equal what the saved folder lost, the folder reloads and
    equals the original with the chosen units masked."""
    out = tmp_path / "all"
    capsys.readouterr()
    assert (
        main(
            [
                "prune",
                "--scan",
                three_scans["head"],
                "--scan",
                three_scans["neuron"],
                "--scan",
                three_scans["block"],
                "--keep",
                "en",
                "--max-increase",
                "0.03",
                "--out",
                str(out),
                "--quiet",
            ]
        )
        == 0
    )
    said = capsys.readouterr().out
    record = read_manifest(out).pruning_record()
    assert record["kept"] == ["en"] and len(record["scans"]) == 3
    steps = record["curve"][1:]
    assert steps, "the walk made no move"
    assert all(max(s["rel_kept_upper"].values()) <= 0.03 for s in steps)
    assert all(max(r["rel_kept_upper"].values()) > 0.03 for r in record["rejected"])
    saved = [s["parameters_saved"] for s in record["curve"]]
    assert saved == sorted(saved) and len(set(saved)) == len(saved)  # every move saved something
    before = sum(p.numel() for p in langheads.load_model(str(tiny_dirs["llama"])).model.parameters())
    again = langheads.load_model(str(out))
    after = sum(p.numel() for p in again.model.parameters())
    assert f"{before - after:,} parameters saved" in said
    units = record["removed_units"]
    kinds = {u[0] for u in units}
    assert kinds == {"head", "neuron", "block"}  # this tiny model loses some of each within 3%
    assert len(units) == sum(len(s["units"]) for s in steps)
    # the saved model computes what the original with every chosen unit masked computes
    original = langheads.load_model(str(tiny_dirs["llama"]))
    ids = torch.tensor([nll.tokenize(original.tokenizer, [TEXT])[0]])
    blocks: dict = {}
    for _, l, b in (u for u in units if u[0] == "block"):
        blocks.setdefault(l, set()).add(("attention", "mlp")[b])
    neurons: dict = {}
    for _, l, g in (u for u in units if u[0] == "neuron"):
        neurons.setdefault(l, []).extend(range(16 * g, 16 * g + 16))
    masked = _masked_logits(original.model, ids, blocks, [(l, h) for n, l, h in units if n == "head"], neurons)
    with torch.no_grad():
        logits = again.model(input_ids=ids).logits
    assert (logits - masked).abs().max() <= 1e-5 * masked.abs().max(), kinds
    # the report draws such a pruning: its moves, what each layer lost, what it saved
    page = tmp_path / "page"
    assert main(["report", three_scans["head"], "--prune", str(out), "--out", str(page)]) == 0
    html = (page / "report.html").read_text()
    assert f"{before - after:,} parameters saved" in html and f"{len(steps)} batches" in html
    assert f"{16 * sum(1 for u in units if u[0] == 'neuron')} MLP neurons" in html
    assert (page / "figures" / "prune_removed.svg").exists()


def test_uniform_heads_walk_beside_blocks_and_the_config_says_the_shapes(three_scans, tiny_dirs, tmp_path):
    """--uniform with a head scan (alone or beside others): a head move takes one head from every
    KV group of every layer, so every layer keeps as many query heads and plain transformers
    loads the folder from its config; the pruned model computes what the masked one does."""
    from transformers import AutoModelForCausalLM

    out = tmp_path / "u"
    assert (
        main(
            [
                "prune",
                "--scan",
                three_scans["head"],
                "--scan",
                three_scans["block"],
                "--keep",
                "en",
                "--uniform",
                "--max-increase",
                "1",
                "--out",
                str(out),
                "--quiet",
            ]
        )
        == 0
    )
    record = read_manifest(out).pruning_record()
    heads = [(l, h) for n, l, h in record["removed_units"] if n == "head"]
    assert heads, "the walk made a uniform head move"
    original = langheads.load_model(str(tiny_dirs["llama"])).model
    layout = H.head_layout(original)
    per_group = {(l, h // layout.group_size) for l, h in heads}
    assert (
        len(heads) % (layout.n_layers * layout.n_kv_heads) == 0
        and len(per_group) == layout.n_layers * layout.n_kv_heads
    )
    plain = AutoModelForCausalLM.from_pretrained(out)
    assert plain.config.num_attention_heads == layout.n_heads - len(heads) // layout.n_layers


def test_uniform_neuron_and_block_pruning_loads_with_plain_transformers(three_scans, tmp_path, capsys):
    """--uniform: one group from every layer at a time, whole layers only: the saved config says
    every shape (one MLP width), so plain transformers loads it, with the vocabulary trimmed."""
    from transformers import AutoModelForCausalLM

    out = tmp_path / "u"
    assert (
        main(
            [
                "prune",
                "--scan",
                three_scans["neuron"],
                "--scan",
                three_scans["block"],
                "--keep",
                "en",
                "--uniform",
                "--heads",
                "6",
                "--trim-vocab",
                "--out",
                str(out),
                "--quiet",
            ]
        )
        == 0
    )
    manifest = read_manifest(out)
    assert not manifest.needs_replay()
    units = manifest.pruning_record()["removed_units"]
    layers = {u[1] for u in units if u[0] == "neuron"}
    per_layer = [sum(1 for u in units if u[0] == "neuron" and u[1] == l) for l in layers]
    assert len(set(per_layer)) <= 1 and len(units) <= 6  # as many groups from every layer it touched
    plain = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    ours = langheads.load_model(str(out))
    assert "trim_vocab" in [e["op"] for e in manifest.edits]
    assert not any(u[0] == "block" for u in units)  # this Llama's layers add biases: no layer can leave
    ids = torch.tensor([nll.tokenize(ours.tokenizer, [TEXT])[0]])
    with torch.no_grad():
        assert torch.equal(plain(input_ids=ids).logits, ours.model(input_ids=ids).logits)


def test_two_scans_of_one_component_are_refused(three_scans, tmp_path, capsys):
    assert (
        main(
            [
                "prune",
                "--scan",
                three_scans["block"],
                "--scan",
                three_scans["block"],
                "--keep",
                "en",
                "--out",
                str(tmp_path / "x"),
            ]
        )
        == 2
    )
    assert "one scan per component" in capsys.readouterr().err


def test_a_walk_that_removes_nothing_still_writes_its_record(tiny_dirs, tmp_path):
    """A walk whose every move was refused writes the model unchanged, with the record of what
    it tried (the CLI's summary reads it), and no edit."""
    from langheads.edit.pruning import save
    from langheads.edit.savings import describe

    record = {"kept": ["en"], "removed_units": [], "neurons_per_group": 16, "rejected": [{"units": [["block", 0, 1]]}]}
    save(langheads.load_model(str(tiny_dirs["llama"])), tmp_path / "none", record, heads={}, neurons={}, blocks={})
    manifest = read_manifest(tmp_path / "none")
    assert manifest.edits == [] and manifest.pruning_record()["rejected"] == record["rejected"]
    said = describe(manifest.pruning_record())
    assert said.startswith("removed nothing") and "\n0 parameters saved" in said


def test_a_uniform_head_move_takes_one_head_from_every_kv_group_of_every_layer_left():
    """--uniform's head move: the least harmful candidate of every KV group of every layer
    (layers whose attention went excepted); none where a group has no candidate, or where a
    group would lose its last head."""
    from langheads.edit.walk import uniform_head_moves
    from langheads.heads import HeadLayout

    layout = HeadLayout("llama", 3, 4, 2, 8)  # 3 layers, KV groups {0, 1} and {2, 3}
    order = [(l, h) for l in range(3) for h in (1, 0, 3, 2)]  # least harmful first
    assert uniform_head_moves(layout, order, set()) == [((0, 1), (0, 3), (1, 1), (1, 3), (2, 1), (2, 3))]
    without_1 = [u for u in order if u[0] != 1]
    assert uniform_head_moves(layout, without_1, set(), {1}) == [((0, 1), (0, 3), (2, 1), (2, 3))]
    assert uniform_head_moves(layout, without_1, set()) == []  # layer 1's groups have no candidate
    once = {(l, h) for l in range(3) for h in (1, 3)}
    assert uniform_head_moves(layout, order, once) == []  # every group is down to its last head
