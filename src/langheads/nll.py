"""Per-text mean token negative log-likelihood, computed in pieces that can be reused.

Three ideas keep this cheap without changing the numbers:
- texts are sorted by length and batched with right padding: with causal attention a real
  token never sees the pads after it, so no attention mask is needed and padding only costs
  the few positions at the end of shorter rows;
- the loss is computed over chunks of positions, so the full-vocabulary logits (262,144
  columns for Gemma 3) are never held for a whole batch;
- `trace` runs the unmodified model once and keeps what enters every decoder layer, so
  `resume` can recompute from layer l upwards only (removing a head in layer l changes
  nothing below it), for many rows at once, each row with its own head factors.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.utils.checkpoint import checkpoint

from . import heads as H


@dataclass
class Batch:
    input_ids: torch.Tensor  # [rows, longest], right-padded
    lengths: torch.Tensor  # [rows] real tokens per row (BOS included)
    index: list[int]  # row -> position of the text in the caller's list
    starts: torch.Tensor | None = None  # [rows] first token whose NLL counts (None: 1, every predicted token)
    lang: str = ""  # the language of its texts (set by the scan plan)

    @property
    def n_tokens(self) -> int:
        return int(self.input_ids.numel())


def tokenize(tokenizer, texts: list[str], max_tokens: int | None = None, limit: int | None = None) -> list[list[int]]:
    """Token ids with the tokenizer's own BOS, cut to `max_tokens` if given and always to the
    model's `limit` (heads.position_limit: GPT-2 reads at most n_positions tokens)."""
    cut = min((n for n in (max_tokens, limit) if n), default=None)
    ids = [tokenizer(t, add_special_tokens=True)["input_ids"] for t in texts]
    return [i[:cut] if cut else i for i in ids]


def make_batches(
    token_lists: list[list[int]], batch_tokens: int, pad_id: int = 0, starts: list[int] | None = None
) -> list[Batch]:
    """Longest first, as many texts per batch as fit in `batch_tokens` padded positions.
    `starts[i]`: the first token of text i whose NLL counts (an answer after its prompt)."""
    order = sorted(range(len(token_lists)), key=lambda i: (-len(token_lists[i]), i))
    batches, current = [], []
    for i in order:
        longest = len(token_lists[current[0]]) if current else len(token_lists[i])
        if current and (len(current) + 1) * longest > batch_tokens:
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    out = []
    for rows in batches:
        longest = len(token_lists[rows[0]])
        ids = torch.full((len(rows), longest), pad_id, dtype=torch.long)
        for r, i in enumerate(rows):
            ids[r, : len(token_lists[i])] = torch.tensor(token_lists[i])
        first = None if starts is None else torch.tensor([starts[i] for i in rows])
        out.append(Batch(ids, torch.tensor([len(token_lists[i]) for i in rows]), rows, first))
    return out


def _positions(lengths: torch.Tensor, longest: int, starts: torch.Tensor | None = None):
    """(row, position) of every position whose next token counts: from starts - 1 (default 0)
    to the row's last real token but one."""
    pos = torch.arange(longest - 1)
    valid = pos[None, :] < (lengths[:, None] - 1)
    if starts is not None:
        valid &= pos[None, :] >= (starts[:, None] - 1)
    rows, cols = valid.nonzero(as_tuple=True)
    return rows, cols


