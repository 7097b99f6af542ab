"""The plan of a scan: every input checked, the model loaded, the texts tokenised and cut into
fixed work units (scoring.base.WorkUnit: a language's text batch at a range of layers), with what
they cost (FLOPs, memory, the time at this machine's measured matmul rate). Planning returns a
new Plan and changes nothing it was given (the settings it plans from keep the device asked
for; the plan's own settings say the device resolved)."""

from __future__ import annotations

import dataclasses
import functools
import time
from dataclasses import dataclass, field

import torch

from .. import heads as H
from .. import nll, qa
from ..components import Component, component_for
from ..corpus import Corpus, scan_corpus
from ..errors import LangheadsError
from ..models import LoadedModel, Placement, load_model
from ..scoring import METHODS, ScoringMethod
from ..scoring.base import WorkUnit
from ..units import UnitLayout
from .distributed import Ranks
from .settings import ScanSettings, refuse_uneven, resolve_device


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
    layout: UnitLayout  # what is scored per layer (units.py)
    work: list[LanguageWork]
    method: ScoringMethod
    signal: dict = field(
        default_factory=lambda: {"name": "text", "template": "", "meaning": "mean token NLL of the text"}
    )
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

    def work_units(self) -> list[WorkUnit]:
        """Every unit of the scan, in a fixed order: language, batch, layers."""
        return [u for w in self.work for u in self.method.work_units(w.lang, self.layout, len(self.batches(w)))]

    def batch_of(self, unit: WorkUnit) -> nll.Batch:
        return self.batches(self._work(unit.lang))[unit.batch]

    def text_ids_of(self, unit: WorkUnit) -> list[str]:
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

    def unit_flops(self, unit: WorkUnit) -> float:
        body, head = self._param_counts
        return self.method.unit_flops(self.layout, self.batch_of(unit), unit.layers, body, head)

    def flops(self) -> float:
        """Rough multiply-adds x 2 of the whole scan, for the dry-run estimate."""
        return sum(self.unit_flops(u) for u in self.work_units())

    def weight_bytes(self) -> int:
        model = self.loaded.model
        return sum(p.numel() * p.element_size() for p in model.parameters()) + sum(
            b.numel() * b.element_size() for b in model.buffers()
        )

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
        attention = rows_tokens * H.head_layout(self.loaded.model).n_heads * longest * 4 * 2
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


def plan_scan(
    settings: ScanSettings, loaded: LoadedModel | None = None, corpus: Corpus | None = None, ranks: Ranks | None = None
) -> Plan:
    """Check every input and work out what the scan will do, without scoring anything. Under
    torchrun each process plans the same units and loads its own replica (see distributed.py).
    `settings` is not changed: the plan holds a copy with the device resolved."""
    ranks = ranks or Ranks()
    settings.make_rule()
    if not settings.languages:
        raise LangheadsError("no languages given")
    if len(set(settings.languages)) != len(settings.languages):
        raise LangheadsError(f"a language is listed twice: {','.join(settings.languages)}")
    answers = settings.signal == "answer"
    corpus = corpus or scan_corpus(settings.data, settings.data_lang, settings.signal)
    if answers and not corpus.has_answers:
        raise LangheadsError(
            f"--signal answer needs question-answer data, and {corpus.source} has none: give JSONL "
            "with lang, context, question, answer, a SQuAD-format .json, or --data cloze"
        )
    part = METHODS[settings.method].part  # switch takes its prompts from the selection texts
    texts = {lang: corpus.texts(lang, part, settings.texts) for lang in settings.languages}
    settings = dataclasses.replace(settings, device=resolve_device(settings.device))
    refuse_uneven(settings.model)
    if loaded is None:
        if settings.device_map and ranks.world > 1 and settings.device.startswith("cuda"):
            place = Placement(settings.device, settings.device_map, settings.load_in, tuple(ranks.gpu_group()))
        else:
            place = Placement(ranks.device(settings.device), settings.device_map, settings.load_in)
        loaded = load_model(settings.model, settings.dtype, place)
    component = component_for(loaded.model, settings.component, settings.neuron_group)
    layout = component.layout
    method = settings.make_method(component)
    method.prepare(loaded)
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
            ids = nll.tokenize(
                loaded.tokenizer, [t.text for t in chosen], settings.max_tokens, H.position_limit(loaded.model)
            )
            work.append(LanguageWork(lang, [t.id for t in chosen], ids))
    signal = {
        "name": settings.signal,
        "template": template_name,
        "meaning": (
            "mean token NLL of the reference answer given the prompt" if answers else "mean token NLL of the text"
        ),
    }
    return Plan(settings, loaded, corpus, layout, work, method, signal, component)


