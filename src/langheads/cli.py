"""The `langheads` command: each subcommand's options are generated from its settings dataclass
(options.py), and each `cmd_*` parses, calls one library entry (api.py) and prints."""

from __future__ import annotations

import argparse
import contextlib
import errno
import sys
import time
from pathlib import Path

from .builtin import MODEL_HELP
from .errors import LangheadsError, SafeStream, printable, terminal_safe
from .options import add_options


def cmd_info(args) -> None:
    from .archs import FAMILIES, VARIANTS, adapter_for
    from .heads import decoder_layers, head_layout, parameters
    from .models import load_model

    if args.model is None:
        from .builtin import describe

        print("built-in models (--model NAME; fetched from PyPI packages on first use):")
        print("\n".join("  " + line for line in describe()) + "\n")
        print(f"{'family':22} {'model_type':22} {'physical pruning':18} GGUF export (llama.cpp graph; uneven heads)")
        for a in FAMILIES + VARIANTS:
            exact = "exact" if a.pruning_exact else f"refused: {a.pruning_note}"
            export = (
                "-"
                if a.gguf is None
                else a.gguf.arch + ("; uneven heads via deci" if a.gguf.deci else "; the same heads in every layer")
            )
            note = f" ({a.gguf_note})" if a.gguf_note else ""
            print(f"{a.family:22} {','.join(a.model_types):22} {exact:18} {export}{note}")
        return
    loaded = load_model(args.model)
    layout = head_layout(loaded.model)
    adapter = adapter_for(loaded.model)
    params = parameters(loaded.model)
    print(f"model          {loaded.model_id}")
    print(f"architecture   {layout.model_type}")
    print(f"layers         {layout.n_layers}")
    print(f"query heads    {layout.n_heads} per layer ({layout.n_total} in all)")
    print(f"KV heads       {layout.n_kv_heads} per layer (query head h reads KV head h // {layout.group_size})")
    print(f"head size      {layout.head_dim}")
    print(
        f"family         {adapter.family} (physical pruning {'exact' if adapter.pruning_exact else 'refused'}; "
        f"GGUF export {'as ' + adapter.gguf.arch if adapter.gguf else 'not supported'})"
    )
    if loaded.manifest is not None and loaded.manifest.needs_replay():
        from .deploy.export import layer_heads, layer_widths

        widths = layer_widths(loaded.model) or [None] * layout.n_layers
        shapes = ", ".join(
            f"L{i} " + ("no attention" if c is None else f"{c[0]}q/{c[1]}kv") + ("" if w is None else f" mlp {w}")
            for i, (c, w) in enumerate(zip(layer_heads(loaded.model), widths))
        )
        print(f"per layer      {shapes} (as pruned; the config keeps the original counts)")
    print(f"parameters     {params:,}")
    kv = adapter.kv_bytes_per_token(loaded.model, layout, decoder_layers(loaded.model))
    print(f"KV cache       {kv:,} bytes per token ({loaded.model.dtype})")
    print(f"sha256         {loaded.model_hash}")


def cmd_languages(args) -> None:
    from .corpus import UDHR_VARIANTS, load_corpus, split_of

    corpus = load_corpus(args.data)
    for lang in corpus.languages:
        texts = corpus.texts(lang)
        parts = [sum(split_of(t.id) == p for t in texts) for p in ("scoring", "selection", "report")]
        variant = f"udhr:{UDHR_VARIANTS[lang]}" if args.data is None else ""
        print(f"{lang:6} {len(texts):4} texts (scoring {parts[0]}, selection {parts[1]}, report {parts[2]}) {variant}")


def cmd_cache(args) -> None:
    from .models import cache_dir, clear_cache, list_cache

    if args.action == "clear":
        print(f"removed {clear_cache()} converted model(s) from {cache_dir()}")
        return
    rows = list_cache()
    print(f"cache: {cache_dir()}" + ("" if rows else " (empty)"))
    for folder, size, source in rows:
        print(f"  {folder.name}  {size / 2**20:8.1f} MiB  from {source}")


