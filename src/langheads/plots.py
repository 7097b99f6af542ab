"""Drawing primitives every figure shares, and the run folder's heatmap: a leaf module (numpy,
pandas and matplotlib only), so run writers and the report draw alike without importing each
other."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    # Titles and labels carry user text (model folder names, language codes, file names):
    # drawn as plain text, so "$\\frac$" is a name, not mathtext that fails after a whole scan.
    matplotlib.rcParams["text.parse_math"] = False
    import matplotlib.pyplot as plt

    return plt


def language_colours(languages: list[str]) -> dict[str, tuple]:
    """Distinct colours: tab10 for up to 10 languages, then tab20 and tab20b (40 in all)."""
    plt = pyplot()
    if len(languages) <= 10:
        palette = [plt.get_cmap("tab10")(i) for i in range(10)]
    else:
        palette = [plt.get_cmap(name)(i) for name in ("tab20", "tab20b") for i in range(20)]
    return {lang: palette[i % len(palette)] for i, lang in enumerate(languages)}


def panel_grid(n: int, max_cols: int = 8) -> tuple[int, int]:
    cols = min(max_cols, n)
    return (n + cols - 1) // cols, cols


# ---- figures ------------------------------------------------------------------------------


def heatmap(scores: pd.DataFrame, languages: list[str], path: Path, title: str) -> None:
    """The heatmap figure saved as a run folder's heatmap.png."""
    plt = pyplot()
    fig = heatmap_figure(scores, languages, title)
    fig.savefig(path, dpi=110, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)


def heatmap_figure(scores: pd.DataFrame, languages: list[str], title: str):
    """Relative NLL increase per layer x head, one panel per language, on one colour scale;
    cells whose interval includes zero are hatched."""
    from matplotlib.patches import Rectangle

    plt = pyplot()
    n_layers, n_heads = int(scores["layer"].max()) + 1, int(scores["head"].max()) + 1
    grids = {lang: np.zeros((n_layers, n_heads)) for lang in languages}
    unsure = {lang: np.zeros((n_layers, n_heads), dtype=bool) for lang in languages}
    for row in scores.itertuples():
        grids[row.language][row.layer, row.head] = 100 * row.rel_increase
        unsure[row.language][row.layer, row.head] = row.rel_ci_low <= 0 <= row.rel_ci_high
    top = max(1e-9, float(np.percentile(np.concatenate([g.ravel() for g in grids.values()]), 99)))
    rows, cols = panel_grid(len(languages))
    width = min(2.2, 0.35 * n_heads + 0.6)
    fig, axes = plt.subplots(
        rows, cols, figsize=(width * cols + 1.2, (0.22 * n_layers + 1.2) * rows + 0.4), squeeze=False, sharey=True
    )
    for ax in axes.ravel()[len(languages) :]:
        ax.axis("off")
    for ax, lang in zip(axes.ravel(), languages):
        image = ax.imshow(grids[lang], cmap="magma_r", vmin=0, vmax=top, aspect="auto", interpolation="nearest")
        for layer, head in zip(*np.nonzero(unsure[lang])):
            ax.add_patch(
                Rectangle((head - 0.5, layer - 0.5), 1, 1, fill=False, hatch="///", edgecolor="#7aa6c2", linewidth=0)
            )
        ax.set_title(lang)
        ax.set_xlabel("head")
        ax.set_xticks(range(n_heads) if n_heads <= 8 else range(0, n_heads, max(1, n_heads // 4)))
    for r in range(rows):
        axes[r][0].set_ylabel("layer")
    fig.colorbar(image, ax=axes.ravel().tolist(), label="NLL increase when removed (%)", shrink=0.9)
    fig.suptitle(title, fontsize=9)  # callers make a folder's name printable (no control character in an SVG)
    return fig
