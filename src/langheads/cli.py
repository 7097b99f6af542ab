"""The `langheads` command: small subcommands over the library."""
from __future__ import annotations

import argparse
import errno
import sys
import time
from pathlib import Path

from .errors import LangheadsError, printable
from .options import comma_list


_langs = comma_list  # every language list on the command line: 'en, hi,fr' -> ['en', 'hi', 'fr']


def cmd_info(args) -> None:
    from .archs import FAMILIES, VARIANTS, adapter_for
    from .heads import decoder_layers, head_layout
    from .models import load_model

    if args.model is None:
        print(f"{'family':22} {'model_type':22} {'physical pruning':18} GGUF export (llama.cpp graph; uneven heads)")
        for a in FAMILIES + VARIANTS:
            exact = "exact" if a.pruning_exact else f"refused: {a.pruning_note}"
            export = "-" if a.gguf is None else a.gguf.arch + ("; uneven heads via deci" if a.gguf.deci else
                                                              "; the same heads in every layer")
            note = f" ({a.gguf_note})" if a.gguf_note else ""
            print(f"{a.family:22} {','.join(a.model_types):22} {exact:18} {export}{note}")
        return
    loaded = load_model(args.model)
    layout = head_layout(loaded.model)
    adapter = adapter_for(loaded.model)
    params = sum(p.numel() for p in loaded.model.parameters())
    print(f"model          {loaded.model_id}")
    print(f"architecture   {layout.model_type}")
    print(f"layers         {layout.n_layers}")
    print(f"query heads    {layout.n_heads} per layer ({layout.n_total} in all)")
    print(f"KV heads       {layout.n_kv_heads} per layer (query head h reads KV head h // {layout.group_size})")
    print(f"head size      {layout.head_dim}")
    print(f"family         {adapter.family} (physical pruning {'exact' if adapter.pruning_exact else 'refused'}; "
          f"GGUF export {'as ' + adapter.gguf.arch if adapter.gguf else 'not supported'})")
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
    from .scanning.distributed import Ranks
    from .folders import check_out_dir, writing
    from .scanning.scan import resolve_device

    if args.dry_run:
        return _scan(args, Ranks())
    ranks = Ranks.from_env(resolve_device(args.device))  # under torchrun: join the other processes
    try:
        if not ranks.main:  # rank 0 holds the lock and writes the run folder
            return _scan(args, ranks)
        check_out_dir(Path(args.out), args.overwrite, "run")  # before the lock, whose file sits beside it
        with writing(Path(args.out), "run folder"):
            _scan(args, ranks)
    finally:
        ranks.close()


def _scan(args, ranks) -> None:
    import os

    from . import runs
    from .folders import check_out_dir
    from .options import from_args
    from .scanning.scan import ScanSettings, check_memory, describe_plan, open_store, plan_scan, run_scan
    from .scanning.store import store_dir

    out = Path(args.out)
    if not args.dry_run and ranks.main:
        check_out_dir(out, args.overwrite, "run")
    if args.store:
        from .folders import check_makeable

        check_makeable(Path(args.store), "--store")
    if args.ranks is not None and args.ranks < 1:
        raise LangheadsError(f"--ranks must be a whole number >= 1, not {args.ranks}")
    if args.fdr is not None and args.rule not in ("interval", "fdr"):
        raise LangheadsError(f"--fdr is a rule of its own; it cannot go with --rule {args.rule}")
    settings = from_args(ScanSettings, args, rule="fdr" if args.fdr is not None else args.rule,
                         fdr=0.05 if args.fdr is None else args.fdr)
    plan = plan_scan(settings, ranks=ranks)
    store = Path(args.store).resolve() if args.store else store_dir(out)
    if not args.dry_run:  # before anything is printed: a refusal is one line
        check_memory(plan)
        if ranks.main:
            open_store(plan, store, args.overwrite)
    if ranks.main:
        n_ranks = args.ranks or int(os.environ.get("WORLD_SIZE", "1"))
        print(describe_plan(plan, n_ranks), file=sys.stderr)
    if args.dry_run:
        return
    start = time.perf_counter()
    result = run_scan(plan, store, progress=not args.quiet, overwrite=args.overwrite, ranks=ranks)
    if result is None:  # not rank 0: its units are in the store
        return
    runs.write_run(result, out, args.overwrite)
    print(runs.summary(result))
    print(f"wrote {out}/ (scores.csv, per_text.parquet, heads.json, heatmap.png) in {time.perf_counter() - start:.0f} s;"
          f" finished units stay in {store} for rescans with other thresholds, rules or languages")


