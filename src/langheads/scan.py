"""Run a scoring method over languages and turn per-text values into scores with intervals.

The work is cut into fixed units (one language's batch of texts at one layer), each a pure
function of the model, the texts and the settings, so results never depend on the order or
the process that computed them. Finished languages are kept in `<out>.partial/` and reused
when the same scan is started again after a crash; the run folder itself appears only when
everything is written.
"""
from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from . import heads as H
from . import nll
from .corpus import Corpus, language_key, load_corpus
from .errors import LangheadsError
from .folders import is_ours, mark, write_json_atomically
from .kinds import IntervalRule, LahisRule
from .models import LoadedModel, load_model
from .scoring import METHODS, ScoringMethod


@dataclass
class ScanSettings:
    model: str = "default"
    languages: list[str] = field(default_factory=lambda: ["en", "hi", "fr", "de", "es", "zh", "ar", "ru"])
    method: str = "exact"
    data: str | None = None          # None: the bundled UDHR corpus
    texts: int | None = None         # cap on scoring texts per language
    max_tokens: int | None = None    # cut each text to this many tokens (BOS included)
    seed: int = 0
    bootstrap: int = 1000
    rule: str = "interval"
    threshold: float = 0.01
    agnostic_share: float = 0.75
    lahis_quantile: float = 0.96
    lahis_min_languages: int = 4
    batch_tokens: int = 4096         # padded positions in one (expanded) forward
    chunk_tokens: int = 1024         # positions whose full-vocabulary logits exist at once
    device: str = "cpu"
    dtype: str = "float32"
    compile: bool = False            # torch.compile MLPs, norms and the loss (GPU: ~15% faster)

    def __post_init__(self):
        """Refuse bad values here, once, for the library and the CLI alike."""
        from . import checks
        from .models import DTYPES

        checks.languages(self, "languages")
        checks.choice(self, "method", list(METHODS))
        checks.choice(self, "rule", ["interval", "lahis"])
        checks.choice(self, "dtype", list(DTYPES))
        checks.count(self, "texts", minimum=2, optional=True)  # an interval needs at least 2 texts
        checks.count(self, "max_tokens", minimum=2, optional=True)  # BOS and one token to predict
        checks.count(self, "seed", minimum=0)
        checks.count(self, "bootstrap")
        checks.count(self, "lahis_min_languages")
        checks.count(self, "batch_tokens")
        checks.count(self, "chunk_tokens")
        checks.number(self, "threshold", 0.0)
        checks.number(self, "agnostic_share", 0.0, 1.0, low_open=True)
        checks.number(self, "lahis_quantile", 0.0, 1.0, low_open=True, high_open=True)
        resolve_device(self.device)  # refuses an unknown device, or CUDA without one

    def make_rule(self):
        if self.rule == "interval":
            return IntervalRule(self.threshold, self.agnostic_share)
        if self.rule == "lahis":
            return LahisRule(self.lahis_quantile, self.lahis_min_languages)
        raise LangheadsError(f"unknown rule '{self.rule}'; choose interval or lahis")

    def make_method(self) -> ScoringMethod:
        if self.method not in METHODS:
            raise LangheadsError(f"unknown method '{self.method}'; choose one of {', '.join(METHODS)}")
        return METHODS[self.method](chunk_tokens=self.chunk_tokens, batch_tokens=self.batch_tokens)


def resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device not in {"cpu", "cuda"} and not device.startswith("cuda:"):
        raise LangheadsError(f"unknown device '{device}'; choose cpu, cuda or auto")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise LangheadsError("--device cuda asked for, but torch sees no CUDA device")
    return device


@dataclass
class LanguageWork:
    lang: str
    text_ids: list[str]
    token_lists: list[list[int]]

    @property
    def n_tokens(self) -> int:
        return sum(len(t) for t in self.token_lists)


