"""The --max-vocab trade-off: vocabulary size against NLL per byte of each kept language (not a test).

For each rarity source (word frequencies, the tokenizer's own order, the corpus's decision
texts) and each size, the default model is trimmed in memory and measured on the report texts,
which played no part in any choice. Each line's change is against the untrimmed model. As
`choose_vocab` does, the tokens the kept languages' decision texts use go first (`--no-first`:
rarity alone).

    python benchmarks/vocab_curve.py --keep en,hi --sizes 128000,96000,64000,48000,32000
"""

from __future__ import annotations

import argparse
import copy
import time

import numpy as np


def main() -> None:
    from langheads import load_model
    from langheads.corpus import load_corpus
    from langheads.edit.vocab import (
        TokenizerFile,
        choose_vocab,
        decision_texts,
        rarity_counts,
        shrink,
        trim_model_,
        trimmed_tokenizer,
        used_tokens,
    )
    from langheads.evaluation.evaluate import text_losses

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="default")
    p.add_argument("--keep", default="en,hi")
    p.add_argument("--sizes", default="128000,96000,64000,48000,32000")
    p.add_argument("--rarity", default="wordfreq,texts,order")
    p.add_argument("--out", help="also write the table here (markdown)")
    p.add_argument(
        "--no-first",
        action="store_true",
        help="rank every token by rarity alone (as before 2026-12-03), not the decision texts' tokens first",
    )
    args = p.parse_args()
    keep = args.keep.split(",")
    original = load_model(args.model)
    n_params = sum(x.numel() for x in original.model.parameters())
    corpus = load_corpus()
    report = {lang: [t.text for t in corpus.texts(lang, "report")] for lang in keep}
    base = {lang: text_losses(original, report[lang]).per_byte for lang in keep}
    tf = TokenizerFile.of(original.tokenizer)
    decisions = decision_texts(corpus, keep)
    exact = choose_vocab(original.tokenizer, keep, decisions)
    rows = []

    def measure(choice, label):
        t0 = time.perf_counter()
        trimmed = copy.copy(original)
        trimmed.model = copy.deepcopy(original.model)
        trim_model_(trimmed.model, choice.kept_ids)
        trimmed.tokenizer = trimmed_tokenizer(original.tokenizer, choice.kept_ids)
        params = sum(x.numel() for x in trimmed.model.parameters())
        per_byte = {lang: text_losses(trimmed, report[lang]).per_byte for lang in keep}
        change = {lang: float(per_byte[lang].mean() / base[lang].mean() - 1) for lang in keep}
        worst = {lang: float((per_byte[lang] / base[lang] - 1).max()) for lang in keep}
        rows.append(
            {
                "rarity": label,
                "tokens": len(choice.kept_ids),
                "params": params / n_params,
                **{f"{lang} per byte": change[lang] for lang in keep},
                **{f"{lang} worst text": worst[lang] for lang in keep},
            }
        )
        r = rows[-1]
        print(
            f"{label:9} {r['tokens']:7,} tokens  params {r['params']:.3f}x  "
            + "  ".join(f"{lang} {change[lang]:+.2%} (worst text {worst[lang]:+.2%})" for lang in keep)
            + f"  [{time.perf_counter() - t0:.0f} s]",
            flush=True,
        )

    measure(exact, "exact")
    texts = [t for lang in keep for t in decisions[lang]]
    used = used_tokens(tf, keep, decisions)  # first, as choose_vocab takes them (--no-first: not)
    for rarity in args.rarity.split(","):
        source, counts = rarity_counts(tf, keep, rarity, texts if rarity == "texts" else None)
        for size in [int(s) for s in args.sizes.split(",")]:
            measure(shrink(tf, exact, counts, size, source, first=set() if args.no_first else used), rarity)
    if args.out:
        import pandas as pd

        with open(args.out, "w") as f:
            f.write(pd.DataFrame(rows).to_string(index=False, float_format=lambda v: f"{v:.4f}") + "\n")


if __name__ == "__main__":
    np.set_printoptions(precision=4)
    main()
