"""The pruning walk: one loop over the candidates of every given scan (heads, neuron groups,
whole blocks), least harmful to the kept languages per parameter saved first.

A *unit* is (component, layer, index) (units.py): ("head", l, h), ("neuron", l, group),
("block", l, 0 | 1: attention | MLP). Each scan gives its candidates (units that matter for no
kept language, by its rule) in tiers (matter only for dropped languages, then for none) with
their harm (the scan's largest relative rise over the kept languages). A *move* saves
parameters in the saved model: for heads, one head from each of a layer's widest KV groups, or
the rest of a group (a single query head of a group of several is padded back and saves
nothing); one neuron group (a layer keeps one group at least: a whole MLP is a block); one
block. With `uniform`, only moves that keep every layer alike: one head from every KV group of
every layer, one group from every layer, a whole layer. What a move saves is counted on what
the saved model would hold (a layer left with neither block is dropped, its norms with it).
Moves go by tier, then by harm per parameter saved.

Moves are tried in batches (candidates.gallop): the kept languages are re-measured on their
selection texts (never the scoring texts the scans used, nor the report texts claims are made
on) with everything chosen masked; a batch is within the budget when the upper end of each kept
language's paired 95% interval stays within it (candidates.judged, the one rule); a batch that
is not is halved, a single such move is not made, and the walk goes on. With a unit count
instead of a budget the walk stops at that many units. The dropped languages are measured once,
at the end.
"""

from __future__ import annotations

import contextlib
import functools
from dataclasses import dataclass, field

import torch

from .. import heads as H
from .. import nll
from ..archs import REGISTRY
from ..components import BLOCKS, Component, component_for
from ..errors import LangheadsError
from . import savings
from .candidates import (
    PruneResult,
    candidate_tiers,
    gallop,
    head_harm,
    judged,
    means,
    moves,
    ordered,
    selection_tokens,
)

NAMES = {"head": "heads", "neuron": "neurons", "block": "blocks"}


@dataclass
class Source:
    """One scan's candidates for the walk."""

    component: Component
    tiers: dict[tuple[int, int], int]
    harm: dict[tuple[int, int], float]

    @classmethod
    def of(cls, model, run, keep: list[str], drop: list[str]) -> Source:
        c = run.info.get("component", {"name": "head"})
        component = component_for(model, c["name"], c.get("neurons_per_group", 64))
        return cls(component, candidate_tiers(run.info["heads"], drop), head_harm(run.scores, keep))

    @functools.cached_property
    def order(self) -> list[tuple[int, int]]:
        """The candidates by tier, then least harmful first (candidates.ordered)."""
        return ordered(self.tiers, self.harm)


@dataclass
class Chosen:
    """What the walk has chosen so far, by component (original layer numbering)."""

    heads: set = field(default_factory=set)  # (layer, head)
    groups: set = field(default_factory=set)  # (layer, group)
    blocks: set = field(default_factory=set)  # (layer, 0 attention | 1 mlp)

    def plus(self, move) -> Chosen:
        new = Chosen(set(self.heads), set(self.groups), set(self.blocks))
        for name, layer, unit in move:
            {"head": new.heads, "neuron": new.groups, "block": new.blocks}[name].add((layer, unit))
        return new

    def units(self) -> int:
        return len(self.heads) + len(self.groups) + len(self.blocks)

    def as_units(self) -> list[tuple[str, int, int]]:
        return (
            [("head", *u) for u in sorted(self.heads)]
            + [("neuron", *u) for u in sorted(self.groups)]
            + [("block", *u) for u in sorted(self.blocks)]
        )


def as_removal(units, group: int) -> tuple[dict, dict, dict]:
    """Units (component, layer, index) as edit.blocks removes them: (heads, neurons, blocks) by
    layer, a neuron group as its `group` neurons."""
    heads: dict[int, list[int]] = {}
    neurons: dict[int, list[int]] = {}
    blocks: dict[int, set[str]] = {}
    for name, l, u in units:
        if name == "head":
            heads.setdefault(l, []).append(u)
        elif name == "neuron":
            neurons.setdefault(l, []).extend(range(u * group, u * group + group))
        else:
            blocks.setdefault(l, set()).add(BLOCKS[u])
    return heads, neurons, blocks


