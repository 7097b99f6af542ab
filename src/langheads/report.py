"""Writing a scan's run folder, reading it back, and the short summary.

A run folder holds:
  scores.csv      one row per (layer, head, language): delta_nll (the method's score; for
                  exact ablation the increase of mean token NLL in nats), its 95% bootstrap
                  interval ci_low..ci_high, rel_increase = delta_nll / the language's mean
                  unmodified NLL with its interval rel_ci_low..rel_ci_high, base_nll, n_texts
  per_text.parquet  one row per (language, text_id, layer, head): the method's per-text
                  value; rows with layer = head = -1 hold the unmodified model's mean token NLL
                  of the text; n_tokens counts the text's tokens (BOS included)
  heads.json      each head's kind and languages, the rule, every setting, model and corpus
                  hashes, package versions
  heatmap.png     relative NLL increase per layer x head, one panel per language
It is written under a temporary name beside the target and renamed into place at the end.
"""
from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd

from .errors import LangheadsError
from .folders import check_out_dir, is_ours, mark, partial_dir
from .kinds import KINDS, LAHIS_KINDS


def versions() -> dict:
    import torch
    import transformers

    from . import __version__
    return {"langheads": __version__, "torch": torch.__version__, "transformers": transformers.__version__}


def write_run(result, out: Path, overwrite: bool = False) -> Path:
    """Write every file into `<out>.partial`, then move it to `out` in one rename."""
    check_out_dir(out, overwrite)
    plan, s = result.plan, result.plan.settings
    staging = partial_dir(out)
    if staging.exists():
        if not is_ours(staging):
            raise LangheadsError(f"{staging} exists and was not made by langheads; left alone: move it or choose "
                                 "another --out")
        shutil.rmtree(staging)  # an earlier attempt's half-written run folder
    staging.mkdir(parents=True)
    mark(staging, "run")
    result.scores.to_csv(staging / "scores.csv", index=False, float_format="%.8g")
    result.per_text.to_parquet(staging / "per_text.parquet", index=False)
    info = {
        "format_version": RUN_FORMAT_VERSION,
        "model": {"spec": s.model, "id": plan.loaded.model_id, "sha256": plan.loaded.model_hash,
                  "layers": plan.layout.n_layers, "heads": plan.layout.n_heads,
                  "kv_heads": plan.layout.n_kv_heads, "head_dim": plan.layout.head_dim,
                  "architecture": plan.layout.model_type},
        "corpus": {"source": plan.corpus.source, "sha256": plan.corpus.sha256, "part": "scoring",
                   "texts": {w.lang: w.text_ids for w in plan.work}},
        "method": {"name": plan.method.name, "per_text_value": plan.method.value_meaning},
        "settings": asdict(s),
        "rule": result.rule,
        "sample_note": sample_note(result),
        "counts": count_kinds(result.heads),
        "versions": versions(),
        "heads": result.heads,
    }
    (staging / "heads.json").write_text(json.dumps(info, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    heatmap(result.scores, s.languages, staging / "heatmap.png", plan.loaded.model_id)
    if out.exists():
        shutil.rmtree(out)
    os.replace(staging, out)
    return out


def count_kinds(heads: list[dict]) -> dict:
    kinds = [h["kind"] for h in heads]
    names = KINDS if set(kinds) <= set(KINDS) else LAHIS_KINDS
    return {k: kinds.count(k) for k in names}


def heatmap(scores: pd.DataFrame, languages: list[str], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n_layers, n_heads = scores["layer"].max() + 1, scores["head"].max() + 1
    grids = {lang: np.zeros((n_layers, n_heads)) for lang in languages}
    for row in scores.itertuples():
        grids[row.language][row.layer, row.head] = 100 * row.rel_increase
    top = max(1e-9, float(np.percentile(np.concatenate([g.ravel() for g in grids.values()]), 99)))
    width = min(2.2, 0.35 * n_heads + 0.6)
    fig, axes = plt.subplots(1, len(languages), figsize=(width * len(languages) + 1.2, 0.22 * n_layers + 1.6),
                             squeeze=False, sharey=True)
    for ax, lang in zip(axes[0], languages):
        image = ax.imshow(grids[lang], cmap="magma_r", vmin=0, vmax=top, aspect="auto", interpolation="nearest")
        ax.set_title(lang)
        ax.set_xlabel("head")
        ax.set_xticks(range(n_heads) if n_heads <= 8 else range(0, n_heads, max(1, n_heads // 4)))
    axes[0][0].set_ylabel("layer")
    fig.colorbar(image, ax=axes[0].tolist(), label="NLL increase when removed (%)", shrink=0.9)
    fig.suptitle(title, fontsize=9)
    fig.savefig(path, dpi=110, metadata={"Software": None})
    plt.close(fig)


SMALL_SAMPLE = 8  # below this many texts a bootstrap interval covers less often than it claims


def sample_note(result) -> str | None:
    """A warning when some language's intervals rest on fewer than SMALL_SAMPLE texts."""
    few = {w.lang: len(w.text_ids) for w in result.plan.work if len(w.text_ids) < SMALL_SAMPLE}
    if not few:
        return None
    return ("intervals on fewer than 8 texts (" + ", ".join(f"{lang} {n}" for lang, n in few.items()) +
            ") cover less often than their stated 95%: treat their kinds as provisional")


def summary(result, per_language: int = 3) -> str:
    s = result.plan.settings
    counts = count_kinds(result.heads)
    lines = [f"{len(result.heads)} heads, {len(s.languages)} languages; rule: {result.rule['text']}"]
    if "false_matters_bound" in result.rule:
        lines.append(f"intervals: {result.rule['n_intervals']}; {result.rule['false_matters_bound']}")
    lines.append("kinds: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    if sample_note(result):
        lines.append("note: " + sample_note(result))
    rel = result.scores.set_index(["layer", "head", "language"])["rel_increase"]
    for lang in s.languages:
        own = [h for h in result.heads if h["kind"] == "language-specific" and h["languages"] == [lang]]
        own.sort(key=lambda h: -rel[(h["layer"], h["head"], lang)])
        shown = ", ".join(f"L{h['layer']}H{h['head']} (+{100 * rel[(h['layer'], h['head'], lang)]:.1f}%)"
                          for h in own[:per_language])
        lines.append(f"  {lang}: {len(own)} specific head(s)" + (f"; strongest {shown}" if own else ""))
    return "\n".join(lines)


RUN_FORMAT_VERSION = 1
SCORE_COLUMNS = ["layer", "head", "language", "delta_nll", "ci_low", "ci_high", "rel_increase", "rel_ci_low",
                 "rel_ci_high", "base_nll", "n_texts"]


def load_run(run_dir: str | Path) -> pd.DataFrame:
    """A finished run's scores.csv as a DataFrame (heads.json's kinds as extra columns), checked
    whole: every column, one row per (layer, head, language), no missing value."""
    run_dir = Path(run_dir)
    info = load_run_info(run_dir)
    path = run_dir / "scores.csv"
    if not path.is_file():
        raise LangheadsError(f"{run_dir}: not a finished langheads run (no scores.csv)")
    try:
        scores = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise LangheadsError(f"{path}: damaged ({str(e).splitlines()[0]})") from None
    missing = [c for c in SCORE_COLUMNS if c not in scores.columns]
    model, languages = info["model"], info["settings"]["languages"]
    expected = model["layers"] * model["heads"] * len(languages)
    if missing:
        raise LangheadsError(f"{path}: damaged (no column {missing[0]})")
    if len(scores) != expected or scores[SCORE_COLUMNS].isna().any().any():
        raise LangheadsError(f"{path}: damaged or cut short ({len(scores)} complete rows of {expected}: "
                             f"{model['layers']} layers x {model['heads']} heads x {len(languages)} languages)")
    heads = info["heads"]
    kinds = pd.DataFrame([{"layer": h["layer"], "head": h["head"], "kind": h["kind"],
                           "kind_languages": ",".join(h["languages"])} for h in heads])
    return scores.merge(kinds, on=["layer", "head"], how="left")


def load_run_info(run_dir: str | Path) -> dict:
    """heads.json of a finished run; a missing or damaged one is named in one line."""
    path = Path(run_dir) / "heads.json"
    if not path.is_file():
        raise LangheadsError(f"{run_dir}: not a finished langheads run (no heads.json)")
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
        version = info["format_version"]
        info["settings"]["languages"], info["model"]["layers"], info["heads"]  # noqa: B018 - what readers need
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError):
        raise LangheadsError(f"{path}: damaged, or written before format_version 1 (not the JSON a scan "
                             "writes); scan again") from None
    if version != RUN_FORMAT_VERSION:
        raise LangheadsError(f"{path}: format_version {version}; this langheads reads {RUN_FORMAT_VERSION}")
    return info
