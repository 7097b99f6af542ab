"""Random-weight models built from configs: for tests (no download) and timing benchmarks.

`tiny(arch)` gives a few-layer model of each supported architecture with the features that
matter for head surgery switched on: fewer KV heads than query heads, attention biases,
sliding-window layers, logit soft-capping and scaling. `save_tiny` writes it with a byte-level
tokenizer as an ordinary Hugging Face folder, so tests go through the real loader.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

VOCAB = 260  # 256 bytes + 4 specials


def _config(arch: str, **sizes):
    """The architecture's config with the features its adapter's tiny model turns on (archs/);
    `sizes` override anything."""
    import transformers as T

    s = dict(
        vocab_size=VOCAB,
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        max_position_embeddings=256,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
    )
    tiny = _TINY.get(arch)
    if tiny is None:
        raise ValueError(f"no synthetic config for '{arch}'")
    if callable(tiny.config):  # a family whose config names the sizes its own way
        return tiny.config(T, {**s, **sizes}, sizes, arch)
    return getattr(T, tiny.config)(**{**s, **tiny.features, **sizes})


def _tiny_models() -> dict:
    from .archs import FAMILIES, VARIANTS

    return {name: t for adapter in FAMILIES + VARIANTS for name, t in adapter.tiny.items()}


def _not_prunable() -> list[str]:
    from .archs import FAMILIES, VARIANTS

    return [name for adapter in FAMILIES + VARIANTS if not adapter.pruning_exact for name in adapter.tiny]


_TINY = _tiny_models()
ARCHS = list(_TINY)  # every tiny model the test matrix builds, one or more per family (archs/)
# Physical pruning is refused for these (archs/ says why); masking and scanning still work.
NOT_PRUNABLE = _not_prunable()
NO_GQA = [name for name, t in _TINY.items() if not t.gqa]  # one KV head per query head, or one for all

# Shapes of real models for timing (random weights; the numbers are speed, not quality).
SHAPES = {
    "llama-8b": dict(
        arch="llama",
        vocab_size=128256,
        hidden_size=4096,
        intermediate_size=14336,
        num_hidden_layers=32,
        num_attention_heads=32,
        num_key_value_heads=8,
        head_dim=128,
    ),
}


def tiny(arch: str, seed: int = 0, dtype=torch.float32, **sizes) -> torch.nn.Module:
    """A small random model of `arch`; biases are random too so they are exercised."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    config = _config(arch, **sizes)
    config._attn_implementation = "eager" if _TINY[arch].eager else "sdpa"
    model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias") or "norm" in name or "ln_" in name:
                p.add_(torch.randn_like(p) * 0.1)
    return model.eval()


