"""Run a scoring method over languages and turn per-text values into scores with intervals.

The work is cut into fixed units (a language's text batch at a range of layers, see
scoring.base.Unit), each a pure function of the model, the texts and the settings, so results
never depend on the order or the process that computed them. Each finished unit goes to the
store (store.py, `<out>.units/`) at once; a scan started again after a crash computes only
the missing units, and several processes under torchrun share them (distributed.py). The
run folder itself appears only when everything is written.
"""
from __future__ import annotations

import functools
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from .. import heads as H
from .. import nll, qa
from ..components import COMPONENTS, Component, component_for
from ..corpus import Corpus, language_key, scan_corpus
from .distributed import Ranks
from ..builtin import MODEL_HELP
from ..errors import LangheadsError
from .kinds import RULES
from ..models import LoadedModel, Placement, load_model
from ..options import option
from .store import UnitStore
from ..scoring import METHODS, ScoringMethod
from ..scoring.base import Unit, UnitScores
from .sequential import CALLS, OPEN, StoppingRule


def refuse_uneven(spec: str) -> None:
    """A model folder whose layers differ in shape (uneven heads or MLP widths, a layer without
    attention) is refused in one line before it loads: the scan reads one layout from the config."""
    from ..manifest import read_manifest

    manifest = read_manifest(spec) if Path(spec).is_dir() else None
    if manifest is not None and manifest.needs_replay():
        raise LangheadsError(f"{spec}: its layers keep different numbers of heads or MLP neurons, and a scan reads one "
                             "layout for every layer; scan the model it was pruned from (its manifest names it), or "
                             "a pruning made with --uniform")


