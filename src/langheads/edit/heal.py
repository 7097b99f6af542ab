"""Recovery after an edit: distil the edited model towards the original's next-token
distributions on kept-language text (`langheads heal`).

The loss is KL(original || edited) at every predicted position, averaged over positions. The
text is the user's `--data` (the kept languages' texts), or, by default, what the original
model itself writes greedily from the first tokens of each kept language's *selection* texts
(never the report texts, on which `evaluate` makes its claims). Training is full fine-tuning,
or LoRA adapters (`--lora R`, peft) merged into the weights at the end; a step and a time
budget bound it, a checkpoint beside the output after every `--checkpoint-every` steps makes
it resumable (the same command continues), and the manifest records the run. A model with
uneven shapes (heads or neurons removed) keeps its manifest edits: only the weights change.
A model with a trimmed vocabulary reads each text in its own tokens and the original reads the
same token strings (their original ids); the target is the original's distribution over the
kept tokens only (renormalised), so both sides predict the same things.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from ..errors import LangheadsError
from ..options import option

MAX_LORA = 4096  # a LoRA rank beyond this is no adapter (the door's bound; the model's own width bounds it too)


@dataclass
class HealSettings:
    """Everything `langheads heal` is told; every option defined once, here."""

    model: str = option(positional=True, metavar="MODEL_DIR", help="the edited model folder (pruned, trimmed)")
    baseline: str = option("default", help="the original model whose next-token distributions are the target")
    keep: list[str] = option(factory=lambda: ["en"], help="the kept languages whose text the model is healed on")
    data: str | None = option(
        None,
        help="text to heal on (a folder or JSONL, its texts of the kept languages); "
        "default: the original's own greedy continuations of the selection texts",
    )
    steps: int = option(100, help="at most this many optimizer steps")
    minutes: float | None = option(None, help="stop after this many minutes (checkpointed, resumable)")
    lr: float = option(1e-4, help="learning rate (AdamW)")
    lora: int | None = option(None, metavar="R", help="train LoRA adapters of rank R (peft) instead of every weight")
    batch_texts: int = option(4, help="texts per step")
    prompt_tokens: int = option(16, help="default data: tokens of each selection text given as the prompt")
    new_tokens: int = option(48, help="default data: tokens the original writes after each prompt")
    checkpoint_every: int = option(25, help="steps between checkpoints")
    seed: int = option(0, help="seeds the order of the texts")

    def __post_init__(self):
        from .. import checks

        checks.languages(self, "keep")
        for name, most in (
            ("steps", 1_000_000),
            ("batch_texts", 4096),
            ("prompt_tokens", 32768),
            ("new_tokens", 32768),
            ("checkpoint_every", 1_000_000),
        ):
            checks.count(self, name, maximum=most)
        checks.count(self, "lora", optional=True, maximum=MAX_LORA)
        checks.count(self, "seed", minimum=0)
        checks.number(self, "lr", 0.0, low_open=True)
        if self.minutes is not None:
            checks.number(self, "minutes", 0.0, low_open=True)


def heal_corpus(settings: HealSettings):
    """The corpus to heal on, read (and its kept languages checked) before any model loads."""
    from ..corpus import load_corpus

    corpus = load_corpus(settings.data)
    for lang in settings.keep:
        corpus.texts(lang, None if settings.data is not None else "selection")  # refuses a missing language
    return corpus


def training_ids(settings: HealSettings, teacher, corpus) -> list[list[int]]:
    """Token ids to heal on: the user's texts, or the original's continuations of the
    selection texts' first tokens (each prompt + its continuation)."""
    from .. import nll

    if settings.data is not None:
        texts = [t.text for lang in settings.keep for t in corpus.texts(lang)]
        return [ids for ids in nll.tokenize(teacher.tokenizer, texts, 256) if len(ids) > 1]
    prompts = [
        ids[: settings.prompt_tokens]
        for lang in settings.keep
        for ids in nll.tokenize(teacher.tokenizer, [t.text for t in corpus.texts(lang, "selection")])
    ]
    from ..generate import greedy_each

    said = greedy_each(teacher, prompts, settings.new_tokens)
    return [p + teacher.tokenizer(s, add_special_tokens=False)["input_ids"] for p, s in zip(prompts, said)]


