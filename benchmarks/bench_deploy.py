"""What a deployment gains: the original, heads pruned, vocabulary trimmed, and both, side by side
(not a test).

Variants (written under --work once, reused after):
  original      the default model
  heads         the heads `prune --keep` removed (--heads, default: the 5 of the en,hi run in docs/deployment.md)
  vocab exact   `trim --keep` (exact)
  vocab N       `trim --keep --max-vocab N`
  heads+vocab   both, exact vocabulary
Each variant is measured in its own process (peak memory only grows within one): parameters,
weight-file size, peak RSS, prefill and decode tokens/s with transformers on the CPU, the same
with llama.cpp on the q8_0 GGUF export (where llama.cpp can run the variant), NLL per byte of
the kept and the dropped languages on the report texts, and the share of greedy continuations
that a language identifier puts in the prompt's language.

    python benchmarks/bench_deploy.py --keep en,hi --max-vocab 96000
    python benchmarks/bench_deploy.py --quant q4_k_m --max-vocab 80000 --prompt-tokens 512 --decode-tokens 128
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

DEFAULT_HEADS = "14.3,3.1,3.3,12.3,5.0"  # docs/deployment.md's `prune --keep en,hi` on the 8-language scan


def prompt_ids(loaded, n: int) -> list[int]:
    """The first n tokens of the English report texts, run together, in the model's own tokenizer."""
    from langheads.corpus import load_corpus

    text = " ".join(t.text for t in load_corpus().texts("en", "report"))
    return loaded.tokenizer(text)["input_ids"][:n]


def folder_bytes(spec: str) -> int:
    from langheads.models import DEFAULT_SPEC, cache_dir

    folder = Path(spec)
    if spec == DEFAULT_SPEC:
        [folder] = [p for p in (cache_dir() / "models").iterdir() if (p / "langheads_source.json").exists()][:1]
    return sum(p.stat().st_size for p in folder.glob("*.safetensors"))


def peak_rss_mib() -> float:
    """This process's peak resident memory. Not getrusage's ru_maxrss: Linux carries that over
    exec from the forked parent, so every child would report the parent's peak."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure_transformers(
    spec: str, languages: list[str], prompt_tokens: int, decode_tokens: int, repeats: int, timing_only: bool = False
) -> dict:
    from langheads import load_model
    from langheads.corpus import load_corpus
    from langheads.evaluation.evaluate import greedy_continuations, identify, text_losses

    torch.manual_seed(0)
    loaded = load_model(spec)
    model = loaded.model
    ids = torch.tensor([prompt_ids(loaded, prompt_tokens)])
    with torch.no_grad():
        model(input_ids=ids[:, :16])  # warm-up
        prefill = []
        for _ in range(repeats):
            start = time.perf_counter()
            model(input_ids=ids)
            prefill.append(time.perf_counter() - start)

        def generate(n):
            start = time.perf_counter()
            model.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=n,
                min_new_tokens=n,
                do_sample=False,
                pad_token_id=loaded.tokenizer.pad_token_id,
            )
            return time.perf_counter() - start

        # decode rate = extra tokens / extra time over a 1-token generation (which pays the prefill)
        decode = [generate(decode_tokens + 1) - generate(1) for _ in range(repeats)]
    timing = {
        "prefill_tok_s": ids.shape[1] / min(prefill),
        "decode_tok_s": decode_tokens / min(decode),
        "peak_rss_mib": peak_rss_mib(),
    }
    if timing_only:
        return timing
    corpus = load_corpus()
    per_byte, same_language = {}, {}
    for lang in languages:
        texts = [t.text for t in corpus.texts(lang, "report")]
        per_byte[lang] = float(text_losses(loaded, texts).per_byte.mean())
        prompts = [loaded.tokenizer(t)["input_ids"][:16] for t in texts[:3]]
        same_language[lang] = float(np.mean([identify(c) == lang for c in greedy_continuations(loaded, prompts, 16)]))
    return {
        **timing,
        "params": sum(p.numel() for p in model.parameters()),
        "file_bytes": folder_bytes(spec),
        "nll_per_byte": per_byte,
        "same_language": same_language,
    }


def measure_llama_cpp(gguf: str, spec: str, prompt_tokens: int, decode_tokens: int, repeats: int) -> dict:
    from llama_cpp import Llama

    from langheads import load_model

    loaded = load_model(spec)
    ids = prompt_ids(loaded, prompt_tokens)
    del loaded
    n = prompt_tokens + decode_tokens + 8  # last-position logits only, as a deployment runs
    llm = Llama(model_path=gguf, n_ctx=n, n_batch=n, verbose=False, n_threads=2)
    return {
        "gguf_bytes": Path(gguf).stat().st_size,
        **llama_cpp_rates(llm, ids, decode_tokens, repeats),
        "peak_rss_mib": peak_rss_mib(),
    }


def llama_cpp_rates(llm, ids: list[int], decode_tokens: int, repeats: int) -> dict:
    """Prompt processing and greedy generation rates in llama.cpp, best of `repeats`."""
    prefill, decode = [], []
    for _ in range(repeats):
        llm.reset()
        start = time.perf_counter()
        llm.eval(ids)
        prefill.append(time.perf_counter() - start)
        start = time.perf_counter()
        for _ in range(decode_tokens):
            llm.eval([int(np.argmax(llm.scores[llm.n_tokens - 1]))])
        decode.append(time.perf_counter() - start)
    return {"prefill_tok_s": len(ids) / min(prefill), "decode_tok_s": decode_tokens / min(decode)}


def llama_cpp_nll_per_byte(llm, texts: list[str]) -> float:
    """Mean over texts of llama.cpp's own NLL per UTF-8 byte (its tokenizer, its logits)."""
    out = []
    for text in texts:
        ids = llm.tokenize(text.encode("utf-8"), add_bos=True, special=False)
        llm.reset()
        llm.eval(ids)
        logits = torch.tensor(np.array(llm.scores[: len(ids)]), dtype=torch.float32)
        logp = torch.log_softmax(logits[:-1], -1).gather(1, torch.tensor(ids[1:])[:, None])
        out.append(-logp.sum().item() / len(text.encode("utf-8")))
    return float(np.mean(out))


