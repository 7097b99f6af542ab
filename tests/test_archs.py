"""The adapter registry: every family is named once, unsupported models and options are refused
in one line, and per-head parameters (Cohere's q/k norms) go with their heads."""

import pytest
import torch

from langheads import archs, synthetic
from langheads import heads as H
from langheads.cli import main
from langheads.errors import LangheadsError


def test_each_model_type_has_one_adapter():
    seen = [t for a in archs.FAMILIES for t in a.model_types]
    assert len(seen) == len(set(seen))
    for arch in synthetic.ARCHS:
        assert archs.adapter_for(synthetic.tiny(arch)).layout(synthetic.tiny(arch).config).n_layers >= 3


def test_unsupported_architecture_is_refused_with_the_list():
    from transformers import GPTNeoXConfig

    with pytest.raises(LangheadsError, match="unsupported architecture 'gpt_neox'; supported: apertus, bloom, cohere"):
        archs.adapter_for(GPTNeoXConfig())


def test_unhandled_options_are_refused_by_name():
    from transformers import Gemma3TextConfig, LlamaConfig

    with pytest.raises(LangheadsError, match="use_bidirectional_attention"):
        archs.adapter_for(Gemma3TextConfig(use_bidirectional_attention=True))
    with pytest.raises(LangheadsError, match="pretraining_tp=2"):
        archs.adapter_for(LlamaConfig(pretraining_tp=2))
    from transformers import FalconConfig

    with pytest.raises(LangheadsError, match="alibi=True"):
        archs.adapter_for(FalconConfig(alibi=True))


def test_cohere_qk_norm_rows_follow_their_heads():
    model = synthetic.tiny("cohere_qknorm")
    assert isinstance(archs.adapter_for(model), archs.base.Adapter) and archs.adapter_for(model).per_head_norms
    attn = H.decoder_layers(model)[0].self_attn
    assert tuple(attn.q_norm.weight.shape) == (4, 16) and tuple(attn.k_norm.weight.shape) == (2, 16)
    from langheads.edit.surgery import remove_heads_

    before = attn.q_norm.weight.detach().clone()
    remove_heads_(model, {0: [0, 1]})  # KV group 0 goes whole
    attn = H.decoder_layers(model)[0].self_attn
    assert torch.equal(attn.q_norm.weight, before[[2, 3]]) and attn.k_norm.weight.shape[0] == 1


def test_info_lists_the_families_and_a_models_kv_cost(capsys, tiny_dirs):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    for a in archs.FAMILIES + archs.VARIANTS:
        assert a.family in out
    assert "olmo2" in out and "refused" in out
    assert main(["info", str(tiny_dirs["llama"])]) == 0
    # 3 layers x K and V x 2 KV heads x 16 x 4 bytes
    assert "KV cache       768 bytes per token" in capsys.readouterr().out


@pytest.mark.parametrize("arch", ["gpt2", "xglm", "bloom", "falcon"])
def test_uniform_is_refused_where_the_config_ties_the_head_size(arch):
    model = synthetic.tiny(arch)
    with pytest.raises(LangheadsError, match="ties the head size to .* save without --uniform"):
        archs.adapter_for(model).uniform_config(model.config, 2)


def test_the_adapter_is_resolved_once_per_model(monkeypatch):
    """Head helpers ask for a model's adapter many times in a pruning walk; the config is
    checked the first time only."""
    from langheads import synthetic
    from langheads.archs import REGISTRY, adapter_for

    model = synthetic.tiny("llama")
    checked = []
    adapter = REGISTRY["llama"]
    monkeypatch.setattr(type(adapter), "check_config", lambda self, config: checked.append(config))
    assert adapter_for(model) is adapter and adapter_for(model) is adapter and adapter_for(model.config) is adapter
    assert len(checked) == 2  # the model once, the bare config (never remembered) once
