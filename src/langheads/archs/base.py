"""What langheads needs to know about one architecture family, in one small class.

An adapter says where the decoder layers, the final norm and each layer's attention output
projection are (the projection's *input* is the concatenation of the heads' outputs: the one
place where removing a head is exact), how many query and KV heads of what size a config has,
what the output layer does to logits, how to cut heads out of a layer physically (every
per-head parameter with them), how a uniform pruning is written into a config, what the KV
cache costs, and how llama.cpp names the family. Nothing outside `archs/` tests a model type.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from ..errors import LangheadsError


@dataclass(frozen=True)
class HeadLayout:
    """Head counts read from the config; query head h reads KV head h // group_size."""

    model_type: str
    n_layers: int
    n_heads: int
    n_kv_heads: int
    head_dim: int

    @property
    def group_size(self) -> int:
        return self.n_heads // self.n_kv_heads

    @property
    def n_total(self) -> int:
        return self.n_layers * self.n_heads


@dataclass(frozen=True)
class GGUFFamily:
    """How llama.cpp runs a family: its architecture name and the weight layouts it expects."""

    arch: str  # llama.cpp's architecture name
    norm_plus_one: bool  # norms stored as w where the model computes x * (1 + w)
    permute_qk: bool  # llama.cpp rotates interleaved pairs; transformers rotates halves
    pre_names: tuple = ()  # (pre-tokenizer name, the name this family's llama.cpp vocabulary expects)
    deci: bool = False  # uneven head counts export through llama.cpp's llama-shaped deci graph
    narrow_q: bool = False  # the graph sizes q and o by heads x head size (not by the hidden size), so a
    # uniformly pruned model with fewer heads runs there (src/models/<arch>.cpp)
    transformers_reads: bool = False  # transformers' GGUF reader loads this family's export (not deci files)
    # and computes what the folder does (export --check uses it then)


@dataclass(frozen=True)
class Tiny:
    """A family's tiny random-weight test model (synthetic.py builds it): its transformers config
    class, or a builder (T, sizes, given sizes, name) for configs that name sizes their own way,
    and the features it turns on (biases, sliding windows, soft-capping, scaling)."""

    config: str | Callable
    features: dict = field(default_factory=dict)
    gqa: bool = True  # 4 query heads share 2 KV heads (False: one KV head per query head, or one for all)
    eager: bool = False  # transformers has no SDPA path for the family: the tiny model runs eager attention


def get(obj, dotted: str):
    for name in dotted.split("."):
        obj = getattr(obj, name)
    return obj


def rows(t: torch.Tensor | None, heads: list[int], head_dim: int, dim: int = 0):
    """The slices of `t` along `dim` that belong to `heads` (each head_dim wide), in that order."""
    if t is None:
        return None
    idx = torch.tensor([h * head_dim + i for h in heads for i in range(head_dim)], device=t.device)
    return t.index_select(dim, idx)


def projection_input(weight: torch.Tensor, slots: list[int | None], head_dim: int, dim: int):
    """The output projection's columns (dim=1) or rows (dim=0) for the new query slots, with
    padding slots zeroed so the padded heads add nothing; and the query head each slot copies."""
    first = next(s for s in slots if s is not None)
    source = [first if s is None else s for s in slots]
    picked = rows(weight, source, head_dim, dim).clone()
    for i, s in enumerate(slots):
        if s is None:
            picked.narrow(dim, i * head_dim, head_dim).zero_()
    return picked, source


def _set(layer: nn.Module, dotted: str, module: nn.Module) -> None:
    owner, _, name = dotted.rpartition(".")
    setattr(get(layer, owner) if owner else layer, name, module)


def linear(weight: torch.Tensor, bias: torch.Tensor | None) -> nn.Linear:
    """An nn.Linear holding `weight` [out, in] and `bias` (a removed MLP's are 0 wide)."""
    import warnings

    with torch.device("meta"), warnings.catch_warnings():  # no random init of weights that are overwritten
        warnings.filterwarnings("ignore", "Initializing zero-element tensors")  # a removed MLP: 0 wide
        layer = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None, dtype=weight.dtype)
    layer = layer.to_empty(device=weight.device)
    with torch.no_grad():
        layer.weight.copy_(weight)
        if bias is not None:
            layer.bias.copy_(bias)
    return layer


class NoAttention(nn.Module):
    """A layer's attention with every head removed: adds the output projection's bias (or nothing)."""

    def __init__(self, hidden_size: int, bias: torch.Tensor | None, layer_idx: int, head_dim: int):
        super().__init__()
        self.layer_idx, self.head_dim = layer_idx, head_dim
        self.register_buffer("bias", torch.zeros(hidden_size) if bias is None else bias.detach().clone())

    def forward(self, hidden_states, *args, **kwargs):
        cache = kwargs.get("cache", kwargs.get("past_key_values"))
        if cache is not None and hasattr(cache, "update"):  # keep the cache's length in step
            b, t = hidden_states.shape[:2]
            empty = hidden_states.new_zeros(b, 0, t, self.head_dim)
            cache.update(empty, empty, self.layer_idx)
        return self.bias.to(hidden_states.dtype).expand_as(hidden_states), None