def measure_gguf(
    gguf: str,
    languages: list[str],
    prompt_tokens: int,
    decode_tokens: int,
    repeats: int,
    timing_only: bool,
    keep: list[str] = ("en", "hi"),
) -> dict:
    """A GGUF file in llama.cpp alone (its own tokenizer): prompt processing of `prompt_tokens`
    (the kept languages' report texts) and generation of `decode_tokens` at 2 threads (wall
    time, best of `repeats`), peak RSS, and NLL per byte of each language's report texts."""
    from llama_cpp import Llama

    from langheads.corpus import load_corpus

    corpus = load_corpus()
    text = " ".join(t.text for lang in keep for t in corpus.texts(lang, "report")) * 4
    n = prompt_tokens + decode_tokens + 8  # last-position logits only, as a deployment runs
    llm = Llama(model_path=gguf, n_ctx=n, n_batch=n, verbose=False, n_threads=2)
    ids = llm.tokenize(text.encode("utf-8"), add_bos=True)[:prompt_tokens]
    row = {
        "gguf_bytes": Path(gguf).stat().st_size,
        **llama_cpp_rates(llm, ids, decode_tokens, repeats),
        "peak_rss_mib": peak_rss_mib(),
    }
    if not timing_only:  # every position's logits, room for the longest text (dropped scripts go byte by byte)
        del llm
        llm = Llama(model_path=gguf, n_ctx=4096, n_batch=512, verbose=False, n_threads=2, logits_all=True)
        row["nll_per_byte"] = {
            lang: llama_cpp_nll_per_byte(llm, [t.text for t in corpus.texts(lang, "report")]) for lang in languages
        }
    return row


def prepare_quant(
    work: Path, keep: list[str], max_vocab: int | None, kind: str, model: str = "default", variants: list[str] = ()
) -> dict[str, str]:
    """label -> GGUF file: the built-in model's own Q4_K_M, and our exports at `kind` of the
    original, of `trim --max-vocab` (unless None) and of each LABEL=FOLDER variant, made by
    llama.cpp's quantizer (each written once)."""
    from langheads import load_model
    from langheads.builtin import BUILTINS
    from langheads.deploy.export import export_gguf
    from langheads.edit.vocab import TrimSettings, trim

    folders = [("original", model)]
    if max_vocab is not None:
        trimmed = work / f"{model}-vocab-{max_vocab}"
        if not trimmed.exists():
            trim(TrimSettings(model=model, keep=keep, max_vocab=max_vocab), trimmed)
        folders.append((f"vocab {max_vocab // 1000}k", str(trimmed)))
    folders += [tuple(v.split("=", 1)) for v in variants]
    files = {"package Q4_K_M": str(BUILTINS[model].path())}
    for label, folder in folders:
        path = work / f"{model}-{label.replace(' ', '-')}.{kind}.gguf"
        if not path.exists():
            export_gguf(load_model(folder), path, kind)
        files[f"{label} {kind}"] = str(path)
    return files


