"""What every pruning walk shares, whatever it removes (heads or neuron groups): the dropped
languages, the candidates (units that matter for no kept language) in tiers and by harm to the
kept languages, the selection texts the walk re-measures on, and the walk's result."""

from __future__ import annotations

from dataclasses import dataclass, field

from .. import heads as H
from .. import nll
from ..corpus import scan_corpus
from ..errors import LangheadsError


@dataclass
class PruneResult:
    removed: list[tuple[int, int]]
    curve: list[dict] = field(default_factory=list)  # per step: head, NLL per language, rel per kept language
    rejected: list[dict] = field(default_factory=list)  # candidates that would have broken the budget
    stopped: str = ""


def dropped(settings, run) -> list[str]:
    """The dropped languages (given, or every other scanned one), the kept ones checked."""
    scanned = run.languages
    unknown = [lang for lang in settings.keep + (settings.drop or []) if lang not in scanned]
    if unknown:
        raise LangheadsError(f"not in the scan: {','.join(unknown)} (scanned: {','.join(scanned)})")
    if not settings.keep:
        raise LangheadsError("--keep needs at least one language")
    drop = settings.drop if settings.drop is not None else [l for l in scanned if l not in settings.keep]
    if set(drop) & set(settings.keep):
        raise LangheadsError("a language cannot be both kept and dropped")
    return drop


def ordered(tiers: dict, harm: dict) -> list[tuple[int, int]]:
    """Candidates by tier, then least harmful first."""
    return sorted(tiers, key=lambda h: (tiers[h], harm[h]))


def candidate_tiers(heads: list[dict], drop: list[str]) -> dict[tuple[int, int], int]:
    """Heads that matter for no kept language: 0 if they matter only for dropped languages,
    1 if they matter for none (miscellaneous)."""
    return {
        (h["layer"], h["head"]): 0 if h["languages"] else 1
        for h in heads
        if not h["languages"] or set(h["languages"]) <= set(drop)
    }


def head_harm(scores, keep: list[str]) -> dict[tuple[int, int], float]:
    """Per head: its largest relative NLL increase over the kept languages (the scan's)."""
    rel = scores[scores.language.isin(keep)].groupby(["layer", "head"])["rel_increase"].max()
    return {(int(l), int(h)): float(v) for (l, h), v in rel.items()}


def selection_tokens(loaded, info: dict, languages: list[str]) -> dict[str, list[list[int]]]:
    s = info["settings"]
    corpus = scan_corpus(s["data"], s.get("data_lang"), s.get("signal", "text"))  # the scan's own texts
    return {
        lang: nll.tokenize(
            loaded.tokenizer,
            [t.text for t in corpus.texts(lang, "selection")],
            s["max_tokens"],
            H.position_limit(loaded.model),
        )
        for lang in languages
    }


def moves(layout: H.HeadLayout, order: list[tuple[int, int]], removed: set) -> list[tuple[tuple[int, int], ...]]:
    """Every removal of candidate heads (of `order`, least harmful first) that saves query
    slots on top of `removed`: per layer, the rest of one KV group, or the k-th least harmful
    candidate of each of the widest groups."""
    out = []
    for layer in sorted({l for l, _ in order}):
        kept = [h for h in range(layout.n_heads) if (layer, h) not in removed]
        groups = {g: [h for h in kept if h // layout.group_size == g] for g in {h // layout.group_size for h in kept}}
        ours = {
            g: [h for l, h in order if l == layer and (l, h) not in removed and h // layout.group_size == g]
            for g in groups
        }
        out += [tuple((layer, h) for h in members) for g, members in groups.items() if set(members) <= set(ours[g])]
        width = max((len(v) for v in groups.values()), default=0)
        widest = [g for g in sorted(groups) if len(groups[g]) == width]
        for k in range(min((len(ours[g]) for g in widest), default=0)):
            out.append(tuple((layer, ours[g][k]) for g in widest))
    return list(dict.fromkeys(tuple(sorted(m)) for m in out))


def judged(before: dict, after: dict, budget: float) -> tuple[bool, dict[str, float], dict[str, float]]:
    """The walk's one acceptance rule: a removal keeps the budget when, for every kept language,
    the upper end of the paired 95% bootstrap interval of the relative NLL change over its
    selection texts stays within `budget`. The mean alone is not enough: the certificate judges
    the upper end of the same interval (on the report texts), and a walk that judges means
    fits its few selection texts, accepting removals that a few texts pay for heavily.
    before/after: per-text NLL by kept language. Returns (within, mean change, upper end)."""
    rel = {lang: float(after[lang].mean() / before[lang].mean() - 1) for lang in after}
    upper = {lang: upper_end(before[lang], after[lang]) for lang in after}
    return max(upper.values()) <= budget, rel, upper


def upper_end(before, after) -> float:
    """The upper end of the paired 95% bootstrap interval of the relative NLL change (400
    resamples, seed 0: the same texts give the same decision)."""
    from ..bootstrap import paired_interval

    return float(paired_interval(before, after, 0, 400)[1][1])


def means(per_text: dict) -> dict[str, float]:
    """Each language's mean NLL over its texts."""
    return {lang: float(v.mean()) for lang, v in per_text.items()}


def gallop(plan, judge, accept, reject, patience: int = 0, bar=None) -> str:
    """The one loop of every pruning walk: try the next `k` moves at once (planned in order as
    if each were made), keep them all when the kept languages stay within the budget and double
    `k`; otherwise halve `k` and try again from the same state, down to single moves, which are
    refused one at a time as the one-move walk refuses them. A batch is judged as a whole (its
    end state), so a batch may hold a move that a one-move walk, judging it alone at that point,
    would have refused; the end state always keeps the budget. Returns why it stopped: "moves"
    (none left) or "patience": `patience` single moves refused since the walk last made a batch
    of two or more (0: never). Near the budget the walk goes one move at a time, each a full
    measurement, and single moves made there (often ones that lower the selection texts' NLL by
    chance) do not reset the count.

    plan(k) -> up to k moves; judge(moves) -> (within budget, what was measured);
    accept(moves, measured); reject(move, measured)."""
    k, misses = 1, 0
    while batch := plan(k):
        ok, measured = judge(batch)
        if bar is not None:
            bar.update(1)
        if ok:
            accept(batch, measured)
            k, misses = 2 * len(batch), (0 if len(batch) > 1 else misses)
        elif len(batch) > 1:
            k = len(batch) // 2
        else:
            reject(batch[0], measured)
            misses += 1
            if patience and misses >= patience:
                return "patience"
    return "moves"
