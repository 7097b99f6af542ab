"""What a fixed set of commands writes, on a tiny random Llama and a small bundled-style
corpus: the scan's scores and per-text values, and the sha256 of the pruned and trimmed
folders' weights, of a GGUF export and of a report page. `tests/test_reference.py` runs the same commands and
compares with `tests/data/reference.json`, written by this script from the code before a
refactoring (run it from that commit's tree: PYTHONPATH=OLD/src python scripts/reference_outputs.py).

Only the command line is used, so the script runs against older and newer code alike.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

TEXTS = {
    "en": [
        "The cat sat on the mat and looked at the rain.",
        "All people are born free and equal.",
        "Every morning she walks to the old bridge.",
        "He reads a book about the sea.",
        "They built a house near the river last summer.",
        "Numbers and letters fill the page.",
        "The train leaves at nine in the evening.",
        "Birds sing before the sun rises.",
        "The market opens early on Sundays.",
        "Snow covered the hills all winter.",
    ],
    "fr": [
        "Le chat est assis sur le tapis et regarde la pluie.",
        "Tous les êtres humains naissent libres.",
        "Chaque matin elle marche jusqu'au vieux pont.",
        "Il lit un livre sur la mer.",
        "Ils ont construit une maison près de la rivière.",
        "Des chiffres et des lettres remplissent la page.",
        "Le train part à neuf heures du soir.",
        "Les oiseaux chantent avant le lever du soleil.",
        "Le marché ouvre tôt le dimanche.",
        "La neige a couvert les collines tout l'hiver.",
    ],
}


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _page(path: Path, root: Path, model_sha: str) -> str:
    """sha256 of a report page, with the folder it was made in written as ROOT and the model's
    hash as MODEL (the tiny model's config.json names the transformers that saved it)."""
    page = path.read_text(encoding="utf-8").replace(str(root), "ROOT").replace(model_sha[:12], "MODEL")
    return hashlib.sha256(page.encode()).hexdigest()


def _weights(folder: Path) -> dict:
    return {p.name: _sha(p) for p in sorted(folder.glob("*.safetensors"))}


def produce(root: Path) -> dict:
    """Run the commands under `root`; what they wrote, as comparable values."""
    import pandas as pd
    import torch

    from langheads import synthetic
    from langheads.cli import main

    torch.set_num_threads(1)  # one summation order
    model = synthetic.save_tiny("llama", root / "model", tokenizer="byte_fallback")  # a vocabulary to trim
    data = root / "data"
    data.mkdir()
    for lang, lines in TEXTS.items():
        (data / f"{lang}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    steps = [
        [
            "scan",
            "--model",
            str(model),
            "--data",
            str(data),
            "--languages",
            "en,fr",
            "--bootstrap",
            "50",
            "--out",
            str(root / "run"),
            "--quiet",
        ],
        [
            "prune",
            "--scan",
            str(root / "run"),
            "--keep",
            "en",
            "--heads",
            "2",
            "--out",
            str(root / "pruned"),
            "--quiet",
        ],
        ["trim", "--model", str(model), "--keep", "en", "--data", str(data), "--out", str(root / "trimmed")],
        ["export", str(model), "--gguf", str(root / "model.gguf")],
        ["report", str(root / "run"), "--prune", str(root / "pruned"), "--out", str(root / "report")],
    ]
    for step in steps:
        assert main(step) == 0, step
    scores = pd.read_csv(root / "run" / "scores.csv").rename(columns={"delta_nll": "score"})
    per_text = pd.read_parquet(root / "run" / "per_text.parquet")
    heads = json.loads((root / "run" / "run.json").read_text())
    return {
        "columns": [list(scores.columns), list(per_text.columns)],
        "scores": scores.to_dict(orient="list"),
        "per_text": per_text.to_dict(orient="list"),
        "kinds": [[h["layer"], h["head"], h["kind"], h["languages"]] for h in heads["heads"]],
        "pruned": _weights(root / "pruned"),
        "trimmed": _weights(root / "trimmed"),
        "gguf": _sha(root / "model.gguf"),
        "report": _page(root / "report" / "report.html", root, heads["model"]["sha256"]),
    }


if __name__ == "__main__":
    import tempfile

    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parents[1] / "tests/data/reference.json"
    with tempfile.TemporaryDirectory() as tmp:
        values = produce(Path(tmp))
    out.write_text(json.dumps(values, indent=0, sort_keys=True) + "\n")
    print(f"wrote {out}")
