"""Run folders, pruned model folders and evaluations: written once, read through typed readers.

A run folder holds:
  scores.csv      one row per (layer, head, language): score (the method's score: for
                  exact ablation the increase of mean token NLL in nats, for attribution a
                  gradient estimate of it, for switch a share of generations; version-2 runs
                  called it delta_nll and are read as score), its 95% bootstrap interval
                  ci_low..ci_high, rel_increase = score / the language's mean
                  unmodified NLL with its interval rel_ci_low..rel_ci_high, base_nll, n_texts,
                  p_value (bootstrap, for "rel_increase exceeds the threshold")
  per_text.parquet  one row per (language, text_id, layer, head): the method's per-text
                  value; rows with layer = head = -1 hold the unmodified model's mean token NLL
                  of the text; n_tokens counts the text's tokens (BOS included)
  run.json        the run's record: each unit's kind and languages, the rule, every setting,
                  model and corpus hashes, per-language sample size and interval widths, package
                  versions (runs before format 4 called it heads.json; they still read)
  heatmap.png     relative NLL increase per layer x head, one panel per language
Every folder is written through folders.new_folder (whole or not at all); every reader here
checks what it reads and names a damaged file in one line. `report`, `compare`, `prune` and
`evaluate` read through these readers only.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .errors import LangheadsError, printable
from .folders import new_folder, read_versioned_json
from .heads import head_layout
from .plots import heatmap
from .scanning.assemble import SCORE_COLUMNS
from .scanning.kinds import KINDS, LAHIS_KINDS
from .units import HEAD, NOUNS, name, neurons_of, pruned_units


def versions() -> dict:
    import torch
    import transformers

    from ._version import __version__

    return {"langheads": __version__, "torch": torch.__version__, "transformers": transformers.__version__}


def write_run(result, out: Path, overwrite: bool = False) -> Path:
    """Write every file of a run folder, which appears at `out` only when whole."""
    plan, s = result.plan, result.plan.settings
    component = plan.component.record() if plan.component else {"name": "head"}
    heads = head_layout(plan.loaded.model)  # the model's own heads, whatever the scan's units
    with new_folder(out, overwrite, "run") as staging:
        _named_units(result.scores, component).to_csv(staging / "scores.csv", index=False, float_format="%.8g")
        result.per_text.to_parquet(staging / "per_text.parquet", index=False)
        info = {
            "format_version": RUN_FORMAT_VERSION,
            "model": {
                "spec": s.model,
                "id": plan.loaded.model_id,
                "sha256": plan.loaded.model_hash,
                "layers": heads.n_layers,
                "heads": heads.n_heads,
                "kv_heads": heads.n_kv_heads,
                "head_dim": heads.head_dim,
                "architecture": heads.model_type,
            },
            "corpus": {
                "source": plan.corpus.source,
                "sha256": plan.corpus.sha256,
                "part": "scoring",
                "texts": {w.lang: w.text_ids for w in plan.work},
            },
            "method": {"name": plan.method.name, "per_text_value": plan.method.value_meaning},
            **({"component": component} if component["name"] != "head" else {}),
            "signal": plan.signal,
            "settings": asdict(s),
            "rule": result.rule,
            "sample": sample_sizes(result.scores),
            "sample_note": sample_note(result),
            "counts": count_kinds(result.heads),
            "versions": versions(),
            "heads": result.heads,
        }
        (staging / RUN_RECORD).write_text(json.dumps(info, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        heatmap(result.scores, s.languages, staging / "heatmap.png", printable(plan.loaded.model_id))
    return out


def _named_units(scores: pd.DataFrame, component: dict) -> pd.DataFrame:
    """scores.csv's rows with what each unit is: its component, its name (`unit`: units.name),
    and for a neuron group its neurons first-last (`neurons`), for a block attention or mlp
    (`block`); the head column holds the unit's index in its layer, as it always did."""
    named = scores.assign(
        component=component["name"], unit=[name(component, l, u) for l, u in zip(scores["layer"], scores["head"])]
    )
    if component["name"] == "neuron":
        named["neurons"] = [neurons_of(component, h) for h in named["head"]]
    if component["name"] == "block":
        named["block"] = [component["units"][h] for h in named["head"]]
    return named


def sample_sizes(scores: pd.DataFrame) -> dict:
    """Per language: the texts its intervals rest on, and how wide they are (relative NLL
    increase, median and largest over heads), so a reader sees when too few texts were used."""
    width = scores["rel_ci_high"] - scores["rel_ci_low"]
    # an adaptive scan's pairs rest on different numbers of texts: the language's most
    return {
        lang: {
            "texts": int(rows["n_texts"].max()),
            "median_ci_width": float(width[rows.index].median()),
            "max_ci_width": float(width[rows.index].max()),
        }
        for lang, rows in scores.groupby("language", sort=False)
    }