def cmd_report(args) -> None:
    from .folders import check_out_dir, writing
    from .reporting.report import write_report

    out = Path(args.out)
    check_out_dir(out, args.overwrite, "report")
    with writing(out, "report folder"):
        write_report(args.run_dir, out, args.prune, args.eval, args.compare, args.overwrite)
    print(f"wrote {out}/report.html (one self-contained page) and {out}/figures/ (PNG and SVG)")


def cmd_compare(args) -> None:
    from .reporting.compare import compare_runs, mean_spearman

    table = compare_runs(args.run_a, args.run_b, args.top)
    print(f"A = {args.run_a}, B = {args.run_b}: Spearman rank correlation of head scores, top-{args.top} overlap")
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print(mean_spearman(table))
    only = [f"{side} only: {','.join(langs)}" for side, langs in (
        ("A", sorted(set(table.attrs["languages_a"]) - set(table.language))),
        ("B", sorted(set(table.attrs["languages_b"]) - set(table.language)))) if langs]
    if only:
        print("not compared (in one run only): " + "; ".join(only))


def cmd_prune(args) -> None:
    from .options import from_args
    from .edit.pruning import PruneSettings, prune

    settings = from_args(PruneSettings, args)
    result, record = prune(settings, Path(args.out), args.overwrite, progress=not args.quiet)
    from .edit.savings import describe

    last = result.curve[-1]
    print(f"removed {len(result.removed)} heads: " + " ".join(f"L{l}H{h}" for l, h in result.removed))
    print(describe(record["saved"]))
    print(f"stopped: {result.stopped}")
    print("selection-text NLL change: " + ", ".join(
        f"{lang} {last['nll'][lang] / result.curve[0]['nll'][lang] - 1:+.2%}" for lang in last["nll"]))
    print(f"kept {','.join(record['kept'])}; dropped {','.join(record['dropped'])}; wrote {args.out}/")
    from .manifest import read_manifest

    vocab_record = read_manifest(args.out).records.get("trim_vocab")
    if vocab_record:
        print(_describe_vocab(vocab_record))


def _describe_vocab(record: dict) -> str:
    scripts = "; ".join(f"{lang}: " + ", ".join(f"{s.lower()} {v:.0%}" for s, v in shares.items())
                        for lang, shares in record["scripts"].items())
    return (f"vocabulary {record['original_size']:,} -> {record['kept']:,} tokens "
            f"({record['kept'] / record['original_size']:.2f}x; {record['mode']}"
            + (f", rarity from {record['rarity']}" if record["rarity"] else "") + f"); scripts kept: {scripts}")


def cmd_trim(args) -> None:
    from .options import from_args
    from .edit.vocab import TrimSettings, trim

    settings = from_args(TrimSettings, args)
    choice = trim(settings, Path(args.out), args.overwrite)
    print(_describe_vocab(choice.record()))
    print("kept because: " + ", ".join(f"{k} {v:,}" for k, v in choice.reasons.items()))
    print(f"wrote {args.out}/")


def cmd_export(args) -> None:
    from .deploy.export import check_type, export_gguf, llama_cpp_gap, transformers_gap
    from .models import load_model

    out = Path(args.gguf)
    if out.suffix != ".gguf":
        raise LangheadsError(f"--gguf must name a .gguf file, not {args.gguf}")
    from .folders import check_out_file

    check_out_file(out, args.overwrite, "--gguf")
    check_type(args.type)
    if args.pre is not None:
        from .deploy.gguf_vocab import check_pre

        check_pre(args.pre)
    if args.llama_cpp and not args.check:
        raise LangheadsError("--llama-cpp is a kind of --check: give --check LANGS too")
    texts = []
    if args.check:  # read before the model loads: a missing language is refused at once
        from .corpus import load_corpus

        corpus = load_corpus(args.data)
        texts = [t.text for lang in _langs(args.check) for t in corpus.texts(lang, "report")]
        if args.llama_cpp:
            import importlib.util

            if importlib.util.find_spec("llama_cpp") is None:
                raise LangheadsError("--llama-cpp needs llama-cpp-python: pip install 'langheads[llamacpp]'")
    loaded = load_model(args.model)
    loaded.require_plain("GGUF export")
    export_gguf(loaded, out, args.type, args.overwrite, pre=args.pre)
    print(f"wrote {out} ({out.stat().st_size / 2**20:.1f} MiB, {args.type})")
    if args.check:
        gap = transformers_gap(loaded, out, texts)
        print(f"transformers' GGUF reader: largest logit gap {gap['max_rel_logit_gap']:.2e} x the largest logit; "
              f"same tokens on all {gap['texts']} texts: {gap['same_tokens']}")
        if args.llama_cpp:
            gap = llama_cpp_gap(loaded, out, texts)
            print(f"llama.cpp: next-token log-probability gap {gap['mean_logprob_gap']:.2e} on average, "
                  f"{gap['max_logprob_gap']:.2e} at most, over {gap['tokens']} predicted tokens; same tokens on "
                  f"{gap['same_tokens']} of {gap['texts']} texts")