def quant_table(args, keep: list[str], languages: list[str]) -> list[str]:
    """The deployment in the format people run: one process per file and round, interleaved."""
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    files = prepare_quant(work, keep, args.max_vocab or None, args.quant, args.model, args.variant or [])
    common = [
        "--languages",
        ",".join(languages),
        "--keep",
        ",".join(keep),
        "--prompt-tokens",
        str(args.prompt_tokens),
        "--decode-tokens",
        str(args.decode_tokens),
        "--repeats",
        str(args.repeats),
    ]
    rows: dict = {}
    for round_ in range(args.rounds):
        for label, gguf in files.items():
            r = run(["--measure", "gguf", gguf, *common] + (["--timing-only"] if round_ else []))
            if round_ == 0:
                rows[label] = r
            else:
                keep_best(rows[label], r)
            print(f"round {round_ + 1}: measured {label}", file=sys.stderr, flush=True)
    against = "package Q4_K_M" if args.against == "package" else f"original {args.quant}"
    base = rows[against]
    dropped = [lang for lang in languages if lang not in keep]
    head = [
        "GGUF",
        "file",
        "peak RSS",
        f"prompt {args.prompt_tokens} tok/s",
        f"generation {args.decode_tokens} tok/s",
        "kept NLL/byte (llama.cpp)",
        "dropped NLL/byte (mean)",
    ]
    lines = [
        f"llama.cpp (llama-cpp-python, 2 threads), each file in its own process, best of {args.repeats} timings x "
        f"{args.rounds} interleaved rounds; (x) = against {against}; NLL per byte of the report "
        f"texts in llama.cpp itself, change against {against}",
        "",
        " | ".join(head),
        " | ".join("---" for _ in head),
    ]
    for label, r in rows.items():
        kept = ", ".join(
            f"{lang} {r['nll_per_byte'][lang]:.4f} ({r['nll_per_byte'][lang] / base['nll_per_byte'][lang] - 1:+.2%})"
            for lang in keep
        )
        drop = np.mean([r["nll_per_byte"][lang] / base["nll_per_byte"][lang] - 1 for lang in dropped]) if dropped else 0
        lines.append(
            " | ".join(
                [
                    label,
                    f"{r['gguf_bytes'] / 2**20:.0f} MiB ({r['gguf_bytes'] / base['gguf_bytes']:.3f}x)",
                    f"{r['peak_rss_mib']:.0f} MiB ({r['peak_rss_mib'] / base['peak_rss_mib']:.3f}x)",
                    f"{r['prefill_tok_s']:,.0f} ({r['prefill_tok_s'] / base['prefill_tok_s']:.2f}x)",
                    f"{r['decode_tok_s']:,.1f} ({r['decode_tok_s'] / base['decode_tok_s']:.2f}x)",
                    kept,
                    f"{drop:+.1%}",
                ]
            )
        )
    return lines