def count_kinds(heads: list[dict]) -> dict:
    kinds = [h["kind"] for h in heads]
    names = KINDS if set(kinds) <= set(KINDS) else LAHIS_KINDS
    return {k: kinds.count(k) for k in names}


SMALL_SAMPLE = 8  # below this many texts a bootstrap interval covers less often than it claims


def sample_note(result) -> str | None:
    """A warning when some language's intervals rest on fewer than SMALL_SAMPLE texts."""
    few = {w.lang: len(w.text_ids) for w in result.plan.work if len(w.text_ids) < SMALL_SAMPLE}
    if not few:
        return None
    return (
        "intervals on fewer than 8 texts ("
        + ", ".join(f"{lang} {n}" for lang, n in few.items())
        + ") cover less often than their stated 95%: treat their kinds as provisional"
    )


def summary(result, per_language: int = 3) -> str:
    s = result.plan.settings
    counts = count_kinds(result.heads)
    component = result.plan.component.record() if result.plan.component else {"name": "head"}
    noun = NOUNS[component["name"]]
    lines = [f"{len(result.heads)} {noun}, {len(s.languages)} languages; rule: {result.rule['text']}"]
    if "false_matters_bound" in result.rule:
        lines.append(f"intervals: {result.rule['n_intervals']}; {result.rule['false_matters_bound']}")
    lines.append("kinds: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    if "adaptive" in result.rule:
        a = result.rule["adaptive"]
        lines.append(
            f"adaptive: scored {a['pair_texts_scored']:,} of {a['pair_texts_full']:,} head-language-text "
            f"triples ({a['share']:.0%}); pairs stopped early as 'matters' {a['stopped']['matters']}, 'below' "
            f"{a['stopped']['below']}, 'futile' {a['stopped']['futile']}; open to the last text "
            f"{a['stopped']['last']}; {a['guarantee']}"
        )
    if sample_note(result):
        lines.append("note: " + sample_note(result))
    lines.append(
        "intervals rest on: "
        + ", ".join(
            f"{lang} {v['texts']} texts (median width {100 * v['median_ci_width']:.2f} points)"
            for lang, v in sample_sizes(result.scores).items()
        )
    )
    rel = result.scores.set_index(["layer", "head", "language"])["rel_increase"]
    for lang in s.languages:
        own = [h for h in result.heads if h["kind"] == "language-specific" and h["languages"] == [lang]]
        own.sort(key=lambda h: -rel[(h["layer"], h["head"], lang)])
        shown = ", ".join(
            f"{name(component, h['layer'], h['head'])} (+{100 * rel[(h['layer'], h['head'], lang)]:.1f}%)"
            for h in own[:per_language]
        )
        lines.append(
            f"  {lang}: {len(own)} specific {noun if len(own) != 1 else noun[:-1]}"
            + (f"; strongest {shown}" if own else "")
        )
    return "\n".join(lines)


RUN_FORMAT_VERSION = 4  # 2: scores.csv has p_value, heads.json has sample; 3: delta_nll is called score;
READS = (1, 2, 3, 4)  # 4: the record is run.json (was heads.json), scores.csv names each unit
RUN_RECORD, OLD_RUN_RECORD = "run.json", "heads.json"


@dataclass
class Run:
    """A finished scan, read and checked whole."""

    folder: Path
    info: dict  # run.json (heads.json before format 4)
    scores: pd.DataFrame  # scores.csv, with each head's kind and kind_languages

    @property
    def languages(self) -> list[str]:
        return list(self.info["settings"]["languages"])

    @property
    def n_layers(self) -> int:
        return int(self.info["model"]["layers"])

    @property
    def n_heads(self) -> int:
        """Units per layer: the model's heads, or a neuron scan's groups."""
        return units_per_layer(self.info)

    @property
    def units(self) -> str:
        """What the run's units are, in words: heads, neuron groups or blocks."""
        return NOUNS[self.component["name"]]

    @property
    def component(self) -> dict:
        """The component record of the run's units (head runs wrote none)."""
        return self.info.get("component", HEAD)

    def unit_name(self, layer: int, index: int) -> str:
        """A unit's one name (units.name): L3H2, L3N128-191, L3 MLP."""
        return name(self.component, layer, index)

    @property
    def method(self) -> str:
        return self.info["method"]["name"]

    @property
    def model_hash(self) -> str:
        return self.info["model"]["sha256"]

    def texts(self, lang: str) -> int:
        return len(self.info["corpus"]["texts"][lang])

    def grid(self, lang: str, column: str = "rel_increase") -> np.ndarray:
        """[layers, heads] of one column for one language."""
        rows = self.scores[self.scores.language == lang]
        out = np.full((self.n_layers, self.n_heads), np.nan)
        out[rows["layer"].to_numpy(), rows["head"].to_numpy()] = rows[column].to_numpy()
        return out


def read_run(run_dir: str | Path) -> Run:
    """A finished run: its record (run.json) and scores.csv, checked whole (every column, one row per
    (layer, head, language), no missing value)."""
    run_dir = Path(run_dir)
    info = load_run_info(run_dir)
    path = run_dir / "scores.csv"
    if not path.is_file():
        raise LangheadsError(f"{run_dir}: not a finished langheads run (no scores.csv)")
    try:
        # language codes are text ("nan" is Min Nan, "no" Norwegian): only an empty cell is missing
        scores = pd.read_csv(path, dtype={"language": str}, keep_default_na=False, na_values=[""])
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError) as e:
        raise LangheadsError(f"{path}: damaged ({str(e).splitlines()[0]})") from None
    if info["format_version"] < 3:  # the method's score was called delta_nll, whatever it held
        scores = scores.rename(columns={"delta_nll": "score"})
    missing = [c for c in SCORE_COLUMNS if c not in scores.columns]
    model, languages = info["model"], info["settings"]["languages"]
    units = units_per_layer(info)
    expected = model["layers"] * units * len(languages)
    if missing:
        raise LangheadsError(f"{path}: damaged (no column {missing[0]})")
    if len(scores) != expected or scores[SCORE_COLUMNS].isna().any().any():
        raise LangheadsError(
            f"{path}: damaged or cut short ({len(scores)} complete rows of {expected}: "
            f"{model['layers']} layers x {units} units x {len(languages)} languages)"
        )
    _check_scores(scores, path, model["layers"], units, languages)
    _check_kinds(info["heads"], run_record(run_dir), model["layers"], units)
    kinds = pd.DataFrame(
        [
            {"layer": h["layer"], "head": h["head"], "kind": h["kind"], "kind_languages": ",".join(h["languages"])}
            for h in info["heads"]
        ]
    )
    return Run(run_dir, info, scores.merge(kinds, on=["layer", "head"], how="left"))


