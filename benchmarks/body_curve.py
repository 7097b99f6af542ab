"""The body curve (not a test): parameters removed from the transformer body against the kept
languages' NLL per byte on the report texts, for heads only, neuron groups only, whole blocks
only, and all three together.

Each series removes units in one order, fixed before any measurement: the scans' harm to the
kept languages (their largest relative rise on the scoring texts, below zero counted as zero)
per parameter the saved model would lose (edit.walk.Body counts it: padding, whole KV
groups, layers that leave the stack). At each checkpoint (a share of the body's parameters)
the report texts are scored with everything chosen so far masked, which equals the pruned
model (tests/test_walk.py). Nothing here re-measures on the report texts to choose:
the curve is what the scans' ranking buys; `--save SERIES SHARE DIR` writes the pruned model of one point instead (for
`langheads heal` and `langheads evaluate`).

    python benchmarks/body_curve.py --scan H --scan N --scan B --keep en,hi
    python benchmarks/body_curve.py --scan H --scan N --scan B --save neuron 0.10 /tmp/n10
    python benchmarks/body_curve.py --scan N --save-uniform 8 /tmp/u8   # 8 groups from every layer

`--save-uniform K DIR` writes the model without each layer's K least harmful neuron groups (by
the neuron scan): one MLP width, so llama.cpp's own graph for the family runs it.

`--on DIR` masks and scores another folder with the same body (the scans' model after
`langheads trim --max-vocab`): each point is then the trim and the body cut together.
`--baseline MODEL` is what the points are relative to (default: the scans' model; give the
untrimmed original when the scans were made on a trimmed folder). NLL per byte does not depend
on the tokenizer. `--series` and `--shares` pick the series and the checkpoints (shares of the
body), for a close look near a budget:

    python benchmarks/body_curve.py --scan N --on /tmp/v58 --series neuron --shares 0.02,0.03,0.034,0.04
    python benchmarks/body_curve.py --scan N58 --baseline default --series neuron   # N58 scanned /tmp/v58
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

SHARES = (0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.10, 0.15, 0.20, 0.30)


def orders(body, sources: dict) -> dict[str, list[tuple]]:
    """Per series, the units in the order they are removed (least harm per parameter first)."""
    from langheads.edit.walk import Chosen

    ranked = {}
    for name, source in sources.items():

        def cost(unit, name=name, source=source):
            gain = body.saved(Chosen().plus([(name, *unit)]))
            return max(source.harm[unit], 0.0) / gain if gain > 0 else float("inf")

        ranked[name] = sorted(((cost(u), (name, *u)) for u in source.harm), key=lambda x: x[0])
    series = {name: [u for _, u in r] for name, r in ranked.items()}
    series["all"] = [u for _, u in sorted((x for r in ranked.values() for x in r), key=lambda x: x[0])]
    return series


def report_losses(loaded, texts: dict, body, chosen, components) -> dict[str, float]:
    from langheads.evaluation.evaluate import text_losses

    with body.masked(chosen, components):
        return {lang: float(text_losses(loaded, t).per_byte.mean()) for lang, t in texts.items()}


def walk_series(loaded, texts, body, components, order, total: int, base: dict, shares=SHARES) -> list[dict]:
    """Remove units in `order`; score at each checkpoint share of the body's parameters."""
    from langheads.edit.walk import Chosen

    chosen, points, shares = Chosen(), [], sorted(shares)
    for unit in order:
        if not shares:
            break
        trial = chosen.plus([unit])
        if _empties_a_layer(trial, components):
            continue
        chosen = trial
        saved = body.saved(chosen)
        if saved >= shares[0] * total:
            while shares and saved >= shares[0] * total:
                shares.pop(0)
            nll = report_losses(loaded, texts, body, chosen, components)
            points.append(
                {
                    "saved": saved,
                    "share": saved / total,
                    "units": chosen.units(),
                    "rel": {l: nll[l] / base[l] - 1 for l in nll},
                }
            )
    return points


def chosen_at(body, components, order, share: float, total: int):
    """The units of one series up to `share` of the body's parameters (as walk_series takes them)."""
    from langheads.edit.walk import Chosen

    chosen = Chosen()
    for unit in order:
        trial = chosen.plus([unit])
        if not _empties_a_layer(trial, components):
            chosen = trial
        if body.saved(chosen) >= share * total:
            break
    return chosen


def uniform_groups(source, k: int):
    """Each layer's k least harmful neuron groups (by the scan's harm to the kept languages)."""
    from langheads.edit.walk import Chosen

    by_layer: dict[int, list] = {}
    for (l, g), _harm in sorted(source.harm.items(), key=lambda x: x[1]):
        by_layer.setdefault(l, []).append(g)
    return Chosen(groups={(l, g) for l, gs in by_layer.items() for g in gs[:k]})


def _body_shapes(model) -> list[tuple]:
    from langheads.heads import decoder_layers

    return [(n, tuple(p.shape)) for n, p in decoder_layers(model).named_parameters()]


