"""The one greedy generator: evaluation's continuations and answers and the switch method's
per-head generations all decode through it."""

from __future__ import annotations

import torch


@torch.no_grad()
def greedy(model, tokenizer, prompts: torch.Tensor, new_tokens: int) -> list[str]:
    """Greedy continuations of same-length prompts ([batch, tokens] ids on the model's device),
    each decoded without special tokens."""
    out = model.generate(
        input_ids=prompts,
        attention_mask=torch.ones_like(prompts),
        do_sample=False,
        max_new_tokens=new_tokens,
        pad_token_id=tokenizer.pad_token_id,
    )
    return tokenizer.batch_decode(out[:, prompts.shape[1] :], skip_special_tokens=True)


def greedy_each(loaded, prompts: list[list[int]], new_tokens: int) -> list[str]:
    """Greedy continuations of prompts of any lengths, one at a time (no padding to change them)."""
    device = next(loaded.model.parameters()).device
    return [
        greedy(loaded.model, loaded.tokenizer, torch.tensor([ids], device=device), new_tokens)[0] for ids in prompts
    ]
