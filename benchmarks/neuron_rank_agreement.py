"""How well the cheap neuron methods rank the exact neuron groups, per language (issue 17).

    python benchmarks/neuron_rank_agreement.py EXACT_RUN ATTRIBUTION_RUN LAPE_RUN

Three runs of the same model, texts and --neuron-group (scan --component neuron with --method
exact, attribution, lape). Prints, per language, Spearman's rank correlation with the exact
groups' scores of: attribution's score, LAPE's activation probability p_l, and LAPE's
language share p_l / sum over the run's languages (its language-specificity), and the
overlap of the top 5% of groups.
"""

from __future__ import annotations

import sys

import numpy as np

from langheads import read_run
from langheads.reporting.compare import spearman


def _grid(run, lang):
    return run.grid(lang, "score").ravel()


def _top_overlap(a, b, share=0.05):
    k = max(1, int(len(a) * share))
    return len(set(np.argsort(-a)[:k]) & set(np.argsort(-b)[:k])) / k


def main(exact_dir, attr_dir, lape_dir):
    exact, attr, lape = read_run(exact_dir), read_run(attr_dir), read_run(lape_dir)
    langs = [lang for lang in exact.languages if lang in attr.languages and lang in lape.languages]
    p = {lang: _grid(lape, lang) for lang in lape.languages}
    total = sum(p.values())
    print(
        f"{exact.info['model']['id']}: {exact.n_layers} layers x {exact.n_heads} groups of "
        f"{exact.info['component']['neurons_per_group']} neurons; exact texts per language: "
        + ", ".join(f"{lang} {exact.texts(lang)}" for lang in langs)
    )
    print(f"{'language':9} {'attribution':>12} {'LAPE p_l':>9} {'LAPE share':>11}   top-5% overlap (attr / share)")
    for lang in langs:
        e, a, share = _grid(exact, lang), _grid(attr, lang), p[lang] / np.where(total > 0, total, 1)
        print(
            f"{lang:9} {spearman(e, a):12.3f} {spearman(e, p[lang]):9.3f} {spearman(e, share):11.3f}   "
            f"{_top_overlap(e, a):.2f} / {_top_overlap(e, share):.2f}"
        )


if __name__ == "__main__":
    main(*sys.argv[1:4])
