"""Head layout per architecture, and masking that is exact and undone cleanly."""

import copy

import pytest
import torch

from langheads import heads as H
from langheads import synthetic
from langheads.errors import LangheadsError


def _zero_head_columns(model, layer, head):
    """A copy of the model with the head's o_proj/c_proj input columns set to zero."""
    layout = H.head_layout(model)
    clone = copy.deepcopy(model)
    proj = H.output_projection(clone, layer)
    cols = slice(head * layout.head_dim, (head + 1) * layout.head_dim)
    from transformers.pytorch_utils import Conv1D

    with torch.no_grad():
        if isinstance(proj, Conv1D):  # GPT-2's Conv1D keeps weight as [in, out]
            proj.weight[cols, :] = 0
        else:
            proj.weight[:, cols] = 0
    return clone


@pytest.mark.parametrize("arch", synthetic.ARCHS)
def test_mask_equals_zeroed_weights_and_is_undone(arch):
    model = synthetic.tiny(arch)
    layout = H.head_layout(model)
    assert layout.n_layers >= 3 and layout.n_heads == 4
    if arch not in synthetic.NO_GQA:
        assert layout.n_kv_heads == 2  # grouped-query: fewer KV heads than query heads
    ids = torch.randint(4, synthetic.VOCAB, (3, 21), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        before = model(input_ids=ids).logits
        for layer, head in [(0, 1), (layout.n_layers - 1, 3)]:
            with H.masked_heads(model, [(layer, head)]):
                masked = model(input_ids=ids).logits
            zeroed = _zero_head_columns(model, layer, head)(input_ids=ids).logits
            assert torch.equal(masked, zeroed), f"{arch}: masking differs from zeroed weights"
            assert not torch.equal(masked, before)
        after = model(input_ids=ids).logits
    assert torch.equal(before, after), "masking left a trace"


def test_per_row_factors_match_separate_masks():
    model = synthetic.tiny("llama")
    ids = torch.randint(4, synthetic.VOCAB, (2, 9), generator=torch.Generator().manual_seed(2))
    factors = torch.ones(4, 4)
    factors[2:, 1] = 0  # rows 2-3 (the second copy of the batch) lose head 1
    with torch.no_grad(), H.scaled_heads(model, {1: factors}):
        both = model(input_ids=ids.repeat(2, 1)).logits
    with torch.no_grad(), H.masked_heads(model, [(1, 1)]):
        alone = model(input_ids=ids).logits
    assert torch.allclose(both[2:], alone, atol=1e-5)
    assert not torch.allclose(both[:2], alone, atol=1e-3)


def test_hooks_removed_after_error():
    model = synthetic.tiny("qwen2")
    with pytest.raises(RuntimeError):
        with H.masked_heads(model, [(0, 0)]):
            raise RuntimeError("boom")
    assert not H.output_projection(model, 0)._forward_pre_hooks


def test_unsupported_architecture_is_named():
    from transformers import AutoModelForCausalLM, GPTNeoXConfig

    model = AutoModelForCausalLM.from_config(
        GPTNeoXConfig(vocab_size=32, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32)
    )
    with pytest.raises(LangheadsError, match="unsupported architecture 'gpt_neox'.*gemma3.*llama"):
        H.head_layout(model)
