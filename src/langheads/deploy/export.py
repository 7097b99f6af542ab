"""Export a model folder (original, vocabulary-trimmed or uniformly head-pruned) to GGUF for llama.cpp.

Written with the `gguf` package. What differs from the transformers layout, per family:
  - Gemma stores RMSNorm weights as w with the norm computing x * (1 + w); llama.cpp computes
    x * w, so every norm weight is written as 1 + w;
  - llama.cpp's llama graph rotates interleaved pairs, transformers rotates halves, so q and k
    rows are permuted (as llama.cpp's own converter does);
  - the tokenizer becomes llama.cpp's SentencePiece-style "llama" model: tokens, a score per
    token (higher merges first: minus the rank of the first merge that builds it) and types.
llama.cpp's family graphs use one head count for every layer; a pruning that leaves layers with
different head counts (or none) or MLP widths goes through llama.cpp's deci graph where the
family's layers are Llama's up to q/k/v biases (Llama, Mistral, Qwen2), and is refused with the
reason elsewhere.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .. import heads as H
from ..archs import FAMILIES, adapter_for
from ..archs.base import get
from ..builtin import BUILTINS
from ..errors import LangheadsError
from ..folders import atomic_file, check_out_file
from ..options import comma_list, option
from .gguf_vocab import check_pre, write_tokenizer

OWN_TYPES = ("f32", "f16", "q8_0")  # written here with the gguf package
# Made by llama.cpp's own quantizer (llama-cpp-python binds llama_model_quantize) from our f32
# file: the types people deploy. The value names the llama_ftype constant of llama_cpp.
LLAMA_CPP_TYPES = {
    "q4_0": "LLAMA_FTYPE_MOSTLY_Q4_0",
    "q5_0": "LLAMA_FTYPE_MOSTLY_Q5_0",
    "q4_k_s": "LLAMA_FTYPE_MOSTLY_Q4_K_S",
    "q4_k_m": "LLAMA_FTYPE_MOSTLY_Q4_K_M",
    "q5_k_s": "LLAMA_FTYPE_MOSTLY_Q5_K_S",
    "q5_k_m": "LLAMA_FTYPE_MOSTLY_Q5_K_M",
    "q6_k": "LLAMA_FTYPE_MOSTLY_Q6_K",
}
TYPES = OWN_TYPES + tuple(LLAMA_CPP_TYPES)


def check_type(kind: str) -> None:
    """An export type this langheads writes; llama.cpp's types need llama-cpp-python (said at the door)."""
    if kind not in TYPES:
        raise LangheadsError(f"unknown GGUF type '{kind}'; choose one of {', '.join(TYPES)}")
    if kind in LLAMA_CPP_TYPES:
        need_llama_cpp(f"--type {kind} is made by llama.cpp's own quantizer, which")


@dataclass
class ExportSettings:
    """Everything `langheads export` is told; every option defined once, here."""

    model: str = option(
        positional=True,
        help=f"{' | '.join(BUILTINS)} (built-in) | a model folder (original, trimmed or pruned; uneven prunings of "
        "Llama, Mistral, Qwen2 through llama.cpp's deci graph) | a .gguf file",
    )
    gguf: str = option(help="the .gguf file to write")
    type: str = option(
        "f32",
        help="f32 | f16 | q8_0 (written here) | q4_0 | q5_0 | q4_k_s | q4_k_m | q5_k_s | "
        "q5_k_m | q6_k (made by llama.cpp's own quantizer from our f32 file)",
    )
    pre: str | None = option(
        None,
        metavar="NAME",
        help="byte-level BPE only: llama.cpp's pre-tokenizer name, "
        "where langheads cannot tell it (llama-bpe, qwen2, gpt-2, smollm, command-r, ...)",
    )
    check: list[str] | None = option(
        None, metavar="LANGS", help="compare the GGUF with the folder on these languages' report texts"
    )
    llama_cpp: bool = option(
        False,
        help="with --check: also through llama.cpp (llama-cpp-python); where "
        "transformers' GGUF reader cannot read the file (deci files, most families) the check "
        "runs there anyway",
    )
    data: str | None = option(None, help="texts for --check (default: bundled UDHR)")

    def __post_init__(self):
        """Refuse bad values here, once, for the library and the CLI alike."""
        if isinstance(self.check, str):
            self.check = comma_list(self.check)
        if Path(self.gguf).suffix != ".gguf":
            raise LangheadsError(f"--gguf must name a .gguf file, not {self.gguf}")
        check_type(self.type)
        if self.pre is not None:
            check_pre(self.pre)
        if self.llama_cpp and not self.check:
            raise LangheadsError("--llama-cpp is a kind of --check: give --check LANGS too")
        if self.llama_cpp:
            need_llama_cpp("--llama-cpp")


