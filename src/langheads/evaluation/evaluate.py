"""Before/after on the report texts (never used to choose anything): NLL with paired
bootstrap intervals, NLL per byte, and a greedy-generation language check; with question-
answer data (`evaluate_qa`), greedy answers scored by exact match, token F1, chrF and the
language switch rate (metrics.py)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from .. import heads as H
from .. import nll, qa
from ..bootstrap import paired_interval
from ..corpus import Text, language_key, load_corpus
from ..errors import LangheadsError
from ..generate import greedy_each
from ..models import load_model
from .metrics import answer_metrics, identify


@dataclass
class TextLosses:
    """One model's loss on a list of texts, each tokenized by the model's own tokenizer."""

    token_ids: list[list[int]]
    nll: np.ndarray  # mean NLL per predicted token, per text
    tokens: np.ndarray  # predicted tokens per text (BOS excluded)
    bytes: np.ndarray  # UTF-8 bytes of the text those tokens cover

    @property
    def per_byte(self) -> np.ndarray:
        """NLL per byte per text: comparable across tokenizers, unlike NLL per token."""
        return self.nll * self.tokens / self.bytes


def cut_texts(loaded, texts: list[str], max_tokens: int | None) -> list[str]:
    """Each text cut where `loaded`'s first `max_tokens` tokens (BOS included) end, as text:
    the before and after models then read the same characters, whatever their tokenizers."""
    if not max_tokens:
        return texts
    out = []
    for text in texts:
        enc = loaded.tokenizer(text, add_special_tokens=True, return_offsets_mapping=True)
        ends = [end for _, end in enc["offset_mapping"][:max_tokens]]
        out.append(text[: max(ends, default=0)])
    return out


def text_losses(loaded, texts: list[str]) -> TextLosses:
    ids = nll.tokenize(loaded.tokenizer, texts, limit=H.position_limit(loaded.model))
    per_token = nll.per_text_nll(loaded.model, ids, pad_id=loaded.tokenizer.pad_token_id or 0).numpy()
    covered = [len(loaded.tokenizer.decode(i, skip_special_tokens=True).encode("utf-8")) for i in ids]
    return TextLosses(ids, per_token, np.array([len(i) - 1 for i in ids]), np.array(covered, dtype=float))


def greedy_continuations(loaded, prompts: list[list[int]], new_tokens: int) -> list[str]:
    return greedy_each(loaded, prompts, new_tokens)


def evaluate_texts(
    model: str,
    baseline: str,
    languages: list[str],
    data: str | None = None,
    max_tokens: int | None = None,
    prompts: int = 3,
    prompt_tokens: int = 16,
    new_tokens: int = 24,
    seed: int = 0,
    bootstrap: int = 1000,
) -> dict:
    corpus = load_corpus(data)
    texts = {lang: corpus.texts(lang, "report") for lang in languages}
    after_model, before_model = load_model(model), load_model(baseline)
    rows, generations = [], []
    for lang in languages:
        # Both models read the same characters (--max-tokens counts the baseline's tokens),
        # each through its own tokenizer (a trimmed vocabulary may cut them differently); NLL
        # per byte compares them whatever the tokenizers.
        chosen = cut_texts(before_model, [t.text for t in texts[lang]], max_tokens)
        losses = text_losses(before_model, chosen), text_losses(after_model, chosen)
        ours = _generations(before_model, after_model, lang, losses[0].token_ids[:prompts], prompt_tokens, new_tokens)
        generations += ours
        rows.append(_nll_row(lang, before_model, after_model, losses, ours, [seed, language_key(lang)], bootstrap))
    return {
        "kind": "nll",
        "model": model,
        "baseline": baseline,
        "baseline_sha256": before_model.model_hash,
        "part": "report",
        "table": pd.DataFrame(rows),
        "generations": generations,
        "settings": {
            "max_tokens": max_tokens,
            "prompts": prompts,
            "prompt_tokens": prompt_tokens,
            "new_tokens": new_tokens,
            "seed": seed,
            "bootstrap": bootstrap,
            "data": data,
        },
    }


def _generations(before_model, after_model, lang: str, ids: list, prompt_tokens: int, new_tokens: int) -> list[dict]:
    """Greedy continuations of the first `prompt_tokens` of each text by both models (the
    edited one reads the prompt's text in its own tokens), and the language of each."""
    prompt_ids = [i[:prompt_tokens] for i in ids]
    prompt_texts = [before_model.tokenizer.decode(p, skip_special_tokens=True) for p in prompt_ids]
    after_prompts = [after_model.tokenizer(p)["input_ids"] for p in prompt_texts]
    cont_before = greedy_continuations(before_model, prompt_ids, new_tokens)
    cont_after = greedy_continuations(after_model, after_prompts, new_tokens)
    return [
        {"language": lang, "prompt": p, "before": b, "before_lang": identify(b), "after": a, "after_lang": identify(a)}
        for p, b, a in zip(prompt_texts, cont_before, cont_after)
    ]


def _nll_row(lang: str, before_model, after_model, losses, ours: list[dict], key: list, bootstrap: int) -> dict:
    """One language's row: NLL and NLL per byte before and after, with paired 95% intervals of
    the change, the share of tokens both tokenizers cut alike, and the generations' languages."""
    b_loss, a_loss = losses
    before, after = b_loss.nll, a_loss.nll
    (dlo, dhi), (rlo, rhi) = paired_interval(before, after, key, bootstrap)
    _, (blo, bhi) = paired_interval(b_loss.per_byte, a_loss.per_byte, key, bootstrap)
    tokens = before_model.tokenizer.convert_ids_to_tokens, after_model.tokenizer.convert_ids_to_tokens
    same = [tokens[0](x) == tokens[1](y) for x, y in zip(b_loss.token_ids, a_loss.token_ids)]
    return {
        "language": lang, "n_texts": len(before), "same_tokens": float(np.mean(same)),
        "nll_before": before.mean(), "nll_after": after.mean(), "change": after.mean() - before.mean(),
        "change_ci_low": dlo, "change_ci_high": dhi, "rel_change": after.mean() / before.mean() - 1,
        "rel_ci_low": rlo, "rel_ci_high": rhi,
        "nll_per_byte_before": float(b_loss.per_byte.mean()), "nll_per_byte_after": float(a_loss.per_byte.mean()),
        "per_byte_rel_change": float(a_loss.per_byte.mean() / b_loss.per_byte.mean() - 1),
        "per_byte_rel_ci_low": blo, "per_byte_rel_ci_high": bhi,
        "same_language_before": float(np.mean([g["before_lang"] == lang for g in ours])),
        "same_language_after": float(np.mean([g["after_lang"] == lang for g in ours])),
    }  # fmt: skip


def parse_mask(spec: str | None) -> list[tuple[int, int]]:
    """ "3.1,5.2" -> [(3, 1), (5, 2)]: heads to mask (layer.head)."""
    if not spec:
        return []
    try:
        return [(int(a), int(b)) for a, b in (part.strip().split(".") for part in spec.split(",") if part.strip())]
    except ValueError:
        raise LangheadsError(f"--mask takes layer.head pairs like 3.1,5.2, not '{spec}'") from None


def generate_answers(loaded, items: list[Text], chat_template: str | None, new_tokens: int) -> list[str]:
    """Greedy answers: cut at the first line break, and a cloze continuation cut to as many
    words (characters, in scripts without spaces) as its reference has."""
    said = greedy_each(loaded, [qa.prompt_ids(loaded.tokenizer, item, chat_template) for item in items], new_tokens)
    out = []
    for item, text in zip(items, said):
        text = text.strip()
        text = text.splitlines()[0] if text else ""
        if not item.question:
            ref = item.answer.strip()
            text = " ".join(text.split()[: len(ref.split())]) if " " in ref or " " in text else text[: len(ref)]
        out.append(text)
    return out


def evaluate_qa(
    model: str | None,
    baseline: str,
    languages: list[str],
    data: str | None = None,
    mask: list[tuple[int, int]] | None = None,
    chat_template: str = "auto",
    new_tokens: int = 24,
    seed: int = 0,
    bootstrap: int = 1000,
    data_lang: str | None = None,
    judge=None,
) -> dict:
    """Greedy answers of the original (`baseline`) and of `model` (default: the baseline
    itself) with `mask` heads masked, on the report part of question-answer data; with a
    `judge.Judge`, also its 1-5 verdicts on both models' answers."""
    corpus = load_corpus(data or "cloze", data_lang)
    if not corpus.has_answers:
        raise LangheadsError(f"--qa needs question-answer data, and {corpus.source} has none")
    items = {lang: corpus.texts(lang, "report") for lang in languages}
    before = load_model(baseline)
    after = before if model is None else load_model(model)
    check_mask(after.model, mask)
    rows, generations = [], []
    for lang in languages:
        refs = [t.answer.strip() for t in items[lang]]
        said_before = generate_answers(
            before, items[lang], qa.template_of(before.tokenizer, chat_template)[1], new_tokens
        )
        with H.masked_heads(after.model, mask or []):
            said_after = generate_answers(
                after, items[lang], qa.template_of(after.tokenizer, chat_template)[1], new_tokens
            )
        for metric in answer_metrics(said_before, said_after, refs, lang):
            rows.append({"language": lang, **metric.paired([seed, language_key(lang)], bootstrap)})
        if judge is not None:
            rows.append(
                _judged(judge, items[lang], refs, said_before, said_after, lang, [seed, language_key(lang)], bootstrap)
            )
        generations += [
            {
                "language": lang,
                "id": t.id,
                "prompt": t.question or t.text[-80:],
                "reference": r,
                "before": b,
                "after": a,
            }
            for t, r, b, a in zip(items[lang], refs, said_before, said_after)
        ]
    return {
        "kind": "qa",
        "model": model or baseline,
        "baseline": baseline,
        "baseline_sha256": before.model_hash,
        "mask": [list(m) for m in mask or []],
        "judge": None if judge is None else _judge_record(judge),
        "part": "report",
        "data": corpus.source,
        "table": pd.DataFrame(rows),
        "generations": generations,
        "settings": {"chat_template": chat_template, "new_tokens": new_tokens, "seed": seed, "bootstrap": bootstrap},
    }


def check_mask(model, mask: list[tuple[int, int]] | None) -> None:
    """Refuse, in one line, a head to mask that the model does not have."""
    layout = H.head_layout(model)
    bad = [f"{l}.{h}" for l, h in mask or [] if not (0 <= l < layout.n_layers and 0 <= h < layout.n_heads)]
    if bad:
        shape = f"{layout.n_layers} layers x {layout.n_heads} heads"
        raise LangheadsError(f"--mask: no head {bad[0]} in a model of {shape}")


def _judge_record(judge) -> dict:
    """What eval.json says of the judge: where it ran, what it was sent and the prompt."""
    from .judge import PROMPT

    return {"url": judge.url, "model": judge.model, "sent": judge.sent, "retried": judge.retried,
            "cached": judge.cached, "prompt": PROMPT, "cache": str(judge.cache_path)}  # fmt: skip


def _judged(judge, items, refs, said_before, said_after, lang, seed, bootstrap) -> dict:
    """The judge's verdicts as one metric row; items whose reply had no verdict (for either
    model) are left out of the comparison and counted in `unparsed`."""
    from .metrics import Metric

    def verdicts(said):
        return np.array(
            [
                np.nan if v is None else v
                for v, _ in (judge.rate(t.question or t.text, r, a, lang) for t, r, a in zip(items, refs, said))
            ],
            float,
        )

    before, after = verdicts(said_before), verdicts(said_after)
    ok = ~(np.isnan(before) | np.isnan(after))
    unparsed = int(np.isnan(before).sum() + np.isnan(after).sum())
    if not ok.any():
        return {
            "language": lang,
            "metric": "judge_1to5",
            "items": 0,
            "before": np.nan,
            "after": np.nan,
            "change": np.nan,
            "ci_low": np.nan,
            "ci_high": np.nan,
            "higher_is_better": True,
            "unparsed": unparsed,
        }
    return {
        "language": lang,
        **Metric("judge_1to5", before[ok], after[ok]).paired(seed, bootstrap),
        "unparsed": unparsed,
    }


def _task_manager(tasks: list[str], include: str | None):
    """lm-evaluation-harness's task index (slow to build: once per evaluation), with every
    task checked before a model loads."""
    try:
        from lm_eval.tasks import TaskManager
    except ImportError:
        raise LangheadsError("--lm-eval needs lm-evaluation-harness: pip install 'langheads[lmeval]'") from None
    manager = TaskManager(include_path=include)
    unknown = [t for t in tasks if t not in manager.all_tasks]
    if unknown:
        raise LangheadsError(
            f"--lm-eval: unknown task {unknown[0]}"
            + ("" if include else " (for a task over your own files, give --lm-eval-include DIR with its YAML)")
        )
    return manager


def _lm_eval_samples(
    loaded, tasks: list[str], manager, limit: int | None, mask: list[tuple[int, int]]
) -> dict[str, dict[str, dict[int, float]]]:
    """task -> metric -> doc_id -> value, from lm-evaluation-harness run on the model in memory."""
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM

    lm = HFLM(pretrained=loaded.model, tokenizer=loaded.tokenizer, batch_size=1)
    with H.masked_heads(loaded.model, mask):
        out = simple_evaluate(model=lm, tasks=tasks, task_manager=manager, limit=limit, log_samples=True)
    values: dict = {}
    for task, samples in out["samples"].items():
        names = [m for m in samples[0].get("metrics", []) if isinstance(samples[0].get(m), (int, float, bool))]
        values[task] = {m: {s["doc_id"]: float(s[m]) for s in samples} for m in names}
    return values


def evaluate_lm_eval(
    model: str | None,
    baseline: str,
    tasks: list[str],
    include: str | None = None,
    limit: int | None = None,
    mask: list[tuple[int, int]] | None = None,
    seed: int = 0,
    bootstrap: int = 1000,
) -> dict:
    """lm-evaluation-harness tasks (Belebele, XNLI, XQuAD, MGSM, or your own YAML) on the
    original and on the edited or masked model, handed over in memory; per-document scores
    become Metric objects, so the change gets the same paired bootstrap as everything else."""
    from .metrics import Metric

    manager = _task_manager(tasks, include)
    before_model = load_model(baseline)
    after_model = before_model if model is None else load_model(model)
    before = _lm_eval_samples(before_model, tasks, manager, limit, [])
    after = _lm_eval_samples(after_model, tasks, manager, limit, mask or [])
    rows = []
    for task in before:
        for name, per_doc in before[task].items():
            docs = sorted(set(per_doc) & set(after[task].get(name, {})))
            metric = Metric(name, np.array([per_doc[d] for d in docs]), np.array([after[task][name][d] for d in docs]))
            rows.append({"task": task, **metric.paired([seed, language_key(task)], bootstrap)})
    return {
        "kind": "lm-eval",
        "model": model or baseline,
        "baseline": baseline,
        "mask": [list(m) for m in mask or []],
        "tasks": tasks,
        "include": include,
        "limit": limit,
        "table": pd.DataFrame(rows),
        "generations": [],
        "settings": {"seed": seed, "bootstrap": bootstrap},
    }