def _full_vocab_nll(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    logits = logits.float()
    return torch.logsumexp(logits, dim=-1) - logits.gather(-1, targets[:, None]).squeeze(-1)


def compile_for_speed(model) -> None:
    """torch.compile what fuses well and leaves head hooks alone: each layer's MLP and norms
    (heads.compile_outside_attention) and the loss's upcast + logsumexp, which then reads the
    low-precision logits once instead of writing a float32 copy. Same numbers to rounding."""
    H.compile_outside_attention(model)
    model._langheads_loss = torch.compile(_full_vocab_nll, dynamic=True)


def _chunk_nll(model, normed: torch.Tensor, targets: torch.Tensor, vocab_block: int | None) -> torch.Tensor:
    """Token NLL = logsumexp(logits) - logits[target], over vocabulary blocks.

    With `vocab_block` the logits are made block by block with a running (online) logsumexp,
    so no [tokens, vocab] tensor exists: on the CPU, tensors this small are reused by the
    allocator instead of being mapped fresh (page faults cost as much as the exp).
    """
    head = model.get_output_embeddings()
    if vocab_block is None or not isinstance(head, torch.nn.Linear):
        full_vocab_nll = getattr(model, "_langheads_loss", _full_vocab_nll)
        return full_vocab_nll(H.logits_from_hidden(model, normed), targets)
    weight, bias = head.weight, head.bias
    normed, targets = normed.to(weight.device), targets.to(weight.device)  # a device map may split norm and head
    target_logit = (normed * weight[targets]).sum(-1) + (bias[targets] if bias is not None else 0)
    target_logit = H.postprocess_logits(model, target_logit).float()
    running_max = running_sum = None
    for start in range(0, weight.shape[0], vocab_block):
        b = None if bias is None else bias[start : start + vocab_block]
        block = H.postprocess_logits(
            model, torch.nn.functional.linear(normed, weight[start : start + vocab_block], b)
        ).float()
        block_max = block.amax(dim=-1)
        if running_max is None:
            running_max = block_max
            running_sum = (block - block_max[:, None]).exp().sum(-1)
        else:
            new_max = torch.maximum(running_max, block_max)
            running_sum = running_sum * (running_max - new_max).exp() + (block - new_max[:, None]).exp().sum(-1)
            running_max = new_max
    return running_max + running_sum.log() - target_logit


def default_vocab_block(device, chunk_tokens: int) -> int | None:
    """CPU: blocks of at most 4M logits (16 MB, see _chunk_nll); GPU: the whole vocabulary at once."""
    return max(256, (1 << 22) // chunk_tokens) if torch.device(device).type == "cpu" else None


def nll_from_hidden(
    model,
    hidden: torch.Tensor,
    input_ids: torch.Tensor,
    lengths: torch.Tensor,
    chunk_tokens: int = 1024,
    vocab_block: int | None | str = "auto",
    starts: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean token NLL per row from the last decoder layer's output [rows, T, d], over the
    tokens from `starts` (default: every token after the first) to the row's end.

    Only real predicting positions go through the final norm and the output layer, at most
    `chunk_tokens` at a time. Under autograd each chunk is checkpointed, so its logits are
    recomputed in the backward pass instead of being kept.
    """
    lengths = lengths.to(hidden.device)
    rows, cols = _positions(lengths.cpu(), hidden.shape[1], None if starts is None else starts.cpu())
    rows, cols = rows.to(hidden.device), cols.to(hidden.device)
    targets = input_ids.to(hidden.device)[rows, cols + 1]
    flat = hidden[rows, cols]
    norm = H.final_norm(model)
    if vocab_block == "auto":
        vocab_block = default_vocab_block(hidden.device, chunk_tokens)
    pieces = []
    for start in range(0, flat.shape[0], chunk_tokens):
        h = norm(flat[start : start + chunk_tokens])
        t = targets[start : start + chunk_tokens]
        if torch.is_grad_enabled() and h.requires_grad:
            pieces.append(checkpoint(_chunk_nll, model, h, t, vocab_block, use_reentrant=False))
        else:
            pieces.append(_chunk_nll(model, h, t, vocab_block))
    token_nll = torch.cat([p.to(hidden.device) for p in pieces])
    sums = torch.zeros(hidden.shape[0], dtype=token_nll.dtype, device=hidden.device).index_add(0, rows, token_nll)
    counted = lengths - (1 if starts is None else starts.to(lengths.device))
    return sums / counted.to(sums.dtype)


@dataclass
class Trace:
    """What entered each decoder layer when the unmodified model ran on one batch."""

    batch: Batch
    layer_inputs: list[tuple[tuple, dict]]  # per layer: (args, kwargs) as the layer was called
    final_hidden: torch.Tensor


def _layer_output(out):
    return out[0] if isinstance(out, tuple) else out


def trace(model, batch: Batch) -> Trace:
    """Run the unmodified model once, keeping every decoder layer's inputs."""
    layers = H.decoder_layers(model)
    captured: list = [None] * len(layers)
    final: list = [None]

    def keep(i):
        def hook(module, args, kwargs):
            captured[i] = (args, dict(kwargs))

        return hook

    def keep_out(module, args, kwargs, out):
        final[0] = _layer_output(out)

    device = next(model.parameters()).device
    handles = [layer.register_forward_pre_hook(keep(i), with_kwargs=True) for i, layer in enumerate(layers)]
    handles.append(layers[-1].register_forward_hook(keep_out, with_kwargs=True))
    try:
        H.decoder_body(model)(input_ids=batch.input_ids.to(device), use_cache=False)
    finally:
        for h in handles:
            h.remove()
    return Trace(batch, captured, final[0])


def _tile(value, batch_rows: int, copies: int):
    """Repeat every per-row tensor `copies` times along dim 0 (row k*B + b is copy k of row b)."""
    if copies == 1:
        return value
    if isinstance(value, torch.Tensor):
        if value.dim() > 0 and value.shape[0] == batch_rows:
            return value.repeat(copies, *([1] * (value.dim() - 1)))
        return value
    if isinstance(value, tuple):
        return tuple(_tile(v, batch_rows, copies) for v in value)
    if isinstance(value, list):
        return [_tile(v, batch_rows, copies) for v in value]
    if isinstance(value, dict):
        return {k: _tile(v, batch_rows, copies) for k, v in value.items()}
    return value


def resume(
    model,
    tr: Trace,
    start_layer: int,
    factors: dict[int, torch.Tensor],
    copies: int,
    chunk_tokens: int = 1024,
    hidden: torch.Tensor | None = None,
    scaled=None,
) -> torch.Tensor:
    """Per-row NLL of `copies` copies of the batch, recomputed from `start_layer` upwards.

    `factors[layer]` is [copies * rows, n_heads] (see heads.scaled_heads), or per unit of
    another component with `scaled` (its `Component.scaled`). `hidden` replaces what entered
    `start_layer` (default: the traced input, tiled).
    """
    x = resume_hidden(model, tr, start_layer, factors, copies, hidden, scaled)
    return copies_nll(model, tr.batch, x, copies, chunk_tokens)


def resume_hidden(
    model,
    tr: Trace,
    start_layer: int,
    factors: dict[int, torch.Tensor],
    copies: int,
    hidden: torch.Tensor | None = None,
    scaled=None,
) -> torch.Tensor:
    """What `resume` computes before its loss: the last decoder layer's output for `copies`
    copies of the batch, [copies * rows, T, d] (row k*rows + b is copy k of row b)."""
    rows = tr.batch.input_ids.shape[0]
    layers = H.decoder_layers(model)
    args, kwargs = tr.layer_inputs[start_layer]
    x = _tile(args[0] if args else kwargs["hidden_states"], rows, copies) if hidden is None else hidden
    head_major = H.adapter_for(model).head_major_kwargs
    with (scaled or H.scaled_heads)(model, factors):
        for i in range(start_layer, len(layers)):
            args, kwargs = tr.layer_inputs[i]
            args_i, kwargs_i = _tile(args[1:], rows, copies), _tile(kwargs, rows, copies)
            for name in head_major:  # [rows * heads, ...]: whole blocks of rows repeat, as the batch does
                if kwargs.get(name) is not None:
                    kwargs_i[name] = kwargs[name].repeat(copies, *([1] * (kwargs[name].dim() - 1)))
            if args:
                x = _layer_output(layers[i](x, *args_i, **kwargs_i))
            else:
                x = _layer_output(layers[i](**{**kwargs_i, "hidden_states": x}))
    return x


def copies_nll(model, batch: Batch, hidden: torch.Tensor, copies: int, chunk_tokens: int = 1024) -> torch.Tensor:
    """Per-row NLL of `copies` copies of the batch from their last decoder layer's output."""
    ids = batch.input_ids.repeat(copies, 1)
    starts = None if batch.starts is None else batch.starts.repeat(copies)
    return nll_from_hidden(model, hidden, ids, batch.lengths.repeat(copies), chunk_tokens, starts=starts)


@torch.no_grad()
def per_text_nll(
    model,
    token_lists: list[list[int]],
    batch_tokens: int = 4096,
    chunk_tokens: int = 1024,
    pad_id: int = 0,
    starts: list[int] | None = None,
) -> torch.Tensor:
    """Per-text mean token NLL (float64, on the CPU) through the fast path, with whatever masks
    are active; with `starts`, over each text's tokens from starts[i] on only."""
    out = torch.zeros(len(token_lists), dtype=torch.float64)
    for batch in make_batches(token_lists, batch_tokens, pad_id, starts):
        tr = trace(model, batch)
        out[batch.index] = (
            nll_from_hidden(model, tr.final_hidden, batch.input_ids, batch.lengths, chunk_tokens, starts=batch.starts)
            .double()
            .cpu()
        )
    return out


@torch.no_grad()
def reference_nll(model, token_lists: list[list[int]], starts: list[int] | None = None) -> torch.Tensor:
    """The slow, obvious path: each text alone through the whole model, full logits (with
    `starts`, the mean over tokens starts[i].. only).

    Tests and benchmarks compare every fast path against this.
    """
    device = next(model.parameters()).device
    out = []
    for i, ids in enumerate(token_lists):
        x = torch.tensor([ids], device=device)
        first = 1 if starts is None else starts[i]
        logits = model(input_ids=x, use_cache=False).logits[0, first - 1 : -1].float()
        out.append(torch.nn.functional.cross_entropy(logits, x[0, first:]))
    return torch.stack(out).cpu()