def export(settings: ExportSettings, overwrite: bool = False) -> dict:
    """Library entry point for `langheads export`: write the GGUF file and, with `check`,
    measure its gap to the folder (transformers' GGUF reader; llama.cpp with `llama_cpp`)."""
    from ..corpus import load_corpus
    from ..models import load_model

    out = Path(settings.gguf)
    check_out_file(out, overwrite, "--gguf")
    texts = []
    if settings.check:  # read before the model loads: a missing language is refused at once
        corpus = load_corpus(settings.data)
        texts = [t.text for lang in settings.check for t in corpus.texts(lang, "report")]
    loaded = load_model(settings.model)
    loaded.require_plain("GGUF export")
    export_gguf(loaded, out, settings.type, overwrite, pre=settings.pre)
    result = {"path": out, "bytes": out.stat().st_size, "type": settings.type, **tensor_types(out, settings.type)}
    if settings.check:
        engines = check_engines(loaded, out, settings.llama_cpp)
        result["engines"] = engines
        if "transformers" in engines:
            result["transformers"] = transformers_gap(loaded, out, texts)
        if "llama_cpp" in engines:
            result["llama_cpp"] = llama_cpp_gap(loaded, out, texts)
        result["verdicts"] = verdicts(result, settings.type)
    return result


def tensor_types(path: Path, kind: str) -> dict:
    """How many tensors the file holds of each type, and, for a K-quant, the matrices whose rows
    are no multiple of 256 wide: llama.cpp's quantizer cannot write those in a K type and falls
    back to Q5_0, Q8_0 or the like (an MLP narrowed by groups of 64, a hidden size of 896)."""
    import gguf

    tensors = gguf.GGUFReader(str(path)).tensors
    out = {"tensor_types": dict(Counter(t.tensor_type.name for t in tensors))}
    if kind.endswith(("_k", "_k_s", "_k_m")):
        out["not_256_wide"] = sum(1 for t in tensors if len(t.shape) >= 2 and int(t.shape[0]) % 256)
    return out


# The gaps a check calls "within": transformers' largest logit gap over the largest logit, and
# llama.cpp's mean next-token log-probability gap, per type (f32: float arithmetic alone; the
# rest adds the type's rounding, llama.cpp quantising activations too).
STATED_GAPS = {
    "transformers": {"f32": 1e-5, "f16": 1e-2, "q8_0": 5e-2},
    "llama_cpp": {
        "f32": 2e-3,
        "f16": 1e-2,
        "q8_0": 5e-2,
        "q6_k": 0.1,
        "q5_k_m": 0.15,
        "q5_k_s": 0.15,
        "q5_0": 0.2,
        "q4_k_m": 0.25,
        "q4_k_s": 0.25,
        "q4_0": 0.35,
    },
}


def check_engines(loaded, path: Path, llama_cpp: bool) -> list[str]:
    """Which engines compare the file with the folder: transformers' GGUF reader where it reads
    the family (GGUFFamily.transformers_reads) and the file is not a deci file; llama.cpp when
    asked, and always where transformers cannot read it (one line if it is not installed)."""
    import gguf

    arch = gguf.GGUFReader(str(path)).fields["general.architecture"].contents()
    reads = adapter_for(loaded.model).gguf.transformers_reads and arch != "deci"
    if reads and not llama_cpp:
        return ["transformers"]
    need_llama_cpp(
        f"--check: transformers' GGUF reader does not read this {arch} file; the check runs in llama.cpp, which"
    )
    return (["transformers"] if reads else []) + ["llama_cpp"]