def cmd_scan(args) -> None:
    from . import api, runs
    from .options import from_args
    from .scanning.settings import ScanSettings

    if args.ranks is not None and args.ranks < 1:
        raise LangheadsError(f"--ranks must be a whole number >= 1, not {args.ranks}")
    if args.fdr is not None and args.rule not in ("interval", "fdr"):
        raise LangheadsError(f"--fdr is a rule of its own; it cannot go with --rule {args.rule}")
    settings = from_args(
        ScanSettings,
        args,
        rule="fdr" if args.fdr is not None else args.rule,
        fdr=0.05 if args.fdr is None else args.fdr,
    )
    if args.dry_run:
        import os

        print(api.plan(settings, args.ranks or int(os.environ.get("WORLD_SIZE", "1"))), file=sys.stderr)
        return
    start = time.perf_counter()
    result = api.scan(
        settings,
        args.out,
        store=args.store,
        overwrite=args.overwrite,
        progress=not args.quiet,
        announce=lambda text: print(terminal_safe(text), file=sys.stderr),
    )
    if result is None:  # not rank 0: its units are in the store
        return
    from .scanning.store import store_dir

    store = Path(args.store).resolve() if args.store else store_dir(Path(args.out))
    print(runs.summary(result))
    print(
        f"wrote {args.out}/ (scores.csv, per_text.parquet, run.json, heatmap.png) in "
        f"{time.perf_counter() - start:.0f} s; finished units stay in {store} for rescans with other "
        "thresholds, rules or languages"
    )


def cmd_report(args) -> None:
    from . import api
    from .options import from_args
    from .reporting.report import ReportSettings

    out = api.report(from_args(ReportSettings, args), args.out, args.overwrite)
    print(f"wrote {out}/report.html (one self-contained page) and {out}/figures/ (PNG and SVG)")


def cmd_compare(args) -> None:
    from .reporting.compare import compare_runs, mean_spearman

    table = compare_runs(args.run_a, args.run_b, args.top)
    print(f"A = {args.run_a}, B = {args.run_b}: Spearman rank correlation of head scores, top-{args.top} overlap")
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print(mean_spearman(table))
    only = [
        f"{side} only: {','.join(langs)}"
        for side, langs in (
            ("A", sorted(set(table.attrs["languages_a"]) - set(table.language))),
            ("B", sorted(set(table.attrs["languages_b"]) - set(table.language))),
        )
        if langs
    ]
    if only:
        print("not compared (in one run only): " + "; ".join(only))


def cmd_prune(args) -> None:
    from . import api
    from .edit.pruning import PruneSettings
    from .edit.savings import describe
    from .manifest import read_manifest
    from .options import from_args
    from .units import of_pruning

    result, record = api.prune(from_args(PruneSettings, args), Path(args.out), args.overwrite, progress=not args.quiet)
    last = result.curve[-1]
    print(describe(record))
    if result.removed:
        print("in the order chosen: " + " ".join(of_pruning(u, record["neurons_per_group"]) for u in result.removed))
    print(f"stopped: {result.stopped}")
    print(
        "selection-text NLL change: "
        + ", ".join(f"{lang} {last['nll'][lang] / result.curve[0]['nll'][lang] - 1:+.2%}" for lang in last["nll"])
    )
    print(f"kept {','.join(record['kept'])}; dropped {','.join(record['dropped'])}; wrote {args.out}/")
    vocab_record = read_manifest(args.out).records.get("trim_vocab")
    if vocab_record:
        print(_describe_vocab(vocab_record))


def _describe_vocab(record: dict) -> str:
    scripts = "; ".join(
        f"{lang}: " + ", ".join(f"{s.lower()} {v:.0%}" for s, v in shares.items())
        for lang, shares in record["scripts"].items()
    )
    return (
        f"vocabulary {record['original_size']:,} -> {record['kept']:,} tokens "
        f"({record['kept'] / record['original_size']:.2f}x; {record['mode']}"
        + (f", rarity from {record['rarity']}" if record["rarity"] else "")
        + f"); scripts kept: {scripts}"
    )


def cmd_trim(args) -> None:
    from . import api
    from .edit.vocab import TrimSettings
    from .options import from_args

    choice = api.trim(from_args(TrimSettings, args), Path(args.out), args.overwrite)
    print(_describe_vocab(choice.record()))
    print("kept because: " + ", ".join(f"{k} {v:,}" for k, v in choice.reasons.items()))
    print(f"wrote {args.out}/")


def cmd_heal(args) -> None:
    from . import api
    from .edit.heal import HealSettings
    from .options import from_args

    done = api.heal(from_args(HealSettings, args), Path(args.out), args.overwrite, progress=not args.quiet)
    print(
        f"healed {done['steps']} steps on {done['texts']} texts: distillation loss (KL to the original) "
        f"{done['loss_before']:.4f} -> {done['loss_after']:.4f}; wrote {args.out}/"
    )