class Body:
    """The model's shapes, what the walk's choices save and how they are masked."""

    def __init__(self, model, group: int):
        from ..archs.base import get

        self.model, self.group = model, group
        self.layout = H.head_layout(model)
        self.costs = savings.HeadCosts.of(model)
        adapter, layers = H.adapter_for(model), H.decoder_layers(model)
        out = [get(layer, adapter.mlp_out) for layer in layers]
        self.width = [adapter.mlp_width(o) for o in out]
        self.per_neuron = [adapter.neuron_parameters(layer) for layer in layers]
        self.rest = [
            H.parameters(layer)
            - H.parameters(adapter.attention_of(layer))
            - self.per_neuron[i] * self.width[i]
            - _bias(out[i])
            for i, layer in enumerate(layers)
        ]

    def saved(self, chosen: Chosen) -> int:
        """Parameters the saved model would not hold (q/k/v/o biases left out, as for heads)."""
        from .blocks import body_plan

        gone, heads, neurons = body_plan(self.model, *as_removal(chosen.as_units(), self.group))
        pairs = [(l, h) for l, hs in heads.items() for h in hs] + [
            (l, h) for l in gone for h in range(self.layout.n_heads)
        ]
        mlp = sum(self.per_neuron[l] * len(n) for l, n in neurons.items())
        return (
            savings.parameters_saved(self.layout, self.costs, pairs)
            + mlp
            + sum(self.per_neuron[l] * self.width[l] + self.rest[l] for l in gone)
        )

    def masked(self, chosen: Chosen, components: dict[str, Component]):
        """Everything chosen masked at once (each at the input of its output projection)."""
        stack = contextlib.ExitStack()
        if chosen.heads:
            stack.enter_context(H.masked_heads(self.model, sorted(chosen.heads)))
        for name, units in (("neuron", chosen.groups), ("block", chosen.blocks)):
            if units:
                c = components[name]
                factors: dict[int, torch.Tensor] = {}
                for layer, unit in units:
                    factors.setdefault(layer, torch.ones(c.layout.n_units))[unit] = 0.0
                stack.enter_context(c.scaled(self.model, factors))
        return stack


def _bias(proj) -> int:
    return 0 if getattr(proj, "bias", None) is None else proj.bias.numel()


def candidate_moves(body: Body, sources: dict[str, Source], chosen: Chosen, uniform: bool = False) -> list[tuple]:
    """Every move on top of `chosen` (see the module doc), each a tuple of units. `uniform`:
    only moves that keep every layer alike (one head from every KV group of every layer; one
    neuron group from every layer; a whole layer)."""

    gone_attention = {l for l, b in chosen.blocks if b == 0}
    gone_mlp = {l for l, b in chosen.blocks if b == 1}
    out: list[tuple] = []
    if "head" in sources:
        s = sources["head"]
        order = [h for h in s.order if h[0] not in gone_attention]
        found = (
            uniform_head_moves(body.layout, order, chosen.heads, gone_attention)
            if uniform
            else moves(body.layout, order, chosen.heads)
        )
        out += [tuple(("head", l, h) for l, h in m) for m in found]
    if "neuron" in sources:
        out += _group_moves(body, sources["neuron"], chosen, gone_mlp, uniform)
    if "block" in sources:
        blocks = [(l, b) for l, b in sources["block"].tiers if (l, b) not in chosen.blocks]
        if uniform:  # both blocks of a layer at once, where the layer then leaves the stack
            from .blocks import adds_nothing

            out += [
                (("block", l, 0), ("block", l, 1))
                for l, b in blocks
                if b == 0 and (l, 1) in blocks and adds_nothing(body.model, l)
            ]
        else:
            out += [(("block", l, b),) for l, b in blocks]
    return out


