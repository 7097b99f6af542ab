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
from langheads.corpus import Text, load_corpus, split_of
from langheads.models import load_model
from langheads.scoring import ExactAblation

ITEMS = [
    {"lang": lang, "id": str(i), "context": ctx, "question": q, "answer": a}
    for lang, rows in {
        "en": [("The river runs past the old mill.", "What runs past the mill?", "The river"),
               ("", "What colour is the sky on a clear day?", "blue"),
               ("Anna bought three apples and two pears.", "How many apples did Anna buy?", "three"),
               ("The train leaves at nine.", "When does the train leave?", "at nine")] * 3,
        "fr": [("La rivière passe devant le vieux moulin.", "Qu'est-ce qui passe devant le moulin ?", "La rivière"),
               ("", "De quelle couleur est le ciel ?", "bleu"),
               ("Anna a acheté trois pommes.", "Combien de pommes Anna a-t-elle achetées ?", "trois"),
               ("Le train part à neuf heures.", "Quand le train part-il ?", "à neuf heures")] * 3,
    }.items() for i, (ctx, q, a) in enumerate(rows)
]


@pytest.fixture(scope="module")
def qa_jsonl(tmp_path_factory):
    path = tmp_path_factory.mktemp("qa") / "qa.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in ITEMS), encoding="utf-8")
    return path


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
    layout = H.head_layout(loaded.model)
    out = ExactAblation(chunk_tokens=7, batch_tokens=200).score_language(
        loaded.model, layout, nll.make_batches(ids, 50, starts=starts), len(ids))
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
    assert qa.prompt_text(item, None, loaded.tokenizer) == "The sky is clear.\n\nQuestion: What colour is the sky?\nAnswer:"
    ids, start = qa.encode(loaded.tokenizer, item, None)
    assert loaded.tokenizer.decode(ids[start:]).strip() == "blue"
    jinja = tmp_path / "t.jinja"
    jinja.write_text("{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
                     "{% if add_generation_prompt %}<|assistant|>{% endif %}")
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
    squad = {"data": [{"title": "t", "paragraphs": [{"context": "Le ciel est bleu.", "qas": [
        {"id": "q1", "question": "De quelle couleur est le ciel ?", "answers": [{"text": "bleu", "answer_start": 12}]},
        {"id": "q2", "question": "Sans réponse ?", "answers": []}]}]}]}
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
    assert main(["scan", "--model", str(tiny_dirs["llama"]), "--data", str(qa_jsonl), "--languages", "en,fr",
                 "--signal", "answer", "--out", str(out), "--bootstrap", "50", "--quiet"]) == 0
    info = json.loads((out / "heads.json").read_text())
    assert info["signal"]["name"] == "answer" and info["signal"]["template"] == "plain"
    assert info["settings"]["signal"] == "answer"
    assert main(["scan", "--model", str(tiny_dirs["llama"]), "--languages", "en,hi", "--signal", "answer",
                 "--out", str(tmp_path / "cloze"), "--bootstrap", "20", "--quiet"]) == 0  # default: the cloze set
    assert "cloze set" in json.loads((tmp_path / "cloze" / "heads.json").read_text())["corpus"]["source"]
    capsys.readouterr()
    assert main(["scan", "--model", str(tiny_dirs["llama"]), "--data", str(sample_data), "--languages", "en",
                 "--signal", "answer", "--out", str(tmp_path / "x"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--signal answer needs question-answer data" in err[0]


def test_answer_metrics_by_hand():
    from langheads.evaluation.metrics import Metric, chrf, exact_match, token_f1

    assert exact_match("The River!", "river") == 1.0 and exact_match("a stream", "river") == 0.0
    assert token_f1("at nine sharp", "at nine") == pytest.approx(2 * (2 / 3) * 1 / (2 / 3 + 1))
    assert token_f1("नदी के पास", "नदी") == pytest.approx(0.5)
    assert token_f1("天空是蓝色", "蓝色") == pytest.approx(2 * (2 / 5) * 1 / (2 / 5 + 1))  # characters
    assert chrf("river", "river") == 1.0 and 0 < chrf("rivers", "river") < 1
    m = Metric("em", np.array([1.0, 0.0, 1.0, 1.0]), np.array([0.0, 0.0, 1.0, 0.0]))
    out = m.paired(seed=1, n_boot=500)
    assert out["before"] == 0.75 and out["after"] == 0.25 and out["change"] == -0.5
    assert out["ci_low"] <= -0.5 <= out["ci_high"] and out["ci_high"] <= 0


def test_evaluate_qa_with_masked_heads(tiny_dirs, qa_jsonl, tmp_path, capsys):
    import pandas as pd

    from langheads.runs import read_eval

    out = tmp_path / "qa"
    argv = ["evaluate", "--baseline", str(tiny_dirs["llama"]), "--languages", "en,fr", "--qa", str(qa_jsonl),
            "--new-tokens", "4", "--out", str(out)]
    assert main([*argv, "--mask", "0.1,2.3"]) == 0
    printed = capsys.readouterr().out
    ev = read_eval(out)
    assert ev.kind == "qa" and ev.info["mask"] == [[0, 1], [2, 3]]
    assert set(ev.table["metric"]) == {"exact_match", "token_f1", "chrf", "language_switch"}
    assert (ev.table["items"] > 0).all() and ((ev.table["ci_low"] <= ev.table["change"] + 1e-12)
                                              & (ev.table["change"] <= ev.table["ci_high"] + 1e-12)).all()
    assert "language_switch" in printed and "masked 0.1,2.3" in printed
    gens = pd.DataFrame(ev.generations)
    assert set(gens.columns) >= {"language", "reference", "before", "after"}
    # masking nothing: after == before, item for item, so every change is exactly 0
    assert main(["evaluate", "--model", str(tiny_dirs["llama"]), "--baseline", str(tiny_dirs["llama"]), "--languages",
                 "en", "--qa", str(qa_jsonl), "--new-tokens", "4", "--out", str(tmp_path / "same")]) == 0
    same = read_eval(tmp_path / "same")
    assert (same.table["change"] == 0).all()
    assert [g["before"] for g in same.generations] == [g["after"] for g in same.generations]
    capsys.readouterr()
    assert main([*argv, "--mask", "9.9", "--overwrite"]) == 2
    assert "--mask: no head 9.9" in capsys.readouterr().err
    assert main([*argv[:-2], "--out", str(tmp_path / "x")]) == 2  # neither --model nor --mask
    assert "give --model" in capsys.readouterr().err


def test_switch_method_matches_one_head_at_a_time_generation(tiny_dirs, sample_data, tmp_path):
    """The batched, per-row-masked generations give what masking one head and generating
    each prompt alone gives."""
    from langheads.evaluation.metrics import switched
    from langheads.scanning.scan import ScanSettings, plan_scan

    plan = plan_scan(ScanSettings(model=str(tiny_dirs["llama"]), data=str(sample_data), languages=["fr"],
                                  method="switch", bootstrap=20))
    method, model, tok = plan.method, plan.loaded.model, plan.loaded.tokenizer
    method.new_tokens = 5
    batch = plan.batches(plan.work[0])[0]
    out = method.score_unit(model, plan.layout, batch, range(1, 2))
    prompts = method._prompts(model, batch)

    def alone(removed):
        said = []
        for row in prompts:
            with H.masked_heads(model, removed):
                gen = model.generate(input_ids=row[None], attention_mask=torch.ones_like(row[None]), do_sample=False,
                                     max_new_tokens=5, pad_token_id=tok.pad_token_id)
            said.append(switched(tok.decode(gen[0, len(row):], skip_special_tokens=True), "fr"))
        return np.array(said)

    base = alone([])
    np.testing.assert_array_equal(out.base_nll, base)
    for head in range(plan.layout.n_heads):
        np.testing.assert_array_equal(out.values[0, head], alone([(1, head)]) - base)
    assert plan.work[0].text_ids and all(split_of(i) == "selection" for i in plan.work[0].text_ids)


def test_switch_scan_end_to_end(tiny_dirs, sample_data, tmp_path):
    out = tmp_path / "switch"
    assert main(["scan", "--model", str(tiny_dirs["qwen2"]), "--data", str(sample_data), "--languages", "en,fr",
                 "--method", "switch", "--out", str(out), "--bootstrap", "30", "--quiet"]) == 0
    import pandas as pd

    scores = pd.read_csv(out / "scores.csv")
    assert ((scores["delta_nll"] >= -1) & (scores["delta_nll"] <= 1)).all()
    assert (scores["rel_increase"] == scores["delta_nll"]).all()  # shares are not divided by the base
    assert json.loads((out / "heads.json").read_text())["method"]["name"] == "switch"


def test_lm_eval_on_a_local_task_with_masked_heads(tiny_dirs, tmp_path, capsys):
    pytest.importorskip("lm_eval")
    rows = [{"question": q, "choices": c, "label": l} for q, c, l in [
        ("The sky is", [" blue", " green"], 0), ("Snow is", [" black", " white"], 1),
        ("Fire is", [" hot", " cold"], 0), ("Ice is", [" hot", " cold"], 1), ("Grass is", [" green", " red"], 0)]]
    (tmp_path / "toy.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "toy.yaml").write_text(
        "task: langheads_toy\ndataset_path: json\ndataset_kwargs:\n  data_files:\n"
        f"    test: {tmp_path / 'toy.jsonl'}\ntest_split: test\noutput_type: multiple_choice\n"
        "doc_to_text: '{{question}}'\ndoc_to_choice: '{{choices}}'\ndoc_to_target: '{{label}}'\n"
        "metric_list:\n  - metric: acc\n  - metric: acc_norm\n")
    from langheads.runs import read_eval

    base = ["evaluate", "--baseline", str(tiny_dirs["llama"]), "--lm-eval", "langheads_toy",
            "--lm-eval-include", str(tmp_path)]
    assert main([*base, "--mask", "0.0,1.1,2.2", "--out", str(tmp_path / "masked")]) == 0
    ev = read_eval(tmp_path / "masked")
    assert ev.kind == "lm-eval" and set(ev.table["metric"]) == {"acc", "acc_norm"}
    assert (ev.table["items"] == 5).all() and ev.table["before"].between(0, 1).all()
    assert main([*base, "--model", str(tiny_dirs["llama"]), "--out", str(tmp_path / "same")]) == 0
    assert (read_eval(tmp_path / "same").table["change"] == 0).all()  # the same model, unmasked: no change
    capsys.readouterr()
    assert main(["evaluate", "--baseline", str(tiny_dirs["llama"]), "--mask", "0.0", "--lm-eval", "no_such_task",
                 "--out", str(tmp_path / "x")]) == 2
    assert "--lm-eval: unknown task no_such_task" in capsys.readouterr().err