def distillation_loss(student, teacher, ids: list[list[int]], kept: list[int] | None = None) -> torch.Tensor:
    """Mean over texts of the mean per-position KL(teacher || student), each text alone. ids:
    the student's token ids; kept: a trimmed student's original ids (student id i is original
    id kept[i]), so the teacher reads kept[ids] and its target is its distribution over kept."""
    device = next(student.parameters()).device
    index = None if kept is None else torch.tensor(kept, device=device)
    losses = []
    for row in ids:
        x = torch.tensor([row], device=device)  # [1, T] student ids
        with torch.no_grad():
            logits = teacher(input_ids=x if index is None else index[x]).logits[0, :-1].float()  # [T-1, vocab]
            target = torch.log_softmax(logits if index is None else logits[:, index], dim=-1)  # [T-1, student vocab]
        got = torch.log_softmax(student(input_ids=x).logits[0, :-1].float(), dim=-1)
        losses.append(torch.nn.functional.kl_div(got, target, log_target=True, reduction="batchmean"))
    return torch.stack(losses).mean()


def heal(settings: HealSettings, out, overwrite: bool = False, progress: bool = True) -> dict:
    """Library entry point for `langheads heal`: train, then write the healed model folder
    (the edited folder's manifest and tokenizer, new weights, a `heal` record)."""
    from ..folders import claim
    from ..manifest import read_manifest
    from ..models import load_model

    with claim(Path(out), overwrite, "model"):
        if not Path(settings.model).is_dir() or read_manifest(settings.model) is None:
            raise LangheadsError(
                f"{settings.model}: not an edited model folder (no langheads.json); heal "
                "recovers a pruned or trimmed model towards its original"
            )
        corpus = heal_corpus(settings)
        student, teacher = load_model(settings.model), load_model(settings.baseline)
        if student.manifest.source.get("sha256") not in (None, teacher.model_hash):
            raise LangheadsError(f"--baseline {settings.baseline} is not the model {settings.model} was edited from")
        kept = student.manifest.kept_ids()
        ids = in_student_tokens(training_ids(settings, teacher, corpus), teacher, student, kept)
        identity = {"model": student.model_hash, "baseline": teacher.model_hash}
        record = _train(settings, student.model, teacher.model, ids, kept, Path(out), progress, identity)
        _save(student, Path(out), record, overwrite)
    return record


def in_student_tokens(ids: list[list[int]], teacher, student, kept: list[int] | None) -> list[list[int]]:
    """The heal texts (the original's ids) as the student's ids: the same tokens where it kept
    them all, else the text as the student's own tokenizer writes it."""
    if kept is None:
        return ids
    from .vocab import new_ids

    new_id = new_ids(kept)
    out = []
    for row in ids:
        if all(i in new_id for i in row):
            out.append([new_id[i] for i in row])
        else:
            text = teacher.tokenizer.decode(row, skip_special_tokens=True)
            out.append(student.tokenizer(text)["input_ids"])
    return [row for row in out if len(row) > 1]