def _check_kinds(heads: list, path: Path, layers: int, units: int) -> None:
    """The record's kinds: one per unit of the recorded shape (a report used to end in an
    IndexError on a layer 99)."""
    try:
        seen = {(h["layer"], h["head"]) for h in heads}
        inside = all(isinstance(l, int) and isinstance(u, int) and 0 <= l < layers and 0 <= u < units for l, u in seen)
    except (TypeError, KeyError):
        inside = False
    if not inside or len(seen) != len(heads) or len(seen) != layers * units:
        raise LangheadsError(
            f"{path}: damaged (its units are not the recorded {layers} layers x {units} per layer, each once)"
        )


def _check_scores(scores: pd.DataFrame, path: Path, layers: int, heads: int, languages: list[str]) -> None:
    """scores.csv against the run's own record: whole-number layers and heads inside the
    model's shape, exactly the recorded languages, each (layer, head, language) once, numbers
    where numbers belong."""
    for column in ("layer", "head"):
        if not pd.api.types.is_integer_dtype(scores[column]):
            raise LangheadsError(f"{path}: damaged (column {column} holds something other than whole numbers)")
    off = scores[(scores.layer < 0) | (scores.layer >= layers) | (scores["head"] < 0) | (scores["head"] >= heads)]
    if len(off):
        row = off.iloc[0]
        raise LangheadsError(
            f"{path}: damaged (a row for layer {row.layer} head {row['head']}, outside the "
            f"recorded {layers} layers x {heads} heads)"
        )
    found = set(scores["language"].astype(str))
    if found != set(languages):
        raise LangheadsError(
            f"{path}: damaged (its languages {','.join(sorted(found))} are not the run's {','.join(languages)})"
        )
    if scores.duplicated(["layer", "head", "language"]).any():
        raise LangheadsError(f"{path}: damaged (a layer, head and language appear twice)")
    numeric = [c for c in SCORE_COLUMNS if c not in ("layer", "head", "language")]
    bad = next((c for c in numeric if not pd.api.types.is_numeric_dtype(scores[c])), None)
    if bad:
        raise LangheadsError(f"{path}: damaged (column {bad} holds something other than numbers)")


def units_per_layer(info: dict) -> int:
    """A run's units per layer: its component's (a neuron scan's groups), else the model's heads."""
    return int(info.get("component", {}).get("units_per_layer", info["model"]["heads"]))