def cmd_evaluate(args) -> None:
    from .folders import check_out_dir, writing

    out = Path(args.out)
    check_out_dir(out, args.overwrite, "evaluation")
    with writing(out, "evaluation folder"):
        _evaluate(args, out)


def _evaluate(args, out: Path) -> None:
    from .corpus import check_code
    from .evaluation.evaluate import evaluate, evaluate_lm_eval, evaluate_qa, parse_mask
    from .runs import write_eval

    mask = parse_mask(args.mask)
    for code in _langs(args.keep or ""):  # the certificate's options, refused before a model loads
        check_code(code, "--keep")
    if args.budget is not None and not 0 <= args.budget < 10:
        raise LangheadsError(f"--budget must be a share between 0 and 10 (0.02 = 2%), not {args.budget}")
    if args.limit is not None and args.limit < 1:
        raise LangheadsError(f"--limit must be a whole number >= 1, not {args.limit}")
    if (args.lm_eval or args.qa is not None) and args.model is None and not mask:
        raise LangheadsError("give --model (an edited model), --mask (heads to mask in the baseline), or both")
    if args.lm_eval:
        result = evaluate_lm_eval(args.model, args.baseline, _langs(args.lm_eval), args.lm_eval_include, args.limit,
                                  mask, args.seed)
        write_eval(result, out, args.overwrite)
        print(f"lm-evaluation-harness: {result['model']}{' masked ' + args.mask if mask else ''} vs {args.baseline}")
        for r in result["table"].itertuples():
            print(f"{r.task:24} {r.metric:10} {r.before:.3f} -> {r.after:.3f} ({r.change:+.3f}, 95% CI "
                  f"{r.ci_low:+.3f} .. {r.ci_high:+.3f}; {r.items} documents)")
        print(f"wrote {out}/ (eval.csv, eval.json)")
        return
    if args.languages is None:
        raise LangheadsError("give --languages (or --lm-eval TASKS)")
    if args.qa is None:
        if mask or args.model is None:
            raise LangheadsError("--mask goes with --qa; without --qa give --model (the edited model)")
        result = evaluate(args.model, args.baseline, _langs(args.languages), args.data, args.max_tokens,
                          args.prompts, new_tokens=args.new_tokens, seed=args.seed)
    else:
        judge = None
        if args.judge:
            import hashlib

            from .evaluation.judge import Judge
            from .models import cache_dir

            if not args.judge_model:
                raise LangheadsError("--judge needs --judge-model (the model name the endpoint serves)")
            name = hashlib.sha256(f"{args.judge} {args.judge_model}".encode()).hexdigest()[:16]
            judge = Judge(args.judge, args.judge_model, Path(args.judge_cache or cache_dir() / "judge" / f"{name}.jsonl"))
        result = evaluate_qa(args.model, args.baseline, _langs(args.languages), args.qa, mask, args.chat_template,
                             args.new_tokens, args.seed, data_lang=args.data_lang, judge=judge)
    cert = _certify(result, args)
    write_eval(result, out, args.overwrite)
    t = result["table"]
    if args.qa is not None:
        print(f"report items of {args.qa}: {result['model']}{' masked ' + args.mask if mask else ''} vs {args.baseline}")
        for r in t.itertuples():
            extra = f"; {int(r.unparsed)} replies without a verdict" if r.metric == "judge_1to5" else ""
            print(f"{r.language:4} {r.metric:16} {r.before:.3f} -> {r.after:.3f} ({r.change:+.3f}, 95% CI "
                  f"{r.ci_low:+.3f} .. {r.ci_high:+.3f}; {r.items} items{extra})")
        if result["judge"]:
            j = result["judge"]
            print(f"judge {j['model']} at {j['url']}: {j['sent']} requests, {j['retried']} retried, {j['cached']} "
                  f"from the cache ({j['cache']})")
        print(cert)
        print(f"wrote {out}/ (eval.csv, eval.json, generations.jsonl)")
        return
    print(f"report texts (never used to choose): {args.model} vs {args.baseline}")
    for r in t.itertuples():
        print(f"{r.language:4} NLL {r.nll_before:.3f} -> {r.nll_after:.3f} ({r.rel_change:+.2%}, 95% CI "
              f"{r.rel_ci_low:+.2%} .. {r.rel_ci_high:+.2%}); per byte {r.nll_per_byte_before:.4f} -> "
              f"{r.nll_per_byte_after:.4f} ({r.per_byte_rel_change:+.2%}, CI {r.per_byte_rel_ci_low:+.2%} .. "
              f"{r.per_byte_rel_ci_high:+.2%}); generations in {r.language}: {r.same_language_before:.0%} -> {r.same_language_after:.0%}")
    print(cert)
    print(f"wrote {out}/ (eval.csv, eval.json, generations.jsonl)")