def cmd_export(args) -> None:
    from . import api
    from .deploy.export import ExportSettings
    from .options import from_args

    done = api.export(from_args(ExportSettings, args), args.overwrite)
    print(f"wrote {done['path']} ({done['bytes'] / 2**20:.1f} MiB, {done['type']})")
    print("tensor types: " + ", ".join(f"{k} {v}" for k, v in sorted(done["tensor_types"].items())))
    if done.get("not_256_wide"):
        print(
            f"note: {done['not_256_wide']} matrices have rows no multiple of 256 wide, which no K-quant type "
            "holds: llama.cpp wrote them in other types (Q5_0, Q8_0). Prunings keep K-quant widths with "
            "neuron groups of 256 (scan --neuron-group 256)"
        )
    if "transformers" in done:
        gap = done["transformers"]
        print(
            f"transformers' GGUF reader: largest logit gap {gap['max_rel_logit_gap']:.2e} x the largest logit; "
            f"same tokens on all {gap['texts']} texts: {gap['same_tokens']}"
        )
    if "llama_cpp" in done:
        gap = done["llama_cpp"]
        print(
            f"llama.cpp: next-token log-probability gap {gap['mean_logprob_gap']:.2e} on average, "
            f"{gap['max_logprob_gap']:.2e} at most, over {gap['tokens']} predicted tokens; same tokens on "
            f"{gap['same_tokens']} of {gap['texts']} texts"
        )
    for line in done.get("verdicts", []):
        print(line)


def cmd_evaluate(args) -> None:
    from . import api
    from .evaluation.certificate import describe
    from .evaluation.run import EvaluateSettings
    from .options import from_args

    settings = from_args(EvaluateSettings, args)
    result = api.evaluate(settings, Path(args.out), args.overwrite)
    what = f"{result['model']}{' masked ' + settings.mask if settings.heads else ''} vs {settings.baseline}"
    print(
        {
            "lm-eval": "lm-evaluation-harness: ",
            "qa": f"report items of {settings.qa}: ",
            "nll": "report texts (never used to choose): ",
        }[settings.kind]
        + what
    )
    for line in _PRINT[settings.kind](result):
        print(line)
    if settings.kind != "lm-eval":
        print(
            describe(result["certificate"])
            if "certificate" in result
            else "certificate: none (give --keep; the model folder records no kept languages)"
        )
    print(f"wrote {args.out}/ (eval.csv, eval.json" + (")" if settings.kind == "lm-eval" else ", generations.jsonl)"))


def _lm_eval_lines(result: dict):
    for r in result["table"].itertuples():
        yield (
            f"{r.task:24} {r.metric:10} {r.before:.3f} -> {r.after:.3f} ({r.change:+.3f}, 95% CI "
            f"{r.ci_low:+.3f} .. {r.ci_high:+.3f}; {r.items} documents)"
        )


def _qa_lines(result: dict):
    for r in result["table"].itertuples():
        extra = f"; {int(r.unparsed)} replies without a verdict" if r.metric == "judge_1to5" else ""
        yield (
            f"{r.language:4} {r.metric:16} {r.before:.3f} -> {r.after:.3f} ({r.change:+.3f}, 95% CI "
            f"{r.ci_low:+.3f} .. {r.ci_high:+.3f}; {r.items} items{extra})"
        )
    if result["judge"]:
        j = result["judge"]
        yield (
            f"judge {j['model']} at {j['url']}: {j['sent']} requests, {j['retried']} retried, {j['cached']} "
            f"from the cache ({j['cache']})"
        )


def _nll_lines(result: dict):
    for r in result["table"].itertuples():
        yield (
            f"{r.language:4} NLL {r.nll_before:.3f} -> {r.nll_after:.3f} ({r.rel_change:+.2%}, 95% CI "
            f"{r.rel_ci_low:+.2%} .. {r.rel_ci_high:+.2%}); per byte {r.nll_per_byte_before:.4f} -> "
            f"{r.nll_per_byte_after:.4f} ({r.per_byte_rel_change:+.2%}, CI {r.per_byte_rel_ci_low:+.2%} .. "
            f"{r.per_byte_rel_ci_high:+.2%}); generations in {r.language}: {r.same_language_before:.0%} -> "
            f"{r.same_language_after:.0%}"
        )