@dataclass
class Plan:
    settings: ScanSettings
    loaded: LoadedModel
    corpus: Corpus
    layout: H.HeadLayout
    work: list[LanguageWork]
    method: ScoringMethod
    _batches: dict[str, list[nll.Batch]] = field(default_factory=dict, repr=False)

    def batches(self, w: LanguageWork) -> list[nll.Batch]:
        """A language's text batches, made once (the plan, its estimates and the scan share them)."""
        if w.lang not in self._batches:
            pad = self.loaded.tokenizer.pad_token_id or 0
            self._batches[w.lang] = nll.make_batches(w.token_lists, self._text_batch_tokens(), pad)
        return self._batches[w.lang]

    def _text_batch_tokens(self) -> int:
        # Exact ablation repeats a text batch once per head of a layer: size text batches so
        # that all heads of a layer fit in one forward of `batch_tokens` positions.
        if self.method.name == "exact":
            return max(1, self.settings.batch_tokens // self.layout.n_heads)
        return self.settings.batch_tokens

    def total_units(self) -> int:
        return sum(self.method.work_units(self.layout, self.batches(w)) for w in self.work)

    def flops(self) -> float:
        """Rough multiply-adds x 2 of the whole scan, for the dry-run estimate."""
        model = self.loaded.model
        params = sum(p.numel() for p in model.parameters())
        embed = model.get_input_embeddings().weight.numel()
        head_params = model.get_output_embeddings().weight.numel()
        body = params - embed - (0 if model.config.tie_word_embeddings else head_params)
        tokens = sum(b.n_tokens for w in self.work for b in self.batches(w))
        full = 2 * tokens * (body + head_params)
        if self.method.name != "exact":
            return 3 * full  # forward + backward
        L = self.layout.n_layers
        per_head = sum(2 * tokens * (body * (L - l) / L + head_params) for l in range(L)) * self.layout.n_heads
        return full + per_head

    def peak_bytes(self) -> int:
        """Coarse upper estimate of the scan's working memory beyond the weights."""
        cfg = H.text_config(self.loaded.model)
        hidden = getattr(cfg, "hidden_size", None) or cfg.n_embd
        inter = getattr(cfg, "intermediate_size", None) or 4 * hidden
        vocab = self.loaded.model.get_output_embeddings().weight.shape[0]
        longest = max(len(t) for w in self.work for t in w.token_lists)
        bytes_per = torch.finfo(self.loaded.model.dtype).bits // 8
        # a text longer than --batch-tokens still runs whole: a tiny value cannot hide the cost
        rows_tokens = max(self.settings.batch_tokens, longest)
        activations = rows_tokens * (8 * hidden + 3 * inter) * bytes_per
        attention = rows_tokens * self.layout.n_heads * longest * 4 * 2
        logits = self.settings.chunk_tokens * vocab * 4 * 3
        trace = self.layout.n_layers * self._text_batch_tokens() * hidden * bytes_per * 2
        if self.method.name != "exact":  # backward keeps every layer's activations
            activations *= self.layout.n_layers
            attention *= self.layout.n_layers
        return activations + attention + logits + trace


def available_bytes(device: str) -> int:
    if device.startswith("cuda"):
        return torch.cuda.mem_get_info()[0]
    import psutil
    return psutil.virtual_memory().available


def plan_scan(settings: ScanSettings, loaded: LoadedModel | None = None, corpus: Corpus | None = None) -> Plan:
    """Check every input and work out what the scan will do, without scoring anything."""
    method = settings.make_method()
    settings.make_rule()
    if not settings.languages:
        raise LangheadsError("no languages given")
    if len(set(settings.languages)) != len(settings.languages):
        raise LangheadsError(f"a language is listed twice: {','.join(settings.languages)}")
    corpus = corpus or load_corpus(settings.data)
    texts = {lang: corpus.texts(lang, "scoring", settings.texts) for lang in settings.languages}
    settings.device = resolve_device(settings.device)
    loaded = loaded or load_model(settings.model, settings.dtype, settings.device)
    layout = H.head_layout(loaded.model)
    if settings.compile:
        nll.compile_for_speed(loaded.model)
    work = []
    for lang, chosen in texts.items():
        ids = nll.tokenize(loaded.tokenizer, [t.text for t in chosen], settings.max_tokens)
        work.append(LanguageWork(lang, [t.id for t in chosen], ids))
    return Plan(settings, loaded, corpus, layout, work, method)


def describe_plan(plan: Plan) -> str:
    s = plan.settings
    gflops = plan.flops() / 1e9
    speed = _measured_gflops(s.device)
    lines = [
        f"model {plan.loaded.model_id}: {plan.layout.n_layers} layers x {plan.layout.n_heads} heads "
        f"({plan.layout.n_kv_heads} KV heads, head size {plan.layout.head_dim}) = {plan.layout.n_total} heads",
        f"method {s.method} on {s.device} ({s.dtype}); {len(plan.work)} languages from {plan.corpus.source}:",
    ]
    for w in plan.work:
        lines.append(f"  {w.lang}: {len(w.text_ids)} scoring texts, {w.n_tokens} tokens, {len(plan.batches(w))} batches")
    lines.append(f"{plan.total_units()} work units, about {gflops:,.0f} GFLOP; at the {speed:,.0f} GFLOP/s a matmul "
                 f"reaches here, roughly {gflops / (0.5 * speed) / 60:.1f} min (assuming half that rate)")
    lines.append(f"working memory about {plan.peak_bytes() / 2**30:.2f} GiB beyond the weights "
                 f"({available_bytes(s.device) / 2**30:.1f} GiB available)")
    return "\n".join(lines)


def _measured_gflops(device: str) -> float:
    n = 1024
    a = torch.randn(n, n, device=device)
    a @ a
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(4):
        a @ a
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return 4 * 2 * n**3 / (time.perf_counter() - start) / 1e9


def check_memory(plan: Plan) -> None:
    """Refuse up front: on the CPU running out of memory kills the process with no Python error."""
    need, have = plan.peak_bytes(), available_bytes(plan.settings.device)
    if need > 0.8 * have:
        raise LangheadsError(
            f"the scan would need about {need / 2**30:.1f} GiB of working memory and {have / 2**30:.1f} GiB is free; "
            f"lower --batch-tokens (now {plan.settings.batch_tokens}) or --chunk-tokens (now {plan.settings.chunk_tokens})"
        )


# ---- scoring ---------------------------------------------------------------------------

def _values_key(plan: Plan) -> dict:
    """What the per-text values depend on, and nothing else: thresholds, rules, the bootstrap
    and the language list are applied at the end and never invalidate finished languages."""
    s = plan.settings
    return {"model_hash": plan.loaded.model_hash, "corpus": plan.corpus.sha256, "method": s.method,
            "texts": s.texts, "max_tokens": s.max_tokens, "dtype": s.dtype, "device": s.device,
            "batch_tokens": s.batch_tokens, "chunk_tokens": s.chunk_tokens, "compile": s.compile}


def _atomic_save_npz(path: Path, **arrays) -> None:
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, path)


