"""Before/after on the report texts (never used to choose anything): NLL with paired
bootstrap intervals, NLL per byte, and a greedy-generation language check."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from . import nll
from .corpus import language_key, load_corpus
from .models import load_model
from .report import check_out_dir


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
        chosen = texts[lang]
        ids = nll.tokenize(before_model.tokenizer, [t.text for t in chosen], max_tokens)
        before = nll.per_text_nll(before_model.model, ids).numpy()
        after = nll.per_text_nll(after_model.model, ids).numpy()
        (dlo, dhi), (rlo, rhi) = paired_interval(before, after, [seed, language_key(lang)], bootstrap)
        predicted = np.array([len(i) - 1 for i in ids])
        text_bytes = sum(len(before_model.tokenizer.decode(i[1:]).encode("utf-8")) for i in ids)
        prompt_ids = [i[:prompt_tokens] for i in ids[:prompts]]
        cont_before = greedy_continuations(before_model, prompt_ids, new_tokens)
        cont_after = greedy_continuations(after_model, prompt_ids, new_tokens)
        for p, b, a in zip(prompt_ids, cont_before, cont_after):
            generations.append({"language": lang, "prompt": before_model.tokenizer.decode(p, skip_special_tokens=True),
                                "before": b, "before_lang": identify(b), "after": a, "after_lang": identify(a)})
        ours = [g for g in generations if g["language"] == lang]
        rows.append({
            "language": lang, "n_texts": len(ids),
            "nll_before": before.mean(), "nll_after": after.mean(), "change": after.mean() - before.mean(),
            "change_ci_low": dlo, "change_ci_high": dhi,
            "rel_change": after.mean() / before.mean() - 1, "rel_ci_low": rlo, "rel_ci_high": rhi,
            "nll_per_byte_before": float((before * predicted).sum() / text_bytes),
            "nll_per_byte_after": float((after * predicted).sum() / text_bytes),
            "same_language_before": float(np.mean([g["before_lang"] == lang for g in ours])),
            "same_language_after": float(np.mean([g["after_lang"] == lang for g in ours])),
        })
    return {"model": model, "baseline": baseline, "part": "report", "table": pd.DataFrame(rows),
            "generations": generations, "settings": {"max_tokens": max_tokens, "prompts": prompts,
                                                     "prompt_tokens": prompt_tokens, "new_tokens": new_tokens,
                                                     "seed": seed, "bootstrap": bootstrap, "data": data}}


def write_eval(result: dict, out: Path, overwrite: bool = False) -> None:
    check_out_dir(out, overwrite)
    out.mkdir(parents=True, exist_ok=True)
    result["table"].to_csv(out / "eval.csv", index=False, float_format="%.6g")
    (out / "generations.jsonl").write_text(
        "".join(json.dumps(g, ensure_ascii=False) + "\n" for g in result["generations"]), encoding="utf-8")
    meta = {k: v for k, v in result.items() if k not in ("table", "generations")}
    meta["table"] = result["table"].to_dict(orient="records")
    (out / "eval.json").write_text(json.dumps(meta, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