@dataclass
class ScanSettings:
    """Every setting of a scan; the CLI's `scan` options are generated from these fields."""
    model: str = option("default", help=MODEL_HELP)
    languages: list[str] = option(factory=lambda: ["en", "hi", "fr", "de", "es", "zh", "ar", "ru"],
                                  help="comma-separated ISO 639-1 codes")
    method: str = option("exact", help="exact | attribution | lahis | switch (language switch rate of greedy "
                         "continuations, prompts from the selection texts) | lape (neurons: activation "
                         "probability, forward only)")
    component: str = option("head", help="head (attention heads) | neuron (groups of --neuron-group MLP neurons, "
                            "each group removed as a whole) | block (each layer's whole attention and whole MLP)")
    neuron_group: int = option(64, help="with --component neuron: neurons per group")
    data: str | None = option(None, help="a folder of <lang>.txt files, a JSONL file (texts, or lang/context/question/"
                              "answer items), a SQuAD-format .json, or cloze (default: bundled UDHR; with --signal "
                              "answer, cloze)")
    data_lang: str | None = option(None, help="the language of a SQuAD-format file whose name does not say it")
    signal: str = option("text", help="text: NLL of running text | answer: NLL of the reference answer given the "
                         "prompt (the paper's protocol)")
    chat_template: str = option("auto", help="with --signal answer: auto (the model's own, else plain) | none "
                                "(plain) | a Jinja file")
    texts: int | None = option(None, help="at most this many scoring texts (or items) per language")
    max_tokens: int | None = option(None, help="cut each text to this many tokens")
    seed: int = option(0, help="seeds every bootstrap")
    bootstrap: int = option(1000, help="bootstrap resamples per interval")
    rule: str = option("interval", help="interval (ours) | fdr | lahis")
    threshold: float = option(0.01, help="relative NLL increase that matters (0.01 = 1%%)")
    fdr: float = 0.05                # with rule fdr: the false discovery rate (the CLI's --fdr Q sets both)
    agnostic_share: float = option(0.75, help="share of the languages a head must matter for to be agnostic")
    lahis_quantile: float = option(0.96, help="rule lahis: a language's top set is above this quantile")
    lahis_min_languages: int = option(4, help="rule lahis: top sets a head needs to be language-general")
    batch_tokens: int = option(4096, help="padded positions per forward (bounds memory)")
    chunk_tokens: int = option(1024, help="positions per chunk of full-vocabulary logits")
    device: str = option("cpu", help="cpu | cuda | auto")
    dtype: str = option("float32", help="float32 | bfloat16 | float16")
    device_map: str | None = option(None, help="auto: spread one model over several GPUs (accelerate)")
    load_in: str | None = option(None, help="4bit | 8bit: quantise with bitsandbytes (pip install 'langheads[quant]')")
    compile: bool = option(False, help="torch.compile MLPs, norms and the loss (worth it on GPUs)")
    adaptive: bool = option(False, help="exact only: score texts in rounds and stop each head-language pair once "
                            "its call is settled (a sequential test; docs/scan.md)")
    first_look: int = option(2, help="with --adaptive: texts scored before the first look")
    early_alpha: float = option(0.005, help="with --adaptive: what early 'matters' calls may add to the chance of a "
                                "false 'matters', over all looks")
    futility: float = option(0.05, help="with --adaptive: stop a pair as 'does not matter' when its chance of "
                             "'matters' after the last text is below this")

    def __post_init__(self):
        """Refuse bad values here, once, for the library and the CLI alike."""
        from .. import checks
        from ..models import DTYPES

        checks.languages(self, "languages")
        checks.choice(self, "method", list(METHODS))
        checks.choice(self, "component", list(COMPONENTS))
        checks.count(self, "neuron_group")
        if self.component not in METHODS[self.method].components:
            raise LangheadsError(f"--method {self.method} scores {' and '.join(METHODS[self.method].components)}s "
                                 f"only, not --component {self.component}")
        checks.choice(self, "signal", ["text", "answer"])
        checks.choice(self, "rule", ["interval", "fdr", "lahis"])
        checks.choice(self, "dtype", list(DTYPES))
        checks.count(self, "texts", minimum=2, optional=True)  # an interval needs at least 2 texts
        checks.count(self, "max_tokens", minimum=2, optional=True)  # BOS and one token to predict
        checks.count(self, "seed", minimum=0)
        checks.count(self, "bootstrap")
        checks.count(self, "lahis_min_languages")
        checks.count(self, "batch_tokens")
        checks.count(self, "chunk_tokens")
        checks.number(self, "threshold", 0.0)
        checks.number(self, "fdr", 0.0, 1.0, low_open=True, high_open=True)
        checks.number(self, "agnostic_share", 0.0, 1.0, low_open=True)
        checks.number(self, "lahis_quantile", 0.0, 1.0, low_open=True, high_open=True)
        checks.count(self, "first_look", minimum=2)  # a t-test needs two texts
        checks.number(self, "early_alpha", 0.0, 1.0, low_open=True, high_open=True)
        checks.number(self, "futility", 0.0, 1.0, high_open=True)
        if self.adaptive and self.method != "exact":
            raise LangheadsError(f"--adaptive stops exact ablations early; --method {self.method} scores every head "
                                 "in one pass per batch, so there is nothing to stop")
        if self.adaptive and self.rule != "interval":
            raise LangheadsError(f"--adaptive calls pairs by the interval rule; --rule {self.rule} needs every pair "
                                 "scored on every text: scan without --adaptive")
        resolve_device(self.device)  # refuses an unknown device, or CUDA without one
        Placement(device_map=self.device_map, load_in=self.load_in).check()

    def make_rule(self):
        if self.rule not in RULES:
            raise LangheadsError(f"unknown rule '{self.rule}'; choose one of {', '.join(RULES)}")
        return RULES[self.rule].from_settings(self)

    def stopping(self, n_texts: int) -> StoppingRule:
        """The adaptive scan's stopping rule for a language with n_texts scoring texts."""
        return StoppingRule(self.threshold, n_texts, self.first_look, 1, self.early_alpha, self.futility)

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
    starts: list[int] | None = None  # signal answer: each item's first answer token

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
    signal: dict = field(default_factory=lambda: {"name": "text", "template": "", "meaning": "mean token NLL of the text"})
    component: Component | None = None  # what the units are (None: heads); layout counts its units
    _batches: dict[str, list[nll.Batch]] = field(default_factory=dict, repr=False)
    _rounds: dict[str, list[list[int]]] = field(default_factory=dict, repr=False)
    opened: dict = field(default_factory=dict, repr=False)  # (store folder, overwrite) -> (store, finished units)

    def batches(self, w: LanguageWork) -> list[nll.Batch]:
        """A language's text batches, made once (the plan, its estimates and the scan share them)."""
        if w.lang not in self._batches:
            batches, rounds = [], []
            for texts in self.round_texts(w):
                made = self._make_batches(w, texts)
                rounds.append(list(range(len(batches), len(batches) + len(made))))
                batches += made
            for batch in batches:
                batch.lang = w.lang  # methods that judge outputs by language (switch) read it
            self._batches[w.lang], self._rounds[w.lang] = batches, rounds
        return self._batches[w.lang]

    def round_texts(self, w: LanguageWork) -> list[range]:
        """The texts of each round: an adaptive scan's rounds, else one round of every text."""
        if self.settings.adaptive:
            return self.settings.stopping(len(w.text_ids)).rounds()
        return [range(len(w.text_ids))]

    def _make_batches(self, w: LanguageWork, texts: range) -> list[nll.Batch]:
        pad = self.loaded.tokenizer.pad_token_id or 0
        starts = None if w.starts is None else [w.starts[i] for i in texts]
        batches = nll.make_batches([w.token_lists[i] for i in texts], self._text_batch_tokens(), pad, starts)
        for batch in batches:
            batch.index = [texts[i] for i in batch.index]  # rows -> the language's text positions
        return batches

    def round_batches(self, w: LanguageWork) -> list[list[int]]:
        """Per round, the numbers of its batches (an adaptive scan scores round after round)."""
        self.batches(w)
        return self._rounds[w.lang]

    def _text_batch_tokens(self) -> int:
        # A method that repeats a text batch (exact ablation: once per head of a layer) gets
        # text batches small enough for all copies to fit in one forward of `batch_tokens`.
        return max(1, self.settings.batch_tokens // self.method.copies_per_forward(self.layout))

    def units(self) -> list[Unit]:
        """Every unit of the scan, in a fixed order: language, batch, layers."""
        return [u for w in self.work for u in self.method.units(w.lang, self.layout, len(self.batches(w)))]

    def batch_of(self, unit: Unit) -> nll.Batch:
        return self.batches(self._work(unit.lang))[unit.batch]

    def text_ids_of(self, unit: Unit) -> list[str]:
        """The ids of the unit's texts, in the batch's row order."""
        ids = self._work(unit.lang).text_ids
        return [ids[i] for i in self.batch_of(unit).index]

    def _work(self, lang: str) -> LanguageWork:
        return next(w for w in self.work if w.lang == lang)

    @functools.cached_property
    def _param_counts(self) -> tuple[int, int]:
        """(decoder parameters, output-layer parameters), counted once: every unit's cost uses them."""
        model = self.loaded.model
        params = H.parameters(model)
        embed = model.get_input_embeddings().weight.numel()
        head = model.get_output_embeddings().weight.numel()
        return params - embed - (0 if model.config.tie_word_embeddings else head), head

    def unit_flops(self, unit: Unit) -> float:
        body, head = self._param_counts
        return self.method.unit_flops(self.layout, self.batch_of(unit), unit.layers, body, head)

    def flops(self) -> float:
        """Rough multiply-adds x 2 of the whole scan, for the dry-run estimate."""
        return sum(self.unit_flops(u) for u in self.units())

    def weight_bytes(self) -> int:
        model = self.loaded.model
        return sum(p.numel() * p.element_size() for p in model.parameters()) + \
            sum(b.numel() * b.element_size() for b in model.buffers())

    def peak_bytes(self) -> int:
        """Coarse upper estimate of one process's working memory beyond the weights."""
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
        if self.method.needs_backward:  # backward keeps every layer's activations
            activations *= self.layout.n_layers
            attention *= self.layout.n_layers
        return activations + attention + logits + trace


def available_bytes(device: str) -> int:
    if device.startswith("cuda"):
        return torch.cuda.mem_get_info()[0]
    import psutil
    return psutil.virtual_memory().available


def plan_scan(settings: ScanSettings, loaded: LoadedModel | None = None, corpus: Corpus | None = None,
              ranks: Ranks | None = None) -> Plan:
    """Check every input and work out what the scan will do, without scoring anything. Under
    torchrun each process plans the same units and loads its own replica (see distributed.py)."""
    ranks = ranks or Ranks()
    method = settings.make_method()
    settings.make_rule()
    if not settings.languages:
        raise LangheadsError("no languages given")
    if len(set(settings.languages)) != len(settings.languages):
        raise LangheadsError(f"a language is listed twice: {','.join(settings.languages)}")
    answers = settings.signal == "answer"
    corpus = corpus or scan_corpus(settings.data, settings.data_lang, settings.signal)
    if answers and not corpus.has_answers:
        raise LangheadsError(f"--signal answer needs question-answer data, and {corpus.source} has none: give JSONL "
                             "with lang, context, question, answer, a SQuAD-format .json, or --data cloze")
    part = method.part  # switch takes its prompts from the selection texts
    texts = {lang: corpus.texts(lang, part, settings.texts) for lang in settings.languages}
    settings.device = resolve_device(settings.device)
    refuse_uneven(settings.model)
    if loaded is None:
        if settings.device_map and ranks.world > 1 and settings.device.startswith("cuda"):
            place = Placement(settings.device, settings.device_map, settings.load_in, tuple(ranks.gpu_group()))
        else:
            place = Placement(ranks.device(settings.device), settings.device_map, settings.load_in)
        loaded = load_model(settings.model, settings.dtype, place)
    component = component_for(loaded.model, settings.component, settings.neuron_group)
    layout = component.layout
    method.prepare(loaded)
    method.component = None if component.name == "head" else component
    if settings.compile:
        nll.compile_for_speed(loaded.model)
    work = []
    template_name, template = qa.template_of(loaded.tokenizer, settings.chat_template) if answers else ("", None)
    for lang, chosen in texts.items():
        if answers:  # prompt + answer, the loss on the answer only; not cut (--max-tokens is for texts)
            encoded = [qa.encode(loaded.tokenizer, t, template) for t in chosen]
            _check_length(encoded, chosen, H.position_limit(loaded.model))
            work.append(LanguageWork(lang, [t.id for t in chosen], [e[0] for e in encoded], [e[1] for e in encoded]))
        else:
            ids = nll.tokenize(loaded.tokenizer, [t.text for t in chosen], settings.max_tokens,
                               H.position_limit(loaded.model))
            work.append(LanguageWork(lang, [t.id for t in chosen], ids))
    signal = {"name": settings.signal, "template": template_name, "meaning": (
        "mean token NLL of the reference answer given the prompt" if answers else "mean token NLL of the text")}
    return Plan(settings, loaded, corpus, layout, work, method, signal, component)


def _check_length(encoded: list[tuple[list[int], int]], items, limit: int | None) -> None:
    """An answer item longer than the model can read is refused before any scoring (an
    answer cannot be cut)."""
    long = next(((t, len(ids)) for t, (ids, _) in zip(items, encoded) if limit and len(ids) > limit), None)
    if long:
        raise LangheadsError(f"item {long[0].id} ({long[0].lang}) is {long[1]} tokens, and this model reads at most "
                             f"{limit}: shorten its context or leave it out")


def _units_line(plan: Plan) -> str:
    """What the scan's units are: the heads, or the neuron groups or blocks of each layer."""
    u = plan.layout
    if plan.component is None or plan.component.name == "head":
        return (f"{u.n_layers} layers x {u.n_heads} heads ({u.n_kv_heads} KV heads, head size {u.head_dim}) = "
                f"{u.n_total} heads")
    if plan.component.name == "neuron":
        return (f"{u.n_layers} layers x {u.n_heads} groups of {u.head_dim} MLP neurons = {u.n_total} neuron groups")
    return f"{u.n_layers} layers x 2 blocks (attention, mlp) = {u.n_total} blocks"


def describe_plan(plan: Plan, n_ranks: int = 1) -> str:
    s = plan.settings
    gflops = plan.flops() / 1e9
    speed = _measured_gflops(plan.loaded.model.device.type if s.device_map else s.device)
    place = f"{s.device}" + (f", device map {s.device_map}" if s.device_map else "") + \
        (f", {s.load_in} (bitsandbytes)" if s.load_in else "")
    lines = [
        f"model {plan.loaded.model_id}: {_units_line(plan)}",
        f"method {s.method} on {place} ({s.dtype}); {len(plan.work)} languages from {plan.corpus.source}:",
    ]
    for w in plan.work:
        lines.append(f"  {w.lang}: {len(w.text_ids)} scoring texts, {w.n_tokens} tokens, {len(plan.batches(w))} batches")
    units = plan.units()
    per_unit = "one text batch at one layer" if plan.method.layers_per_unit == 1 else "one text batch, every layer"
    lines.append(f"{len(units)} work units ({per_unit}), about {gflops:,.0f} GFLOP; at the {speed:,.0f} GFLOP/s "
                 f"a matmul reaches here, roughly {gflops / (0.5 * speed) / 60:.1f} min in one process "
                 "(assuming half that rate)" + ("; --adaptive scores a part of it (pairs stop once settled)"
                                                 if s.adaptive else ""))
    weights, work_mem = plan.weight_bytes(), plan.peak_bytes()
    if n_ranks > 1:
        costs = [plan.unit_flops(u) for u in units]
        for r in range(n_ranks):
            share = Ranks(rank=r, world=n_ranks).share(costs)
            first, last = (units[share.start], units[share.stop - 1]) if share else (None, None)
            span = f"{first.lang}/{first.name} .. {last.lang}/{last.name}" if share else "nothing"
            lines.append(f"  rank {r}: {len(share)} units ({span}), about "
                         f"{sum(costs[i] for i in share) / 1e9 / (0.5 * speed) / 60:.1f} min")
    lines.append(f"memory per process: weights {weights / 2**30:.2f} GiB + working memory about "
                 f"{work_mem / 2**30:.2f} GiB ({available_bytes(plan.loaded.model.device.type) / 2**30:.1f} GiB "
                 "available here)")
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
    need, have = plan.peak_bytes(), available_bytes(str(plan.loaded.model.device))
    if need > 0.8 * have:
        raise LangheadsError(
            f"the scan would need about {need / 2**30:.1f} GiB of working memory and {have / 2**30:.1f} GiB is free; "
            f"lower --batch-tokens (now {plan.settings.batch_tokens}) or --chunk-tokens (now {plan.settings.chunk_tokens})"
        )


# ---- scoring ---------------------------------------------------------------------------

def values_key(plan: Plan) -> dict:
    """What the per-text values depend on, and nothing else: thresholds, rules, the bootstrap
    and the language list are applied at the end and never invalidate finished units.
    batch_tokens decides which texts share a unit."""
    s = plan.settings
    return {"format_version": 1, "model_hash": plan.loaded.model_hash, "corpus": plan.corpus.sha256, "method": s.method,
            "texts": s.texts, "max_tokens": s.max_tokens, "dtype": s.dtype, "load_in": s.load_in,
            "batch_tokens": s.batch_tokens, **({"signal": plan.signal} if s.signal != "text" else {}),
            **({"rounds": {"first_look": s.first_look, "step": 1}} if s.adaptive else {}),
            **({"component": plan.component.record()} if plan.component and plan.component.name != "head" else {})}


def open_store(plan: Plan, folder: Path, overwrite: bool = False) -> tuple[UnitStore, dict]:
    """Open the store and check every finished unit of this scan in it (before any scoring,
    so a refusal is one line); returns the store and the finished units' values."""
    key = (Path(folder).resolve(), overwrite)
    if key in plan.opened:  # the CLI checks the store before it prints; the scan reuses that reading
        return plan.opened[key]
    store = UnitStore.open(folder, values_key(plan), overwrite)
    finished = {}
    for unit in plan.units():
        got = store.load(unit, plan.text_ids_of(unit), plan.layout.n_heads, overwrite)
        if got is not None:
            finished[unit] = got
    plan.opened[key] = (store, finished)
    return store, finished


def score_units(plan: Plan, folder: Path, progress: bool = True, overwrite: bool = False,
                ranks: Ranks | None = None) -> dict[str, dict] | None:
    """Compute this process's share of the units the store lacks, then (rank 0 only) return
    every language's per-text values {"base": [n], "values": [L, H, n]}; other ranks get None."""
    from tqdm.auto import tqdm

    ranks = ranks or Ranks()
    units = plan.units()
    store, finished = _open_for_ranks(plan, folder, overwrite, ranks)
    missing = ranks.from_main([u for u in units if u not in finished] if ranks.main else None)
    mine = [missing[i] for i in ranks.share([plan.unit_flops(u) for u in missing])]
    bar = tqdm(total=len(units), initial=len(units) - len(missing), unit="unit",
               desc=f"scan ({plan.settings.method})" + (f", {ranks.world} processes" if ranks.world > 1 else ""),
               disable=not (progress and ranks.main))
    for unit in mine:
        bar.set_postfix_str(f"{unit.lang} {unit.name}")
        start = time.perf_counter()
        out = plan.method.score_unit(plan.loaded.model, plan.layout, plan.batch_of(unit), unit.layers)
        store.save(unit, out, plan.text_ids_of(unit), ranks.rank, time.perf_counter() - start)
        if ranks.world == 1:
            bar.update(1)
        else:  # rank 0's bar counts every rank's units in the shared store
            bar.update(_count_done(store, missing) + len(units) - len(missing) - bar.n)
    ranks.barrier()
    bar.update(len(units) - bar.n)
    bar.close()
    return _assemble(plan, store, finished) if ranks.main else None


def _count_done(store: UnitStore, units: list[Unit]) -> int:
    names = {(u.lang, u.name + ".npz") for u in units}
    langs = {u.lang for u in units}
    return sum((lang, p.name) in names for lang in langs if (store.folder / lang).is_dir()
               for p in (store.folder / lang).iterdir())


def _assemble(plan: Plan, store: UnitStore, finished: dict) -> dict[str, dict]:
    """Every language's values: the units already read when the store was opened, and the
    ones computed since, read from the store."""
    out = {}
    for w in plan.work:
        base = np.zeros(len(w.text_ids))
        values = np.zeros((plan.layout.n_layers, plan.layout.n_heads, len(w.text_ids)))
        for unit in plan.method.units(w.lang, plan.layout, len(plan.batches(w))):
            got = finished.get(unit) or store.load(unit, plan.text_ids_of(unit), plan.layout.n_heads)
            if got is None:
                raise LangheadsError(f"{store.path(unit)} is missing after every process finished: is "
                                     f"{store.folder} on a file system all machines share?")
            got.place(unit, plan.batch_of(unit).index, base, values)
        out[w.lang] = {"base": base, "values": values}
    return out


# ---- the adaptive scan -----------------------------------------------------------------

@dataclass
class OpenPairs:
    """One language's (head, language) pairs during an adaptive scan: which are still scored
    and what they have scored so far. Rounds take texts in order, so a pair's texts are always
    the language's first `stopped_at` texts."""
    rule: StoppingRule
    base: np.ndarray        # [n_texts] the unmodified NLL, NaN until scored
    values: np.ndarray      # [layers, heads, n_texts] NaN where not scored
    state: np.ndarray       # [layers, heads] OPEN, MATTERS, BELOW or FUTILE (sequential.py)
    stopped_at: np.ndarray  # [layers, heads] texts the pair was scored on

    @classmethod
    def start(cls, plan: Plan, w: LanguageWork) -> "OpenPairs":
        L, Hn, n = plan.layout.n_layers, plan.layout.n_heads, len(w.text_ids)
        return cls(plan.settings.stopping(n), np.full(n, np.nan), np.full((L, Hn, n), np.nan),
                   np.full((L, Hn), OPEN), np.full((L, Hn), n))

    def open_heads(self, layer: int) -> list[int]:
        return [int(h) for h in np.flatnonzero(self.state[layer] == OPEN)]

    def fill(self, unit: Unit, got: UnitScores, heads: list[int], rows: list[int]) -> None:
        got.place(unit, rows, self.base, self.values, heads)

    def look(self, n: int) -> int:
        """After n texts: stop the open pairs the rule settles; returns the texts they skip."""
        if n >= self.rule.max_texts:
            return 0
        is_open = self.state == OPEN
        d = self.values[is_open][:, :n]                       # [open pairs, n]
        decided = self.rule.decide(d, np.broadcast_to(self.base[:n], d.shape))
        self.state[is_open] = decided
        self.stopped_at[is_open] = np.where(decided == OPEN, self.rule.max_texts, n)
        return int((decided != OPEN).sum()) * (self.rule.max_texts - n)

    def stopped(self) -> np.ndarray:
        """Per pair, how it was called: matters | below | futile (early looks) | last."""
        return np.vectorize(CALLS.get, otypes=[object])(self.state)


def score_adaptive(plan: Plan, folder: Path, progress: bool = True, overwrite: bool = False,
                   ranks: Ranks | None = None) -> dict[str, OpenPairs] | None:
    """Score round after round, only the pairs still open (sequential.py), every unit through
    the store; rank 0 returns each language's pairs, other ranks None."""
    from tqdm.auto import tqdm

    ranks = ranks or Ranks()
    store, finished = _open_for_ranks(plan, folder, overwrite, ranks)
    pairs = {w.lang: OpenPairs.start(plan, w) for w in plan.work}
    bar = tqdm(total=sum(p.values.size for p in pairs.values()), unit="pair-text", desc="scan (exact, adaptive)",
               disable=not (progress and ranks.main))
    for k in range(max(len(plan.round_batches(w)) for w in plan.work)):
        todo = [(Unit(w.lang, b, layer, layer + 1), heads) for w in plan.work if k < len(plan.round_batches(w))
                for b in plan.round_batches(w)[k] for layer in range(plan.layout.n_layers)
                if (heads := pairs[w.lang].open_heads(layer))]
        _score_some(plan, store, finished, todo, overwrite, ranks, bar)
        if ranks.main:
            for unit, heads in todo:
                pairs[unit.lang].fill(unit, finished[unit], heads, plan.batch_of(unit).index)
            for w in plan.work:
                if k < len(plan.round_batches(w)):
                    bar.update(pairs[w.lang].look(plan.round_texts(w)[k].stop))
        states = ranks.from_main({lang: p.state for lang, p in pairs.items()} if ranks.main else None)
        for lang, state in states.items():
            pairs[lang].state = state
    bar.update(bar.total - bar.n)
    bar.close()
    return pairs if ranks.main else None


def _open_for_ranks(plan: Plan, folder: Path, overwrite: bool, ranks: Ranks) -> tuple[UnitStore, dict]:
    """Rank 0 opens and checks the store (one line if it refuses); the others share it."""
    told = None
    if ranks.main:
        try:
            store, finished = open_store(plan, folder, overwrite)
        except LangheadsError as e:
            told = str(e)
    error = ranks.from_main(told)
    if error:
        raise LangheadsError(error)
    return (store, finished) if ranks.main else (UnitStore(folder, values_key(plan)), {})


def _score_some(plan: Plan, store: UnitStore, finished: dict, todo: list[tuple[Unit, list[int]]],
                overwrite: bool, ranks: Ranks, bar) -> None:
    """Compute the (unit, heads) the store lacks, shared among the processes; afterwards rank
    0's `finished` holds every unit of `todo`."""
    def holds(got, heads):
        return got is not None and (got.heads is None or set(heads) <= set(got.heads))

    missing = ranks.from_main([i for i, (u, heads) in enumerate(todo) if not holds(finished.get(u), heads)]
                              if ranks.main else None)
    costs = [plan.unit_flops(todo[i][0]) * len(todo[i][1]) for i in missing]
    mine = [missing[j] for j in ranks.share(costs)]
    for group in _by_batch(todo, mine):  # one batch's units together: the method may share their loss
        _score_group(plan, store, finished, [todo[i] for i in group], overwrite, ranks.rank, bar)
    ranks.barrier()
    if ranks.main:
        for i in missing:
            unit = todo[i][0]
            if holds(finished.get(unit), todo[i][1]):  # computed here: already in memory
                continue
            finished[unit] = store.load(unit, plan.text_ids_of(unit), plan.layout.n_heads)
            if not holds(finished[unit], todo[i][1]):
                raise LangheadsError(f"{store.path(unit)} lacks heads after every process finished: is "
                                     f"{store.folder} on a file system all machines share?")
        for unit, heads in (todo[i] for i in set(range(len(todo))) - set(missing)):
            bar.update(len(heads) * len(plan.batch_of(unit).index))


def _by_batch(todo: list[tuple[Unit, list[int]]], items: list[int]) -> list[list[int]]:
    """The items in groups of one text batch each (lang, batch), in their order."""
    groups: dict[tuple[str, int], list[int]] = {}
    for i in items:
        groups.setdefault((todo[i][0].lang, todo[i][0].batch), []).append(i)
    return list(groups.values())


def _score_group(plan: Plan, store: UnitStore, finished: dict, group: list[tuple[Unit, list[int]]], overwrite: bool,
                 rank: int, bar) -> None:
    """Score the heads each unit of one text batch lacks, in one call of the method, and store
    every unit (with what an earlier attempt scored); each unit's logged time is its share of
    the call's by its FLOPs."""
    batch = plan.batch_of(group[0][0])
    olds = [finished.get(u) or store.load(u, plan.text_ids_of(u), plan.layout.n_heads, overwrite) for u, _ in group]
    needs = [sorted(set(heads) - set(old.heads if old and old.heads is not None else []))
             for (_, heads), old in zip(group, olds)]
    start = time.perf_counter()
    news = plan.method.score_units(plan.loaded.model, plan.layout, batch, [(u.layers, need) for (u, _), need in
                                                                            zip(group, needs)])
    seconds = time.perf_counter() - start
    flops = [plan.unit_flops(u) * max(1, len(need)) for (u, _), need in zip(group, needs)]
    for (unit, heads), old, new, f in zip(group, olds, news, flops):
        merged = _merge(old, new, plan.layout.n_heads)
        store.save(unit, merged, plan.text_ids_of(unit), rank, seconds * f / sum(flops))
        finished[unit] = merged
        bar.update(len(heads) * len(batch.index))


def _merge(old: UnitScores | None, new: UnitScores, n_heads: int) -> UnitScores:
    """A unit's heads scored before and now, in one (what an earlier attempt scored is kept)."""
    if old is None or new.heads is None:
        return new
    values = old.values.copy()
    values[:, new.heads] = new.values[:, new.heads]
    heads = sorted(set(range(n_heads) if old.heads is None else old.heads) | set(new.heads))
    return UnitScores(new.base_nll, values, None if len(heads) == n_heads else heads)


def bootstrap_scores(method: ScoringMethod, lang: str, base: np.ndarray, values: np.ndarray,
                     seed: int, n_boot: int, level: float = 0.95, threshold: float = 0.01) -> pd.DataFrame:
    """Score, relative score and percentile intervals per head, resampling texts, and the
    bootstrap p-value of "the relative increase exceeds `threshold`": (1 + resamples at or
    below it) / (1 + n_boot). The one bootstrap every interval of a scan comes from.

    Each head's resamples come from a generator seeded with (seed, layer, head, language),
    so a head's interval is the same whatever else is scanned and in whatever order.
    """
    from ..bootstrap import interval, resamples

    n_layers, n_heads, _ = values.shape
    rows = []
    for layer in range(n_layers):
        for head in range(n_heads):
            # an adaptive scan stops some pairs early: each rests on its first n texts (NaN after)
            n = int(np.isfinite(values[layer, head]).sum())
            own, own_base = values[layer, head][:n], base[:n]
            base_mean = own_base.mean()
            idx = resamples(n, n_boot, [seed, layer, head, language_key(lang)])
            stat = method.aggregate(own[idx])
            # a method whose values are already shares (switch) is not divided by its base
            rel = stat / own_base[idx].mean(axis=1) if method.relative else stat
            score = float(method.aggregate(own))
            (lo, hi), (rlo, rhi) = interval(stat, level), interval(rel, level)
            p = (1 + np.count_nonzero(rel <= threshold)) / (1 + n_boot)
            rel_score = score / base_mean if method.relative else score
            rows.append((layer, head, lang, score, lo, hi, rel_score, rlo, rhi, base_mean, n, p))
    return pd.DataFrame(rows, columns=["layer", "head", "language", "score", "ci_low", "ci_high",
                                       "rel_increase", "rel_ci_low", "rel_ci_high", "base_nll", "n_texts", "p_value"])


@dataclass
class ScanResult:
    scores: pd.DataFrame
    per_text: pd.DataFrame
    heads: list[dict]
    rule: dict
    plan: Plan


def run_scan(plan: Plan, store: Path, progress: bool = True, overwrite: bool = False,
             ranks: Ranks | None = None) -> ScanResult | None:
    """Score every unit (this process's share of them), then, on rank 0, bootstrap and sort
    heads into kinds. Other ranks return None once every unit is in the store."""
    s = plan.settings
    if s.adaptive:
        pairs = score_adaptive(plan, store, progress, overwrite, ranks)
        raw = None if pairs is None else {lang: {"base": p.base, "values": p.values} for lang, p in pairs.items()}
    else:
        raw = score_units(plan, store, progress, overwrite, ranks)
    if raw is None:
        return None
    rule = s.make_rule()
    frames, per_text = [], []
    for w in plan.work:
        base, values = raw[w.lang]["base"], raw[w.lang]["values"]
        frame = bootstrap_scores(plan.method, w.lang, base, values, s.seed, s.bootstrap, threshold=s.threshold)
        if s.adaptive:  # how each pair was called: early looks, or the interval rule after the last text
            frame["stopped"] = pairs[w.lang].stopped().reshape(-1)
        frames.append(frame)
        per_text.append(_per_text(w, base, values))
    scores = pd.concat(frames, ignore_index=True).sort_values(["layer", "head"], kind="stable", ignore_index=True)
    per_text_df = pd.concat(per_text, ignore_index=True)
    heads = rule.classify(scores, s.languages)
    described = rule.describe(len(s.languages), plan.layout.n_total)
    if s.adaptive:
        described["adaptive"] = adaptive_record(plan, pairs)
    return ScanResult(scores, per_text_df, heads, described, plan)


def _per_text(w: LanguageWork, base: np.ndarray, values: np.ndarray) -> pd.DataFrame:
    """One row per scored (text, head) and per text's unmodified NLL (layer = head = -1)."""
    L, Hn, n = values.shape
    frame = pd.DataFrame({
        "language": w.lang, "text_id": np.tile(w.text_ids, L * Hn + 1),
        "layer": np.concatenate([[-1] * n, np.repeat(np.arange(L), Hn * n)]),
        "head": np.concatenate([[-1] * n, np.tile(np.repeat(np.arange(Hn), n), L)]),
        "n_tokens": np.tile([len(t) for t in w.token_lists], L * Hn + 1),
        "value": np.concatenate([base, values.reshape(-1)]),
    })
    scored = np.isfinite(frame["value"].to_numpy())
    return frame if scored.all() else frame[scored].reset_index(drop=True)


def adaptive_record(plan: Plan, pairs: dict[str, OpenPairs]) -> dict:
    """The stopping rule, its guarantee, and what it cost: pair-texts scored of all."""
    longest = max(plan.work, key=lambda w: len(w.text_ids))
    scored = int(sum(p.stopped_at.sum() for p in pairs.values()))
    full = int(sum(p.values.size for p in pairs.values()))
    stopped = np.concatenate([p.stopped().reshape(-1) for p in pairs.values()])
    return {**plan.settings.stopping(len(longest.text_ids)).describe(),
            "pair_texts_scored": scored, "pair_texts_full": full, "share": scored / full,
            "stopped": {k: int((stopped == k).sum()) for k in CALLS.values()}}
