"""Model loading: folders, the GGUF cache (atomic, listable, clearable), and the real default."""

import pytest
import torch

from langheads import heads as H
from langheads import models, nll, synthetic
from langheads.components import component_for
from langheads.errors import LangheadsError

from .conftest import run_cli


def test_folder_loads_in_float32_and_bfloat16(tiny_dirs):
    loaded = models.load_model(str(tiny_dirs["gemma2"]))
    assert H.head_layout(loaded.model).n_kv_heads == 2 and loaded.model.dtype == torch.float32
    ids = loaded.tokenizer("ab")["input_ids"]
    assert len(ids) == 3 and ids[0] == 1  # BOS, then one id per byte
    assert models.load_model(str(tiny_dirs["gemma2"]), "bfloat16").model.dtype == torch.bfloat16
    assert loaded.model_hash == models.load_model(str(tiny_dirs["gemma2"])).model_hash
    with pytest.raises(LangheadsError, match="unknown dtype"):
        models.load_model(str(tiny_dirs["gemma2"]), "float8")


def test_gguf_cache_is_atomic_listed_and_cleared(tmp_path, monkeypatch):
    """A conversion killed half way leaves nothing; a finished one is reused, listed, cleared."""
    import transformers

    monkeypatch.setenv("LANGHEADS_CACHE", str(tmp_path / "cache"))
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF" + b"\0" * 64)
    conversions = []

    def fake_model(folder, gguf_file=None, **kw):
        conversions.append(gguf_file)
        model = synthetic.tiny("llama")
        if len(conversions) == 1:  # the first conversion dies while saving
            model.save_pretrained = lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt())
        return model

    real_model, real_tok = transformers.AutoModelForCausalLM.from_pretrained, transformers.AutoTokenizer.from_pretrained
    monkeypatch.setattr(
        transformers.AutoModelForCausalLM,
        "from_pretrained",
        lambda folder, gguf_file=None, **kw: fake_model(folder, gguf_file) if gguf_file else real_model(folder, **kw),
    )
    monkeypatch.setattr(
        transformers.AutoTokenizer,
        "from_pretrained",
        lambda folder, gguf_file=None, **kw: synthetic.byte_tokenizer() if gguf_file else real_tok(folder, **kw),
    )
    with pytest.raises(KeyboardInterrupt):
        models.load_model(str(gguf))
    assert list((tmp_path / "cache" / "models").iterdir()) == []
    first = models.load_model(str(gguf))
    second = models.load_model(str(gguf))
    assert len(conversions) == 2  # the second load used the cached copy
    assert H.head_layout(first.model) == H.head_layout(second.model)
    [(folder, size, source)] = models.list_cache()
    assert size > 0 and source == str(gguf.resolve())
    assert models.clear_cache() == 1 and models.list_cache() == []


def test_cache_cli(tmp_path):
    r = run_cli("cache", "list", env={"LANGHEADS_CACHE": str(tmp_path)})
    assert r.returncode == 0 and "(empty)" in r.stdout


# ---- the real default model (slow: converted once into the cache, then seconds) ----------


@pytest.mark.slow
def test_default_model_shape(default_model):
    layout = H.head_layout(default_model.model)
    assert (layout.model_type, layout.n_layers, layout.n_heads, layout.n_kv_heads, layout.head_dim) == (
        "gemma3_text",
        18,
        4,
        1,
        256,
    )
    ids = default_model.tokenizer("Hello")["input_ids"]
    assert ids[0] == default_model.tokenizer.bos_token_id == 2 and len(ids) == 2


@pytest.mark.slow
def test_default_model_exact_matches_naive_one_head_per_layer(default_model):
    from langheads.corpus import bundled_corpus
    from langheads.scoring import ExactAblation

    model, tok = default_model.model, default_model.tokenizer
    corpus = bundled_corpus()
    ids = nll.tokenize(tok, [corpus.texts("en", "scoring")[0].text, corpus.texts("hi", "scoring")[1].text], 24)
    layout = H.head_layout(model)
    reference = nll.reference_nll(model, ids).double().numpy()
    assert 1.0 < reference.mean() < 8.0
    out = ExactAblation(chunk_tokens=16).score_language(
        model, component_for(model).layout, nll.make_batches(ids, 64), len(ids), lambda k: None
    )
    assert abs(out.base_nll - reference).max() < 1e-4
    for layer in range(layout.n_layers):
        head = layer % layout.n_heads
        with H.masked_heads(model, [(layer, head)]):
            ablated = nll.reference_nll(model, ids).double().numpy()
        assert abs(out.values[layer, head] - (ablated - reference)).max() < 1e-4, (layer, head)