def byte_tokenizer():
    """A byte-level tokenizer that adds BOS, so any UTF-8 text encodes with VOCAB ids."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "<bos>": 1, "<eos>": 2, "<unk>": 3}
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab.update({ch: 4 + i for i, ch in enumerate(alphabet)})
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", 1)])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>", unk_token="<unk>"
    )


# A few sentences in five scripts (Latin, Devanagari, Han, Cyrillic), enough to train small
# BPE vocabularies whose tokens belong to different languages' scripts.
TRAINING_TEXT = {
    "en": [
        "All human beings are born free and equal in dignity and rights.",
        "Everyone has the right to life, liberty and security of person.",
        "The cat sat on the mat and looked at the rain in 1948.",
    ],
    "fr": [
        "Tous les êtres humains naissent libres et égaux en dignité et en droits.",
        "Tout individu a droit à la vie, à la liberté et à la sûreté de sa personne.",
    ],
    "hi": [
        "सभी मनुष्यों को गौरव और अधिकारों के मामले में जन्मजात स्वतन्त्रता प्राप्त है।",
        "प्रत्येक व्यक्ति को जीवन, स्वाधीनता और वैयक्तिक सुरक्षा का अधिकार है।",
    ],
    "zh": ["人人生而自由,在尊严和权利上一律平等。", "人人有权享有生命、自由和人身安全。"],
    "ru": [
        "Все люди рождаются свободными и равными в своем достоинстве и правах.",
        "Каждый человек имеет право на жизнь, на свободу и на личную неприкосновенность.",
    ],
}
SPECIALS = ["<pad>", "<eos>", "<bos>", "<unk>"]


_LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
    r"\s*[\r\n]+|\s+(?!\S)|\s+"
)
# byte-level styles: the split before bytes become characters (None: GPT-2's own ByteLevel regex)
BYTE_LEVEL_SPLITS = {
    "byte_level": None,
    "llama3": _LLAMA3_SPLIT,
    "qwen2": _LLAMA3_SPLIT.replace(r"\p{N}{1,3}", r"\p{N}"),
}


def trained_tokenizer(style: str, vocab_size: int = 700):
    """A BPE tokenizer trained on TRAINING_TEXT, adding BOS like Gemma's.

    style "byte_fallback": like Gemma's (spaces become ▁, unknown characters fall back to the
    256 <0xNN> tokens); "byte_level": like GPT-2's (every byte has a character of its own).
    """
    from tokenizers import processors
    from transformers import PreTrainedTokenizerFast

    texts = [t for lines in TRAINING_TEXT.values() for t in lines] * 3
    if style in BYTE_LEVEL_SPLITS:
        tok = _byte_level_bpe(style, texts, vocab_size)
    elif style == "byte_fallback":
        tok = _byte_fallback_bpe(texts, vocab_size)
    else:
        raise ValueError(f"unknown tokenizer style '{style}'")
    tok.add_special_tokens(SPECIALS)
    tok.post_processor = processors.TemplateProcessing(
        single="<bos> $A", special_tokens=[("<bos>", tok.token_to_id("<bos>"))]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>", unk_token="<unk>"
    )


def _byte_level_bpe(style: str, texts: list[str], vocab_size: int):
    """A GPT-2-style byte-level BPE (every byte a character of its own), split the style's way."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

    # split like GPT-2 (its ByteLevel regex), Llama 3 (digits in threes) or Qwen 2 (digit by
    # digit), then map bytes to characters
    tok = Tokenizer(models.BPE(unk_token=None, ignore_merges=style == "llama3"))
    split = BYTE_LEVEL_SPLITS[style]
    tok.pre_tokenizer = (
        pre_tokenizers.ByteLevel(add_prefix_space=False)
        if split is None
        else pre_tokenizers.Sequence(
            [
                pre_tokenizers.Split(Regex(split), behavior="isolated"),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
            ]
        )
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIALS,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(texts, trainer)
    return tok


def _byte_fallback_bpe(texts: list[str], vocab_size: int):
    """A Gemma-style BPE: spaces become ▁, unknown characters fall back to <0xNN> byte tokens."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    # Train on ▁-words first, then rebuild the model with the byte tokens in its vocabulary
    # (as Gemma has them: ordinary entries, not added tokens).
    scratch = Tokenizer(models.BPE())
    scratch.normalizer = normalizers.Replace(" ", "▁")
    scratch.pre_tokenizer = pre_tokenizers.Split("▁", behavior="merged_with_next")
    scratch.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=vocab_size, show_progress=False))
    learned = json.loads(scratch.to_str())["model"]
    vocab = {s: i for i, s in enumerate(SPECIALS)}
    for b in range(256):
        vocab[f"<0x{b:02X}>"] = len(vocab)
    for piece in sorted(learned["vocab"], key=learned["vocab"].get):
        vocab.setdefault(piece, len(vocab))
    # Merges as a SentencePiece model implies them (and as transformers builds them for Gemma):
    # every split of a token into two tokens, tokens in id order.
    merges = [
        (t[:k], t[k:])
        for t in sorted(vocab, key=vocab.get)
        for k in range(1, len(t))
        if vocab[t] >= 4 + 256 and t[:k] in vocab and t[k:] in vocab
    ]
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tok.normalizer = normalizers.Replace(" ", "▁")
    tok.pre_tokenizer = pre_tokenizers.Split("▁", behavior="merged_with_next")
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()])
    return tok


def save_tiny(
    arch: str, folder: str | Path, seed: int = 0, tokenizer: str | None = None, specials: tuple[str, ...] = (), **sizes
) -> Path:
    """A tiny model and its tokenizer as an ordinary Hugging Face folder. `tokenizer`: None
    for one id per byte, or a `trained_tokenizer` style (the model's vocabulary then fits it);
    `specials`: more special tokens a family's tokenizer has (Phi-3's <s>, </s>, <|endoftext|>)."""
    folder = Path(folder)
    tok = byte_tokenizer() if tokenizer is None else trained_tokenizer(tokenizer)
    new = [t for t in specials if t not in tok.get_vocab()]
    if new:
        tok.add_special_tokens({"additional_special_tokens": new})
    if tokenizer is not None:
        ids = {name: tok.convert_tokens_to_ids(name) for name in SPECIALS}
        sizes = {
            "vocab_size": len(tok),
            "pad_token_id": ids["<pad>"],
            "bos_token_id": ids["<bos>"],
            "eos_token_id": ids["<eos>"],
            **sizes,
        }
    tiny(arch, seed, **sizes).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder
