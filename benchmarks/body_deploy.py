"""What a pruned body buys in llama.cpp (not a test): model folders exported to one GGUF type
and run side by side in one process, in turns (`--repeats` rounds, best of each), against the
first folder: parameters, file, prompt processing and generation rates at 2 threads, and NLL
per byte of the kept languages' report texts by llama.cpp itself.

    python benchmarks/body_deploy.py default /tmp/v80k /tmp/u8-v80k --labels original,vocab,body+vocab
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))


def main() -> None:
    from bench_deploy import measure_gguf

    from langheads import load_model
    from langheads.deploy.export import export_gguf

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("models", nargs="+", help="'default' or model folders; the first is the baseline")
    p.add_argument("--labels", help="comma-separated names for the table")
    p.add_argument("--type", default="q8_0")
    p.add_argument("--work", type=Path, default=Path("/tmp/body_deploy"))
    p.add_argument("--languages", default="en,hi")
    p.add_argument("--prompt-tokens", type=int, default=256)
    p.add_argument("--decode-tokens", type=int, default=64)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    labels = args.labels.split(",") if args.labels else args.models
    args.work.mkdir(parents=True, exist_ok=True)
    files, params = {}, {}
    for label, spec in zip(labels, args.models):
        loaded = load_model(spec)
        params[label] = sum(t.numel() for t in loaded.model.parameters())
        files[label] = args.work / f"{label}.{args.type}.gguf"
        if not files[label].exists():
            export_gguf(loaded, files[label], args.type)
        del loaded
    rows = {
        label: measure_gguf(str(f), args.languages.split(","), args.prompt_tokens, args.decode_tokens, 1, False)
        for label, f in files.items()
    }
    for _ in range(args.repeats - 1):  # in turns, so that the machine's noise falls on every variant alike
        for label, f in files.items():
            again = measure_gguf(str(f), [], args.prompt_tokens, args.decode_tokens, 1, True)
            for key in ("prefill_tok_s", "decode_tok_s"):
                rows[label][key] = max(rows[label][key], again[key])
    base, first = rows[labels[0]], labels[0]
    print(
        f"{args.type}, 2 threads, {args.prompt_tokens}-token prompt, {args.decode_tokens} tokens generated, best "
        f"of {args.repeats} in turns; ratios against {first}"
    )
    print("| model | parameters | file | prompt tok/s | generation tok/s | NLL/byte (llama.cpp) |")
    print("|---|---|---|---|---|---|")
    for label, r in rows.items():
        nll = ", ".join(f"{l} {v:.4f} ({v / base['nll_per_byte'][l] - 1:+.2%})" for l, v in r["nll_per_byte"].items())
        print(
            f"| {label} | {params[label] / params[first]:.3f}x | {r['gguf_bytes'] / base['gguf_bytes']:.3f}x | "
            f"{r['prefill_tok_s']:.0f} ({r['prefill_tok_s'] / base['prefill_tok_s']:.2f}x) | "
            f"{r['decode_tok_s']:.1f} ({r['decode_tok_s'] / base['decode_tok_s']:.2f}x) | {nll} |"
        )


if __name__ == "__main__":
    main()