class Adapter:
    """The llama-like decoder (separate q/k/v/o projections under `self_attn`) as the default;
    families override what differs."""

    family: str = ""
    model_types: tuple[str, ...] = ()
    tiny: dict[str, Tiny] = {}  # test name -> the tiny model the test matrix builds (synthetic.py)
    body = "model"  # the decoder stack without the output layer
    layers = "model.layers"
    final_norm = "model.norm"
    attention = "self_attn"
    out_proj = "o_proj"
    attention_norm = "input_layernorm"  # the norm before attention (no use once a layer's attention is gone)
    mlp_norm = "post_attention_layernorm"  # the norm before the MLP (no use once a layer's MLP is gone)
    pruning_exact = True  # physical removal computes what masking computes
    pruning_note = ""  # why not, when it is not
    gguf: GGUFFamily | None = None  # how llama.cpp runs it (None: export not supported)
    gguf_note = ""  # why not, when it is not
    per_head_norms: tuple[str, ...] = ()  # attention submodules whose weight is [heads, head_dim]
    head_major_kwargs: tuple[str, ...] = ()  # layer inputs laid out [batch * heads, ...] (BLOOM's ALiBi)
    mlp_out = "mlp.down_proj"  # in a layer: the MLP's output projection, whose input holds its neurons
    experts = False  # the MLP is a mixture of experts (units: every expert's neurons)
    neuron_scaler = None  # scales neuron groups where not at mlp_out's input (heads.scaled_inputs)
    activation_tap = None  # sees the activations where no mlp_act module does (LAPE)
    per_layer_config = ("layer_types", "no_rope_layers")  # config lists with one entry per layer
    mlp_act = "mlp.act_fn"  # in a layer: the activation applied to the neurons' pre-activations (LAPE)
    mlp_in: tuple[str, ...] | None = ("mlp.gate_proj", "mlp.up_proj")  # projections with a row per neuron
    removal_note = (
        "removing MLP neurons from the weights is written for MLPs with separate gate/up and down "
        "projections; scan its neurons, or prune heads"
    )  # where mlp_in is None

    # --- reading a config ---
    def layout(self, config) -> HeadLayout:
        n_heads = config.num_attention_heads
        n_kv = getattr(config, "num_key_value_heads", None) or n_heads
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // n_heads
        return HeadLayout(config.model_type, config.num_hidden_layers, n_heads, n_kv, head_dim)

    def check_config(self, config) -> None:
        """Refuse, naming the option, a config this adapter would handle wrongly."""
        layout = self.layout(config)
        if layout.n_heads % layout.n_kv_heads:
            raise LangheadsError(
                f"{config.model_type}: {layout.n_heads} query heads do not split evenly over "
                f"{layout.n_kv_heads} KV heads"
            )

    def mlp_width(self, proj: nn.Module) -> int:
        """The MLP's intermediate neurons: the output projection's input features."""
        return proj.weight.shape[1]

    def expert_width(self, proj: nn.Module) -> int:
        """The neurons of one expert (a neuron group lies within one): the whole MLP's here."""
        return self.mlp_width(proj)

    def neuron_removal(self) -> str:
        """How neurons leave the weights: 'any' (layers keep different widths, the manifest
        replays them), 'experts-alike' (each expert of a layer keeps as many; layers may
        differ) or 'none'."""
        return "none" if self.mlp_in is None else "any"

    def neuron_parameters(self, layer: nn.Module) -> int:
        """Parameters one MLP neuron holds: its column of the output projection, its row (and
        bias) of each input projection."""
        ins = [get(layer, p) for p in self.mlp_in or ()]
        return get(layer, self.mlp_out).weight.shape[0] + sum(p.weight.shape[1] + (p.bias is not None) for p in ins)

    def cut_mlp(self, layer: nn.Module, keep: torch.Tensor) -> None:
        """Keep only the MLP neurons `keep` ([kept] indices, sorted) of one layer, in place."""
        for path in self.mlp_in:
            proj = get(layer, path)
            bias = None if proj.bias is None else proj.bias.data[keep]
            _set(layer, path, linear(proj.weight.data[keep], bias))  # [kept, hidden]
        down = get(layer, self.mlp_out)
        _set(layer, self.mlp_out, linear(down.weight.data[:, keep], down.bias))  # [hidden, kept]

    def active_share(self, config) -> float | None:
        """The share of the MLP's parameters one token runs through where that is not all of
        them (a mixture of experts: chosen experts / experts); None: all."""
        return None

    def position_limit(self, config) -> int | None:
        """The longest sequence the model can read at all (learned absolute positions), or None
        where positions are rotary, ALiBi or sinusoidal and have no hard end."""
        return None

    # --- running ---
    def postprocess_logits(self, model, logits: torch.Tensor) -> torch.Tensor:
        """What the model does to the output layer's result (elementwise)."""
        return logits

    def embeddings(self, model) -> tuple[nn.Module, nn.Module | None]:
        """(input embedding, output layer): the rows a vocabulary trim keeps."""
        return model.get_input_embeddings(), model.get_output_embeddings()

    def attention_of(self, layer) -> nn.Module:
        return getattr(layer, self.attention)

    # --- physical pruning ---
    def slice_attention(self, attn, layout: HeadLayout, kv_kept: list[int], slots: list[int | None]) -> None:
        """Keep query slots `slots` (original heads, None = a zero-output padding head) and KV
        heads `kv_kept`, in place."""
        D = layout.head_dim
        out = getattr(attn, self.out_proj)
        o_w, q_src = projection_input(out.weight, slots, D, dim=1)
        attn.q_proj = linear(rows(attn.q_proj.weight, q_src, D), rows(attn.q_proj.bias, q_src, D))
        attn.k_proj = linear(rows(attn.k_proj.weight, kv_kept, D), rows(attn.k_proj.bias, kv_kept, D))
        attn.v_proj = linear(rows(attn.v_proj.weight, kv_kept, D), rows(attn.v_proj.bias, kv_kept, D))
        setattr(attn, self.out_proj, linear(o_w, out.bias))
        for name, keep in zip(self.per_head_norms, (q_src, kv_kept)):
            norm = getattr(attn, name)
            norm.weight = nn.Parameter(norm.weight.detach()[keep].clone())
        attn.num_key_value_groups = len(slots) // len(kv_kept)

    def empty_attention(self, layer, layer_idx: int, layout: HeadLayout) -> None:
        proj = getattr(self.attention_of(layer), self.out_proj)
        setattr(layer, self.attention, NoAttention(proj.weight.shape[0], proj.bias, layer_idx, layout.head_dim))

    def head_counts(self, attn, layout: HeadLayout) -> tuple[int, int] | None:
        """(query heads, KV heads) a layer's attention has now; None if it has none left."""
        if not hasattr(attn, "q_proj"):
            return None
        return attn.q_proj.out_features // layout.head_dim, attn.k_proj.out_features // layout.head_dim

    def gguf_metadata(self, w, config, layout: HeadLayout) -> None:
        """What llama.cpp's graph for this family reads beyond the common keys (rotary, windows);
        refuse what it cannot express. Default: llama's rotary embedding."""
        rope = getattr(config, "rope_parameters", None) or {}
        if rope.get("rope_type", "default") != "default":
            raise LangheadsError(f"GGUF export: rope type {rope.get('rope_type')} is not written yet")
        w.add_rope_freq_base(rope.get("rope_theta", 10000.0))
        w.add_rope_dimension_count(layout.head_dim)

    def gguf_state(self, model):
        """(name, tensor) pairs in the layout llama.cpp's converter names (default: the state dict
        as it is; families with fused or per-head parameters regroup them)."""
        return model.state_dict().items()

    def gguf_ffn_length(self, config) -> int:
        """The MLP's width as llama.cpp's feed_forward_length."""
        return config.intermediate_size

    def gguf_tokenizer_check(self, tokenizer) -> None:
        """Refuse a tokenizer this family's llama.cpp vocabulary loader cannot read (default: any reads)."""

    def uniform_config(self, config, n_heads: int) -> dict:
        """Config keys that say a uniform pruning's new head count."""
        return {"num_attention_heads": n_heads, "head_dim": self.layout(config).head_dim}

    def uniform_mlp_config(self, config, width: int) -> dict | None:
        """Config keys that say one MLP width for every layer (None: the config cannot say it)."""
        return {"intermediate_size": width} if getattr(config, "intermediate_size", None) else None

    def kv_bytes_per_token(self, model, layout: HeadLayout, layers) -> int:
        """Bytes the KV cache grows by per token: K and V of every kept KV head in every layer."""
        total = 0
        for layer in layers:
            counts = self.head_counts(self.attention_of(layer), layout)
            total += 0 if counts is None else 2 * counts[1] * layout.head_dim * model.dtype.itemsize
        return total


class TransformerH(Adapter):
    """GPT-2's layout, shared by BLOOM and Falcon: the decoder stack at transformer.h, the
    final norm at transformer.ln_f."""

    body = "transformer"
    layers = "transformer.h"
    final_norm = "transformer.ln_f"


def refuse_sliding_window(config, family: str) -> None:
    """llama.cpp runs Mistral and Mixtral as llama, which attends to the whole context: a model
    whose sliding window is shorter than its context would read differently there."""
    if getattr(config, "sliding_window", None) and config.sliding_window < config.max_position_embeddings:
        raise LangheadsError(
            f"GGUF export: llama.cpp runs {family} as llama, without its sliding window of "
            f"{config.sliding_window} tokens"
        )


def head_size_is_tied(family: str, ratio: str):
    """The refusal of --uniform for configs that derive the head size from the head count."""
    return LangheadsError(
        f"--uniform: {family}'s config ties the head size to {ratio}, so fewer heads cannot be "
        "expressed; save without --uniform"
    )
