"""Export a model folder (original, vocabulary-trimmed or uniformly head-pruned) to GGUF for llama.cpp.

Written with the `gguf` package. What differs from the transformers layout, per family:
  - Gemma stores RMSNorm weights as w with the norm computing x * (1 + w); llama.cpp computes
    x * w, so every norm weight is written as 1 + w;
  - llama.cpp's llama graph rotates interleaved pairs, transformers rotates halves, so q and k
    rows are permuted (as llama.cpp's own converter does);
  - the tokenizer becomes llama.cpp's SentencePiece-style "llama" model: tokens, a score per
    token (higher merges first: minus the rank of the first merge that builds it) and types.
llama.cpp's gemma3 and llama graphs use one head count for every layer, so a pruning that
leaves layers with different head counts (or none) is refused with the reason.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import torch

from . import heads as H
from .archs import FAMILIES, adapter_for
from .errors import LangheadsError
from .folders import check_out_file, usual_mode

TYPES = ("f32", "f16", "q8_0")


def _permute(w: torch.Tensor, n_head: int) -> torch.Tensor:
    """transformers' half-split rotary layout -> llama.cpp's interleaved one (per head)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def head_counts(model) -> tuple[int, int]:
    """(query heads, KV heads) shared by every layer, or a LangheadsError saying why there are none."""
    layout = H.head_layout(model)
    adapter = adapter_for(model)
    counts = {}
    for i, layer in enumerate(H.decoder_layers(model)):
        counts[i] = adapter.head_counts(adapter.attention_of(layer), layout)
        if counts[i] is None:
            raise LangheadsError(f"layer {i} has no attention heads left, and llama.cpp's graph for this family "
                                 "cannot skip a layer's attention; export a pruning that keeps heads in every layer")
    if len(set(counts.values())) > 1:
        shown = ", ".join(f"L{i}: {q}q/{kv}kv" for i, (q, kv) in list(counts.items())[:6])
        raise LangheadsError("layers keep different numbers of heads (" + shown + " ...), and llama.cpp's graph for "
                             "this family uses one head count for all layers; prune with --uniform to export")
    return next(iter(counts.values()))


def _tokenizer_fields(tokenizer):
    """tokens, scores, token types and flags for llama.cpp's SentencePiece-style tokenizer."""
    import gguf

    from .vocab import TokenizerFile

    tf = TokenizerFile.of(tokenizer)
    if tf.style != "byte_fallback":
        raise LangheadsError(f"GGUF export supports SentencePiece-style tokenizers with byte fallback (Gemma, "
                             f"Llama 2, Mistral); this one is {tf.style.replace('_', '-')}")
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


def _write_metadata(w, model, tokenizer, n_head: int, n_kv: int, file_type, manifest) -> None:
    config = H.text_config(model)
    layout = H.head_layout(model)
    w.add_name(getattr(config, "_name_or_path", "") or "langheads export")
    if manifest is not None:
        w.add_description(manifest.describe())
    w.add_context_length(config.max_position_embeddings)
    w.add_embedding_length(config.hidden_size)
    w.add_block_count(config.num_hidden_layers)
    w.add_feed_forward_length(config.intermediate_size)
    w.add_head_count(n_head)
    w.add_head_count_kv(n_kv)
    w.add_key_length(layout.head_dim)
    w.add_value_length(layout.head_dim)
    w.add_layer_norm_rms_eps(config.rms_norm_eps)
    adapter_for(model).gguf_metadata(w, config, layout)
    w.add_vocab_size(model.get_input_embeddings().num_embeddings)
    w.add_file_type(file_type)
    tokens, scores, types, space_prefix = _tokenizer_fields(tokenizer)
    w.add_tokenizer_model("llama")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
    for key, adder in (("bos_token_id", w.add_bos_token_id), ("eos_token_id", w.add_eos_token_id),
                       ("pad_token_id", w.add_pad_token_id)):
        value = getattr(tokenizer, key, None)
        if value is not None:
            adder(value)
    if tokenizer.unk_token_id is not None:
        w.add_unk_token_id(tokenizer.unk_token_id)
    probe = tokenizer("a")["input_ids"]
    w.add_add_bos_token(bool(probe) and probe[0] == tokenizer.bos_token_id)
    w.add_add_eos_token(bool(probe) and probe[-1] == tokenizer.eos_token_id and len(probe) > 1)
    w.add_add_space_prefix(space_prefix)


def _ggml_type(data: np.ndarray, kind: str):
    import gguf

    if data.ndim == 1 or kind == "f32":
        return gguf.GGMLQuantizationType.F32
    if kind == "q8_0" and data.shape[-1] % 32 == 0:
        return gguf.GGMLQuantizationType.Q8_0
    return gguf.GGMLQuantizationType.F16