def uniform_head_moves(layout: H.HeadLayout, order: list[tuple[int, int]], removed: set, gone: set = frozenset()):
    """The one move that keeps every layer alike: the least harmful candidate left in every KV
    group of every layer but the `gone` ones (layers whose attention went); none where some
    group has no candidate left, or would lose its last head."""
    first: dict[tuple[int, int], tuple[int, int]] = {}
    for l, h in order:
        if (l, h) not in removed:
            first.setdefault((l, h // layout.group_size), (l, h))
    slots = [(l, g) for l in range(layout.n_layers) if l not in gone for g in range(layout.n_kv_heads)]
    left = layout.group_size - sum(1 for l, h in removed if slots and (l, h // layout.group_size) == slots[0])
    if not slots or left <= 1 or not all(s in first for s in slots):
        return []
    return [tuple(sorted(first[s] for s in slots))]


def _group_moves(body: Body, source: Source, chosen: Chosen, gone_mlp: set, uniform: bool) -> list[tuple]:
    """One neuron group (a layer keeps one at least), or with `uniform` the least harmful
    candidate group left in every layer at once. In a mixture of experts every expert of a
    layer keeps as many neurons (one stacked tensor), so a move takes the least harmful group
    left in each expert of one layer (with `uniform`: of every layer), each keeping one."""
    c = source.component
    per_slot = c.layout.n_units // (c.experts or 1)  # groups of a layer, or of one expert

    def slot(l, g):
        return l, g // per_slot

    left: dict = {}
    for l, g in chosen.groups:
        left[slot(l, g)] = left.get(slot(l, g), per_slot) - 1
    free = [
        (l, g)
        for l, g in source.order
        if (l, g) not in chosen.groups and l not in gone_mlp and left.get(slot(l, g), per_slot) > 1
    ]
    if not uniform and not c.experts:
        return [(("neuron", l, g),) for l, g in free]
    first = {}
    for l, g in free:
        first.setdefault(slot(l, g), g)
    layers = [l for l in range(body.layout.n_layers) if l not in gone_mlp]
    per_move = [layers] if uniform else [[l] for l in layers]  # the layers one move cuts alike
    slots = [[(l, e) for l in ls for e in range(c.experts or 1)] for ls in per_move]
    return [tuple(("neuron", l, first[(l, e)]) for l, e in s) for s in slots if s and all(x in first for x in s)]


def next_move(
    body: Body, sources: dict[str, Source], chosen: Chosen, tried: set, room: int | None = None, uniform: bool = False
):
    """The untried move that comes first: lowest tier, then least harm per parameter saved;
    `room`: at most this many units."""
    now = body.saved(chosen)
    options = [
        m
        for m in candidate_moves(body, sources, chosen, uniform)
        if m not in tried and (room is None or len(m) <= room)
    ]
    gains = {m: body.saved(chosen.plus(m)) - now for m in options}  # counted once per move and step

    def rank(move):
        tier = max(sources[n].tiers[(l, u)] for n, l, u in move)
        harm = sum(max(sources[n].harm[(l, u)], 0.0) for n, l, u in move)
        return (tier, harm / gains[move], move)

    options = [m for m in options if gains[m] > 0]  # a move that saves nothing is no move
    return min(options, key=rank) if options else None


def _measurer(loaded, settings, runs: list, sources: dict, body: Body):
    """per_text(chosen, languages): each language's per-text NLL on its selection texts (the
    first scan's), with everything chosen masked."""
    components = {n: s.component for n, s in sources.items()}
    tokens = selection_tokens(loaded, runs[0].info, runs[0].languages)
    pad = loaded.tokenizer.pad_token_id or 0

    def per_text(chosen, languages):
        with body.masked(chosen, components):
            return {
                lang: nll.per_text_nll(loaded.model, tokens[lang], settings.batch_tokens, settings.chunk_tokens, pad)
                .double()
                .numpy()
                for lang in languages
            }

    return per_text


def walk(loaded, settings, runs: list, drop: list[str], progress: bool = True) -> tuple[PruneResult, int]:
    """Make moves, in batches (candidates.gallop), until the budget, the unit count or the moves
    run out; (the result, whose curve has every batch made, and the neurons per group)."""
    from tqdm.auto import tqdm

    sources = _sources(loaded.model, runs, settings.keep, drop)
    body = Body(loaded.model, sources["neuron"].component.group if "neuron" in sources else 64)
    per_text = _measurer(loaded, settings, runs, sources, body)
    first = runs[0]
    base_texts = per_text(Chosen(), first.languages)
    base = means(base_texts)
    result = PruneResult(
        [], [{"step": 0, "units": [], "nll": base, "rel_kept": {l: 0.0 for l in settings.keep}, "parameters_saved": 0}]
    )
    state = {"chosen": Chosen()}
    tried: set = set()

    def plan(k):
        chosen, batch = state["chosen"], []
        for _ in range(1 if settings.one_move else k):
            move = next_move(body, sources, chosen, tried, _room(settings, chosen), settings.uniform)
            if move is None:
                break
            batch.append(move)
            chosen = chosen.plus(move)
        return batch

    def judge(batch):
        trial = state["chosen"].plus(tuple(u for move in batch for u in move))
        texts = per_text(trial, settings.keep)
        ok, rel, bad = judged(base_texts, texts, settings.max_increase)
        return settings.units is not None or ok, (trial, texts, rel, bad)

    def accept(batch, measured):
        state["chosen"] = measured[0]
        result.removed += [u for move in batch for u in move]
        result.curve.append(_step(len(result.curve), batch, measured, body.saved(measured[0])))

    def reject(move, measured):
        tried.add(move)
        result.rejected.append(
            {
                "units": [list(u) for u in move],
                "after_step": len(result.curve) - 1,
                "rel_kept": measured[2],
                "rel_kept_upper": measured[3],
            }
        )

    bar = tqdm(desc="prune (measurements)", unit="try", disable=not progress)
    why = gallop(plan, judge, accept, reject, settings.patience, bar)
    bar.close()
    others = [lang for lang in first.languages if lang not in settings.keep]
    if len(result.curve) > 1:  # the dropped languages, once, for the record
        result.curve[-1]["nll"].update(means(per_text(state["chosen"], others)))
    result.stopped = _why_stopped(settings, sources, tried, result, why)
    return result, body.group


def _step(step: int, batch: list, measured: tuple, saved: int) -> dict:
    """The curve's record of one batch made: its units, the kept languages' mean NLL, their
    mean relative change and its interval's upper end, and the parameters saved so far."""
    _, texts, rel, upper = measured
    units = [list(u) for move in batch for u in move]
    return {
        "step": step,
        "units": units,
        "nll": means(texts),
        "rel_kept": rel,
        "rel_kept_upper": upper,
        "parameters_saved": saved,
    }


def _room(settings, chosen: Chosen) -> int | None:
    return None if settings.units is None else settings.units - chosen.units()


def _why_stopped(settings, sources: dict, tried: set, result: PruneResult, why: str) -> str:
    if settings.units is not None:
        return (
            f"removed {len(result.removed)} of the {settings.units} units asked for (no further move of at most "
            f"{settings.units - len(result.removed)} candidates saves parameters; a query head alone goes only "
            "with one from each KV group of its layer, or with the rest of its group)"
            if len(result.removed) < settings.units
            else f"removed the {settings.units} units asked for"
        )
    ending = (
        f"stopped after {settings.patience} single moves were refused since the last batch of several was "
        "made (--patience)"
        if why == "patience"
        else f"tried every move of the candidates ({', '.join(NAMES[n] for n in sources)} that matter for "
        "no kept language)"
    )
    return (
        f"{ending}: {len(result.curve) - 1} batches of moves made ({len(result.removed)} units), {len(tried)} "
        f"moves not made because they could raise a kept language by more than {settings.max_increase:.2%} (the "
        "upper end of its 95% interval over the selection texts)"
    )


def _sources(model, runs: list, keep: list[str], drop: list[str]) -> dict[str, Source]:
    sources: dict[str, Source] = {}
    for run in runs:
        source = Source.of(model, run, keep, drop)
        if source.component.name in sources:
            raise LangheadsError(f"two scans of {NAMES[source.component.name]}; give one scan per component")
        sources[source.component.name] = source
    return sources


def check_runs(runs: list, settings) -> None:
    """What a walk across scans needs, refused before any model loads: one model, the same
    languages and texts (the selection texts are re-measured), one scan per component."""
    first = runs[0].info
    for run in runs[1:]:
        if run.info["model"]["sha256"] != first["model"]["sha256"]:
            raise LangheadsError(f"{run.folder} scanned another model than {runs[0].folder}")
        for key in ("data", "data_lang", "signal", "max_tokens", "seed"):
            if run.info["settings"].get(key) != first["settings"].get(key):
                raise LangheadsError(
                    f"{run.folder} and {runs[0].folder} differ in --{key.replace('_', '-')}: "
                    "a walk across scans re-measures one set of selection texts"
                )
    for run in runs:
        missing = [lang for lang in settings.keep if lang not in run.languages]
        if missing:
            raise LangheadsError(
                f"{run.folder} did not scan {','.join(missing)} (kept languages must be in every scan)"
            )
    names = [r.info.get("component", {}).get("name", "head") for r in runs]
    if len(set(names)) != len(names):
        raise LangheadsError("two scans of the same component; give one scan per component")
    adapter = REGISTRY.get(first["model"].get("architecture"))  # the family, from the scan: no model loaded yet
    removal = adapter.neuron_removal() if adapter else "any"  # unknown here: remove_neurons_ still refuses
    if set(names) - {"head"} and removal == "none":
        raise LangheadsError(f"{runs[0].folder}: {first['model']['architecture']}: {adapter.removal_note}")
