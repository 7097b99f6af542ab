"""What pruning buys: the original and the pruned model side by side (not a test).

Each variant is measured in its own process (peak memory only ever grows within one):
parameters, weight-file size, KV-cache bytes per token, prefill tokens/s, decode tokens/s and
peak resident memory. Ratios are against the float32 original.

    python benchmarks/bench_pruned.py --pruned runs/pruned-en-hi            # baseline: default
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch


def kv_bytes_per_token(model) -> int:
    """Bytes the KV cache grows by per token: K and V of every kept KV head in every layer."""
    from langheads import heads as H

    layout = H.head_layout(model)
    total = 0
    for i, layer in enumerate(H.decoder_layers(model)):
        attn = getattr(layer, "self_attn", None) or layer.attn
        if hasattr(attn, "k_proj"):
            kv = attn.k_proj.out_features // layout.head_dim
        elif hasattr(attn, "c_attn"):
            kv = attn.c_attn.weight.shape[1] // 3 // layout.head_dim
        else:  # no attention left in this layer
            kv = 0
        total += 2 * kv * layout.head_dim * model.dtype.itemsize
    return total


def weight_files(spec: str) -> int:
    from langheads.models import DEFAULT_SPEC, cache_dir

    folder = Path(spec)
    if spec == DEFAULT_SPEC:
        [folder] = [p for p in (cache_dir() / "models").iterdir() if (p / "langheads_source.json").exists()][:1]
    return sum(p.stat().st_size for p in folder.glob("*.safetensors"))


def measure(spec: str, dtype: str, prompt_tokens: int, decode_tokens: int, repeats: int) -> dict:
    from langheads import load_model

    torch.manual_seed(0)
    loaded = load_model(spec, dtype)
    model = loaded.model
    ids = torch.randint(10, 1000, (1, prompt_tokens))
    ids[0, 0] = loaded.tokenizer.bos_token_id or 1
    with torch.no_grad():
        model(input_ids=ids[:, :16])  # warm-up
        prefill = []
        for _ in range(repeats):
            start = time.perf_counter()
            model(input_ids=ids)
            prefill.append(time.perf_counter() - start)
        def generate(n):
            start = time.perf_counter()
            out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=n,
                                 min_new_tokens=n, do_sample=False, pad_token_id=loaded.tokenizer.pad_token_id)
            assert out.shape[1] == prompt_tokens + n
            return time.perf_counter() - start

        # decode rate = extra tokens / extra time over a 1-token generation (which pays the prefill)
        decode = [generate(decode_tokens + 1) - generate(1) for _ in range(repeats)]
    return {
        "params": sum(p.numel() for p in model.parameters()),
        "file_bytes": weight_files(spec),
        "kv_bytes_per_token": kv_bytes_per_token(model),
        "prefill_tok_s": prompt_tokens / min(prefill),
        "decode_tok_s": decode_tokens / min(decode),
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--pruned", help="a model folder written by `langheads prune`")
    p.add_argument("--baseline", default="default")
    p.add_argument("--prompt-tokens", type=int, default=256)
    p.add_argument("--decode-tokens", type=int, default=32)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--measure", nargs=2, metavar=("SPEC", "DTYPE"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.measure:
        print(json.dumps(measure(*args.measure, args.prompt_tokens, args.decode_tokens, args.repeats)))
        return
    variants = [("original float32", args.baseline, "float32"), ("original bfloat16", args.baseline, "bfloat16"),
                ("pruned float32", args.pruned, "float32"), ("pruned bfloat16", args.pruned, "bfloat16")]
    rows = []
    for label, spec, dtype in variants:
        cmd = [sys.executable, __file__, "--measure", spec, dtype, "--prompt-tokens", str(args.prompt_tokens),
               "--decode-tokens", str(args.decode_tokens), "--repeats", str(args.repeats)]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
        rows.append((label, json.loads(out)))
        print(f"measured {label}", file=sys.stderr)
    base = rows[0][1]
    keys = ["params", "file_bytes", "kv_bytes_per_token", "prefill_tok_s", "decode_tok_s", "peak_rss_mib"]
    print(f"prompt {args.prompt_tokens} tokens, decode {args.decode_tokens} tokens, best of {args.repeats}; "
          "ratio = variant / original float32")
    print(f"{'variant':18} " + " ".join(f"{k:>22}" for k in keys))
    for label, r in rows:
        print(f"{label:18} " + " ".join(f"{r[k]:>13.4g} ({r[k] / base[k]:5.3f})" for k in keys))
    print("note: file_bytes of the bfloat16 rows is the folder as saved (the original's cache holds float32)")


if __name__ == "__main__":
    main()
