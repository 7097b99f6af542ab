"""heal: distillation towards the original lowers the loss on held-out kept-language texts,
full or LoRA, keeps an edited model's manifest, and resumes from its checkpoint."""
import pytest
import torch

import langheads
from langheads import nll
from langheads.cli import main
from langheads.corpus import load_corpus
from langheads.edit.heal import HealSettings, distillation_loss
from langheads.edit.neurons import save_without_neurons
from langheads.manifest import read_manifest


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
    save_without_neurons(original, {0: list(range(0, 96, 2)), 1: list(range(1, 96, 2))}, root / "pruned")
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
    settings = HealSettings(model=str(edited), baseline=str(original), keep=["en"], steps=30,
                            lr=1e-3 if lora is None else 5e-3, lora=lora, new_tokens=24)
    record = langheads.heal(settings, tmp_path / "healed", progress=False)
    assert record["steps"] == 30 and record["loss_after"] < record["loss_before"]
    before, after = _held_out_loss(edited, original), _held_out_loss(tmp_path / "healed", original)
    assert after < 0.9 * before, (before, after)
    manifest = read_manifest(tmp_path / "healed")
    assert manifest.removed_neurons() == read_manifest(edited).removed_neurons()  # the same shapes, replayed
    assert manifest.records["heal"]["steps"] == 30 and not (tmp_path / "healed.heal-checkpoint.pt").exists()


def test_heal_resumes_from_its_checkpoint(models, tmp_path, monkeypatch, capsys):
    original, edited = models
    argv = ["heal", str(edited), "--baseline", str(original), "--keep", "en", "--steps", "8",
            "--checkpoint-every", "3", "--new-tokens", "8", "--out", str(tmp_path / "healed"), "--quiet"]
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


def test_heal_refuses_an_unedited_model(tiny_dirs, tmp_path, capsys):
    assert main(["heal", str(tiny_dirs["llama"]), "--baseline", str(tiny_dirs["llama"]), "--out",
                 str(tmp_path / "h")]) == 2
    assert "not an edited model folder" in capsys.readouterr().err


def test_heal_refuses_bad_input_before_any_model_loads(models, sample_data, tmp_path, monkeypatch, capsys):
    import langheads.models

    def no_load(*a, **k):
        raise AssertionError("a model was loaded before the input was checked")

    monkeypatch.setattr(langheads.models, "load_model", no_load)
    original, edited = models
    assert main(["heal", str(edited), "--baseline", str(original), "--keep", "de", "--data", str(sample_data),
                 "--out", str(tmp_path / "h")]) == 2
    assert "no data for language 'de'" in capsys.readouterr().err
    assert main(["heal", str(original), "--baseline", str(original), "--out", str(tmp_path / "h")]) == 2
    assert "not an edited model folder" in capsys.readouterr().err
    assert not (tmp_path / "h").exists()
