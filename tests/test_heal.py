"""heal: distillation towards the original lowers the loss on held-out kept-language texts,
full or LoRA, keeps an edited model's manifest, and resumes from its checkpoint."""

import pytest
import torch

import langheads
from langheads import nll
from langheads.cli import main
from langheads.corpus import load_corpus
from langheads.edit.heal import HealSettings, distillation_loss, in_student_tokens
from langheads.edit.pruning import save
from langheads.errors import LangheadsError
from langheads.evaluation.certificate import describe, heal_cautions
from langheads.manifest import read_manifest

from .conftest import training_jsonl


@pytest.fixture(scope="module")
def models(tiny_dirs, tmp_path_factory):
    """A tiny Llama with weights scaled up (so its next-token distributions are not flat), and
    a copy with a third of the MLP neurons of two layers removed: (original, edited)."""
    root = tmp_path_factory.mktemp("heal")
    loaded = langheads.load_model(str(tiny_dirs["llama"]))
    with torch.no_grad():
        for name, p in loaded.model.named_parameters():
            if "norm" not in name:
                p.mul_(4.0)
    loaded.model.save_pretrained(root / "original")
    loaded.tokenizer.save_pretrained(root / "original")
    original = langheads.load_model(str(root / "original"))
    save(original, root / "pruned", neurons={0: list(range(0, 96, 2)), 1: list(range(1, 96, 2))})
    return root / "original", root / "pruned"


def _held_out_loss(model_dir, baseline) -> float:
    """The distillation loss on the en report texts (never healed on)."""
    student, teacher = langheads.load_model(str(model_dir)), langheads.load_model(str(baseline))
    texts = [t.text for t in load_corpus(None).texts("en", "report")]
    with torch.no_grad():
        return float(distillation_loss(student.model, teacher.model, nll.tokenize(teacher.tokenizer, texts, 64)))


@pytest.mark.parametrize("lora", [None, 8])
def test_heal_lowers_the_held_out_distillation_loss(models, tmp_path, lora):
    original, edited = models
    settings = HealSettings(
        model=str(edited),
        baseline=str(original),
        keep=["en"],
        steps=30,
        lr=1e-3 if lora is None else 5e-3,
        lora=lora,
        new_tokens=24,
    )
    record = langheads.heal(settings, tmp_path / "healed", progress=False)
    assert record["steps"] == 30 and record["loss_after"] < record["loss_before"]
    before, after = _held_out_loss(edited, original), _held_out_loss(tmp_path / "healed", original)
    assert after < 0.9 * before, (before, after)
    manifest = read_manifest(tmp_path / "healed")
    assert manifest.removed_neurons() == read_manifest(edited).removed_neurons()  # the same shapes, replayed
    assert manifest.records["heal"]["steps"] == 30 and not (tmp_path / "healed.heal-checkpoint.pt").exists()
    # healed on the bundled corpus's selection texts: a certificate on its report texts says so, one on other text not
    other = training_jsonl(tmp_path / "other.jsonl")
    assert "healed on text from the bundled corpus" in heal_cautions(str(tmp_path / "healed"), None)[0]
    assert heal_cautions(str(tmp_path / "healed"), str(other)) == [] == heal_cautions(str(edited), None)
    cert = {
        "kept": ["en"],
        "budget": 0.02,
        "passed": True,
        "failed": [],
        "rows": [],
        "cautions": heal_cautions(str(tmp_path / "healed"), None),
    }
    assert "caution: the model was healed" in describe(cert)