def verdicts(result: dict, kind: str) -> list[str]:
    """One line per engine: within the stated gap or not, and where tokens differ, why."""
    lines = []
    for engine, key, label in (
        ("transformers", "max_rel_logit_gap", "largest logit gap / largest logit"),
        ("llama_cpp", "mean_logprob_gap", "mean next-token log-probability gap"),
    ):
        if engine not in result:
            continue
        gap, bound = result[engine][key], STATED_GAPS[engine].get(kind)
        same = result[engine]["same_tokens"]
        texts = result[engine]["texts"]
        same_n = texts if same is True else None if same is False else int(same)  # transformers: all or not
        verdict = (
            "no gap stated for this type"
            if bound is None
            else f"{'within' if gap <= bound else 'NOT within'} the stated gap for {kind} ({gap:.2e} "
            f"{'<=' if gap <= bound else '>'} {bound:g}, {label})"
        )
        differ = "at least one" if same_n is None else str(texts - same_n)
        tokens = (
            "the same tokens on every text"
            if same_n == texts
            else f"other tokens on {differ} of {texts} texts: the GGUF's tokenizer splits them otherwise "
            "(its pre-tokenizer or merges), so the gap there compares different inputs"
        )
        lines.append(f"verdict ({engine.replace('_', '.')}): {verdict}; {tokens}")
    return lines