def prepare(work: Path, keep: list[str], heads: list[tuple[int, int]], max_vocab: int) -> dict[str, str]:
    """Write the variant folders and their q8_0 GGUF files (each once); returns label -> folder."""
    from langheads import load_model
    from langheads.corpus import load_corpus
    from langheads.deploy.export import export_gguf
    from langheads.edit import pruning
    from langheads.edit.vocab import TrimSettings, choose_vocab, decision_texts, trim
    from langheads.errors import LangheadsError

    folders = {
        "original": "default",
        "heads": str(work / "heads"),
        "vocab exact": str(work / "vocab-exact"),
        f"vocab {max_vocab // 1000}k": str(work / f"vocab-{max_vocab}"),
        "heads+vocab": str(work / "heads-vocab"),
    }
    record = {"note": "bench_deploy.py", "kept": keep, "removed_heads": [list(h) for h in heads]}
    if not Path(folders["heads"]).exists():
        pruning.save(load_model("default"), Path(folders["heads"]), record, heads=heads)
    if not Path(folders["vocab exact"]).exists():
        trim(TrimSettings(model="default", keep=keep), folders["vocab exact"])
    if not Path(folders[f"vocab {max_vocab // 1000}k"]).exists():
        trim(TrimSettings(model="default", keep=keep, max_vocab=max_vocab), folders[f"vocab {max_vocab // 1000}k"])
    if not Path(folders["heads+vocab"]).exists():
        loaded = load_model("default")
        choice = choose_vocab(loaded.tokenizer, keep, decision_texts(load_corpus(), keep))
        pruning.save(loaded, Path(folders["heads+vocab"]), record, heads=heads, vocab_choice=choice)
    for folder in folders.values():
        gguf = work / f"{Path(folder).name}.q8_0.gguf"
        if not gguf.exists() and not (work / f"{gguf.name}.refused").exists():
            try:
                export_gguf(load_model(folder), gguf, "q8_0")
            except LangheadsError as e:  # llama.cpp cannot run this variant: say why in the table
                (work / f"{gguf.name}.refused").write_text(str(e))
    return folders