def test_heal_resumes_from_its_checkpoint(models, tmp_path, monkeypatch, capsys):
    original, edited = models
    argv = [
        "heal",
        str(edited),
        "--baseline",
        str(original),
        "--keep",
        "en",
        "--steps",
        "8",
        "--checkpoint-every",
        "3",
        "--new-tokens",
        "8",
        "--out",
        str(tmp_path / "healed"),
        "--quiet",
    ]
    real, calls, interrupt = torch.optim.AdamW.step, [], [True]

    def flaky(self, *a, **k):
        calls.append(1)
        if interrupt[0] and len(calls) == 5:  # after the checkpoint at step 3
            raise KeyboardInterrupt
        return real(self, *a, **k)

    monkeypatch.setattr(torch.optim.AdamW, "step", flaky)
    assert main(argv) == 130
    assert (tmp_path / "healed.heal-checkpoint.pt").exists() and not (tmp_path / "healed").exists()
    calls.clear()
    interrupt[0] = False
    assert main(argv) == 0
    assert len(calls) == 5  # steps 4..8 only
    assert "healed 8 steps" in capsys.readouterr().out
    assert not (tmp_path / "healed.heal-checkpoint.pt").exists()
    # the resumed run is the uninterrupted one: its starting loss, its text order, its weights
    whole = [a if a != str(tmp_path / "healed") else str(tmp_path / "whole") for a in argv]
    assert main(whole) == 0
    resumed, uninterrupted = (read_manifest(tmp_path / n).records["heal"] for n in ("healed", "whole"))
    assert resumed["loss_before"] == uninterrupted["loss_before"]
    assert abs(resumed["loss_after"] - uninterrupted["loss_after"]) < 1e-6
    a, b = langheads.load_model(str(tmp_path / "healed")).model, langheads.load_model(str(tmp_path / "whole")).model
    assert all(torch.allclose(x, y, atol=1e-6) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_a_checkpoint_of_another_model_or_a_damaged_one_is_refused(models, tmp_path, capsys):
    """The checkpoint is keyed by the settings and both models' hashes (it was keyed by the
    folder's path: an in-place re-pruning resumed the old pruning's weights)."""
    original, edited = models
    argv = [
        "heal",
        str(edited),
        "--baseline",
        str(original),
        "--steps",
        "2",
        "--new-tokens",
        "8",
        "--out",
        str(tmp_path / "healed"),
    ]
    ckpt = tmp_path / "healed.heal-checkpoint.pt"
    torch.save({"step": 1, "key": {"model": "another"}}, ckpt)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "checkpoint of another heal run" in err[0]
    ckpt.write_bytes(b"not a checkpoint")
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot read the heal checkpoint" in err[0] and ckpt.exists()
    assert main(argv[:-2] + ["--lora", "10000000", "--out", str(tmp_path / "h2")]) == 2
    assert "--lora must be" in capsys.readouterr().err


def test_heal_refuses_an_unedited_model(tiny_dirs, tmp_path, capsys):
    assert (
        main(["heal", str(tiny_dirs["llama"]), "--baseline", str(tiny_dirs["llama"]), "--out", str(tmp_path / "h")])
        == 2
    )
    assert "not an edited model folder" in capsys.readouterr().err


def test_heal_refuses_bad_input_before_any_model_loads(models, sample_data, tmp_path, monkeypatch, capsys):
    import langheads.models

    def no_load(*a, **k):
        raise AssertionError("a model was loaded before the input was checked")

    monkeypatch.setattr(langheads.models, "load_model", no_load)
    original, edited = models
    assert (
        main(
            [
                "heal",
                str(edited),
                "--baseline",
                str(original),
                "--keep",
                "de",
                "--data",
                str(sample_data),
                "--out",
                str(tmp_path / "h"),
            ]
        )
        == 2
    )
    assert "no data for language 'de'" in capsys.readouterr().err
    assert main(["heal", str(original), "--baseline", str(original), "--out", str(tmp_path / "h")]) == 2
    assert "not an edited model folder" in capsys.readouterr().err
    assert not (tmp_path / "h").exists()


def test_heal_a_trimmed_vocabulary(tmp_path):
    """A model with a trimmed vocabulary (here also an MLP cut, so there is something to heal)
    reads the heal texts in its own tokens and the original the same strings; the target is the
    original's distribution over the kept tokens. Untrimmed, the loss over every id equals the
    plain one; trimmed, healing lowers it and the folder keeps its vocabulary."""
    from langheads import synthetic

    synthetic.save_tiny("llama", tmp_path / "orig", tokenizer="byte_fallback")
    scaled = langheads.load_model(str(tmp_path / "orig"))
    with torch.no_grad():  # weights scaled up, so that its next-token distributions are not flat
        for name, p in scaled.model.named_parameters():
            if "norm" not in name:
                p.mul_(4.0)
    scaled.model.save_pretrained(tmp_path / "base")
    scaled.tokenizer.save_pretrained(tmp_path / "base")
    save(langheads.load_model(str(tmp_path / "base")), tmp_path / "pruned", neurons={0: list(range(0, 96, 2))})
    data = training_jsonl(tmp_path / "data.jsonl")
    assert (
        main(
            [
                "trim",
                "--model",
                str(tmp_path / "pruned"),
                "--keep",
                "en",
                "--data",
                str(data),
                "--out",
                str(tmp_path / "trim"),
            ]
        )
        == 0
    )
    trimmed, teacher = langheads.load_model(str(tmp_path / "trim")), langheads.load_model(str(tmp_path / "base"))
    kept = read_manifest(tmp_path / "trim").kept_ids()
    assert len(kept) < len(teacher.tokenizer)
    ids = nll.tokenize(teacher.tokenizer, synthetic.TRAINING_TEXT["en"], 64)
    with torch.no_grad():
        every = list(range(teacher.model.get_input_embeddings().num_embeddings))
        assert torch.isclose(
            distillation_loss(teacher.model, teacher.model, ids, every),
            distillation_loss(teacher.model, teacher.model, ids),
            atol=1e-6,
        )
    hi = nll.tokenize(teacher.tokenizer, synthetic.TRAINING_TEXT["hi"][:1], 64)[0]  # tokens the trim dropped
    assert not set(hi) <= set(kept)
    got = in_student_tokens([hi], teacher, trimmed, kept)[0]  # the same text in the student's own tokens
    assert trimmed.tokenizer.decode(got, skip_special_tokens=True) == teacher.tokenizer.decode(
        hi, skip_special_tokens=True
    )
    settings = HealSettings(
        model=str(tmp_path / "trim"), baseline=str(tmp_path / "base"), keep=["en"], steps=20, lr=1e-3, data=str(data)
    )
    record = langheads.heal(settings, tmp_path / "healed", progress=False)
    assert record["loss_after"] < 0.9 * record["loss_before"]
    healed = langheads.load_model(str(tmp_path / "healed"))
    assert len(healed.tokenizer) == len(kept) == healed.model.get_input_embeddings().num_embeddings
    # a trimmed vocabulary alone equals the original over the kept tokens: healing can only hurt
    assert (
        main(
            [
                "trim",
                "--model",
                str(tmp_path / "base"),
                "--keep",
                "en",
                "--data",
                str(data),
                "--out",
                str(tmp_path / "trim-only"),
            ]
        )
        == 0
    )
    with pytest.raises(LangheadsError, match="raised the distillation loss"):
        langheads.heal(
            HealSettings(
                model=str(tmp_path / "trim-only"),
                baseline=str(tmp_path / "base"),
                keep=["en"],
                steps=5,
                lr=1e-3,
                data=str(data),
            ),
            tmp_path / "worse",
            progress=False,
        )
    assert not (tmp_path / "worse").exists() and not (tmp_path / "worse.heal-checkpoint.pt").exists()