def _permute(w: torch.Tensor, n_head: int) -> torch.Tensor:
    """transformers' half-split rotary layout -> llama.cpp's interleaved one (per head)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def layer_heads(model) -> list[tuple[int, int] | None]:
    """Per layer, (query heads, KV heads) as the weights hold them (padding slots included), or
    None for a layer whose attention was removed."""
    layout = H.head_layout(model)
    adapter = adapter_for(model)
    return [adapter.head_counts(adapter.attention_of(layer), layout) for layer in H.decoder_layers(model)]


def layer_widths(model) -> list[int] | None:
    """Per layer, the MLP's width as the weights hold it (0: its MLP removed); None where the
    family's MLP is not one projection pair (mixture of experts: the config's width)."""
    adapter = adapter_for(model)
    if adapter.mlp_out is None or adapter.experts:
        return None
    return [adapter.mlp_width(get(layer, adapter.mlp_out)) for layer in H.decoder_layers(model)]


def _check_expert_widths(model, family) -> None:
    """A mixture of experts exports where every layer's experts keep one width (the config's)."""
    adapter = adapter_for(model)
    if not adapter.experts:
        return
    widths = [adapter.expert_width(get(layer, adapter.mlp_out)) for layer in H.decoder_layers(model)]
    if len(set(widths)) > 1:
        raise LangheadsError(
            f"layers' experts keep different widths ({', '.join(f'L{i}: {w}' for i, w in enumerate(widths[:6]))}"
            f" ...), and llama.cpp's {family.arch} graph reads one expert width for every layer; "
            "export a pruning with --uniform, or use the folder with langheads.load_model"
        )


STAND_IN = 32  # neurons of the zero MLP written for a removed MLP where the layer keeps its attention


def gguf_widths(counts: list, widths: list[int] | None) -> list[int] | None:
    """The MLP widths llama.cpp is told. Its deci graph skips the rest of a layer that has no
    MLP, the attention's output included (src/models/deci.cpp: `if (n_ff == 0) continue;` comes
    before the residual add), so a layer that keeps attention and lost its MLP is written with
    a zero MLP of STAND_IN neurons (exact: its output projection is zero)."""
    if widths is None:
        return None
    return [STAND_IN if w == 0 and c is not None else w for c, w in zip(counts, widths)]


def graph_for(family, counts: list, layout, hidden: int, widths: list[int] | None = None) -> str:
    """llama.cpp's architecture for this model: the family's own where every layer keeps the same
    heads (and the graph allows their query width) and the same MLP width, else `deci` (per-layer
    head counts and MLP widths, 0 = no attention or no MLP) for families whose layers are Llama's up
    to biases (Llama, Mistral, Qwen2: GGUFFamily.deci); else the
    one-line refusal, saying what would export."""
    even_mlp = widths is None or (len(set(widths)) == 1 and widths[0] > 0)
    if None not in counts and len(set(counts)) == 1 and even_mlp:
        if counts[0][0] * layout.head_dim == hidden or family.narrow_q:
            return family.arch
        if family.deci:  # deci sizes q and o by each layer's heads
            return "deci"
        raise LangheadsError(
            f"llama.cpp's {family.arch} graph sizes the query projection by the hidden size ({hidden}), "
            f"and this pruning keeps {counts[0][0]} heads of {layout.head_dim}; export the unpruned "
            "model with the vocabulary trimmed (`langheads trim`)"
        )
    if family.deci:
        return "deci"
    shown = ", ".join(f"L{i}: " + ("none" if c is None else f"{c[0]}q/{c[1]}kv") for i, c in enumerate(counts[:6]))
    if None in counts:
        why = "a layer has no attention heads left"
    elif len(set(counts)) > 1:
        why = f"layers keep different numbers of heads ({shown} ...)"
    else:
        why = (
            f"layers keep different MLP widths ({', '.join(f'L{i}: {w}' for i, w in enumerate(widths[:6]))} ...)"
            if 0 not in widths
            else "a layer has no MLP left"
        )
    raise LangheadsError(
        f"{why}, and llama.cpp's {family.arch} graph uses one head count and one MLP width for "
        "every layer (only its deci graph, for Llama, Mistral and Qwen2, takes one per layer); export a "
        "pruning with --uniform, one that removes whole layers, or the vocabulary alone "
        "(`langheads trim`)"
    )


def _write_metadata(w, loaded, counts: list, widths, arch: str, file_type, pre: str | None) -> None:
    model, tokenizer = loaded.model, loaded.tokenizer
    config = H.text_config(model)
    layout = H.head_layout(model)
    adapter = adapter_for(model)
    w.add_name(loaded.model_id)  # the folder's name, never its path on this machine
    if loaded.manifest is not None:
        w.add_description(loaded.manifest.describe())
    # ALiBi models (BLOOM) have no position limit; llama.cpp takes this as the default context only
    w.add_context_length(getattr(config, "max_position_embeddings", None) or 2048)
    w.add_embedding_length(config.hidden_size)
    w.add_block_count(config.num_hidden_layers)
    widths = gguf_widths(counts, widths) or [adapter.gguf_ffn_length(config)] * config.num_hidden_layers
    if arch == "deci":  # one value per layer; 0 heads = no attention, 0 width = no MLP in that layer
        w.add_head_count([c[0] if c else 0 for c in counts])
        w.add_head_count_kv([c[1] if c else 0 for c in counts])
        w.add_feed_forward_length(widths)
    else:
        w.add_head_count(counts[0][0])
        w.add_head_count_kv(counts[0][1])
        w.add_feed_forward_length(widths[0])
    w.add_key_length(layout.head_dim)
    w.add_value_length(layout.head_dim)
    if getattr(config, "rms_norm_eps", None) is not None:
        w.add_layer_norm_rms_eps(config.rms_norm_eps)
    else:
        w.add_layer_norm_eps(getattr(config, "layer_norm_eps", None) or config.layer_norm_epsilon)
    adapter.gguf_metadata(w, config, layout)
    w.add_vocab_size(model.get_input_embeddings().num_embeddings)
    w.add_file_type(file_type)
    adapter.gguf_tokenizer_check(tokenizer)
    sources = [loaded.spec] + ([loaded.manifest.source.get("spec")] if loaded.manifest is not None else [])
    write_tokenizer(w, tokenizer, dict(adapter.gguf.pre_names), sources, pre)


def _ggml_type(name: str, data: np.ndarray, kind: str):
    """f32 for vectors and norms (llama.cpp's norm kernels take f32 weights, also StableLM's
    [heads, head size] per-head norms), else the asked type where the rows allow it."""
    import gguf

    if data.ndim == 1 or kind == "f32" or "_norm." in name:
        return gguf.GGMLQuantizationType.F32
    if kind == "q8_0" and data.shape[-1] % 32 == 0:
        return gguf.GGMLQuantizationType.Q8_0
    return gguf.GGMLQuantizationType.F16


def export_gguf(loaded, out: Path, kind: str = "f32", overwrite: bool = False, pre: str | None = None) -> Path:
    """Write `loaded` (a LoadedModel) as a GGUF file at `out` (renamed into place when complete);
    llama.cpp's own quantizer makes the K-quants from the f32 file."""
    check_type(kind)
    out = Path(out)
    check_out_file(out, overwrite, "--gguf")
    family = adapter_for(loaded.model).gguf
    if family is None:
        runs = sorted(t for a in FAMILIES if a.gguf for t in a.model_types)
        raise LangheadsError(f"GGUF export supports {', '.join(runs)}, not {H.text_config(loaded.model).model_type}")
    counts, widths = layer_heads(loaded.model), layer_widths(loaded.model)
    _check_expert_widths(loaded.model, family)
    arch = graph_for(family, counts, H.head_layout(loaded.model), H.text_config(loaded.model).hidden_size, widths)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(out) as tmp:  # only a whole file ever has the user's name (Ctrl-C, a crash)
        _write_gguf(tmp, loaded, arch, counts, widths, kind if kind in OWN_TYPES else "f32", pre)
        if kind in LLAMA_CPP_TYPES:
            quantize_with_llama_cpp(tmp, kind)
    return out