def run_record(run_dir: str | Path) -> Path:
    """A run's record: run.json, or heads.json in runs written before format 4."""
    new, old = Path(run_dir) / RUN_RECORD, Path(run_dir) / OLD_RUN_RECORD
    return old if not new.exists() and old.exists() else new


def load_run_info(run_dir: str | Path) -> dict:
    """The record of a finished run (run.json); a missing or damaged one is named in one line."""
    path = run_record(run_dir)
    info = read_versioned_json(
        path, "a finished langheads run", READS, ("settings", "model", "heads", "corpus", "method")
    )
    try:
        info["settings"]["languages"], info["model"]["layers"], info["model"]["heads"]  # noqa: B018
    except (KeyError, TypeError):
        raise LangheadsError(f"{path}: damaged (no languages or model shape)") from None
    return info


@dataclass
class PrunedFolder:
    """A model folder written by `langheads prune`: what was removed and what it cost."""

    folder: Path
    manifest: object  # manifest.Manifest
    record: dict  # the pruning's record: scan(s), kept, dropped, curve, settings

    @property
    def units(self) -> list[tuple[str, int, int]]:
        """(component, layer, unit) removed, in the order chosen."""
        return pruned_units(self.record)

    @property
    def heads_only(self) -> bool:
        """Whether only attention heads were removed (drawn on the layer x head grid)."""
        return all(u[0] == "head" for u in self.units)

    @property
    def removed(self) -> list[tuple[int, int]]:
        """The heads removed (layer, head)."""
        return [(layer, unit) for name, layer, unit in self.units if name == "head"]

    @property
    def kept(self) -> list[str]:
        return list(self.record["kept"])

    @property
    def dropped(self) -> list[str]:
        return list(self.record["dropped"])

    @property
    def curve(self) -> list[dict]:
        return list(self.record["curve"])

    @property
    def budget(self) -> float | None:
        return self.record["settings"].get("max_increase")


def read_pruned(folder: str | Path) -> PrunedFolder:
    from .manifest import read_manifest

    folder = Path(folder)
    manifest = read_manifest(folder)
    record = manifest.pruning_record() if manifest is not None else None
    if (
        not record
        or not all(k in record for k in ("kept", "dropped", "curve", "settings"))
        or not ("removed_heads" in record or "removed_units" in record)
    ):
        raise LangheadsError(
            f"{folder}: not a model folder written by `langheads prune` (its langheads.json has no record of a pruning)"
        )
    return PrunedFolder(folder, manifest, record)


EVAL_FORMAT_VERSION = 1


@dataclass
class Evaluation:
    """An evaluation folder written by `langheads evaluate`."""

    folder: Path
    info: dict  # eval.json
    table: pd.DataFrame  # per language (kind nll), per language and metric (qa), per task and metric (lm-eval)
    generations: list[dict]  # prompt, before, after, their languages

    @property
    def kind(self) -> str:
        return self.info.get("kind", "nll")


def write_eval(result: dict, out: Path, overwrite: bool = False) -> None:
    with new_folder(out, overwrite, "evaluation") as tmp:
        result["table"].to_csv(tmp / "eval.csv", index=False, float_format="%.6g")
        (tmp / "generations.jsonl").write_text(
            "".join(json.dumps(g, ensure_ascii=False) + "\n" for g in result["generations"]), encoding="utf-8"
        )
        meta = {
            "format_version": EVAL_FORMAT_VERSION,
            **{k: v for k, v in result.items() if k not in ("table", "generations")},
        }
        meta["table"] = result["table"].to_dict(orient="records")
        (tmp / "eval.json").write_text(json.dumps(meta, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


def read_eval(folder: str | Path) -> Evaluation:
    folder = Path(folder)
    info = read_versioned_json(folder / "eval.json", "an evaluation folder", (EVAL_FORMAT_VERSION,), ("table", "model"))
    table = pd.DataFrame(info["table"])
    if info.get("kind", "nll") in ("qa", "lm-eval"):
        first = "language" if info["kind"] == "qa" else "task"
        needed = [first, "metric", "items", "before", "after", "change", "ci_low", "ci_high"]
    else:
        needed = [
            "language",
            "n_texts",
            "nll_per_byte_before",
            "nll_per_byte_after",
            "per_byte_rel_change",
            "per_byte_rel_ci_low",
            "per_byte_rel_ci_high",
        ]
    if any(c not in table.columns for c in needed):
        raise LangheadsError(f"{folder / 'eval.json'}: damaged (its table lacks {needed})")
    try:
        lines = (folder / "generations.jsonl").read_text(encoding="utf-8").splitlines()
        generations = [json.loads(line) for line in lines if line.strip()]
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        raise LangheadsError(f"{folder / 'generations.jsonl'}: missing or damaged") from None
    return Evaluation(folder, info, table, generations)
