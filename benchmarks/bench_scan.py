"""Time head-scoring methods side by side, in one run, on the same texts (not a test).

  (a) naive   - what users of hook libraries write: for each head, a hook zeroes the head's
                slice of the projection input and the whole model runs on the language's
                texts, padded to the longest, with labels to get the loss
  (b) batched - the exact method's length-sorted batches, expanded head batches and chunked
                loss, but every layer recomputed for every head (no reuse)
  (c) exact   - (b) plus reuse of the unmodified model's lower layers
  (d) attribution - one forward + backward per batch

(a) and (b) cost the same for every head, so they are timed on a sample of layers and scaled
to the full map (the table says so); (c) and (d) always run the full map. Scores of (a) and
(c) are compared on the sampled heads (token-weighted, as the labels loss is).

    python benchmarks/bench_scan.py                                  # default model, CPU, 8 languages
    python benchmarks/bench_scan.py --synthetic llama-8b --device cuda --dtype bfloat16 \
        --texts 32 --tokens 128                                      # Llama-3-8B-shaped, random weights
    python benchmarks/bench_scan.py --synthetic llama-8b --layers 2 --hidden 512 --heads 8 --kv-heads 2 \
        --intermediate 1024 --vocab 32000 --texts 8 --tokens 64    # the same shape family, small on a CPU
    python benchmarks/bench_scan.py --adaptive --texts 8 --budget 15  # full exact scan vs --adaptive
                                                                     # (benchmarks/adaptive_vs_full.py)
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from langheads import heads as H
from langheads import nll, synthetic
from langheads.components import component_for
from langheads.scoring import ExactAblation, GradientAttribution


def sync(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def timed(device, fn):
    sync(device)
    start = time.perf_counter()
    out = fn()
    sync(device)
    return time.perf_counter() - start, out


def labels_loss(model, token_lists, pad_id, device):
    """Token-weighted mean NLL of a padded batch, the way `model(..., labels=...)` gives it."""
    longest = max(len(t) for t in token_lists)
    ids = torch.full((len(token_lists), longest), pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for r, t in enumerate(token_lists):
        ids[r, : len(t)] = torch.tensor(t)
        mask[r, : len(t)] = 1
    labels = ids.masked_fill(mask == 0, -100)
    with torch.no_grad():
        return model(input_ids=ids.to(device), attention_mask=mask.to(device), labels=labels.to(device)).loss.item()


def naive_map(model, layout, languages, layers, pad_id, device):
    """(a): score[lang][layer, head] for the given layers, one whole forward per head."""
    out = {}
    for lang, token_lists in languages.items():
        base = labels_loss(model, token_lists, pad_id, device)
        grid = np.full((layout.n_layers, layout.n_units), np.nan)
        for layer in layers:
            for head in range(layout.n_units):
                with H.masked_heads(model, [(layer, head)]):
                    grid[layer, head] = labels_loss(model, token_lists, pad_id, device) - base
        out[lang] = grid
    return out


def method_map(method, model, layout, languages, batch_tokens, pad_id):
    out = {}
    for lang, token_lists in languages.items():
        batches = nll.make_batches(token_lists, batch_tokens, pad_id)
        out[lang] = method.score_language(model, layout, batches, len(token_lists), lambda k: None)
    return out


def token_weighted(scores, token_lists):
    weights = np.array([len(t) - 1 for t in token_lists], dtype=float)
    return (scores.values * weights).sum(-1) / weights.sum()


def load(args):
    if args.synthetic:
        shape = dict(synthetic.SHAPES[args.synthetic])
        arch = shape.pop("arch")
        for key, name in [
            ("layers", "num_hidden_layers"),
            ("hidden", "hidden_size"),
            ("heads", "num_attention_heads"),
            ("kv_heads", "num_key_value_heads"),
            ("intermediate", "intermediate_size"),
            ("vocab", "vocab_size"),
            ("head_dim", "head_dim"),
        ]:
            if getattr(args, key) is not None:
                shape[name] = getattr(args, key)
        dtype = getattr(torch, args.dtype)
        with torch.device(args.device):
            model = synthetic.tiny(arch, dtype=dtype, max_position_embeddings=4096, **shape)
        gen = torch.Generator().manual_seed(0)
        vocab = shape["vocab_size"]
        texts = [torch.randint(4, vocab, (args.tokens,), generator=gen).tolist() for _ in range(args.texts)]
        for t in texts:
            t[0] = 1  # BOS
        return model, {"random": texts}, 0, f"synthetic {args.synthetic} {shape}"
    from langheads import load_model
    from langheads.corpus import bundled_corpus

    loaded = load_model("default", args.dtype, args.device)
    corpus = bundled_corpus()
    languages = {
        lang: nll.tokenize(loaded.tokenizer, [t.text for t in corpus.texts(lang, "scoring", args.texts)], args.tokens)
        for lang in args.languages.split(",")
    }
    return loaded.model, languages, loaded.tokenizer.pad_token_id or 0, loaded.model_id


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--synthetic", choices=sorted(synthetic.SHAPES))
    for name in ["layers", "hidden", "heads", "kv_heads", "intermediate", "vocab", "head_dim"]:
        p.add_argument(f"--{name.replace('_', '-')}", type=int)
    p.add_argument("--languages", default="en,hi,fr,de,es,zh,ar,ru")
    p.add_argument("--texts", type=int, default=4, help="texts per language")
    p.add_argument("--tokens", type=int, default=48, help="tokens per text (cut, or the synthetic length)")
    p.add_argument("--sample-layers", type=int, default=3, help="layers timed for (a) and (b)")
    p.add_argument("--batch-tokens", type=int, default=4096)
    p.add_argument("--chunk-tokens", type=int, default=1024)
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32")
    p.add_argument("--compile", action="store_true", help="also time (c) and (d) with nll.compile_for_speed")
    p.add_argument(
        "--adaptive",
        action="store_true",
        help="instead: a full exact scan against --adaptive, as whole scans (benchmarks/adaptive_vs_full.py)",
    )
    p.add_argument("--budget", type=int, help="with --adaptive: also an adaptive scan of up to this many texts")
    p.add_argument("--model", default="default", help="with --adaptive: the model to scan")
    p.add_argument("--work", help="with --adaptive: where the scans' folders go (default: a new temporary folder)")
    args = p.parse_args()
    if args.adaptive:
        import adaptive_vs_full

        return adaptive_vs_full.compare(args)
    torch.set_grad_enabled(False)

    model, languages, pad_id, name = load(args)
    layout = component_for(model).layout  # the scan's units: every head of every layer
    device = args.device
    n_tokens = sum(len(t) for ts in languages.values() for t in ts)
    sample = sorted(set(np.linspace(0, layout.n_layers - 1, args.sample_layers).round().astype(int).tolist()))
    scale = layout.n_layers / len(sample)
    print(
        f"{name}\n{layout}\n{len(languages)} language(s), {n_tokens} tokens; device {device}, {args.dtype}; "
        f"(a), (b) timed on layers {sample} and scaled x{scale:.2f}"
    )

    # Parameters that multiply each token: everything but the input embedding (a lookup),
    # counting a tied output layer once as a matmul.
    head_params = model.get_output_embeddings().weight.numel()
    params = sum(p.numel() for p in model.parameters()) - model.get_input_embeddings().weight.numel()
    if model.get_output_embeddings().weight is model.get_input_embeddings().weight:
        params += head_params
    plain_flop = 2 * params * n_tokens

    def plain():
        for ts in languages.values():
            nll.per_text_nll(model, ts, args.batch_tokens, args.chunk_tokens, pad_id)

    plain()  # warm-up
    t_plain, _ = timed(device, plain)

    t_a, naive = timed(device, lambda: naive_map(model, layout, languages, sample, pad_id, device))
    t_a *= scale
    bt = args.batch_tokens // layout.n_units
    no_reuse = ExactAblation(args.chunk_tokens, args.batch_tokens, reuse=False, layers=sample)
    t_b, _ = timed(device, lambda: method_map(no_reuse, model, layout, languages, bt, pad_id))
    t_b *= scale
    exact = ExactAblation(args.chunk_tokens, args.batch_tokens)
    t_c, exact_scores = timed(device, lambda: method_map(exact, model, layout, languages, bt, pad_id))
    attribution = GradientAttribution(args.chunk_tokens, args.batch_tokens)
    first = next(iter(languages))
    with torch.enable_grad():  # warm-up: the first backward pays for kernel selection
        method_map(attribution, model, layout, {first: languages[first][:2]}, args.batch_tokens, pad_id)
        t_d, _ = timed(device, lambda: method_map(attribution, model, layout, languages, args.batch_tokens, pad_id))
    compiled = []
    if args.compile:
        t_compile, _ = timed(
            device,
            lambda: (
                nll.compile_for_speed(model),
                method_map(
                    ExactAblation(args.chunk_tokens, args.batch_tokens, layers=[0]),
                    model,
                    layout,
                    languages,
                    bt,
                    pad_id,
                ),
            ),
        )
        t_cc, _ = timed(device, lambda: method_map(exact, model, layout, languages, bt, pad_id))
        with torch.enable_grad():
            method_map(attribution, model, layout, {first: languages[first][:2]}, args.batch_tokens, pad_id)
            t_dc, _ = timed(
                device, lambda: method_map(attribution, model, layout, languages, args.batch_tokens, pad_id)
            )
        compiled = [("(c) exact, compiled", t_cc, "exact"), ("(d) attribution, compiled", t_dc, 3 * plain_flop)]
        print(f"compiling (and one layer's warm-up) took {t_compile:.1f} s")

    diff = max(
        np.nanmax(np.abs(naive[lang][sample] - token_weighted(exact_scores[lang], languages[lang])[sample]))
        for lang in languages
    )
    # FLOPs of a full exact map: every head re-runs layers l..L and the output layer.
    body = params - head_params
    head_flop = 2 * head_params * n_tokens
    naive_flop = layout.n_total * plain_flop
    exact_flop = plain_flop + layout.n_units * sum(
        2 * body * n_tokens * (layout.n_layers - l) / layout.n_layers + head_flop for l in range(layout.n_layers)
    )
    unit, div = ("TFLOP/s", 1e12) if torch.device(device).type == "cuda" else ("GFLOP/s", 1e9)
    rows = [
        ("plain forward (1 pass)", t_plain, plain_flop),
        ("(a) naive hook loop, full map", t_a, naive_flop),
        ("(b) batched, no reuse, full map", t_b, naive_flop),
        ("(c) exact with reuse, full map", t_c, exact_flop),
        ("(d) attribution, full map", t_d, 3 * plain_flop),
    ]
    rows += [(label, t, exact_flop if flop == "exact" else flop) for label, t, flop in compiled]
    print(f"\n{'what':34} {'seconds':>9} {unit:>9} {'a / this':>9}")
    for label, t, flop in rows:
        print(f"{label:34} {t:9.2f} {flop / t / div:9.1f} {t_a / t:9.2f}")
    print(f"\n(c) vs (b): {t_b / t_c:.2f}x   (c) vs (a): {t_a / t_c:.2f}x   (d) vs (a): {t_a / t_d:.1f}x")
    print(f"per 4,096 tokens: exact map {t_c * 4096 / n_tokens:.2f} s, attribution {t_d * 4096 / n_tokens:.3f} s")
    for label, t, _ in compiled:
        print(f"per 4,096 tokens, {label}: {t * 4096 / n_tokens:.3f} s")
    print(f"largest |score (a) - score (c)| on the sampled heads: {diff:.2e} nats")


if __name__ == "__main__":
    main()
