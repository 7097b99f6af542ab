"""Vocabulary trimming: keep the tokens the kept languages can use, rewrite model and tokenizer together.

Exact mode keeps every token whose letters all belong to the kept languages' scripts (measured
on their texts), every token with no letters (digits, punctuation, whitespace, the space
marker), every special and added token and every byte token. BPE merges are kept when both
parts and the result are kept. Why that is exact: tokenizing a text in the kept scripts only
ever forms substrings of the text, so every merge it applies has kept parts and a kept result;
a removed merge always has a removed part or result, so it never competes. The same token
strings come out, and at each position the trimmed model's logits are the original's at the
kept ids: a softmax over fewer tokens, so each text's NLL can only fall.

`max_vocab` goes further: the rarest kept tokens go first (rarity counted on the user's texts,
else on word frequencies of the kept languages, else the tokenizer's own order), and the set
stays closed under the merges that build each kept token.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache

import torch

from .. import heads as H
from ..builtin import MODEL_HELP
from ..errors import LangheadsError
from ..models import DTYPES
from ..options import check_choices, option

SCRIPT_SHARE = 0.01  # a script is a language's when it writes at least 1% of its letters
# Words in Unicode character names that are not the script (FULLWIDTH LATIN A is Latin).
_NAME_PREFIXES = {"FULLWIDTH", "HALFWIDTH", "SUPERSCRIPT", "SUBSCRIPT", "SMALL", "CAPITAL"}
_SCRIPT_ALIASES = {"CJK": "HAN", "IDEOGRAPHIC": "HAN", "KATAKANA-HIRAGANA": "KATAKANA"}
_NO_SCRIPT = {"COMBINING", "MODIFIER", "MATHEMATICAL", "DOUBLE-STRUCK", "SCRIPT", "BLACK-LETTER"}


@lru_cache(maxsize=1 << 16)
def script_of(ch: str) -> str | None:
    """The script of a letter or mark (LATIN, DEVANAGARI, HAN, ...); None for other characters
    and for letters every script uses (combining accents, modifier letters, math letters)."""
    if unicodedata.category(ch)[0] not in "LM":
        return None
    words = unicodedata.name(ch, "UNKNOWN").split()
    while len(words) > 1 and words[0] in _NAME_PREFIXES:
        words = words[1:]
    if words[0] in _NO_SCRIPT:
        return None
    return _SCRIPT_ALIASES.get(words[0], words[0])


def scripts_in(text: str) -> Counter:
    return Counter(s for s in map(script_of, text) if s is not None)


# Which scripts a language is written in is knowledge, not only a measurement on a few texts
# (the bundled Japanese texts hold no Katakana): the scripts of each language in everyday use,
# after Unicode CLDR's languageData (primary scripts, plus the second script of digraphic
# languages: Serbian Cyrillic and Latin, Korean Hangul and Hanja), named as script_of names them.
WRITTEN_IN = {
    **dict.fromkeys(
        "en fr de es pt it tr vi id ms sw nl pl sv cs sk sl hr bs hu fi et lv lt ro ca gl eu da no nb "
        "nn is ga cy af tl uz az sq mt lb yo ha ig zu xh so om rw mg eo la".split(),
        ("LATIN",),
    ),
    **dict.fromkeys("ru uk be bg mk kk ky tg mn tt ba cv".split(), ("CYRILLIC",)),
    **dict.fromkeys("hi mr ne sa kok mai bho".split(), ("DEVANAGARI",)),
    **dict.fromkeys("ar fa ur ps sd ug ckb".split(), ("ARABIC",)),
    **dict.fromkeys("he yi".split(), ("HEBREW",)),
    "zh": ("HAN",),
    "yue": ("HAN",),
    "ja": ("HAN", "HIRAGANA", "KATAKANA"),
    "ko": ("HANGUL", "HAN"),
    "sr": ("CYRILLIC", "LATIN"),
    "el": ("GREEK",),
    "hy": ("ARMENIAN",),
    "ka": ("GEORGIAN",),
    "am": ("ETHIOPIC",),
    "ti": ("ETHIOPIC",),
    "bn": ("BENGALI",),
    "as": ("BENGALI",),
    "pa": ("GURMUKHI",),
    "gu": ("GUJARATI",),
    "or": ("ORIYA",),
    "ta": ("TAMIL",),
    "te": ("TELUGU",),
    "kn": ("KANNADA",),
    "ml": ("MALAYALAM",),
    "si": ("SINHALA",),
    "th": ("THAI",),
    "lo": ("LAO",),
    "km": ("KHMER",),
    "my": ("MYANMAR",),
    "bo": ("TIBETAN",),
    "dv": ("THAANA",),
}
_SCRIPT_SUBTAGS = {
    "Latn": "LATIN",
    "Cyrl": "CYRILLIC",
    "Hans": "HAN",
    "Hant": "HAN",
    "Arab": "ARABIC",
    "Deva": "DEVANAGARI",
    "Grek": "GREEK",
    "Hebr": "HEBREW",
}


def written_in(lang: str) -> tuple[str, ...]:
    """The scripts `lang` is written in by WRITTEN_IN (a script subtag, as in sr-Latn, decides
    alone); () for a language the table does not know."""
    parts = lang.split("-")
    subtag = next((_SCRIPT_SUBTAGS[p] for p in parts[1:] if p in _SCRIPT_SUBTAGS), None)
    return (subtag,) if subtag else WRITTEN_IN.get(parts[0], ())


def language_scripts(texts_by_lang: dict[str, list[str]], share: float = SCRIPT_SHARE) -> dict[str, dict[str, float]]:
    """Per language, the scripts it is written in (WRITTEN_IN) and those that write at least
    `share` of its letters in the texts, with their measured shares (0 for a script of the
    table the texts happen not to show)."""
    out = {}
    for lang, texts in texts_by_lang.items():
        counts = scripts_in("".join(texts))
        total = sum(counts.values())
        if not total and not written_in(lang):
            raise LangheadsError(f"the texts of '{lang}' have no letters, so its scripts cannot be measured")
        out[lang] = {s: round(c / total, 4) for s, c in counts.most_common() if c / total >= share}
        for script in written_in(lang):
            out[lang].setdefault(script, round(counts[script] / total, 4) if total else 0.0)
    return out


# --- reading a tokenizer ---------------------------------------------------------------------------


@lru_cache(maxsize=1)
def _byte_level_decoder() -> dict[str, int]:
    """GPT-2's byte -> printable character table (transformers' own), inverted."""
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    return {c: b for b, c in bytes_to_unicode().items()}


def _mentions(node, type_name: str) -> bool:
    if isinstance(node, dict):
        return node.get("type") == type_name or any(_mentions(v, type_name) for v in node.values())
    if isinstance(node, list):
        return any(_mentions(v, type_name) for v in node)
    return False


class TokenizerFile:
    """A tokenizer.json (the `tokenizers` library's format), read for trimming.

    style: "byte_fallback" (SentencePiece-like, <0xNN> tokens, ▁ for spaces: Gemma, Llama 2,
    Mistral), "byte_level" (GPT-2-like: Llama 3, Qwen, BLOOM) or "plain".
    """

    def __init__(self, data: dict):
        self.data = data
        model = data["model"]
        if model.get("type") not in ("BPE", "Unigram"):
            raise LangheadsError(f"vocabulary trimming supports BPE and Unigram tokenizers, not {model.get('type')}")
        if model["type"] == "BPE":
            self.vocab = {t: int(i) for t, i in model["vocab"].items()}
            raw = model.get("merges") or []
            self.merges = [tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m) for m in raw]
        else:
            self.vocab = {t: i for i, (t, _) in enumerate(model["vocab"])}
            self.merges = []
        self.added = {int(a["id"]): a for a in data.get("added_tokens", [])}
        for i, a in self.added.items():
            self.vocab.setdefault(a["content"], i)
        self.size = max(self.vocab.values()) + 1
        self.tokens = [""] * self.size
        for t, i in self.vocab.items():
            self.tokens[i] = t
        if model.get("byte_fallback"):
            self.style = "byte_fallback"
        elif _mentions(data.get("pre_tokenizer"), "ByteLevel") or _mentions(data.get("decoder"), "ByteLevel"):
            self.style = "byte_level"
        else:
            self.style = "plain"

    @classmethod
    def of(cls, tokenizer) -> TokenizerFile:
        backend = getattr(tokenizer, "backend_tokenizer", None) or getattr(tokenizer, "_tokenizer", None)
        if backend is None:
            raise LangheadsError("vocabulary trimming needs a fast (tokenizers-based) tokenizer")
        return cls(json.loads(backend.to_str()))

    def is_placeholder(self, i: int) -> bool:
        """A reserved special token no text produces (Gemma's 6,242 `<unusedN>`, Llama 3's
        `<|reserved_special_token_N|>`): an embedding row nothing reads."""
        return i in self.added and self.added[i].get("special", False) and bool(PLACEHOLDER.fullmatch(self.tokens[i]))

    def is_byte(self, i: int) -> bool:
        """A token every text may need: a byte-fallback token, or one byte of a byte-level BPE."""
        t = self.tokens[i]
        if self.style == "byte_fallback":
            return len(t) == 6 and t.startswith("<0x") and t.endswith(">")
        return self.style == "byte_level" and len(t) == 1

    def surface(self, i: int) -> str:
        """The text a token stands for (partial UTF-8 characters of byte-level tokens dropped)."""
        t = self.tokens[i]
        if self.style == "byte_level":
            table = _byte_level_decoder()
            if all(c in table for c in t):
                return bytes(table[c] for c in t).decode("utf-8", errors="ignore")
            return t
        return t.replace("▁", " ")

    def merge_of(self) -> dict[str, tuple[str, str]]:
        """Each merged token's first (lowest-rank) merge: the parts a tokenizer builds it from."""
        first: dict[str, tuple[str, str]] = {}
        for a, b in self.merges:
            first.setdefault(a + b, (a, b))
        return first

    def encode_counts(self, texts: list[str], weights: list[float] | None = None) -> Counter:
        """Token id -> (weighted) number of times the original tokenizer uses it on `texts`."""
        from tokenizers import Tokenizer

        tok = Tokenizer.from_str(json.dumps(self.data))
        counts: Counter = Counter()
        for k, enc in enumerate(tok.encode_batch(texts, add_special_tokens=False)):
            w = 1.0 if weights is None else weights[k]
            for i in enc.ids:
                counts[i] += w
        return counts


# --- choosing the kept ids -------------------------------------------------------------------------

# the names tokenizers give their reserved, never-produced special tokens
PLACEHOLDER = re.compile(r"<unused\d+>|<\|reserved_special_token_\d+\|>|\[unused\d+\]")


@dataclass
class VocabChoice:
    kept_ids: list[int]  # original ids, ascending: new id = position
    original_size: int
    scripts: dict[str, dict[str, float]]  # per kept language: script -> share of its letters
    mode: str  # "exact" or "max-vocab N"
    rarity: str | None = None  # where --max-vocab's ranking came from
    reasons: dict[str, int] = field(default_factory=dict)  # how many tokens were kept for each reason

    def record(self) -> dict:
        return {
            "mode": self.mode,
            "rarity": self.rarity,
            "original_size": self.original_size,
            "kept": len(self.kept_ids),
            "scripts": self.scripts,
            "reasons": self.reasons,
        }


def exact_ids(tf: TokenizerFile, kept_scripts: set[str]) -> tuple[list[int], dict[str, int]]:
    """Ids kept by exact mode, and how many for each reason."""
    kept = [
        i for i in range(tf.size) if i in tf.added or tf.is_byte(i) or set(scripts_in(tf.surface(i))) <= kept_scripts
    ]
    return kept, reasons_of(tf, kept)


def reasons_of(tf: TokenizerFile, ids: list[int]) -> dict[str, int]:
    """How many of `ids` are special or added, bytes, without letters, or in the kept scripts."""

    def why(i: int) -> str:
        if i in tf.added:
            return "special or added"
        return "byte" if tf.is_byte(i) else "kept scripts" if scripts_in(tf.surface(i)) else "no letters"

    return dict(Counter(why(i) for i in ids))


@lru_cache(maxsize=1)
def _precomposed() -> dict[str, str]:
    """Decomposed pair -> the precomposed letter Unicode keeps out of NFC (Devanagari's nukta
    letters क़ ख़ ग़ ज़ ड़ ढ़ फ़ य़, Bengali's, Gurmukhi's, Hebrew presentation forms). Word lists
    use one form, texts often the other; the tokenizer has tokens for both."""
    table = {}
    for code in range(0x0900, 0xFB50):
        ch = chr(code)
        nfd = unicodedata.normalize("NFD", ch)
        if nfd != ch and len(nfd) == 2 and unicodedata.normalize("NFC", nfd) != ch:
            table[nfd] = ch
    return table


def _precompose(word: str) -> str:
    for pair, ch in _precomposed().items():
        if pair in word:
            word = word.replace(pair, ch)
    return word


def word_frequency_texts(languages: list[str], n_words: int = 50000) -> tuple[list[str], list[float]]:
    """Words of the kept languages as they occur in running text (after a space; capitalised
    too where the script has case; with precomposed letters too where Unicode has them),
    weighted by their frequency (the `wordfreq` package)."""
    try:
        import wordfreq
    except ImportError:
        raise LangheadsError(
            "--max-vocab without --vocab-texts needs the wordfreq package (pip install wordfreq), or give --vocab-texts"
        ) from None
    texts, weights = [], []
    for lang in languages:
        if lang not in wordfreq.available_languages():
            raise LangheadsError(f"wordfreq has no word list for '{lang}'; give --vocab-texts")
        # read from the word list itself: word_frequency() re-tokenizes each word, which for zh and
        # ja needs wordfreq's optional segmenters (jieba, MeCab) and failed without them
        frequency = wordfreq.get_frequency_dict(lang)
        for word in wordfreq.top_n_list(lang, n_words):
            f = frequency[word]
            variants = {" " + word: 0.85, word: 0.05}
            if word.capitalize() != word:
                variants.update({" " + word.capitalize(): 0.08, word.capitalize(): 0.02})
            composed = _precompose(word)
            forms = [word] if composed == word else [word, composed]
            for text, share in variants.items():
                for form in forms:
                    texts.append(text.replace(word, form))
                    weights.append(f * share / len(forms))
    return texts, weights


def ranked_ids(tf: TokenizerFile, candidates: list[int], counts: Counter) -> list[int]:
    """Candidates by the better of two ranks: by use on the rarity texts, and in the tokenizer's
    own order (ids follow merge order, roughly its training frequency) taken within each
    script, so that a script the tokenizer learnt late (Devanagari in a Latin-heavy vocabulary)
    keeps the same share of its tokens. Counts alone would put a rare word's piece before the
    bare space marker or a comma, which word lists never show; the order alone ignores what the
    kept languages use. Ranks are fractions of each list, so the two lists weigh alike."""
    groups: dict[frozenset, list[int]] = {}
    for i in sorted(candidates):
        groups.setdefault(frozenset(scripts_in(tf.surface(i))), []).append(i)
    rank = {i: pos / len(members) for members in groups.values() for pos, i in enumerate(members)}
    used = sorted((i for i in candidates if counts.get(i, 0.0) > 0), key=lambda i: (-counts[i], i))
    for pos, i in enumerate(used):
        rank[i] = min(rank[i], pos / len(candidates))
    return sorted(candidates, key=lambda i: (rank[i], i))


def close_under_merges(tf: TokenizerFile, always: list[int], ranked: list[int], limit: int) -> list[int]:
    """Take tokens in rank order, each with the parts its merge needs, while they fit in `limit`."""
    if len(always) > limit:
        raise LangheadsError(
            f"--max-vocab {limit} is below the {len(always)} special, added, byte and "
            "single-character tokens every text may need"
        )
    merge_of = tf.merge_of()
    kept = set(always)
    allowed = set(ranked) | kept

    def needs(token_id: int, acc: set[int]) -> bool:
        """Add the ids `token_id` needs to `acc`; False if a part is not allowed."""
        stack = [token_id]
        while stack:
            i = stack.pop()
            if i in kept or i in acc:
                continue
            if i not in allowed:
                return False
            acc.add(i)
            parts = merge_of.get(tf.tokens[i])
            if parts:
                stack += [tf.vocab[p] for p in parts if p in tf.vocab]
        return True

    for i in ranked:
        if len(kept) >= limit:
            break
        acc: set[int] = set()
        if needs(i, acc) and len(kept) + len(acc) <= limit:
            kept |= acc
    return sorted(kept)


def choose_vocab(
    tokenizer,
    keep: list[str],
    texts_by_lang: dict[str, list[str]],
    max_vocab: int | None = None,
    vocab_texts: list[str] | None = None,
    rarity: str = "auto",
    rows: int | None = None,
) -> VocabChoice:
    """The ids to keep for languages `keep`, whose scripts are measured on `texts_by_lang`.

    rarity (for max_vocab): "auto" (vocab_texts if given, else word frequencies), "texts",
    "wordfreq" or "order" (the tokenizer's own order alone). rows: the model's embedding rows,
    checked against the tokenizer's size before anything is chosen.
    """
    tf = TokenizerFile.of(tokenizer)
    if rows is not None and tf.size > rows:  # transformers' GGUF reader adds Gemma's <mask> to a file without it
        extra = [tf.tokens[i] for i in range(rows, tf.size)]
        raise LangheadsError(
            f"the tokenizer has {tf.size:,} tokens and the model {rows:,} embedding rows (no weights "
            f"for {', '.join(extra[:3])}); if this is a GGUF file langheads exported, trim the model "
            "folder it was exported from"
        )
    scripts = language_scripts({lang: texts_by_lang[lang] for lang in keep})
    kept_scripts = {s for shares in scripts.values() for s in shares}
    kept, reasons = exact_ids(tf, kept_scripts)
    exact = VocabChoice(kept, tf.size, scripts, "exact", None, reasons)
    if max_vocab is None or max_vocab >= len(exact.kept_ids):
        return exact
    rarity, counts = rarity_counts(tf, keep, rarity, vocab_texts)
    return shrink(tf, exact, counts, max_vocab, rarity, first=used_tokens(tf, keep, texts_by_lang))


def used_tokens(tf: TokenizerFile, keep: list[str], texts_by_lang: dict[str, list[str]]) -> set[int]:
    """The ids the kept languages' texts use (the decision texts: never the report part)."""
    return set(tf.encode_counts([text for lang in keep for text in texts_by_lang[lang]]))


RARITIES = ("auto", "texts", "wordfreq", "order")


def rarity_counts(
    tf: TokenizerFile, keep: list[str], rarity: str = "auto", vocab_texts: list[str] | None = None
) -> tuple[str, Counter]:
    """(the source used, token id -> how often the kept languages use it)."""
    if rarity == "auto":
        rarity = "texts" if vocab_texts else "wordfreq"
    if rarity == "texts":
        if not vocab_texts:
            raise LangheadsError("rarity from texts needs --vocab-texts")
        return rarity, tf.encode_counts(vocab_texts)
    if rarity == "wordfreq":
        return rarity, tf.encode_counts(*word_frequency_texts(keep))
    if rarity == "order":
        return rarity, Counter()
    raise LangheadsError(f"unknown rarity source '{rarity}'; choose one of {', '.join(RARITIES)}")


def shrink(
    tf: TokenizerFile, exact: VocabChoice, counts: Counter, max_vocab: int, rarity: str, first: set[int] = frozenset()
) -> VocabChoice:
    """At most `max_vocab` of the exact choice's ids: placeholders never (`is_placeholder`);
    other special, added, byte and single-character tokens always (a dropped character costs
    several byte tokens wherever it occurs: U+2010, the hyphen of UDHR's English, or Hindi's
    nukta letters), then the tokens `first` (those the
    kept languages' decision texts use: a word list misses a domain's own words, such as UDHR's
    "arbitrarily"), then by rank; each token with the parts its merge needs."""
    if max_vocab >= len(exact.kept_ids):
        return exact
    placeholders = {i for i in exact.kept_ids if tf.is_placeholder(i)}
    always = [
        i
        for i in exact.kept_ids
        if i not in placeholders and (i in tf.added or tf.is_byte(i) or len(tf.surface(i)) == 1)
    ]
    fixed = set(always) | placeholders
    rest = ranked_ids(tf, [i for i in exact.kept_ids if i not in fixed], counts)
    rest = [i for i in rest if i in first] + [i for i in rest if i not in first]
    chosen = close_under_merges(tf, always, rest, max_vocab)
    reasons = {
        **reasons_of(tf, chosen),
        "placeholders dropped": len(placeholders),
        "dropped as rarest": len(exact.kept_ids) - len(chosen) - len(placeholders),
    }
    return VocabChoice(chosen, tf.size, exact.scripts, f"max-vocab {max_vocab}", rarity, reasons)


# --- rewriting ------------------------------------------------------------------------------------


def new_ids(kept_ids: list[int]) -> dict[int, int]:
    """Original id -> the trimmed vocabulary's id (kept ids ascending: the new id is the position)."""
    return {old: new for new, old in enumerate(kept_ids)}


def _remap_ids(node, new_id: dict[int, int]):
    """Rewrite the token ids a post-processor names (TemplateProcessing's special_tokens[*].ids,
    Bert/Roberta's [token, id] pairs)."""
    if isinstance(node, dict):
        out = {}
        for k, v in node.items():
            if k == "ids" and isinstance(v, list):
                out[k] = [new_id[i] for i in v]
            elif k in ("sep", "cls") and isinstance(v, list) and len(v) == 2 and isinstance(v[1], int):
                out[k] = [v[0], new_id[v[1]]]
            else:
                out[k] = _remap_ids(v, new_id)
        return out
    if isinstance(node, list):
        return [_remap_ids(v, new_id) for v in node]
    return node


def trim_tokenizer_json(data: dict, kept_ids: list[int]) -> dict:
    """tokenizer.json with only `kept_ids` (renumbered in order) and the merges among them."""
    tf = TokenizerFile(data)
    new_id = new_ids(kept_ids)
    kept_tokens = {tf.tokens[i] for i in kept_ids}
    out = json.loads(json.dumps(data))
    model = out["model"]
    if model["type"] == "BPE":
        model["vocab"] = {
            tf.tokens[i]: new_id[i] for i in kept_ids if i not in tf.added or tf.tokens[i] in data["model"]["vocab"]
        }
        merges = [m for m in tf.merges if m[0] in kept_tokens and m[1] in kept_tokens and m[0] + m[1] in kept_tokens]
        raw = data["model"].get("merges") or []
        model["merges"] = (
            [" ".join(m) for m in merges] if raw and isinstance(raw[0], str) else [list(m) for m in merges]
        )
    else:  # Unigram: a list of [token, score] in id order
        model["vocab"] = [data["model"]["vocab"][i] for i in kept_ids if i < len(data["model"]["vocab"])]
        if model.get("unk_id") is not None:
            model["unk_id"] = new_id[model["unk_id"]]
    missing = [
        a["content"] for a in out.get("added_tokens", []) if a["id"] not in new_id and not tf.is_placeholder(a["id"])
    ]
    if missing:
        raise LangheadsError(f"added tokens must be kept: {missing[:3]}")
    out["added_tokens"] = [a for a in out.get("added_tokens", []) if a["id"] in new_id]
    for a in out.get("added_tokens", []):
        a["id"] = new_id[a["id"]]
    out["post_processor"] = _remap_ids(out.get("post_processor"), new_id)
    return out


def remap_special_ids(config: dict, kept_ids: list[int]) -> dict:
    """config.json / generation_config.json with bos/eos/pad/... ids renumbered."""
    new_id = new_ids(kept_ids)
    out = dict(config)
    for key in (
        "bos_token_id",
        "eos_token_id",
        "pad_token_id",
        "unk_token_id",
        "decoder_start_token_id",
        "sep_token_id",
        "mask_token_id",
    ):
        v = out.get(key)
        if isinstance(v, int):
            out[key] = new_id.get(v)
        elif isinstance(v, list):
            out[key] = [new_id[i] for i in v if i in new_id]
    if "vocab_size" in out:
        out["vocab_size"] = len(kept_ids)
    for sub in ("text_config",):
        if isinstance(out.get(sub), dict):
            out[sub] = remap_special_ids(out[sub], kept_ids)
    return out


def trim_model_(model: torch.nn.Module, kept_ids: list[int]) -> None:
    """Keep only `kept_ids` rows of the input embedding and the output layer, in place; tied
    weights stay one tensor. The config's vocab_size and special ids follow."""
    index = torch.tensor(kept_ids)
    emb, head = H.adapter_for(model).embeddings(model)
    tied = head is not None and head.weight is emb.weight
    with torch.no_grad():
        emb.weight = torch.nn.Parameter(emb.weight.index_select(0, index.to(emb.weight.device)).clone())
        emb.num_embeddings = len(kept_ids)
        if getattr(emb, "padding_idx", None) is not None:
            emb.padding_idx = kept_ids.index(emb.padding_idx) if emb.padding_idx in kept_ids else None
        if head is not None:
            if tied:
                head.weight = emb.weight
            else:
                head.weight = torch.nn.Parameter(head.weight.index_select(0, index.to(head.weight.device)).clone())
            if getattr(head, "bias", None) is not None:
                head.bias = torch.nn.Parameter(head.bias.index_select(0, index.to(head.bias.device)).clone())
            head.out_features = len(kept_ids)
    for config in {id(c): c for c in (model.config, H.text_config(model))}.values():
        fixed = remap_special_ids(config.to_dict(), kept_ids)
        for key in ("vocab_size", "bos_token_id", "eos_token_id", "pad_token_id", "unk_token_id"):
            if key in fixed and hasattr(config, key):
                setattr(config, key, fixed[key])
    gen = getattr(model, "generation_config", None)
    if gen is not None:
        fixed = remap_special_ids(gen.to_dict(), kept_ids)
        for key in ("bos_token_id", "eos_token_id", "pad_token_id", "decoder_start_token_id"):
            if getattr(gen, key, None) is not None:
                setattr(gen, key, fixed[key])


def trimmed_tokenizer(tokenizer, kept_ids: list[int]):
    """A new tokenizer of the same class with only `kept_ids`, saved and reloaded through a
    temporary folder so that everything around tokenizer.json (class, chat template,
    special tokens) carries over."""
    import tempfile
    from pathlib import Path

    from transformers import AutoTokenizer

    from ..models import pretrained

    with tempfile.TemporaryDirectory() as tmp:
        save_trimmed_tokenizer(tokenizer, kept_ids, Path(tmp))
        return pretrained(AutoTokenizer, tmp)


def save_trimmed_tokenizer(tokenizer, kept_ids: list[int], folder) -> None:
    """Write `tokenizer` into `folder` with only `kept_ids` (tokenizer.json and the id maps
    in tokenizer_config.json rewritten)."""
    from pathlib import Path

    folder = Path(folder)
    tokenizer.save_pretrained(folder)
    data = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8"))
    (folder / "tokenizer.json").write_text(
        json.dumps(trim_tokenizer_json(data, kept_ids), ensure_ascii=False), encoding="utf-8"
    )
    tokens = TokenizerFile(data).tokens
    for name in ("tokenizer_config.json", "special_tokens_map.json"):
        if (folder / name).exists():
            config = json.loads((folder / name).read_text(encoding="utf-8"))
            config = _config_without_dropped(config, kept_ids, {tokens[i] for i in kept_ids})
            (folder / name).write_text(json.dumps(config, indent=2, ensure_ascii=False), encoding="utf-8")


def _config_without_dropped(config: dict, kept_ids: list[int], kept_tokens: set[str]) -> dict:
    """A tokenizer config with its added-token ids renumbered and the tokens a trim dropped
    (placeholders) gone from its special-token lists, which a reload would add back."""
    new_id = new_ids(kept_ids)
    if isinstance(config.get("added_tokens_decoder"), dict):
        config["added_tokens_decoder"] = {
            str(new_id[int(k)]): v for k, v in config["added_tokens_decoder"].items() if int(k) in new_id
        }
    for key in ("extra_special_tokens", "additional_special_tokens"):
        if isinstance(config.get(key), list):
            config[key] = [t for t in config[key] if (t.get("content") if isinstance(t, dict) else t) in kept_tokens]
    return config


# --- the `trim` step ------------------------------------------------------------------------------


def decision_texts(corpus, languages: list[str]) -> dict[str, list[str]]:
    """The texts decisions may use: the scoring and selection parts, never the report part."""
    return {
        lang: [t.text for t in corpus.texts(lang, "scoring") + corpus.texts(lang, "selection")] for lang in languages
    }


def read_vocab_texts(path: str, languages: list[str]) -> list[str]:
    """The kept languages' texts from a file or folder in --data's formats."""
    from ..corpus import load_corpus

    corpus = load_corpus(path)
    missing = [lang for lang in languages if lang not in corpus.languages]
    if missing:
        raise LangheadsError(
            f"--vocab-texts {path} has no texts for {','.join(missing)} (it has {','.join(corpus.languages)})"
        )
    return [t.text for lang in languages for t in corpus.texts(lang)]


def texts_for_trimming(keep: list[str], data: str | None, vocab_texts: str | None = None):
    """(decision texts per kept language, to measure scripts on; the --vocab-texts, or None).
    Read before any model loads, so missing data is refused at once."""
    from ..corpus import load_corpus

    if not keep:
        raise LangheadsError("--keep needs at least one language")
    return decision_texts(load_corpus(data), keep), read_vocab_texts(vocab_texts, keep) if vocab_texts else None


def apply_trim(loaded, choice: VocabChoice, manifest):
    """Trim `loaded` in place (model rows, tokenizer); returns the extended manifest and a
    function that writes the trimmed tokenizer into a folder (the tokenizer is trimmed once)."""
    trim_model_(loaded.model, choice.kept_ids)
    loaded.tokenizer = trimmed_tokenizer(loaded.tokenizer, choice.kept_ids)
    edit = {"op": "trim_vocab", "original_size": choice.original_size, "kept_ids": choice.kept_ids}
    return manifest.with_edit(edit, choice.record()), loaded.tokenizer.save_pretrained


@dataclass
class TrimSettings:
    """Every setting of a trim; the CLI's `trim` options are generated from these fields."""

    keep: list[str] = option(help="languages the deployment serves, e.g. en,hi")
    model: str = option("default", help=MODEL_HELP)
    max_vocab: int | None = option(
        None,
        help="keep at most this many tokens, the rarest dropped first "
        "(placeholder tokens such as Gemma's <unusedN> always)",
    )
    vocab_texts: str | None = option(None, help="texts to count token rarity on (same formats as --data)")
    rarity: str = option("auto", choices=lambda: RARITIES, help="what ranks tokens for --max-vocab")
    data: str | None = option(None, help="texts the kept languages' scripts are measured on (default: bundled UDHR)")
    dtype: str = option("float32", choices=lambda: tuple(DTYPES), help="the saved weights")

    def __post_init__(self):
        from .. import checks

        checks.languages(self, "keep")
        checks.count(self, "max_vocab", optional=True)
        check_choices(self)
        if self.rarity == "texts" and not self.vocab_texts:
            raise LangheadsError("--rarity texts needs --vocab-texts")


def trim(settings: TrimSettings, out, overwrite: bool = False) -> VocabChoice:
    """Library entry point for `langheads trim`: write a folder with the trimmed vocabulary."""
    from pathlib import Path

    from ..folders import claim

    with claim(Path(out), overwrite, "model"):
        return _trim(settings, Path(out), overwrite)


def _trim(settings: TrimSettings, out, overwrite: bool) -> VocabChoice:
    from ..manifest import write_model_folder
    from ..models import DTYPES, load_model

    texts, extra = texts_for_trimming(settings.keep, settings.data, settings.vocab_texts)
    loaded = load_model(settings.model)
    loaded.require_plain("trimming the vocabulary")
    choice = choose_vocab(
        loaded.tokenizer,
        settings.keep,
        texts,
        settings.max_vocab,
        extra,
        settings.rarity,
        rows=loaded.model.get_input_embeddings().num_embeddings,
    )
    manifest, save_tokenizer = apply_trim(loaded, choice, loaded.base_manifest())
    loaded.model.to(DTYPES[settings.dtype])
    write_model_folder(loaded.model, save_tokenizer, out, manifest, overwrite)
    return choice
