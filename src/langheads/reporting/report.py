"""The one-page report: figures of a run (and of a pruned model, an evaluation, a second
run), each with a caption that says what was measured, on which texts and how many.

`write_report` writes REPORT_DIR/report.html with every image embedded (data: URIs) and a
policy that forbids fetching anything, so the page opens offline; each figure is also saved
as PNG and SVG under REPORT_DIR/figures/. Everything is read through runs.py's readers.
"""

from __future__ import annotations

import base64
import html
import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import LangheadsError, printable
from ..folders import claim, new_folder
from ..options import option
from ..plots import heatmap_figure, language_colours, panel_grid, pyplot
from ..runs import Evaluation, PrunedFolder, Run, read_eval, read_pruned, read_run

KIND_COLOURS = {
    "language-group": "#c9d3e3",
    "language-agnostic": "#222222",
    "language-general": "#222222",
    "miscellaneous": "#f2f2f2",
    "other": "#f2f2f2",
}
HATCH_NOTE = "hatched: the 95% interval includes zero"


def _escape(text) -> str:
    """Text for the page: control characters made visible (a folder's name may carry terminal
    escapes, which no HTML may hold), then HTML-escaped."""
    return html.escape(printable(text))


def kinds_map(run: Run):
    """The kind of every head on the layer x head grid (specific heads in their language's
    colour), and the count of each kind."""
    from matplotlib.patches import Patch

    plt = pyplot()
    used = sorted(
        {h["languages"][0] for h in run.info["heads"] if h["kind"] == "language-specific" and len(h["languages"]) == 1}
    )
    colours = language_colours(used)  # only languages with specific heads need a colour of their own
    grid = np.ones((run.n_layers, run.n_heads, 4))
    counts: dict[str, int] = {}
    for h in run.info["heads"]:
        kind = h["kind"]
        counts[kind] = counts.get(kind, 0) + 1
        if kind == "language-specific" and len(h["languages"]) == 1:
            colour = colours[h["languages"][0]]
        else:
            colour = plt.matplotlib.colors.to_rgba(KIND_COLOURS.get(kind, "#999999"))
        grid[h["layer"], h["head"]] = colour
    fig, (ax, bars) = plt.subplots(
        1,
        2,
        figsize=(max(5.0, 0.4 * run.n_heads + 4.5), 0.22 * run.n_layers + 1.8),
        gridspec_kw={"width_ratios": [max(1, run.n_heads / 4), 1.4]},
    )
    ax.imshow(grid, aspect="auto", interpolation="nearest")
    ax.set_xlabel("head")
    ax.set_ylabel("layer")
    ax.set_title("kind of each head")
    legend = [Patch(color=colours[lang], label=f"specific: {lang}") for lang in used]
    legend += [
        Patch(facecolor=KIND_COLOURS.get(k, "#999"), edgecolor="#888", label=k)
        for k in counts
        if k != "language-specific"
    ]
    ax.legend(handles=legend, fontsize=6, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    names = list(counts)
    bars.barh(names, [counts[k] for k in names], color="#6a8fc7")
    for i, k in enumerate(names):
        bars.text(counts[k], i, f" {counts[k]}", va="center", fontsize=7)
    bars.set_xlabel("heads")
    bars.set_title("count of each kind")
    bars.tick_params(axis="y", labelsize=7)
    fig.tight_layout()
    return fig


def similarity(run: Run):
    """Languages x languages: correlation of their head-importance vectors (relative NLL
    increase over all heads), ordered by average-linkage clustering, with the dendrogram."""
    from scipy.cluster.hierarchy import dendrogram, linkage
    from scipy.spatial.distance import squareform

    plt = pyplot()
    langs = run.languages
    vectors = np.array([run.grid(lang).ravel() for lang in langs])
    corr = np.corrcoef(vectors) if len(langs) > 1 else np.ones((1, 1))
    corr = np.nan_to_num(corr, nan=0.0)
    fig = plt.figure(figsize=(0.32 * len(langs) + 3.2, 0.32 * len(langs) + 2.4))
    top = fig.add_axes([0.18, 0.80, 0.62, 0.16])
    ax = fig.add_axes([0.18, 0.08, 0.62, 0.70])
    if len(langs) > 2:
        distance = np.clip(1 - corr, 0, None)
        np.fill_diagonal(distance, 0)
        tree = linkage(squareform((distance + distance.T) / 2, checks=False), method="average")
        order = dendrogram(tree, ax=top, no_labels=True, color_threshold=0, above_threshold_color="#555")["leaves"]
    else:
        order = list(range(len(langs)))
    top.axis("off")
    image = ax.imshow(corr[np.ix_(order, order)], cmap="viridis", vmin=min(0.0, corr.min()), vmax=1)
    ax.set_xticks(range(len(langs)), [langs[i] for i in order], rotation=90, fontsize=7)
    ax.set_yticks(range(len(langs)), [langs[i] for i in order], fontsize=7)
    cax = fig.add_axes([0.83, 0.08, 0.025, 0.70])  # its own axes: the matrix keeps the dendrogram's width
    fig.colorbar(image, cax=cax, label="Pearson correlation over heads")
    return fig, [langs[i] for i in order], corr


def top_heads(run: Run, k: int = 5) -> tuple[object, pd.DataFrame]:
    """Each language's k most important units (heads, neuron groups, blocks) with their 95% intervals."""
    plt = pyplot()
    rows, cols = panel_grid(len(run.languages), 6)
    fig, axes = plt.subplots(rows, cols, figsize=(2.3 * cols, 1.5 * rows + 0.4), squeeze=False)
    for ax in axes.ravel()[len(run.languages) :]:
        ax.axis("off")
    table = []
    for ax, lang in zip(axes.ravel(), run.languages):
        best = run.scores[run.scores.language == lang].nlargest(k, "rel_increase")
        y = np.arange(len(best))[::-1]
        value = 100 * best["rel_increase"].to_numpy()
        err = [value - 100 * best["rel_ci_low"].to_numpy(), 100 * best["rel_ci_high"].to_numpy() - value]
        ax.errorbar(value, y, xerr=err, fmt="o", markersize=3, color="#444", ecolor="#6a8fc7")
        ax.axvline(0, color="#bbb", linewidth=0.8)
        ax.set_yticks(y, [run.unit_name(r.layer, r.head) for r in best.itertuples()], fontsize=6)
        ax.tick_params(axis="x", labelsize=6)
        ax.set_title(lang, fontsize=8)
        for r in best.itertuples():
            table.append(
                {
                    "language": lang,
                    "unit": run.unit_name(r.layer, r.head),
                    "kind": r.kind,
                    "rel_increase": r.rel_increase,
                    "rel_ci_low": r.rel_ci_low,
                    "rel_ci_high": r.rel_ci_high,
                }
            )
    fig.supxlabel("NLL increase when removed (%), 95% interval", fontsize=8)
    fig.tight_layout()
    return fig, pd.DataFrame(table)


def prune_curve(pruned: PrunedFolder):
    """Units removed (in the order chosen) vs each language's NLL change on the selection
    texts; kept languages solid, dropped ones dashed (measured where the walk measured them:
    before and after, in walks since batching); the budget as a line."""
    plt = pyplot()
    curve = pruned.curve
    langs = list(curve[0]["nll"])
    colours = language_colours(langs)
    steps = np.cumsum([len(c.get("units", c.get("heads", []))) for c in curve])  # units removed so far
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    for lang in langs:
        base = curve[0]["nll"][lang]
        points = [(s, 100 * (c["nll"][lang] / base - 1)) for s, c in zip(steps, curve) if lang in c["nll"]]
        kept = lang in pruned.kept
        ax.plot(
            *zip(*points),
            "-" if kept else "--",
            color=colours[lang],
            linewidth=1.8 if kept else 1.0,
            label=f"{lang} ({'kept' if kept else 'dropped'})",
        )
    if pruned.budget is not None:
        ax.axhline(
            100 * pruned.budget, color="#c33", linewidth=1, linestyle=":", label=f"budget +{100 * pruned.budget:.1f}%"
        )
    ax.set_xlabel("units removed")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_ylabel("NLL change (%)")
    ax.legend(fontsize=6, ncol=2, frameon=False)
    fig.tight_layout()
    return fig


def removed_grid(pruned: PrunedFolder, n_layers: int, n_heads: int):
    plt = pyplot()
    grid = np.zeros((n_layers, n_heads))
    for layer, head in pruned.removed:
        grid[layer, head] = 1
    fig, ax = plt.subplots(figsize=(max(2.5, 0.35 * n_heads + 1.2), 0.22 * n_layers + 1.2))
    ax.imshow(grid, cmap="Reds", vmin=0, vmax=1.4, aspect="auto", interpolation="nearest")
    ax.set_xlabel("head")
    ax.set_ylabel("layer")
    ax.set_title(f"{len(pruned.removed)} heads removed", fontsize=8)
    fig.tight_layout()
    return fig


def body_removed(pruned: PrunedFolder, n_layers: int):
    """Per layer: heads and MLP neurons a walk across components removed, and its whole blocks."""
    plt = pyplot()
    units, g = pruned.units, pruned.record.get("neurons_per_group") or 0
    layers = np.arange(n_layers)
    heads = np.bincount([l for n, l, _ in units if n == "head"], minlength=n_layers)
    neurons = g * np.bincount([l for n, l, _ in units if n == "neuron"], minlength=n_layers)
    blocks = np.zeros((n_layers, 2))
    for n, l, b in units:
        if n == "block":
            blocks[l, b] = 1
    fig, axes = plt.subplots(1, 3, figsize=(7.2, 0.16 * n_layers + 1.6), gridspec_kw={"width_ratios": [2, 2, 1]})
    bars = ((axes[0], heads, f"{heads.sum()} heads"), (axes[1], neurons, f"{neurons.sum():,} MLP neurons"))
    for ax, counts, title in bars:
        ax.barh(layers, counts, color="#c33")
        ax.set_title(title, fontsize=8)
    axes[2].imshow(blocks, cmap="Reds", vmin=0, vmax=1.4, aspect="auto", interpolation="nearest")
    axes[2].set_xticks([0, 1], ["attention", "MLP"], fontsize=7)
    axes[2].set_title(f"{int(blocks.sum())} blocks", fontsize=8)
    for ax in axes:  # layer 0 on top, as in the other grids
        ax.set_ylim(n_layers - 0.5, -0.5)
        ax.yaxis.get_major_locator().set_params(integer=True)
    axes[0].set_ylabel("layer")
    fig.tight_layout()
    return fig


def eval_figure(ev: Evaluation):
    """Per language: relative change of NLL per byte on the report texts, with its paired 95% interval."""
    plt = pyplot()
    t = ev.table
    fig, ax = plt.subplots(figsize=(max(3.5, 0.6 * len(t) + 1.5), 3.0))
    x = np.arange(len(t))
    value = 100 * t["per_byte_rel_change"].to_numpy()
    err = [value - 100 * t["per_byte_rel_ci_low"].to_numpy(), 100 * t["per_byte_rel_ci_high"].to_numpy() - value]
    ax.bar(x, value, color="#6a8fc7")
    ax.errorbar(x, value, yerr=err, fmt="none", ecolor="#333", capsize=3)
    ax.axhline(0, color="#888", linewidth=0.8)
    ax.set_xticks(x, t["language"])
    ax.set_ylabel("NLL per byte, after vs before (%)")
    fig.tight_layout()
    return fig


def compare_figure(a: Run, b: Run):
    """Per shared language: one run's head scores against the other's, with Spearman's rho."""
    from .compare import spearman

    plt = pyplot()
    shared = [lang for lang in a.languages if lang in b.languages]
    if not shared:
        raise LangheadsError("--compare: the two runs share no language")
    rows, cols = panel_grid(len(shared), 6)
    fig, axes = plt.subplots(rows, cols, figsize=(2.2 * cols, 2.1 * rows + 0.4), squeeze=False)
    for ax in axes.ravel()[len(shared) :]:
        ax.axis("off")
    rhos = {}
    for ax, lang in zip(axes.ravel(), shared):
        x, y = a.grid(lang, "score").ravel(), b.grid(lang, "score").ravel()
        rhos[lang] = spearman(x, y)
        ax.scatter(x, y, s=5, color="#6a8fc7")
        ax.set_title(f"{lang}: rho {rhos[lang]:.2f}", fontsize=8)
        ax.tick_params(labelsize=6)
    fig.supxlabel(f"{a.method} score", fontsize=8)
    fig.supylabel(f"{b.method} score", fontsize=8)
    fig.tight_layout()
    return fig, rhos


# ---- the page -----------------------------------------------------------------------------


@dataclass
class Page:
    title: str
    figures_dir: Path
    parts: list[str] = field(default_factory=list)

    def heading(self, text: str) -> None:
        self.parts.append(f"<h2>{_escape(text)}</h2>")

    def text(self, text: str) -> None:
        self.parts.append(f"<p>{_escape(text)}</p>")

    def figure(self, name: str, fig, caption: str) -> None:
        """Save the figure as PNG and SVG, and embed the PNG in the page."""
        plt = pyplot()
        fig.savefig(self.figures_dir / f"{name}.svg", bbox_inches="tight", metadata={"Date": None})
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight", metadata={"Software": None})
        plt.close(fig)
        (self.figures_dir / f"{name}.png").write_bytes(buffer.getvalue())
        data = base64.b64encode(buffer.getvalue()).decode("ascii")
        self.parts.append(
            f'<figure id="fig-{name}"><img alt="{_escape(name)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{_escape(caption)}</figcaption></figure>"
        )

    def table(self, name: str, frame: pd.DataFrame, formats: dict | None = None) -> None:
        formats = formats or {}
        head = "".join(f"<th>{_escape(str(c))}</th>" for c in frame.columns)
        body = []
        for row in frame.itertuples(index=False):
            cells = [formats.get(c, _plain)(v) for c, v in zip(frame.columns, row)]
            body.append("<tr>" + "".join(f"<td>{_escape(c)}</td>" for c in cells) + "</tr>")
        self.parts.append(
            f'<table id="table-{name}"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'
        )

    def html(self) -> str:
        return PAGE.format(title=_escape(self.title), body="\n".join(self.parts))


def _plain(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def pct(v: float) -> str:
    return f"{100 * v:+.2f}%"


PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; img-src data:; style-src 'unsafe-inline'">
<title>{title}</title>
<style>
body {{ font: 14px/1.45 system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em; color: #222; }}
figure {{ margin: 1.2em 0; }} figure img {{ max-width: 100%; border: 1px solid #eee; }}
figcaption {{ font-size: 12px; color: #555; }} table {{ border-collapse: collapse; font-size: 12px; margin: 0.8em 0; }}
td, th {{ border: 1px solid #ddd; padding: 2px 6px; text-align: right; }} th {{ background: #f6f6f6; }}
</style></head><body>
<h1>{title}</h1>
{body}
</body></html>
"""


@dataclass
class ReportSettings:
    """Everything `langheads report` is told; every option defined once, here."""

    run_dir: str = option(positional=True, metavar="RUN_DIR", help="a run folder from `langheads scan`")
    prune: str | None = option(
        None, metavar="MODEL_DIR", help="a model folder from `langheads prune`: its curve and heads"
    )
    eval: str | None = option(None, metavar="EVAL_DIR", help="a folder from `langheads evaluate`")
    compare: str | None = option(
        None, metavar="RUN_B", help="another run of the same model (another method): a scatter"
    )


def report(settings: ReportSettings, out, overwrite: bool = False) -> Path:
    """Library entry point for `langheads report`: one self-contained HTML page and figures/."""
    with claim(Path(out), overwrite, "report"):
        return write_report(settings.run_dir, Path(out), settings.prune, settings.eval, settings.compare, overwrite)


def write_report(run_dir, out: Path, prune_dir=None, eval_dir=None, compare_dir=None, overwrite: bool = False) -> Path:
    """Read everything first (a bad input is refused before anything is written), then write
    report.html and figures/ into `out`, which appears only when whole."""
    run = read_run(run_dir)
    pruned = read_pruned(prune_dir) if prune_dir else None
    ev = read_eval(eval_dir) if eval_dir else None
    other = read_run(compare_dir) if compare_dir else None
    if other is not None:
        from .compare import comparable

        try:
            comparable(run, other)
        except LangheadsError as e:
            raise LangheadsError(f"--compare: {e}") from None
    if pruned is not None and pruned.record.get("model", {}).get("sha256") not in (None, run.model_hash):
        raise LangheadsError("--prune: that model folder was pruned from another model than this run scanned")
    with new_folder(out, overwrite, "report") as tmp:
        (tmp / "figures").mkdir()
        page = build_page(run, pruned, ev, other, tmp / "figures")
        (tmp / "report.html").write_text(page.html(), encoding="utf-8")
    return Path(out)


def build_page(run: Run, pruned: PrunedFolder | None, ev: Evaluation | None, other: Run | None, figures: Path) -> Page:
    """The page, section by section: what was scanned, the kinds, the sample, importance,
    then the pruning, the evaluation and the comparison when given."""
    page = Page(f"langheads report: {run.info['model']['id']}", figures)
    note = _text_note(run)
    _intro(page, run, note)
    _kinds_section(page, run, note)
    _sample_section(page, run)
    _importance_sections(page, run, note)
    if pruned is not None:
        _pruning_section(page, pruned, run)
    if ev is not None:
        (_answers_section if ev.kind in ("qa", "lm-eval") else _evaluation_section)(page, ev)
    if other is not None:
        _compare_section(page, run, other)
    return page


def _text_note(run: Run) -> str:
    texts = [run.texts(lang) for lang in run.languages]
    return f"{sum(texts)} scoring texts of {run.info['corpus']['source']} ({min(texts)}-{max(texts)} per language)"


def _intro(page: Page, run: Run, note: str) -> None:
    info, langs, model = run.info, run.languages, run.info["model"]
    units = "" if run.units == "heads" else f"; units: {model['layers'] * run.n_heads} {run.units}"
    page.text(
        f"Model {model['id']} ({model['architecture']}, {model['layers']} layers x {model['heads']} heads, "
        f"sha256 {model['sha256'][:12]}); method {run.method}{units}; {len(langs)} languages: "
        f"{', '.join(langs)}; {note}."
    )
    page.text(f"Kinds by the rule: {info['rule']['text']}.")
    if "false_matters_bound" in info["rule"]:
        bound = info["rule"]["false_matters_bound"]
        page.text(bound[0].upper() + bound[1:] + ".")


def _kinds_section(page: Page, run: Run, note: str) -> None:
    info, u = run.info, run.units
    page.heading(f"Kinds of {u}")
    page.table("counts", pd.DataFrame([{"kind": k, u: v} for k, v in info["counts"].items()]))
    page.figure(
        "kinds",
        kinds_map(run),
        f"Kind of each of the {run.n_layers * run.n_heads} {u}, by the rule above ({info['rule']['name']}), "
        f"from {note}. Specific {u} take their language's colour.",
    )


def _sample_section(page: Page, run: Run) -> None:
    page.heading("Sample: how many texts each language's intervals rest on")
    sample = run.info.get("sample") or {}
    rows = [
        {
            "language": lang,
            "texts": run.texts(lang),
            "median interval width": sample.get(lang, {}).get("median_ci_width", float("nan")),
            "largest interval width": sample.get(lang, {}).get("max_ci_width", float("nan")),
        }
        for lang in run.languages
    ]
    page.table("sample", pd.DataFrame(rows), {"median interval width": _points, "largest interval width": _points})
    if run.info.get("sample_note"):
        page.text("Note: " + run.info["sample_note"] + ".")


def _importance_sections(page: Page, run: Run, note: str) -> None:
    langs, model, u = run.languages, run.info["model"], run.units
    unit = u[:-1]
    page.heading(f"{u[0].upper()}{unit[1:]} importance per language")
    page.figure(
        "heatmap",
        heatmap_figure(run.scores, langs, printable(model["id"])),
        f"Relative increase of mean token NLL when each {unit} alone is removed ({run.method}), per "
        f"layer x {unit}, one colour scale for all languages (clipped at the 99th percentile); "
        f"{HATCH_NOTE}. {note}.",
    )
    page.heading(f"Which languages share {u}")
    fig, order, corr = similarity(run)
    page.figure(
        "similarity",
        fig,
        f"Pearson correlation between languages' {unit}-importance vectors (relative NLL increase over all "
        f"{run.n_layers * run.n_heads} {u}), languages ordered by average-linkage clustering on "
        f"1 - correlation (dendrogram on top). Order: {', '.join(order)}.",
    )
    page.table(
        "similarity",
        pd.DataFrame(corr, columns=langs).assign(language=langs)[["language", *langs]],
        {lang: (lambda v: f"{v:.2f}") for lang in langs},
    )
    page.heading(f"Top {u} per language")
    fig, table = top_heads(run)
    page.figure(
        "top_heads",
        fig,
        f"The 5 {u} whose removal raises each language's NLL most, with 95% bootstrap intervals over texts. {note}.",
    )
    page.table("top_heads", table, {"rel_increase": pct, "rel_ci_low": pct, "rel_ci_high": pct})


def _pruning_section(page: Page, pruned: PrunedFolder, run: Run) -> None:
    """The walk's curve, what it removed (the head grid when it removed heads only, else per
    layer: heads, MLP neurons, blocks) and what that saved."""
    from ..edit.savings import describe

    page.heading(f"Pruning: keep {','.join(pruned.kept)}, drop {','.join(pruned.dropped)}")
    scans = pruned.record.get("scans", [pruned.record.get("scan")])
    said = describe(pruned.record).replace(chr(10), "; ") if "saved" in pruned.record else ""
    said = said[:1].upper() + said[1:]
    batches = len(pruned.curve) - 1
    page.figure(
        "prune_curve",
        prune_curve(pruned),
        f"NLL change on the selection texts (never the scoring or report texts) as units are removed, "
        f"batch by batch in the order chosen from {len(scans)} scan{'s' * (len(scans) != 1)}; "
        f"{batches} batch{'es' * (batches != 1)}, {len(pruned.units)} units. {said}. "
        f"Stopped: {pruned.record.get('stopped', '?')}.",
    )
    if pruned.heads_only:
        page.figure(
            "prune_removed",
            removed_grid(pruned, run.n_layers, run.n_heads),
            f"The {len(pruned.removed)} heads removed from {pruned.folder.name}, on the layer x head grid.",
        )
    else:
        page.figure(
            "prune_removed",
            body_removed(pruned, run.n_layers),
            f"What {pruned.folder.name} lost per layer (original numbering): heads, MLP neurons, whole blocks.",
        )
    _prune_table(page, pruned)


def _prune_table(page: Page, pruned: PrunedFolder) -> None:
    last, first = pruned.curve[-1]["nll"], pruned.curve[0]["nll"]
    page.table(
        "prune",
        pd.DataFrame(
            [
                {
                    "language": lang,
                    "role": "kept" if lang in pruned.kept else "dropped",
                    "NLL change": last[lang] / first[lang] - 1,
                }
                for lang in first
            ]
        ),
        {"NLL change": pct},
    )


def _answers_section(page: Page, ev: Evaluation) -> None:
    page.heading(f"Answers: {ev.info['model']} against {ev.info.get('baseline', '?')}")
    page.text(
        f"Greedy answers on the report part of {ev.info.get('data', '?')}; paired 95% bootstrap intervals "
        f"of the change; masked heads: {ev.info.get('mask') or 'none'}."
    )
    page.table("eval", ev.table)


def _evaluation_section(page: Page, ev: Evaluation) -> None:
    t = ev.table
    page.heading(f"Evaluation: {ev.info['model']} against {ev.info.get('baseline', '?')}")
    page.figure(
        "eval",
        eval_figure(ev),
        f"NLL per byte on the report texts ({int(t['n_texts'].sum())} texts, "
        f"{int(t['n_texts'].min())}-{int(t['n_texts'].max())} per language; never used for any choice), "
        "after vs before, with paired 95% bootstrap intervals.",
    )
    page.table(
        "eval",
        t[
            [
                "language",
                "n_texts",
                "nll_per_byte_before",
                "nll_per_byte_after",
                "per_byte_rel_change",
                "per_byte_rel_ci_low",
                "per_byte_rel_ci_high",
            ]
        ],
        {"per_byte_rel_change": pct, "per_byte_rel_ci_low": pct, "per_byte_rel_ci_high": pct},
    )
    if ev.generations:
        page.parts.append("<h3>Generation samples (greedy), before and after</h3>")
        page.table(
            "generations",
            pd.DataFrame(
                [
                    {"language": g["language"], "prompt": g["prompt"], "before": g["before"], "after": g["after"]}
                    for g in ev.generations
                ]
            ),
        )


def _compare_section(page: Page, run: Run, other: Run) -> None:
    page.heading(f"Methods compared: {run.method} vs {other.method}")
    fig, rhos = compare_figure(run, other)
    page.figure(
        "compare",
        fig,
        f"Per language, each head's {run.method} score ({run.folder.name}) against its "
        f"{other.method} score ({other.folder.name}), with Spearman's rank correlation; "
        f"mean rho {np.nanmean(list(rhos.values())):.2f}.",
    )
    page.table(
        "compare",
        pd.DataFrame([{"language": k, "spearman": v} for k, v in rhos.items()]),
        {"spearman": lambda v: f"{v:.3f}"},
    )


def _points(v: float) -> str:
    return f"{100 * v:.2f} points"