def _train(s: HealSettings, student, teacher, ids, kept, out: Path, progress: bool, identity: dict) -> dict:
    """Distil; a checkpoint (keyed by the settings and both models' hashes) carries the step,
    the weights, the optimizer, the text order's generator and the run's starting loss, so a
    resumed run reports what an uninterrupted one does and reaches the same weights."""
    from tqdm.auto import tqdm

    model = _trainable(student, s.lora)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=s.lr)
    ckpt = out.with_name(out.name + ".heal-checkpoint.pt")
    order = torch.Generator().manual_seed(s.seed)
    key = {**_key(s), **identity}
    step, before = _resume(ckpt, model, opt, order, key)
    if before is None:
        before = float(distillation_loss(model, teacher, ids, kept).detach())
    start = time.monotonic()
    bar = tqdm(total=s.steps, initial=step, desc="heal (steps)", disable=not progress)
    while step < s.steps and (s.minutes is None or time.monotonic() - start < 60 * s.minutes):
        batch = [ids[i] for i in torch.randperm(len(ids), generator=order)[: s.batch_texts]]
        loss = distillation_loss(model, teacher, batch, kept)
        opt.zero_grad()
        loss.backward()
        opt.step()
        step += 1
        bar.update(1)
        if step % s.checkpoint_every == 0:
            _checkpoint(
                ckpt,
                {
                    "step": step,
                    "key": key,
                    "loss_before": before,
                    "order": order.get_state(),
                    "model": model.state_dict(),
                    "optimizer": opt.state_dict(),
                },
            )
    bar.close()
    after = float(distillation_loss(model, teacher, ids, kept).detach())
    ckpt.unlink(missing_ok=True)
    if after > before:  # Adam's steps are as large at the target as far from it: nothing healed
        raise LangheadsError(
            f"healing raised the distillation loss on its texts ({before:.4f} -> {after:.4f}); "
            "nothing written. A model this close to the original (a trimmed vocabulary alone "
            "changes nothing over the kept tokens) has nothing to heal; else try a lower --lr"
        )
    if s.lora:
        student = model.merge_and_unload()
    for p in student.parameters():
        p.requires_grad_(False)
    return {
        "settings": asdict(s),
        "steps": step,
        "texts": len(ids),
        "loss_before": before,
        "loss_after": after,
        "loss": "mean per-position KL(original || edited) on the heal texts",
        "model": student,
    }


def _trainable(model, lora: int | None):
    width = min(p.shape[-1] for n, p in model.named_parameters() if p.ndim == 2 and "embed" not in n)
    if lora is not None and lora > width:
        raise LangheadsError(
            f"--lora {lora} is wider than the model's narrowest projection ({width}); give at most that"
        )
    if lora is None:
        for p in model.parameters():
            p.requires_grad_(True)
        return model.train()
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError:
        raise LangheadsError("--lora needs peft: pip install 'langheads[heal]'") from None
    for p in model.parameters():
        p.requires_grad_(False)
    return get_peft_model(model, LoraConfig(r=lora, lora_alpha=2 * lora, target_modules="all-linear")).train()


def _key(s: HealSettings) -> dict:
    return {k: v for k, v in asdict(s).items() if k not in ("steps", "minutes", "checkpoint_every")}


def _checkpoint(path: Path, state: dict) -> None:
    from ..folders import atomic_file

    with atomic_file(path) as tmp:
        torch.save(state, tmp)


def _resume(path: Path, model, opt, order: torch.Generator, key: dict) -> tuple[int, float | None]:
    """(step, starting loss) of a checkpoint of this very run, restored into `model`, `opt` and
    `order`; (0, None) without one. One that cannot be read, or of another run (settings, the
    edited model or the baseline differ), is refused in one line."""
    if not path.exists() and not path.is_symlink():
        return 0, None
    try:
        saved = torch.load(path, weights_only=True)
        same = isinstance(saved, dict) and saved.get("key") == key
    except Exception as e:  # damaged, not a checkpoint, a folder, or a pickle weights_only refuses
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0][:120]
        raise LangheadsError(
            f"cannot read the heal checkpoint {path} ({type(e).__name__}: {reason}); remove it to start afresh"
        ) from None
    if not same:
        raise LangheadsError(
            f"{path} is a checkpoint of another heal run (its settings, edited model or baseline "
            "differ); remove it or heal with the same ones"
        )
    model.load_state_dict(saved["model"])
    opt.load_state_dict(saved["optimizer"])
    order.set_state(saved["order"])
    return int(saved["step"]), float(saved["loss_before"])


def _save(student, out: Path, record: dict, overwrite: bool) -> None:
    from ..manifest import Manifest, write_model_folder

    model = record.pop("model")
    manifest = student.manifest
    healed = Manifest(manifest.source, manifest.edits, {**manifest.records, "heal": dict(record)})
    write_model_folder(model.eval(), student.tokenizer.save_pretrained, out, healed, overwrite)