def _write_gguf(path: Path, loaded, arch: str, counts: list, widths, kind: str, pre: str | None) -> None:
    import gguf

    file_type = {
        "f32": gguf.LlamaFileType.ALL_F32,
        "f16": gguf.LlamaFileType.MOSTLY_F16,
        "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0,
    }[kind]
    w = gguf.GGUFWriter(str(path), arch)
    _write_metadata(w, loaded, counts, widths, arch, file_type, pre)
    for name, data in _gguf_tensors(loaded.model, arch, counts, widths):
        qtype = _ggml_type(name, data, kind)
        if qtype == gguf.GGMLQuantizationType.F16:
            data = data.astype(np.float16)
        elif qtype == gguf.GGMLQuantizationType.Q8_0:
            data = gguf.quants.quantize(data, qtype)
        w.add_tensor(name, data, raw_dtype=qtype if qtype == gguf.GGMLQuantizationType.Q8_0 else None)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def _gguf_tensors(model, arch: str, counts: list, widths=None):
    """(llama.cpp name, float32 array) for every weight, in the family's layout: norms as 1 + w
    where the model computes x * (1 + w), q/k rows permuted to llama.cpp's rotary layout (with
    each layer's own head counts), nothing for a layer's removed attention or removed MLP."""
    import gguf

    adapter = adapter_for(model)
    family = adapter.gguf
    names = gguf.get_tensor_name_map(
        next(a for a, n in gguf.MODEL_ARCH_NAMES.items() if n == arch), H.text_config(model).num_hidden_layers
    )
    tied = (
        model.get_output_embeddings() is not None
        and model.get_output_embeddings().weight is model.get_input_embeddings().weight
    )
    prefix = adapter.layers + "."
    for name, tensor in adapter.gguf_state(model):
        layer = int(name[len(prefix) :].split(".", 1)[0]) if name.startswith(prefix) else None
        if (tied and name == "lm_head.weight") or (
            layer is not None and counts[layer] is None and _removed_attention(name, adapter, tensor)
        ):
            continue
        if (
            layer is not None
            and widths is not None
            and widths[layer] == 0
            and _removed_mlp(name, adapter, tensor, keep_norm=counts[layer] is not None)
        ):
            continue
        base, suffix = name.rsplit(".", 1)
        new = names.get_name(base)
        if new is None:
            raise LangheadsError(f"GGUF export: no llama.cpp name for tensor {name}")
        t = tensor.detach().float().cpu()
        if family.norm_plus_one and base.endswith("norm"):
            t = t + 1
        if (family.permute_qk or arch == "deci") and base.endswith(("q_proj", "k_proj")):  # deci rotates pairs
            t = _permute(t, counts[layer][0 if base.endswith("q_proj") else 1])
        yield f"{new}.{suffix}", t.numpy()
    yield from _stand_in_mlps(model, counts, widths)


def _stand_in_mlps(model, counts: list, widths):
    """The zero MLPs of gguf_widths, by llama.cpp's tensor names (numpy shapes [out, in])."""
    hidden = H.text_config(model).hidden_size
    for layer, (c, w) in enumerate(zip(counts, widths or [])):
        if w == 0 and c is not None:
            yield f"blk.{layer}.ffn_gate.weight", np.zeros((STAND_IN, hidden), np.float32)
            yield f"blk.{layer}.ffn_up.weight", np.zeros((STAND_IN, hidden), np.float32)
            yield f"blk.{layer}.ffn_down.weight", np.zeros((hidden, STAND_IN), np.float32)


