"""Before/after on the report texts (never used to choose anything): NLL with paired
bootstrap intervals, NLL per byte, and a greedy-generation language check."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from . import nll
from .corpus import language_key, load_corpus
from .models import load_model


@dataclass
class TextLosses:
    """One model's loss on a list of texts, each tokenized by the model's own tokenizer."""
    token_ids: list[list[int]]
    nll: np.ndarray          # mean NLL per predicted token, per text
    tokens: np.ndarray       # predicted tokens per text (BOS excluded)
    bytes: np.ndarray        # UTF-8 bytes of the text those tokens cover

    @property
    def per_byte(self) -> np.ndarray:
        """NLL per byte per text: comparable across tokenizers, unlike NLL per token."""
        return self.nll * self.tokens / self.bytes


def text_losses(loaded, texts: list[str], max_tokens: int | None = None) -> TextLosses:
    ids = nll.tokenize(loaded.tokenizer, texts, max_tokens)
    per_token = nll.per_text_nll(loaded.model, ids, pad_id=loaded.tokenizer.pad_token_id or 0).numpy()
    covered = [len(loaded.tokenizer.decode(i, skip_special_tokens=True).encode("utf-8")) for i in ids]
    return TextLosses(ids, per_token, np.array([len(i) - 1 for i in ids]), np.array(covered, dtype=float))


def paired_interval(before: np.ndarray, after: np.ndarray, seed: int, n_boot: int = 1000, level: float = 0.95):
    """Percentile intervals of mean(after - before) and mean(after) / mean(before) - 1, resampling texts."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(before), size=(n_boot, len(before)))
    diff = (after[idx] - before[idx]).mean(axis=1)
    rel = after[idx].mean(axis=1) / before[idx].mean(axis=1) - 1
    q = [100 * (1 - level) / 2, 100 * (1 + level) / 2]
    return np.percentile(diff, q), np.percentile(rel, q)


@torch.no_grad()
def greedy_continuations(loaded, prompts: list[list[int]], new_tokens: int) -> list[str]:
    device = next(loaded.model.parameters()).device
    out = []
    for ids in prompts:
        x = torch.tensor([ids], device=device)
        gen = loaded.model.generate(input_ids=x, attention_mask=torch.ones_like(x), max_new_tokens=new_tokens,
                                    do_sample=False, pad_token_id=loaded.tokenizer.pad_token_id)
        out.append(loaded.tokenizer.decode(gen[0, len(ids):], skip_special_tokens=True))
    return out


def identify(text: str) -> str:
    import py3langid

    return py3langid.classify(text)[0] if text.strip() else "none"


def evaluate(model: str, baseline: str, languages: list[str], data: str | None = None, max_tokens: int | None = None,
             prompts: int = 3, prompt_tokens: int = 16, new_tokens: int = 24, seed: int = 0, bootstrap: int = 1000) -> dict:
    corpus = load_corpus(data)
    texts = {lang: corpus.texts(lang, "report") for lang in languages}
    after_model, before_model = load_model(model), load_model(baseline)
    rows, generations = [], []
    for lang in languages:
        chosen = [t.text for t in texts[lang]]
        # Each model reads the texts through its own tokenizer (a trimmed vocabulary may cut
        # them differently); NLL per byte compares them whatever the tokenizers.
        b_loss, a_loss = text_losses(before_model, chosen, max_tokens), text_losses(after_model, chosen, max_tokens)
        before, after = b_loss.nll, a_loss.nll
        key = [seed, language_key(lang)]
        (dlo, dhi), (rlo, rhi) = paired_interval(before, after, key, bootstrap)
        _, (blo, bhi) = paired_interval(b_loss.per_byte, a_loss.per_byte, key, bootstrap)
        prompt_ids = [i[:prompt_tokens] for i in b_loss.token_ids[:prompts]]
        prompt_texts = [before_model.tokenizer.decode(p, skip_special_tokens=True) for p in prompt_ids]
        after_prompts = [after_model.tokenizer(p)["input_ids"] for p in prompt_texts]
        cont_before = greedy_continuations(before_model, prompt_ids, new_tokens)
        cont_after = greedy_continuations(after_model, after_prompts, new_tokens)
        for p, b, a in zip(prompt_texts, cont_before, cont_after):
            generations.append({"language": lang, "prompt": p,
                                "before": b, "before_lang": identify(b), "after": a, "after_lang": identify(a)})
        ours = [g for g in generations if g["language"] == lang]
        rows.append({
            "language": lang, "n_texts": len(chosen),
            "same_tokens": float(np.mean([before_model.tokenizer.convert_ids_to_tokens(x) ==
                                          after_model.tokenizer.convert_ids_to_tokens(y)
                                          for x, y in zip(b_loss.token_ids, a_loss.token_ids)])),
            "nll_before": before.mean(), "nll_after": after.mean(), "change": after.mean() - before.mean(),
            "change_ci_low": dlo, "change_ci_high": dhi,
            "rel_change": after.mean() / before.mean() - 1, "rel_ci_low": rlo, "rel_ci_high": rhi,
            "nll_per_byte_before": float(b_loss.per_byte.mean()), "nll_per_byte_after": float(a_loss.per_byte.mean()),
            "per_byte_rel_change": float(a_loss.per_byte.mean() / b_loss.per_byte.mean() - 1),
            "per_byte_rel_ci_low": blo, "per_byte_rel_ci_high": bhi,
            "same_language_before": float(np.mean([g["before_lang"] == lang for g in ours])),
            "same_language_after": float(np.mean([g["after_lang"] == lang for g in ours])),
        })
    return {"model": model, "baseline": baseline, "part": "report", "table": pd.DataFrame(rows),
            "generations": generations, "settings": {"max_tokens": max_tokens, "prompts": prompts,
                                                     "prompt_tokens": prompt_tokens, "new_tokens": new_tokens,
                                                     "seed": seed, "bootstrap": bootstrap, "data": data}}
