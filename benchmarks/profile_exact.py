"""Where does one expanded exact-ablation forward spend its time? (GPU profiling aid, not a test)

Builds a random-weight model (default: Llama-3-8B shape, bf16), traces one text batch, and
times `nll.resume` from layer 0 with K head-masked copies: eager, and with each layer's MLP
and norms compiled (torch.compile fuses their elementwise work). Prints the top kernels.

    python benchmarks/profile_exact.py --device cuda --texts 8 --tokens 128 --copies 32
"""

from __future__ import annotations

import argparse
import time

import torch

from langheads import heads as H
from langheads import nll, synthetic


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--shape", default="llama-8b")
    p.add_argument("--device", default="cuda")
    p.add_argument("--texts", type=int, default=8)
    p.add_argument("--tokens", type=int, default=128)
    p.add_argument("--copies", type=int, default=32)
    p.add_argument("--chunk-tokens", type=int, default=8192)
    p.add_argument("--layers", type=int)
    args = p.parse_args()
    torch.set_grad_enabled(False)
    shape = dict(synthetic.SHAPES[args.shape])
    arch = shape.pop("arch")
    if args.layers:
        shape["num_hidden_layers"] = args.layers
    with torch.device(args.device):
        model = synthetic.tiny(arch, dtype=torch.bfloat16, max_position_embeddings=4096, **shape)
    layout = H.head_layout(model)
    ids = torch.randint(4, shape["vocab_size"], (args.texts, args.tokens))
    batch = nll.Batch(ids, torch.full((args.texts,), args.tokens), list(range(args.texts)))
    tr = nll.trace(model, batch)
    factors = torch.ones(args.copies * args.texts, layout.n_heads, device=args.device)

    def once():
        return nll.resume(model, tr, 0, {0: factors}, copies=args.copies, chunk_tokens=args.chunk_tokens)

    def timeit(label, n=3):
        once()
        torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(n):
            once()
        torch.cuda.synchronize()
        t = (time.perf_counter() - start) / n
        tokens = args.copies * args.texts * args.tokens
        params = sum(p.numel() for p in model.parameters()) - model.get_input_embeddings().weight.numel()
        print(f"{label:40} {t * 1000:8.1f} ms  {2 * params * tokens / t / 1e12:6.1f} TFLOP/s", flush=True)

    timeit("eager resume (all layers + loss)")
    hidden = tr.final_hidden.repeat(args.copies, 1, 1)
    torch.cuda.synchronize()
    start = time.perf_counter()
    nll.nll_from_hidden(model, hidden, ids.repeat(args.copies, 1), batch.lengths.repeat(args.copies), args.chunk_tokens)
    torch.cuda.synchronize()
    print(f"{'loss alone':40} {(time.perf_counter() - start) * 1000:8.1f} ms", flush=True)

    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        once()
        torch.cuda.synchronize()
    print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=18, max_name_column_width=60))

    torch._dynamo.config.cache_size_limit = 256
    start = time.perf_counter()
    for layer in H.decoder_layers(model):
        for name in ("mlp", "input_layernorm", "post_attention_layernorm"):
            getattr(layer, name).compile()
    model.model.norm.compile()
    once()
    torch.cuda.synchronize()
    print(f"compile (first call) {time.perf_counter() - start:.1f} s", flush=True)
    timeit("mlp + norms compiled")


if __name__ == "__main__":
    main()