def run(cmd: list[str]) -> dict:
    out = subprocess.run([sys.executable, __file__, *cmd], capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-2000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--keep", default="en,hi")
    p.add_argument("--languages", default="en,hi,fr,de,es,zh,ar,ru", help="languages to measure NLL per byte on")
    p.add_argument("--heads", default=DEFAULT_HEADS, help="LAYER.HEAD,... removed in the heads variants")
    p.add_argument("--max-vocab", type=int, default=96000)
    p.add_argument("--work", default="runs/deploy")
    p.add_argument("--prompt-tokens", type=int, default=256)
    p.add_argument("--decode-tokens", type=int, default=32)
    p.add_argument("--repeats", type=int, default=3, help="timings per process (the best is kept)")
    p.add_argument(
        "--rounds", type=int, default=3, help="rounds of one process per variant, interleaved (the best is kept)"
    )
    p.add_argument("--timing-only", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--out", help="also write the table to this file")
    p.add_argument("--measure", nargs=2, metavar=("KIND", "SPEC"), help=argparse.SUPPRESS)
    p.add_argument(
        "--quant",
        metavar="TYPE",
        help="instead: the llama.cpp table at TYPE (e.g. q4_k_m) against the "
        "package's own Q4_K_M file (use --prompt-tokens 512 --decode-tokens 128 --max-vocab 80000)",
    )
    p.add_argument("--model", default="default", help="with --quant: the built-in model (default, qwen2.5-coder-0.5b)")
    p.add_argument(
        "--variant",
        action="append",
        metavar="LABEL=FOLDER",
        help="with --quant: a pruned folder to export and measure too (again for more)",
    )
    p.add_argument(
        "--against",
        choices=["package", "original"],
        default="package",
        help="with --quant: ratios against the package's own Q4_K_M or our export of the untouched model",
    )
    args = p.parse_args()
    languages, keep = args.languages.split(","), args.keep.split(",")
    if args.quant and not args.measure:
        lines = quant_table(args, keep, languages)
        print("\n".join(lines))
        if args.out:
            Path(args.out).write_text("\n".join(lines) + "\n")
        return
    if args.measure:
        kind, spec = args.measure
        if kind == "gguf":
            r = measure_gguf(
                spec, languages, args.prompt_tokens, args.decode_tokens, args.repeats, args.timing_only, keep
            )
        elif kind == "transformers":
            r = measure_transformers(
                spec, languages, args.prompt_tokens, args.decode_tokens, args.repeats, args.timing_only
            )
        else:
            r = measure_llama_cpp(kind, spec, args.prompt_tokens, args.decode_tokens, args.repeats)
        print(json.dumps(r))
        return
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    heads = [tuple(int(x) for x in h.split(".")) for h in args.heads.split(",")]
    folders = prepare(work, keep, heads, args.max_vocab)
    common = [
        "--languages",
        args.languages,
        "--prompt-tokens",
        str(args.prompt_tokens),
        "--decode-tokens",
        str(args.decode_tokens),
        "--repeats",
        str(args.repeats),
    ]
    # This machine is shared and noisy: variants are timed in interleaved rounds, each in a fresh
    # process, and each keeps its best rate; NLL and generations are measured in the first round.
    rows = {}
    for round_ in range(args.rounds):
        for label, folder in folders.items():
            r = run(["--measure", "transformers", folder, *common] + (["--timing-only"] if round_ else []))
            gguf = work / f"{Path(folder).name}.q8_0.gguf"
            lc = (
                run(["--measure", str(gguf), folder, *common])
                if gguf.exists()
                else {"refused": (work / f"{gguf.name}.refused").read_text()}
            )
            if round_ == 0:
                rows[label] = {**r, "llama_cpp": lc}
            else:
                keep_best(rows[label], r)
                keep_best(rows[label]["llama_cpp"], lc)
            print(f"round {round_ + 1}: measured {label}", file=sys.stderr, flush=True)
    lines = report(rows, keep, languages, args)
    print("\n".join(lines))
    if args.out:
        Path(args.out).write_text("\n".join(lines) + "\n")


def keep_best(row: dict, new: dict) -> None:
    for key in ("prefill_tok_s", "decode_tok_s"):
        if key in new:
            row[key] = max(row[key], new[key])
    if "peak_rss_mib" in new:
        row["peak_rss_mib"] = min(row["peak_rss_mib"], new["peak_rss_mib"])


def ratio(a: float, b: float) -> str:
    """A value and its ratio to the original's."""
    return f"{a:,.4g} ({a / b:.3f}x)"


def report(rows: dict, keep: list[str], languages: list[str], args) -> list[str]:
    base = rows["original"]
    dropped = [lang for lang in languages if lang not in keep]
    lines = [
        f"CPU, float32 weights, {args.prompt_tokens}-token prompt, {args.decode_tokens} decoded tokens, best of "
        f"{args.repeats} timings x {args.rounds} interleaved rounds (one process per variant each round); "
        f"(x) = variant / original; llama.cpp on the q8_0 GGUF, 2 threads; NLL per byte on "
        f"the report texts: change against the original; same language: greedy continuations of 3 prompts "
        f"per language in the prompt's language (py3langid)",
        "",
    ]
    head = [
        "variant",
        "params",
        "file",
        "peak RSS",
        "prefill tok/s",
        "decode tok/s",
        "llama.cpp GGUF",
        "llama.cpp prefill",
        "llama.cpp decode",
        "kept NLL/byte",
        "dropped NLL/byte",
        "same language kept/dropped",
    ]
    lines.append(" | ".join(head))
    lines.append(" | ".join("---" for _ in head))
    lb = base["llama_cpp"]
    for label, r in rows.items():
        lc = r["llama_cpp"]
        kept = ", ".join(f"{l} {r['nll_per_byte'][l] / base['nll_per_byte'][l] - 1:+.2%}" for l in keep)
        drop = np.mean([r["nll_per_byte"][l] / base["nll_per_byte"][l] - 1 for l in dropped]) if dropped else 0
        same = (
            f"{np.mean([r['same_language'][l] for l in keep]):.0%} / "
            f"{np.mean([r['same_language'][l] for l in dropped]):.0%}"
            if dropped
            else ""
        )
        if "refused" in lc:
            llama = ["refused: " + lc["refused"].split(",")[0], "", ""]
        else:
            llama = [
                f"{lc['gguf_bytes'] / 2**20:.0f} MiB ({lc['gguf_bytes'] / lb['gguf_bytes']:.3f}x)",
                ratio(lc["prefill_tok_s"], lb["prefill_tok_s"]),
                ratio(lc["decode_tok_s"], lb["decode_tok_s"]),
            ]
        lines.append(
            " | ".join(
                [
                    label,
                    ratio(r["params"] / 1e6, base["params"] / 1e6) + "M",
                    ratio(r["file_bytes"] / 2**20, base["file_bytes"] / 2**20) + " MiB",
                    ratio(r["peak_rss_mib"], base["peak_rss_mib"]) + " MiB",
                    ratio(r["prefill_tok_s"], base["prefill_tok_s"]),
                    ratio(r["decode_tok_s"], base["decode_tok_s"]),
                    *llama,
                    kept,
                    f"mean {drop:+.1%}",
                    same,
                ]
            )
        )
    return lines


if __name__ == "__main__":
    main()
