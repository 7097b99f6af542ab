"""A tokenizer as llama.cpp reads it from GGUF: the one place that writes `tokenizer.ggml.*`.

Two styles, as `vocab.TokenizerFile` tells them apart:
  byte fallback (Gemma, Llama 2, Mistral): llama.cpp's SentencePiece-style "llama" model:
    tokens, a score per token (higher merges first: minus the rank of the first merge that
    builds it) and token types (byte, control, user-defined, unknown, normal);
  byte level (Llama 3, Qwen, SmolLM, OLMo, Command R, BLOOM, GPT-2): llama.cpp's "gpt2" model:
    tokens, types and the merges, plus the name of the pre-tokenizer (`tokenizer.ggml.pre`),
    which picks llama.cpp's own split regexes.

llama.cpp's converter names the pre-tokenizer by hashing the token ids of a fixed test string,
which a trimmed vocabulary changes. What trimming never changes is the pre-tokenizer itself, so
it is recognised here, in this order: the name a source GGUF file carries, else the split
pattern of tokenizer.json mapped to llama.cpp's names below (read in llama.cpp's
src/llama-vocab.cpp: each name's regexes are the pattern's), else the user's `--pre NAME`.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import LangheadsError

# tokenizer.json's split patterns, as llama.cpp names the pre-tokenizers that split so.
_LLAMA3 = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
    r"\s*[\r\n]+|\s+(?!\S)|\s+"
)
SPLIT_PATTERNS = {
    _LLAMA3: "llama-bpe",  # Llama 3, SmolLM3, OLMo 2, Falcon 3
    _LLAMA3.replace(r"\p{N}{1,3}", r"\p{N}"): "qwen2",  # Qwen 2, 2.5, 3
    (
        r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|"
        r"\s*[\r\n]+|\s+(?!\S)|\s+"
    ): "qwen35",
    r" ?[^(\s|[.,!?…。，、।۔،])]+": "bloom",
}
# Pre-tokenizer names llama.cpp knows that --pre may give (those the patterns above lead to, and
# the few that only a family's own tokenizer uses).
KNOWN = (
    "llama-bpe",
    "qwen2",
    "qwen35",
    "gpt-2",
    "smollm",
    "command-r",
    "bloom",
    "falcon",
    "olmo",
    "dbrx",
    "stablelm2",
    "default",
)


def check_pre(name: str) -> None:
    if name not in KNOWN:
        raise LangheadsError(
            f"--pre {name}: not a pre-tokenizer name langheads writes; choose one of {', '.join(KNOWN)}"
        )


def _parts(pre) -> list[dict]:
    if not isinstance(pre, dict):
        return []
    return [p for sub in pre.get("pretokenizers", []) for p in _parts(sub)] if pre.get("type") == "Sequence" else [pre]


def pre_from_pattern(data: dict) -> str | None:
    """llama.cpp's name for tokenizer.json's pre-tokenizer, or None when it is none of the known ones."""
    parts = _parts(data.get("pre_tokenizer"))
    kinds = [p.get("type") for p in parts]
    splits = [
        p["pattern"].get("Regex") for p in parts if p.get("type") == "Split" and isinstance(p.get("pattern"), dict)
    ]
    if kinds == ["Split", "ByteLevel"] and splits[0] in SPLIT_PATTERNS and not parts[1].get("use_regex", True):
        return SPLIT_PATTERNS[splits[0]]
    if kinds == ["ByteLevel"] and parts[0].get("use_regex", True):
        return "gpt-2"  # GPT-2's own regex
    if kinds == ["Digits", "ByteLevel"] and parts[0].get("individual_digits") and parts[1].get("use_regex", True):
        return "smollm"  # digits one by one, then GPT-2's regex (SmolLM; Command R's is the same split)
    if kinds[:3] == ["Punctuation", "ByteLevel", "Digits"]:
        return "falcon"
    return None


def pre_from_gguf(path) -> str | None:
    """The `tokenizer.ggml.pre` a GGUF file carries (a model loaded from one keeps its name)."""
    try:
        import gguf

        field = gguf.GGUFReader(str(path)).fields.get("tokenizer.ggml.pre")
        return None if field is None else str(field.contents())
    except Exception:  # not readable as GGUF: fall back to the pattern
        return None


def pre_tokenizer_name(tf, family_names: dict[str, str], sources: list, given: str | None = None) -> str:
    """The pre-tokenizer name to write: `given` (--pre), a source GGUF's, else from the pattern
    (`family_names` renames it where a family's graph expects its own name, as Command R's
    "command-r" for the SmolLM split). Unknown: one line that names the pattern."""
    if given:
        check_pre(given)
        return given
    for source in sources:
        if source and str(source).endswith(".gguf") and Path(source).is_file():
            name = pre_from_gguf(source)
            if name:
                return name
    name = pre_from_pattern(tf.data)
    if name is None:
        shown = str(tf.data.get("pre_tokenizer"))[:160]
        raise LangheadsError(
            f"GGUF export: this byte-level tokenizer's pre-tokenizer ({shown}) is not one llama.cpp "
            "is known to split the same way; if you know its llama.cpp name, give --pre NAME"
        )
    return family_names.get(name, name)


def write_tokenizer(w, tokenizer, family_names: dict[str, str], sources: list, pre: str | None = None) -> None:
    """Every tokenizer.ggml.* key for `tokenizer` (a transformers tokenizer with tokenizer.json)."""
    from ..edit.vocab import TokenizerFile

    tf = TokenizerFile.of(tokenizer)
    if tf.style == "byte_fallback":
        tokens, scores, types, space_prefix = _sentencepiece_fields(tf)
        w.add_tokenizer_model("llama")
        w.add_tokenizer_pre("default")
        w.add_token_list(tokens)
        w.add_token_scores(scores)
        w.add_token_types(types)
        w.add_add_space_prefix(space_prefix)
    elif tf.style == "byte_level":
        w.add_tokenizer_model("gpt2")
        w.add_tokenizer_pre(pre_tokenizer_name(tf, family_names, sources, pre))
        w.add_token_list(tf.tokens)
        w.add_token_types(_bpe_types(tf))
        w.add_token_merges([" ".join(m) for m in tf.merges])
    else:
        raise LangheadsError(
            "GGUF export writes SentencePiece-style (byte fallback) and byte-level BPE tokenizers; this one is neither"
        )
    _special_ids(w, tokenizer)


def _sentencepiece_fields(tf):
    """tokens, scores, token types and the space-prefix flag for llama.cpp's "llama" model."""
    import gguf

    first_rank: dict[str, int] = {}
    for rank, (a, b) in enumerate(tf.merges):
        first_rank.setdefault(a + b, rank)
    unk = tf.data["model"].get("unk_token")
    scores, types = [], []
    for i, t in enumerate(tf.tokens):
        scores.append(-float(first_rank[t]) if t in first_rank else -float(len(tf.merges) + i))
        if i in tf.added:
            types.append(gguf.TokenType.CONTROL if tf.added[i].get("special") else gguf.TokenType.USER_DEFINED)
        elif t == unk:
            types.append(gguf.TokenType.UNKNOWN)
        elif tf.is_byte(i):
            types.append(gguf.TokenType.BYTE)
        else:
            types.append(gguf.TokenType.NORMAL)
    text = str(tf.data.get("normalizer")) + str(tf.data.get("pre_tokenizer"))
    space_prefix = "Prepend" in text or "'prepend_scheme': 'always'" in text or "'prepend_scheme': 'first'" in text
    return tf.tokens, scores, types, space_prefix


def _bpe_types(tf) -> list:
    """Control for special added tokens, user-defined for the other added ones, normal else
    (as llama.cpp's converter types a byte-level vocabulary)."""
    import gguf

    return [
        (gguf.TokenType.CONTROL if tf.added[i].get("special") else gguf.TokenType.USER_DEFINED)
        if i in tf.added
        else gguf.TokenType.NORMAL
        for i in range(len(tf.tokens))
    ]


def _special_ids(w, tokenizer) -> None:
    """BOS/EOS/PAD/UNK ids, and whether the tokenizer adds BOS/EOS itself (probed, not guessed)."""
    for key, adder in (
        ("bos_token_id", w.add_bos_token_id),
        ("eos_token_id", w.add_eos_token_id),
        ("pad_token_id", w.add_pad_token_id),
        ("unk_token_id", w.add_unk_token_id),
    ):
        value = getattr(tokenizer, key, None)
        if value is not None:
            adder(value)
    probe = tokenizer("a")["input_ids"]
    w.add_add_bos_token(bool(probe) and probe[0] == tokenizer.bos_token_id)
    w.add_add_eos_token(bool(probe) and probe[-1] == tokenizer.eos_token_id and len(probe) > 1)