def _certify(result: dict, args) -> str:
    """The kept/dropped certificate (certificate.py), kept in the result; the line to print."""
    from .evaluation.certificate import certificate, describe, settle

    kept, budget = settle(args.model, _langs(args.keep) if args.keep else None, args.budget)
    if not kept:
        return "certificate: none (give --keep; the model folder records no kept languages)"
    result["certificate"] = certificate(result, kept, budget)
    return describe(result["certificate"])


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a bad argument is one line (the usage is one `--help` away), exit code 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    from .options import add_options
    from .edit.pruning import PruneSettings
    from .scanning.scan import ScanSettings
    from .edit.vocab import TrimSettings

    p = OneLineParser(prog="langheads", description="Which attention heads serve which language?")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("info", help="a model's layers, heads and head size; without a model, the supported families")
    s.add_argument("model", nargs="?", help="default | a .gguf file | a model folder | a hub id (org/name)")
    s.set_defaults(run=cmd_info)

    s = sub.add_parser("languages", help="list the languages in the bundled corpus (or --data)")
    s.add_argument("--data", help="a folder of <lang>.txt files or a JSONL file with lang and text")
    s.set_defaults(run=cmd_languages)

    s = sub.add_parser("cache", help="list or clear the converted-model cache")
    s.add_argument("action", choices=["list", "clear"], nargs="?", default="list")
    s.set_defaults(run=cmd_cache)

    s = sub.add_parser("scan", help="score every head for every language and sort heads into kinds")
    add_options(s, ScanSettings)
    s.add_argument("--out", required=True, help="run folder to create")
    s.add_argument("--fdr", type=float, metavar="Q", help="rule fdr: Benjamini-Hochberg at false discovery rate Q "
                   "over all head-language pairs")
    s.add_argument("--store", help="where finished units are kept (default: OUT.units); another run's store is "
                   "reused when model, corpus, method and text settings match")
    s.add_argument("--dry-run", action="store_true", help="print the work units, time and memory per process, then stop")
    s.add_argument("--ranks", type=int, help="with --dry-run: how many processes to plan for (default: $WORLD_SIZE or 1)")
    s.add_argument("--overwrite", action="store_true", help="replace an existing run folder")
    s.add_argument("--quiet", action="store_true", help="no progress bar")
    s.set_defaults(run=cmd_scan)

    s = sub.add_parser("prune", help="remove the heads the kept languages do not need and save the smaller model")
    add_options(s, PruneSettings)
    s.add_argument("--out", required=True, help="model folder to write")
    s.add_argument("--overwrite", action="store_true")
    s.add_argument("--quiet", action="store_true")
    s.set_defaults(run=cmd_prune)

    s = sub.add_parser("trim", help="keep only the vocabulary the kept languages use (model and tokenizer together)")
    add_options(s, TrimSettings)
    s.add_argument("--out", required=True, help="model folder to write")
    s.add_argument("--overwrite", action="store_true")
    s.set_defaults(run=cmd_trim)

    s = sub.add_parser("export", help="write a model folder as GGUF for llama.cpp")
    s.add_argument("model", help="default | a model folder (original, trimmed, or pruned with --uniform) | a .gguf file")
    s.add_argument("--gguf", required=True, help="the .gguf file to write")
    s.add_argument("--type", default="f32", help="f32 | f16 | q8_0 (written here) | q4_0 | q5_0 | q4_k_s | q4_k_m | "
                   "q5_k_s | q5_k_m | q6_k (made by llama.cpp's own quantizer from our f32 file)")
    s.add_argument("--pre", metavar="NAME", help="byte-level BPE only: llama.cpp's pre-tokenizer name, where langheads "
                   "cannot tell it (llama-bpe, qwen2, gpt-2, smollm, command-r, bloom, falcon, ...)")
    s.add_argument("--check", metavar="LANGS", help="compare the GGUF with the folder on these languages' report texts")
    s.add_argument("--llama-cpp", action="store_true", help="with --check: also through llama.cpp (llama-cpp-python)")
    s.add_argument("--data", help="texts for --check (default: bundled UDHR)")
    s.add_argument("--overwrite", action="store_true")
    s.set_defaults(run=cmd_export)

    s = sub.add_parser("evaluate", help="before/after on the report texts: NLL with intervals, generation check")
    s.add_argument("--keep", help="languages the deployment serves, for the certificate (default: the model's record)")
    s.add_argument("--budget", type=float, help="largest relative loss a kept language may show (default: the "
                   "model's pruning budget, else 0.02)")
    s.add_argument("--model", help="the edited (pruned, trimmed) model; with --qa --mask it defaults to --baseline")
    s.add_argument("--baseline", default="default")
    s.add_argument("--languages", help="languages to evaluate (not with --lm-eval)")
    s.add_argument("--out", required=True)
    s.add_argument("--data")
    s.add_argument("--max-tokens", type=int)
    s.add_argument("--prompts", type=int, default=3, help="greedy continuations per language")
    s.add_argument("--new-tokens", type=int, default=24)
    s.add_argument("--qa", metavar="DATA", help="question-answer data (JSONL, SQuAD .json, or cloze): greedy answers "
                   "scored by exact match, token F1, chrF and language switch rate")
    s.add_argument("--mask", metavar="L.H,...", help="with --qa: heads to mask (not prune) in --model, e.g. 3.1,5.2")
    s.add_argument("--chat-template", default="auto", help="with --qa: auto | none | a Jinja file")
    s.add_argument("--data-lang", help="with --qa: the language of a SQuAD-format file")
    s.add_argument("--judge", metavar="URL", help="with --qa: an OpenAI-compatible endpoint (e.g. "
                   "http://127.0.0.1:8000/v1) that rates each answer 1-5, like the paper's GPT-3.5 judge")
    s.add_argument("--judge-model", help="the model name the --judge endpoint serves")
    s.add_argument("--judge-cache", help="file of cached verdicts (default: in the langheads cache)")
    s.add_argument("--lm-eval", metavar="TASKS", help="lm-evaluation-harness tasks (comma-separated), run on the "
                   "model in memory: belebele_*, xnli_*, xquad_*, mgsm_* (their data needs the hub), or your own")
    s.add_argument("--lm-eval-include", metavar="DIR", help="with --lm-eval: a folder of task YAML files")
    s.add_argument("--limit", type=int, help="with --lm-eval: at most this many documents per task")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--overwrite", action="store_true")
    s.set_defaults(run=cmd_evaluate)

    s = sub.add_parser("report", help="one self-contained HTML page of a run (and a pruned model, an evaluation, a second run)")
    s.add_argument("run_dir", metavar="RUN_DIR", help="a run folder from `langheads scan`")
    s.add_argument("--prune", metavar="MODEL_DIR", help="a model folder from `langheads prune`: its curve and heads")
    s.add_argument("--eval", metavar="EVAL_DIR", help="a folder from `langheads evaluate`")
    s.add_argument("--compare", metavar="RUN_B", help="another run of the same model (another method): a scatter")
    s.add_argument("--out", required=True, help="report folder to create")
    s.add_argument("--overwrite", action="store_true")
    s.set_defaults(run=cmd_report)

    s = sub.add_parser("compare", help="rank agreement of two runs' head scores, per language")
    s.add_argument("run_a")
    s.add_argument("run_b")
    s.add_argument("--top", type=int, default=10, help="size of the top set whose overlap is shown")
    s.set_defaults(run=cmd_compare)
    return p


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:  # --help, or a bad argument already reported in one line
        return int(e.code or 0)
    try:
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
        print(f"langheads: error: {printable(e.strerror or e)}{printable(where)}; nothing half-written was left, "
              "and finished work is kept: free space (or fix permissions) and run the same command again",
              file=sys.stderr)
        return 2
    return 0


# What the disk (not langheads) refused: said in one line, like bad input.
_DISK_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EFBIG}


if __name__ == "__main__":
    sys.exit(main())