def open_store(partial: Path, key: dict, overwrite: bool) -> None:
    """Make or check the work-in-progress folder: never delete one langheads did not make, never
    mix work of another model, corpus or method; `overwrite` replaces our own."""
    key_file = partial / "scan-key.json"
    if partial.exists():
        if not is_ours(partial):
            raise LangheadsError(f"{partial} exists and was not made by langheads; left alone: move it or choose "
                                 "another --out")
        try:
            stored = json.loads(key_file.read_text())
        except (OSError, json.JSONDecodeError):
            stored = None
        if stored != key and not overwrite:
            why = "is damaged (no readable scan-key.json)" if stored is None else \
                "holds work of another scan (the model, corpus, method or text settings differ)"
            raise LangheadsError(f"{partial} {why}; rerun with --overwrite to replace it, or choose another --out")
        if stored != key:
            shutil.rmtree(partial)  # ours, and the user asked to replace it
    partial.mkdir(parents=True, exist_ok=True)
    mark(partial, "work in progress")
    write_json_atomically(key_file, key)


def _load_unit(path: Path, w: LanguageWork, layout: H.HeadLayout, overwrite: bool) -> dict | None:
    """A finished language's values, checked against what it must hold; None to recompute."""
    try:
        with np.load(path) as f:
            unit = {"base": f["base"], "values": f["values"], "ids": list(f["text_ids"])}
        ok = (unit["ids"] == list(w.text_ids) and unit["base"].shape == (len(w.text_ids),)
              and unit["values"].shape == (layout.n_layers, layout.n_heads, len(w.text_ids)))
    except Exception:  # a truncated or foreign file: np.load raises many kinds
        ok = False
    if ok:
        return unit
    if overwrite:
        return None
    raise LangheadsError(f"{path} is damaged or does not match this scan's texts; rerun with --overwrite to "
                         "compute it again")