def export_gguf(loaded, out: Path, kind: str = "f32", overwrite: bool = False) -> Path:
    """Write `loaded` (a LoadedModel) as a GGUF file at `out` (renamed into place when complete)."""
    import gguf

    if kind not in TYPES:
        raise LangheadsError(f"unknown GGUF type '{kind}'; choose one of {', '.join(TYPES)}")
    out = Path(out)
    check_out_file(out, overwrite, "--gguf")
    model, tokenizer = loaded.model, loaded.tokenizer
    config = H.text_config(model)
    family = adapter_for(model).gguf
    if family is None:
        runs = sorted(t for a in FAMILIES if a.gguf for t in a.model_types)
        raise LangheadsError(f"GGUF export supports {', '.join(runs)}, not {config.model_type}")
    n_head, n_kv = head_counts(model)
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH[family.arch.upper()], config.num_hidden_layers)
    file_type = {"f32": gguf.LlamaFileType.ALL_F32, "f16": gguf.LlamaFileType.MOSTLY_F16,
                 "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0}[kind]
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", dir=out.parent)
    os.close(fd)
    try:
        w = gguf.GGUFWriter(tmp, family.arch)
        _write_metadata(w, model, tokenizer, n_head, n_kv, file_type, loaded.manifest)
        tied = model.get_output_embeddings() is not None and \
            model.get_output_embeddings().weight is model.get_input_embeddings().weight
        for name, tensor in model.state_dict().items():
            if tied and name == "lm_head.weight":
                continue
            base, suffix = name.rsplit(".", 1)
            new = names.get_name(base)
            if new is None:
                raise LangheadsError(f"GGUF export: no llama.cpp name for tensor {name}")
            t = tensor.detach().float().cpu()
            if family.norm_plus_one and base.endswith("norm"):
                t = t + 1
            if family.permute_qk and base.endswith("q_proj"):
                t = _permute(t, n_head)
            elif family.permute_qk and base.endswith("k_proj"):
                t = _permute(t, n_kv)
            data = t.numpy()
            qtype = _ggml_type(data, kind)
            if qtype == gguf.GGMLQuantizationType.F16:
                data = data.astype(np.float16)
            elif qtype == gguf.GGMLQuantizationType.Q8_0:
                data = gguf.quants.quantize(data, qtype)
            w.add_tensor(f"{new}.{suffix}", data, raw_dtype=qtype if qtype == gguf.GGMLQuantizationType.Q8_0 else None)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
        usual_mode(Path(tmp))  # mkstemp's file is private (0600); the export gets the usual mode
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return out


# --- checks: an independent reader (transformers) and llama.cpp itself ---------------------------

@torch.no_grad()
def transformers_gap(loaded, gguf_path: Path, texts: list[str]) -> dict:
    """Read the GGUF back with transformers' own reader and compare it with `loaded` on `texts`:
    the largest logit gap relative to the largest logit, and whether the tokens agree."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    from .models import pretrained

    hf_logging.disable_progress_bar()
    gguf_path = Path(gguf_path)
    back = pretrained(AutoModelForCausalLM, gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32).eval()
    back_tok = pretrained(AutoTokenizer, gguf_path.parent, gguf_file=gguf_path.name)
    worst, same_tokens = 0.0, True
    for text in texts:
        ids = loaded.tokenizer(text)["input_ids"]
        same_tokens &= back_tok(text)["input_ids"] == ids
        x = torch.tensor([ids])
        a = loaded.model(input_ids=x).logits.float()
        b = back(input_ids=x).logits.float()
        worst = max(worst, ((a - b).abs().max() / a.abs().max()).item())
    return {"max_rel_logit_gap": worst, "same_tokens": bool(same_tokens), "texts": len(texts)}


def llama_cpp_gap(loaded, gguf_path: Path, texts: list[str], n_threads: int | None = None) -> dict:
    """Load the GGUF in llama.cpp (llama-cpp-python) and compare its next-token log-probabilities
    with `loaded`'s at every position of `texts`; also whether llama.cpp tokenizes the same."""
    try:
        from llama_cpp import Llama
    except ImportError:
        raise LangheadsError("the llama.cpp check needs llama-cpp-python: pip install 'langheads[llamacpp]' "
                             "(builds llama.cpp from source with cmake and a C++ compiler)") from None
    # KV cache in float32 (llama.cpp's default is float16), so the gap is the arithmetic's alone
    llm = Llama(model_path=str(gguf_path), logits_all=True, n_ctx=2048, verbose=False, n_threads=n_threads,
                type_k=0, type_v=0)
    worst, total, same_tokens, gap_sum = 0.0, 0, 0, 0.0
    for text in texts:
        ids = loaded.tokenizer(text)["input_ids"]
        same_tokens += llm.tokenize(text.encode("utf-8"), add_bos=True, special=False) == ids
        llm.reset()
        llm.eval(ids)
        theirs = torch.log_softmax(torch.tensor(np.array(llm.scores[: len(ids)]), dtype=torch.float32), -1)
        with torch.no_grad():
            ours = torch.log_softmax(loaded.model(input_ids=torch.tensor([ids])).logits[0].float(), -1)
        target = torch.tensor(ids[1:])
        gap = (theirs[:-1].gather(1, target[:, None]) - ours[:-1].gather(1, target[:, None])).abs()
        worst = max(worst, gap.max().item())
        gap_sum += gap.sum().item()
        total += len(ids) - 1
    return {"max_logprob_gap": worst, "mean_logprob_gap": gap_sum / max(total, 1), "same_tokens": same_tokens,
            "texts": len(texts), "tokens": total}