def _empties_a_layer(chosen, components) -> bool:
    """A neuron series keeps one group per layer (a whole MLP is the block series' unit)."""
    if "neuron" not in components:
        return False
    groups = components["neuron"].layout.n_heads
    per_layer = {}
    for l, _ in chosen.groups:
        per_layer[l] = per_layer.get(l, 0) + 1
    return any(n >= groups for n in per_layer.values())


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scan", action="append", required=True, help="a head, neuron or block scan of the model")
    p.add_argument("--keep", default="en,hi")
    p.add_argument("--out", type=Path, help="also write the points as JSON here")
    p.add_argument("--save", nargs=3, metavar=("SERIES", "SHARE", "DIR"), help="write one point's pruned model")
    p.add_argument("--save-uniform", nargs=2, metavar=("K", "DIR"), help="write the model without K groups per layer")
    p.add_argument("--on", help="mask and score this folder (the scans' model, vocabulary trimmed: the same body)")
    p.add_argument("--baseline", help="what the points are relative to (default: the scans' model)")
    p.add_argument(
        "--series", type=_series, help="comma-separated series to walk (head, neuron, block, all; default every one)"
    )
    p.add_argument(
        "--shares",
        type=_shares,
        default=SHARES,
        help="comma-separated shares of the body to score at (default " + ",".join(map(str, SHARES)) + ")",
    )
    return p.parse_args()


def _series(text: str) -> list[str]:
    names = text.split(",")
    unknown = [n for n in names if n not in ("head", "neuron", "block", "all")]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown series {','.join(unknown)} (head, neuron, block, all)")
    return names


def _shares(text: str) -> list[float]:
    try:
        shares = [float(x) for x in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: comma-separated numbers, e.g. 0.01,0.05") from None
    if not all(0 < x <= 1 for x in shares):
        raise argparse.ArgumentTypeError(f"{text!r}: shares of the body lie in (0, 1]")
    return shares


def load_models(runs, on: str | None, baseline: str | None):
    """(the model to cut and score, the baseline), each with the scanned model's body."""
    import langheads

    scanned = langheads.load_model(runs[0].info["settings"]["model"])
    loaded = langheads.load_model(on) if on else scanned
    original = langheads.load_model(baseline) if baseline else scanned
    for other, name in ((loaded, on), (original, baseline)):
        if other is not scanned and _body_shapes(other.model) != _body_shapes(scanned.model):
            raise SystemExit(f"{name}: its transformer body is not the scanned model's")
    return loaded, original


def save_point(args, loaded, body, components, sources, keep, total) -> None:
    """Write the pruned model of one point (--save) or of K groups per layer (--save-uniform)."""
    from langheads.edit.pruning import save
    from langheads.edit.walk import as_removal

    if args.save:
        series, share, folder = args.save
        chosen = chosen_at(body, components, orders(body, sources)[series], float(share), total)
        note = f"body_curve.py: {series} series at {float(share):.1%} of the body"
    else:
        k, folder = args.save_uniform
        chosen = uniform_groups(sources["neuron"], int(k))
        note = f"body_curve.py: {k} neuron groups from every layer"
    heads, neurons, blocks = as_removal(chosen.as_units(), body.group)
    save(loaded, Path(folder), {"kept": keep, "note": note}, heads=heads, neurons=neurons, blocks=blocks)
    print(f"wrote {folder}: {chosen.units()} units, {body.saved(chosen):,} parameters")


def print_series(name: str, seconds: float, points: list[dict], keep, kept_params: int, base_params: int) -> None:
    print(
        f"\n{name} ({seconds:.0f} s)\n  body share removed | parameters | units | model / baseline | "
        + " | ".join(f"{l} NLL/byte" for l in keep)
    )
    for pt in points:
        left = (kept_params - pt["saved"]) / base_params
        print(
            f"  {pt['share']:6.1%} | {pt['saved']:>11,} | {pt['units']:>4} | {left:.4f}x | "
            + " | ".join(f"{pt['rel'][l]:+7.2%}" for l in keep)
        )


def main() -> None:
    from langheads.corpus import load_corpus
    from langheads.edit.walk import Body, Chosen, _sources
    from langheads.evaluation.evaluate import text_losses
    from langheads.heads import decoder_layers, parameters
    from langheads.runs import read_run

    args = parse_args()
    keep = args.keep.split(",")
    runs = [read_run(s) for s in args.scan]
    loaded, original = load_models(runs, args.on, args.baseline)
    sources = _sources(loaded.model, runs, keep, [])
    components = {n: s.component for n, s in sources.items()}
    body = Body(loaded.model, components["neuron"].group if "neuron" in components else 64)
    total = parameters(decoder_layers(loaded.model))
    if args.save or args.save_uniform:
        return save_point(args, loaded, body, components, sources, keep, total)
    corpus = load_corpus(runs[0].info["settings"]["data"])
    texts = {lang: [t.text for t in corpus.texts(lang, "report")] for lang in keep}
    base = {lang: float(text_losses(original, t).per_byte.mean()) for lang, t in texts.items()}
    separate = loaded is not original  # the cut model is not the baseline (e.g. its vocabulary is trimmed)
    before_cut = report_losses(loaded, texts, body, Chosen(), components) if separate else base
    print(
        f"body: {total:,} parameters of {parameters(loaded.model):,}"
        + (f" (the baseline has {parameters(original.model):,})" if separate else "")
        + f"; report texts: {', '.join(f'{l} {len(t)}' for l, t in texts.items())}; base NLL/byte "
        + ", ".join(f"{l} {v:.4f}" for l, v in base.items())
        + (
            "; before any body cut " + ", ".join(f"{l} {before_cut[l] / base[l] - 1:+.2%}" for l in keep)
            if separate
            else ""
        )
    )
    curves = {}
    for name, order in orders(body, sources).items():
        if args.series and name not in args.series:
            continue
        start = time.perf_counter()
        curves[name] = walk_series(loaded, texts, body, components, order, total, base, args.shares)
        print_series(
            name, time.perf_counter() - start, curves[name], keep, parameters(loaded.model), parameters(original.model)
        )
    if args.out:
        args.out.write_text(json.dumps({"total_body": total, "base": base, "curves": curves}, indent=1))


if __name__ == "__main__":
    main()