def check_store(plan: Plan, partial: Path, overwrite: bool = False) -> dict[str, dict]:
    """Open the work-in-progress store and verify every finished language in it (before any
    scoring, so a refusal is one line); returns the finished languages' values."""
    open_store(partial, _values_key(plan), overwrite)
    finished = {}
    for w in plan.work:
        done = partial / f"lang-{w.lang}.npz"
        unit = _load_unit(done, w, plan.layout, overwrite) if done.exists() else None
        if unit is not None:
            finished[w.lang] = unit
    return finished


def score_languages(plan: Plan, partial: Path, progress: bool = True, overwrite: bool = False) -> dict[str, dict]:
    """Per-text values for every language, reusing languages finished by an earlier attempt."""
    from tqdm.auto import tqdm

    finished = check_store(plan, partial, overwrite)
    model, layout = plan.loaded.model, plan.layout
    results = {}
    bar = tqdm(total=plan.total_units(), desc=f"scan ({plan.settings.method})", unit="unit", disable=not progress)
    for w in plan.work:
        done = partial / f"lang-{w.lang}.npz"
        batches = plan.batches(w)
        unit = finished.get(w.lang)
        if unit is not None:
            results[w.lang] = unit
            bar.update(plan.method.work_units(layout, batches))
            continue
        bar.set_postfix_str(w.lang)
        out = plan.method.score_language(model, layout, batches, len(w.text_ids), bar.update)
        _atomic_save_npz(done, base=out.base_nll, values=out.values, text_ids=np.array(w.text_ids))
        results[w.lang] = {"base": out.base_nll, "values": out.values}
    bar.close()
    return results


def bootstrap_scores(method: ScoringMethod, lang: str, base: np.ndarray, values: np.ndarray,
                     seed: int, n_boot: int, level: float = 0.95) -> pd.DataFrame:
    """Score, relative score and percentile intervals per head, resampling texts.

    Each head's resamples come from a generator seeded with (seed, layer, head, language),
    so a head's interval is the same whatever else is scanned and in whatever order.
    """
    n_layers, n_heads, n = values.shape
    lo_q, hi_q = 100 * (1 - level) / 2, 100 * (1 + level) / 2
    base_mean = base.mean()
    rows = []
    for layer in range(n_layers):
        for head in range(n_heads):
            rng = np.random.default_rng([seed, layer, head, language_key(lang)])
            idx = rng.integers(0, n, size=(n_boot, n))
            stat = method.aggregate(values[layer, head][idx])
            rel = stat / base[idx].mean(axis=1)
            score = float(method.aggregate(values[layer, head]))
            lo, hi = np.percentile(stat, [lo_q, hi_q])
            rlo, rhi = np.percentile(rel, [lo_q, hi_q])
            rows.append((layer, head, lang, score, lo, hi, score / base_mean, rlo, rhi, base_mean, n))
    return pd.DataFrame(rows, columns=["layer", "head", "language", "delta_nll", "ci_low", "ci_high",
                                       "rel_increase", "rel_ci_low", "rel_ci_high", "base_nll", "n_texts"])


@dataclass
class ScanResult:
    scores: pd.DataFrame
    per_text: pd.DataFrame
    heads: list[dict]
    rule: dict
    plan: Plan


def run_scan(plan: Plan, partial: Path, progress: bool = True, overwrite: bool = False) -> ScanResult:
    s = plan.settings
    raw = score_languages(plan, partial, progress, overwrite)
    rule = s.make_rule()
    frames, per_text = [], []
    for w in plan.work:
        base, values = raw[w.lang]["base"], raw[w.lang]["values"]
        frames.append(bootstrap_scores(plan.method, w.lang, base, values, s.seed, s.bootstrap))
        L, Hn, n = values.shape
        per_text.append(pd.DataFrame({
            "language": w.lang, "text_id": np.tile(w.text_ids, L * Hn + 1),
            "layer": np.concatenate([[-1] * n, np.repeat(np.arange(L), Hn * n)]),
            "head": np.concatenate([[-1] * n, np.tile(np.repeat(np.arange(Hn), n), L)]),
            "n_tokens": np.tile([len(t) for t in w.token_lists], L * Hn + 1),
            "value": np.concatenate([base, values.reshape(-1)]),
        }))
    scores = pd.concat(frames, ignore_index=True).sort_values(["layer", "head"], kind="stable", ignore_index=True)
    per_text_df = pd.concat(per_text, ignore_index=True)
    heads = rule.classify(scores, s.languages)
    return ScanResult(scores, per_text_df, heads, rule.describe(len(s.languages), plan.layout.n_total), plan)
