"""The paper's protocol, first part: question-answer data, prompts through chat templates or
the plain template, and the answer-only NLL as a scan signal (exact against the slow path)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from langheads import heads as H
from langheads import nll, qa
from langheads.cli import main
from langheads.components import component_for
from langheads.corpus import Text, load_corpus
from langheads.models import load_model
from langheads.scoring import ExactAblation


def _encoded(loaded, items, template=None):
    out = [qa.encode(loaded.tokenizer, t, template) for t in items]
    return [o[0] for o in out], [o[1] for o in out]


@pytest.mark.parametrize("arch", ["llama", "gemma3", "gpt2"])
def test_answer_only_nll_matches_the_slow_path_with_and_without_a_head(arch, tiny_dirs, qa_jsonl):
    loaded = load_model(str(tiny_dirs[arch]))
    items = load_corpus(qa_jsonl).texts("en")
    ids, starts = _encoded(loaded, items)
    assert all(0 < s < len(i) for i, s in zip(ids, starts))
    for removed in ([], [(1, 2)]):
        with H.masked_heads(loaded.model, removed):
            fast = nll.per_text_nll(loaded.model, ids, batch_tokens=64, chunk_tokens=5, starts=starts)
            slow = nll.reference_nll(loaded.model, ids, starts)
        torch.testing.assert_close(fast.float(), slow, rtol=1e-5, atol=1e-5)
    whole = nll.per_text_nll(loaded.model, ids, batch_tokens=64)
    assert not torch.allclose(whole, nll.per_text_nll(loaded.model, ids, batch_tokens=64, starts=starts))


def test_exact_scan_on_answers_is_masked_minus_unmasked(tiny_dirs, qa_jsonl):
    loaded = load_model(str(tiny_dirs["qwen2"]))
    items = load_corpus(qa_jsonl).texts("fr")[:5]
    ids, starts = _encoded(loaded, items)
    out = ExactAblation(chunk_tokens=7, batch_tokens=200).score_language(
        loaded.model, component_for(loaded.model).layout, nll.make_batches(ids, 50, starts=starts), len(ids)
    )
    base = nll.reference_nll(loaded.model, ids, starts).double().numpy()
    np.testing.assert_allclose(out.base_nll, base, rtol=1e-5, atol=1e-6)
    for layer, head in [(0, 1), (2, 3)]:
        with H.masked_heads(loaded.model, [(layer, head)]):
            masked = nll.reference_nll(loaded.model, ids, starts).double().numpy()
        np.testing.assert_allclose(out.values[layer, head], masked - base, atol=2e-5)


def test_templates_plain_chat_and_file(tiny_dirs, tmp_path):
    loaded = load_model(str(tiny_dirs["llama"]))
    item = Text("en", "1", "The sky is clear.", "What colour is the sky?", "blue")
    assert qa.template_of(loaded.tokenizer, "auto") == ("plain", None)  # the tiny tokenizer has none
    assert (
        qa.prompt_text(item, None, loaded.tokenizer)
        == "The sky is clear.\n\nQuestion: What colour is the sky?\nAnswer:"
    )
    ids, start = qa.encode(loaded.tokenizer, item, None)
    assert loaded.tokenizer.decode(ids[start:]).strip() == "blue"
    jinja = tmp_path / "t.jinja"
    jinja.write_text(
        "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
        "{% if add_generation_prompt %}<|assistant|>{% endif %}"
    )
    name, template = qa.template_of(loaded.tokenizer, str(jinja))
    assert name == "chat (t.jinja)"
    prompt = qa.prompt_text(item, template, loaded.tokenizer)
    assert prompt == "<|user|>The sky is clear.\n\nWhat colour is the sky?\n<|assistant|>"
    ids, start = qa.encode(loaded.tokenizer, item, template)
    assert loaded.tokenizer.decode(ids[start:]).strip() == "blue"
    loaded.tokenizer.chat_template = template
    assert qa.template_of(loaded.tokenizer, "auto")[0] == "chat (the model's own)"
    assert qa.template_of(loaded.tokenizer, "none") == ("plain", None)


def test_cloze_set_is_built_offline_from_the_report_part():
    corpus = load_corpus("cloze")
    assert len(corpus.languages) >= 20 and corpus.has_answers
    for lang in ("en", "hi", "zh", "ar"):
        items = corpus.texts(lang)
        assert len(items) >= 7
        for t in items:  # context + answer is a prefix of a report text
            assert t.answer.strip() and not t.question
    en = corpus.texts("en")[0]
    assert en.answer.startswith(" ") and not en.text.endswith(" ")


def test_squad_files_take_their_language_from_the_name(tmp_path, capsys):
    squad = {
        "data": [
            {
                "title": "t",
                "paragraphs": [
                    {
                        "context": "Le ciel est bleu.",
                        "qas": [
                            {
                                "id": "q1",
                                "question": "De quelle couleur est le ciel ?",
                                "answers": [{"text": "bleu", "answer_start": 12}],
                            },
                            {"id": "q2", "question": "Sans réponse ?", "answers": []},
                        ],
                    }
                ],
            }
        ]
    }
    for name in ("xquad.fr.json", "dev-context-fr-question-fr.json", "squad.json"):
        (tmp_path / name).write_text(json.dumps(squad, ensure_ascii=False), encoding="utf-8")
    for name in ("xquad.fr.json", "dev-context-fr-question-fr.json"):
        corpus = load_corpus(tmp_path / name)
        (item,) = corpus.texts("fr")
        assert (item.id, item.answer, item.text) == ("q1", "bleu", "Le ciel est bleu.")
    assert load_corpus(tmp_path / "squad.json", "de").languages == ["de"]
    assert main(["languages", "--data", str(tmp_path / "squad.json")]) == 2
    assert "cannot tell its language from the file name; give --data-lang" in capsys.readouterr().err


def test_answer_signal_scan_end_to_end(tiny_dirs, qa_jsonl, sample_data, tmp_path, capsys):
    out = tmp_path / "answers"
    assert (
        main(
            [
                "scan",
                "--model",
                str(tiny_dirs["llama"]),
                "--data",
                str(qa_jsonl),
                "--languages",
                "en,fr",
                "--signal",
                "answer",
                "--out",
                str(out),
                "--bootstrap",
                "50",
                "--quiet",
            ]
        )
        == 0
    )
    info = json.loads((out / "run.json").read_text())
    assert info["signal"]["name"] == "answer" and info["signal"]["template"] == "plain"
    assert info["settings"]["signal"] == "answer"
    assert (
        main(
            [
                "scan",
                "--model",
                str(tiny_dirs["llama"]),
                "--languages",
                "en,hi",
                "--signal",
                "answer",
                "--out",
                str(tmp_path / "cloze"),
                "--bootstrap",
                "20",
                "--quiet",
            ]
        )
        == 0
    )  # default: the cloze set
    assert "cloze set" in json.loads((tmp_path / "cloze" / "run.json").read_text())["corpus"]["source"]
    capsys.readouterr()
    assert (
        main(
            [
                "scan",
                "--model",
                str(tiny_dirs["llama"]),
                "--data",
                str(sample_data),
                "--languages",
                "en",
                "--signal",
                "answer",
                "--out",
                str(tmp_path / "x"),
                "--quiet",
            ]
        )
        == 2
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--signal answer needs question-answer data" in err[0]