def _check_length(encoded: list[tuple[list[int], int]], items, limit: int | None) -> None:
    """An answer item longer than the model can read is refused before any scoring (an
    answer cannot be cut)."""
    long = next(((t, len(ids)) for t, (ids, _) in zip(items, encoded) if limit and len(ids) > limit), None)
    if long:
        raise LangheadsError(
            f"item {long[0].id} ({long[0].lang}) is {long[1]} tokens, and this model reads at most "
            f"{limit}: shorten its context or leave it out"
        )


def _units_line(plan: Plan) -> str:
    """What the scan's units are: the heads, or the neuron groups or blocks of each layer."""
    u = plan.layout
    if plan.component is None or plan.component.name == "head":
        kv = H.head_layout(plan.loaded.model).n_kv_heads
        return f"{u.n_layers} layers x {u.n_units} heads ({kv} KV heads, head size {u.unit_width}) = {u.n_total} heads"
    if plan.component.name == "neuron":
        return f"{u.n_layers} layers x {u.n_units} groups of {u.unit_width} MLP neurons = {u.n_total} neuron groups"
    return f"{u.n_layers} layers x 2 blocks (attention, mlp) = {u.n_total} blocks"


def describe_plan(plan: Plan, n_ranks: int = 1) -> str:
    s = plan.settings
    gflops = plan.flops() / 1e9
    speed = _measured_gflops(plan.loaded.model.device.type if s.device_map else s.device)
    place = (
        f"{s.device}"
        + (f", device map {s.device_map}" if s.device_map else "")
        + (f", {s.load_in} (bitsandbytes)" if s.load_in else "")
    )
    lines = [
        f"model {plan.loaded.model_id}: {_units_line(plan)}",
        f"method {s.method} on {place} ({s.dtype}); {len(plan.work)} languages from {plan.corpus.source}:",
    ]
    for w in plan.work:
        lines.append(
            f"  {w.lang}: {len(w.text_ids)} scoring texts, {w.n_tokens} tokens, {len(plan.batches(w))} batches"
        )
    units = plan.work_units()
    per_unit = "one text batch at one layer" if plan.method.layers_per_unit == 1 else "one text batch, every layer"
    lines.append(
        f"{len(units)} work units ({per_unit}), about {gflops:,.0f} GFLOP; at the {speed:,.0f} GFLOP/s "
        f"a matmul reaches here, roughly {gflops / (0.5 * speed) / 60:.1f} min in one process "
        "(assuming half that rate)"
        + ("; --adaptive scores a part of it (pairs stop once settled)" if s.adaptive else "")
    )
    weights, work_mem = plan.weight_bytes(), plan.peak_bytes()
    if n_ranks > 1:
        costs = [plan.unit_flops(u) for u in units]
        for r in range(n_ranks):
            share = Ranks(rank=r, world=n_ranks).share(costs)
            first, last = (units[share.start], units[share.stop - 1]) if share else (None, None)
            span = f"{first.lang}/{first.name} .. {last.lang}/{last.name}" if share else "nothing"
            lines.append(
                f"  rank {r}: {len(share)} units ({span}), about "
                f"{sum(costs[i] for i in share) / 1e9 / (0.5 * speed) / 60:.1f} min"
            )
    lines.append(
        f"memory per process: weights {weights / 2**30:.2f} GiB + working memory about "
        f"{work_mem / 2**30:.2f} GiB ({available_bytes(plan.loaded.model.device.type) / 2**30:.1f} GiB "
        "available here)"
    )
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
            f"lower --batch-tokens (now {plan.settings.batch_tokens}) or --chunk-tokens "
            f"(now {plan.settings.chunk_tokens})"
        )