def _removed_attention(name: str, adapter, tensor) -> bool:
    """Whether `name` belongs to a layer's removed attention (its pre-attention norm included,
    which llama.cpp's deci graph does not read); a bias it would have to add is refused."""
    if name.endswith(f"{adapter.attention}.bias"):
        if tensor.abs().max().item() != 0:
            raise LangheadsError(
                "GGUF export: a layer with its attention removed still adds the output projection's "
                "bias, which llama.cpp's deci graph cannot add"
            )
        return True
    return name.endswith(f"{adapter.attention_norm}.weight")


def _removed_mlp(name: str, adapter, tensor, keep_norm: bool) -> bool:
    """Whether `name` belongs to a layer's removed MLP (0 wide; its pre-MLP norm too, unless
    a stand-in MLP reads it); a bias it would have to add is refused."""
    if name.endswith(f"{adapter.mlp_out}.bias"):
        if tensor.abs().max().item() != 0:
            raise LangheadsError(
                "GGUF export: a layer with its MLP removed still adds the output projection's "
                "bias, which llama.cpp's deci graph cannot add"
            )
        return True
    return tensor.numel() == 0 or (not keep_norm and name.endswith(f"{adapter.mlp_norm}.weight"))


def quantize_with_llama_cpp(path: Path, kind: str, threads: int = 0) -> None:
    """Rewrite the f32 GGUF at `path` as `kind` with llama.cpp's own quantizer (its K-quant mixes,
    its fallbacks for rows that do not split into 256-wide blocks). The quantizer runs in a child
    process (a C call in this one would hold Ctrl-C until it returned) and writes a temporary
    file beside `path`, which replaces `path` only when whole; Ctrl-C stops it and leaves `path`."""
    import subprocess
    import sys

    with atomic_file(path) as tmp:
        child = subprocess.Popen(
            [sys.executable, "-c", _QUANTIZE, str(path), str(tmp), LLAMA_CPP_TYPES[kind], str(threads)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            _, err = child.communicate()
        except BaseException:  # Ctrl-C: stop the quantizer; atomic_file removes its half-written file
            child.kill()
            child.wait()
            raise
        if child.returncode != 0:
            reason = (err.strip().splitlines() or [f"exit code {child.returncode}"])[-1][:200]
            raise LangheadsError(f"llama.cpp's quantizer could not write {kind} ({reason})")


# The child's program: llama-cpp-python's binding of llama_model_quantize (it logs every tensor
# to stderr; only its last line is shown when it fails).
_QUANTIZE = """
import sys, llama_cpp
src, dst, ftype, threads = sys.argv[1:]
params = llama_cpp.llama_model_quantize_default_params()
params.ftype = getattr(llama_cpp, ftype)
params.nthread = int(threads)
code = llama_cpp.llama_model_quantize(src.encode(), dst.encode(), params)
if code != 0:
    sys.exit(f"it returned {code}")
"""


# --- checks: an independent reader (transformers) and llama.cpp itself ---------------------------


@torch.no_grad()
def transformers_gap(loaded, gguf_path: Path, texts: list[str]) -> dict:
    """Read the GGUF back with transformers' own reader and compare it with `loaded` on `texts`:
    the largest logit gap relative to the largest logit, and whether the tokens agree."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    from ..models import pretrained

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


def need_llama_cpp(what: str) -> None:
    """Refuse in one line, before any work, what needs llama.cpp where llama-cpp-python is missing."""
    import importlib.util

    if importlib.util.find_spec("llama_cpp") is None:
        raise LangheadsError(
            f"{what} needs llama-cpp-python: pip install 'langheads[llamacpp]' (builds llama.cpp from source "
            "with cmake and a C++ compiler)"
        )


def llama_cpp_gap(loaded, gguf_path: Path, texts: list[str], n_threads: int | None = None) -> dict:
    """Load the GGUF in llama.cpp (llama-cpp-python) and compare its next-token log-probabilities
    with `loaded`'s at every position of `texts`; also whether llama.cpp tokenizes the same."""
    need_llama_cpp("the llama.cpp check")
    from llama_cpp import Llama

    # KV cache in float32 (llama.cpp's default is float16), so the gap is the arithmetic's alone
    llm = Llama(
        model_path=str(gguf_path), logits_all=True, n_ctx=2048, verbose=False, n_threads=n_threads, type_k=0, type_v=0
    )
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
    return {
        "max_logprob_gap": worst,
        "mean_logprob_gap": gap_sum / max(total, 1),
        "same_tokens": same_tokens,
        "texts": len(texts),
        "tokens": total,
    }