_PRINT = {"lm-eval": _lm_eval_lines, "qa": _qa_lines, "nll": _nll_lines}


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a bad argument is one line (the usage is one `--help` away), exit code 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="langheads", description="Which attention heads serve which language?")
    sub = p.add_subparsers(dest="command", required=True)
    _small_commands(sub)
    for name, settings, writes, extra in _COMMANDS:
        s = sub.add_parser(name, help=_HELP[name])
        add_options(s, _settings(settings))
        if writes:
            s.add_argument("--out", required=True, help=writes)
        extra(s)
        s.add_argument("--overwrite", action="store_true", help="replace an existing output of the same kind")
        s.set_defaults(run=globals()[f"cmd_{name}"])
    s = sub.add_parser("compare", help="rank agreement of two runs' head scores, per language")
    s.add_argument("run_a")
    s.add_argument("run_b")
    s.add_argument("--top", type=int, default=10, help="size of the top set whose overlap is shown")
    s.set_defaults(run=cmd_compare)
    return p


def _small_commands(sub) -> None:
    s = sub.add_parser(
        "info",
        help="a model's layers, heads and head size; without a model, the built-in models and the supported families",
    )
    s.add_argument("model", nargs="?", help=MODEL_HELP)
    s.set_defaults(run=cmd_info)
    s = sub.add_parser("languages", help="list the languages in the bundled corpus (or --data)")
    s.add_argument("--data", help="a folder of <lang>.txt files or a JSONL file with lang and text")
    s.set_defaults(run=cmd_languages)
    s = sub.add_parser("cache", help="list or clear the converted-model cache")
    s.add_argument("action", choices=["list", "clear"], nargs="?", default="list")
    s.set_defaults(run=cmd_cache)


def _scan_extra(s) -> None:
    s.add_argument(
        "--fdr",
        type=float,
        metavar="Q",
        help="rule fdr: Benjamini-Hochberg at false discovery rate Q over all head-language pairs",
    )
    s.add_argument(
        "--store",
        help="where finished units are kept (default: OUT.units); another run's store is "
        "reused when model, corpus, method and text settings match",
    )
    s.add_argument(
        "--dry-run", action="store_true", help="print the work units, time and memory per process, then stop"
    )
    s.add_argument(
        "--ranks", type=int, help="with --dry-run: how many processes to plan for (default: $WORLD_SIZE or 1)"
    )
    _quiet(s)


def _quiet(s) -> None:
    s.add_argument("--quiet", action="store_true", help="no progress bar")


def _settings(dotted: str):
    import importlib

    module, name = dotted.rsplit(".", 1)
    return getattr(importlib.import_module(module, __package__), name)


# name, settings dataclass, what --out is (None: the command writes no folder), extra CLI-only options
_COMMANDS = [
    ("scan", ".scanning.settings.ScanSettings", "run folder to create", _scan_extra),
    ("prune", ".edit.pruning.PruneSettings", "model folder to write", _quiet),
    ("trim", ".edit.vocab.TrimSettings", "model folder to write", lambda s: None),
    ("export", ".deploy.export.ExportSettings", None, lambda s: None),
    ("heal", ".edit.heal.HealSettings", "model folder to write", _quiet),
    ("evaluate", ".evaluation.run.EvaluateSettings", "evaluation folder to create", lambda s: None),
    ("report", ".reporting.report.ReportSettings", "report folder to create", lambda s: None),
]
_HELP = {
    "scan": "score every head for every language and sort heads into kinds",
    "prune": "remove the heads the kept languages do not need and save the smaller model",
    "trim": "keep only the vocabulary the kept languages use (model and tokenizer together)",
    "export": "write a model folder as GGUF for llama.cpp",
    "heal": "distil an edited model towards the original on kept-language text (optional recovery)",
    "evaluate": "before/after on the report texts: NLL with intervals, generation check",
    "report": "one self-contained HTML page of a run (and a pruned model, an evaluation, a second run)",
}


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:  # --help, or a bad argument already reported in one line
        return int(e.code or 0)
    try:
        with contextlib.redirect_stdout(SafeStream(sys.stdout)):  # names from models and data reach it
            args.run(args)
    except LangheadsError as e:
        print(f"langheads: error: {printable(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("langheads: interrupted; finished work is kept, and the same command resumes it", file=sys.stderr)
        return 130
    except OSError as e:
        if e.errno not in _DISK_ERRORS:
            raise
        where = f" writing {e.filename}" if e.filename else ""
        print(
            f"langheads: error: {printable(e.strerror or e)}{printable(where)}; nothing half-written was left, "
            "and finished work is kept: free space (or fix permissions) and run the same command again",
            file=sys.stderr,
        )
        return 2
    return 0


# What the disk (not langheads) refused: said in one line, like bad input.
_DISK_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EFBIG}


if __name__ == "__main__":
    sys.exit(main())
