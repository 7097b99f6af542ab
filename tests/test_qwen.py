"""The second real model, Qwen2.5-Coder-0.5B-Instruct (qwen2: 14 query heads over 2 KV heads,
q/k/v biases, a tied byte-level BPE vocabulary), through scan, prune and export: a pruning with
uneven heads runs in llama.cpp's deci graph with transformers' next-token log-probabilities."""

import pytest

from langheads import load_model
from langheads.corpus import load_corpus
from langheads.deploy import export
from tests.conftest import run_cli

pytestmark = [pytest.mark.slow, pytest.mark.qwen]


def test_qwen_by_name_is_the_pinned_file(qwen_model):
    from langheads.builtin import BUILTINS, sha256_of

    named = BUILTINS["qwen2.5-coder-0.5b"]
    assert qwen_model.model_hash == named.sha256 == sha256_of(named.path())
    layout = qwen_model.model.config
    assert (layout.num_hidden_layers, layout.num_attention_heads, layout.num_key_value_heads) == (24, 14, 2)
    text = "def add(a, b):\n    return a + b"
    assert qwen_model.tokenizer.decode(qwen_model.tokenizer(text)["input_ids"]) == text


def test_qwen_scan_prune_and_export_run_in_llama_cpp(qwen_model, tmp_path):
    """An attribution scan of all 336 heads on en and zh, a walk that removes 40 heads, and the
    uneven pruning it writes, exported through deci and run by llama.cpp against transformers."""
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is an optional extra")
    scan = run_cli(
        "scan",
        "--model",
        "qwen2.5-coder-0.5b",
        "--languages",
        "en,zh",
        "--method",
        "attribution",
        "--texts",
        "2",
        "--max-tokens",
        "24",
        "--out",
        str(tmp_path / "scan"),
        "--quiet",
    )
    assert scan.returncode == 0, scan.stderr
    pruned = run_cli(
        "prune",
        "--scan",
        str(tmp_path / "scan"),
        "--keep",
        "en",
        "--heads",
        "40",
        "--out",
        str(tmp_path / "pruned"),
        "--quiet",
    )
    assert pruned.returncode == 0, pruned.stderr
    loaded = load_model(str(tmp_path / "pruned"))
    counts = export.layer_heads(loaded.model)
    assert len(set(counts)) > 1, counts  # uneven: only deci runs it
    path = export.export_gguf(loaded, tmp_path / "p.gguf", "f32")
    texts = [t.text[:300] for lang in ("en", "zh") for t in load_corpus().texts(lang, "report")[:2]]
    gap = export.llama_cpp_gap(loaded, path, texts, n_threads=2)
    assert gap["same_tokens"] == len(texts) and gap["max_logprob_gap"] < 5e-3, gap
