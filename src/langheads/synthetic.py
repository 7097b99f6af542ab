"""Random-weight models built from configs: for tests (no download) and timing benchmarks.

`tiny(arch)` gives a few-layer model of each supported architecture with the features that
matter for head surgery switched on: fewer KV heads than query heads, attention biases,
sliding-window layers, logit soft-capping and scaling. `save_tiny` writes it with a byte-level
tokenizer as an ordinary Hugging Face folder, so tests go through the real loader.
"""
from __future__ import annotations

from pathlib import Path

import torch

VOCAB = 260  # 256 bytes + 4 specials


def _config(arch: str, **sizes):
    import transformers as T

    s = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=3,
             num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=256,
             bos_token_id=1, eos_token_id=2, pad_token_id=0)
    s.update(sizes)
    if arch == "llama":
        return T.LlamaConfig(**s, attention_bias=True)
    if arch == "mistral":
        return T.MistralConfig(**s, sliding_window=None)
    if arch == "qwen2":
        return T.Qwen2Config(**s)
    if arch == "qwen3":
        return T.Qwen3Config(**s)
    if arch == "gemma":
        return T.GemmaConfig(**s)
    if arch == "gemma2":
        return T.Gemma2Config(**s, sliding_window=8, final_logit_softcapping=30.0, attn_logit_softcapping=50.0)
    if arch == "gemma3":
        return T.Gemma3TextConfig(**{**s, "num_hidden_layers": 4}, sliding_window=8,
                                  layer_types=["sliding_attention", "full_attention", "sliding_attention", "full_attention"])
    if arch == "cohere":
        return T.CohereConfig(**s, logit_scale=0.5)
    if arch == "gpt2":
        return T.GPT2Config(vocab_size=VOCAB, n_embd=s["hidden_size"], n_layer=s["num_hidden_layers"],
                            n_head=s["num_attention_heads"], n_positions=s["max_position_embeddings"],
                            bos_token_id=1, eos_token_id=2)
    raise ValueError(f"no synthetic config for '{arch}'")


ARCHS = ["llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3", "cohere", "gpt2"]

# Shapes of real models for timing (random weights; the numbers are speed, not quality).
SHAPES = {
    "llama-8b": dict(arch="llama", vocab_size=128256, hidden_size=4096, intermediate_size=14336,
                     num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8, head_dim=128),
}


def tiny(arch: str, seed: int = 0, dtype=torch.float32, **sizes) -> torch.nn.Module:
    """A small random model of `arch`; biases are random too so they are exercised."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    config = _config(arch, **sizes)
    config._attn_implementation = "eager" if arch == "gemma2" else "sdpa"
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
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>",
                                   pad_token="<pad>", unk_token="<unk>")


def save_tiny(arch: str, folder: str | Path, seed: int = 0, **sizes) -> Path:
    folder = Path(folder)
    tiny(arch, seed, **sizes).save_pretrained(folder)
    byte_tokenizer().save_pretrained(folder)
    return folder
