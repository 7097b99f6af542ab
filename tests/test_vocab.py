"""Vocabulary trimming: same tokens and same logits on kept-language text, other scripts still
run, the manifest round-trips, and --max-vocab stays closed under merges."""

import copy
import json

import pytest
import torch

from langheads import load_model, synthetic
from langheads.cli import main
from langheads.edit import vocab
from langheads.errors import LangheadsError
from langheads.manifest import read_manifest

from .conftest import training_jsonl

KEPT_TEXTS = (
    synthetic.TRAINING_TEXT["en"]
    + synthetic.TRAINING_TEXT["hi"]
    + ["Numbers 1, 22 and 333 (and punctuation!) -- stay.", "नया पाठ, जो प्रशिक्षण में नहीं था।"]
)
DROPPED_TEXTS = ["人人生而自由", "Все люди рождаются свободными.", "☃ ∑ 😀 mixed Все 人"]


def _close(a, b):
    return (a - b).abs().max().item() <= 1e-5 * a.abs().max().item()


@pytest.fixture(
    scope="module",
    params=[("gemma3", "byte_fallback"), ("gpt2", "byte_level"), ("llama", "byte_fallback")],
    ids=lambda p: f"{p[0]}-{p[1]}",
)
def trimmed(request, tmp_path_factory):
    """(original, trimmed) LoadedModels: a tiny model trimmed to en+hi through `langheads trim`."""
    arch, style = request.param
    root = tmp_path_factory.mktemp(f"trim-{arch}")
    synthetic.save_tiny(arch, root / "orig", tokenizer=style)
    data = training_jsonl(root / "data.jsonl")
    assert (
        main(
            ["trim", "--model", str(root / "orig"), "--keep", "en,hi", "--data", str(data), "--out", str(root / "trim")]
        )
        == 0
    )
    return load_model(str(root / "orig")), load_model(str(root / "trim")), root


def test_trimmed_tokenizer_gives_the_same_token_strings(trimmed):
    original, small, _ = trimmed
    assert len(small.tokenizer) < len(original.tokenizer)
    for text in KEPT_TEXTS:
        ids_a, ids_b = original.tokenizer(text)["input_ids"], small.tokenizer(text)["input_ids"]
        assert original.tokenizer.convert_ids_to_tokens(ids_a) == small.tokenizer.convert_ids_to_tokens(ids_b)


def test_trimmed_logits_equal_the_originals_at_kept_ids(trimmed):
    original, small, root = trimmed
    kept = read_manifest(root / "trim").kept_ids()
    for text in KEPT_TEXTS:
        a = torch.tensor([original.tokenizer(text)["input_ids"]])
        b = torch.tensor([small.tokenizer(text)["input_ids"]])
        with torch.no_grad():
            full, cut = original.model(input_ids=a).logits[0], small.model(input_ids=b).logits[0]
        assert _close(full[:, kept], cut)
        # a softmax over fewer tokens: each text's NLL can only fall
        nll_full = torch.nn.functional.cross_entropy(full[:-1], a[0, 1:])
        nll_cut = torch.nn.functional.cross_entropy(cut[:-1], b[0, 1:])
        assert nll_cut <= nll_full + 1e-6


def test_dropped_scripts_still_tokenize_and_run(trimmed):
    original, small, _ = trimmed
    for text in DROPPED_TEXTS:
        ids = small.tokenizer(text)["input_ids"]
        assert max(ids) < small.model.config.get_text_config().vocab_size
        assert small.tokenizer.decode(ids, skip_special_tokens=True) == text  # bytes carry it
        assert len(ids) >= len(original.tokenizer(text)["input_ids"])
        with torch.no_grad():
            assert torch.isfinite(small.model(input_ids=torch.tensor([ids])).logits).all()
    out = small.model.generate(
        input_ids=torch.tensor([small.tokenizer(DROPPED_TEXTS[0])["input_ids"]]), max_new_tokens=3, do_sample=False
    )
    assert out.shape[1] > 3


def test_trimmed_folder_loads_with_plain_transformers_and_records_its_edit(trimmed):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _, small, root = trimmed
    plain = AutoModelForCausalLM.from_pretrained(root / "trim")
    tok = AutoTokenizer.from_pretrained(root / "trim")
    assert plain.get_input_embeddings().weight.shape[0] == len(tok) == small.model.get_input_embeddings().num_embeddings
    manifest = read_manifest(root / "trim")
    [edit] = manifest.edits
    assert edit["op"] == "trim_vocab" and edit["kept_ids"] == sorted(edit["kept_ids"])
    record = manifest.records["trim_vocab"]
    assert record["scripts"]["en"] == {"LATIN": 1.0} and record["scripts"]["hi"] == {"DEVANAGARI": 1.0}
    config = json.loads((root / "trim" / "config.json").read_text())
    assert tok.convert_ids_to_tokens(config["bos_token_id"]) == "<bos>"
    assert tok.convert_ids_to_tokens(config["eos_token_id"]) == "<eos>"
    if manifest.source:
        assert manifest.source["sha256"] == load_model(str(root / "orig")).model_hash


def test_max_vocab_is_closed_under_merges():
    tok = synthetic.trained_tokenizer("byte_fallback")
    tf = vocab.TokenizerFile.of(tok)
    exact = vocab.choose_vocab(tok, ["en", "hi"], synthetic.TRAINING_TEXT)
    texts = synthetic.TRAINING_TEXT["en"] + synthetic.TRAINING_TEXT["hi"]
    small = vocab.choose_vocab(tok, ["en", "hi"], synthetic.TRAINING_TEXT, max_vocab=400, vocab_texts=texts)
    assert len(small.kept_ids) <= 400 < len(exact.kept_ids) and set(small.kept_ids) <= set(exact.kept_ids)
    assert small.rarity == "texts"
    kept = {tf.tokens[i] for i in small.kept_ids}
    merge_of = tf.merge_of()
    for t in kept:  # every kept merged token can be built from kept parts
        if t in merge_of and not (t.startswith("<0x") or len(t) == 1):
            assert any(a in kept and b in kept for a, b in tf.merges if a + b == t), t
    # the most used tokens of the rarity texts survive the cut
    counts = tf.encode_counts(texts)
    top = [i for i, _ in counts.most_common(5)]
    assert set(top) <= set(small.kept_ids)
    # and the trimmed tokenizer still encodes and decodes the texts
    cut = vocab.trimmed_tokenizer(tok, small.kept_ids)
    for text in texts:
        assert cut.decode(cut(text)["input_ids"], skip_special_tokens=True) == text
    with pytest.raises(LangheadsError, match="below the"):
        vocab.choose_vocab(tok, ["en", "hi"], synthetic.TRAINING_TEXT, max_vocab=10, vocab_texts=texts)


def test_max_vocab_keeps_the_tokens_the_kept_languages_texts_use_first():
    """A word list (here: French text as the rarity source) misses a domain's own words; the
    tokens the kept languages' decision texts use go before any ranked by rarity."""
    tok = synthetic.trained_tokenizer("byte_fallback")
    tf = vocab.TokenizerFile.of(tok)
    T = synthetic.TRAINING_TEXT
    used = set(tf.encode_counts(T["en"][2:]))  # "The cat sat on the mat and looked at the rain in 1948."
    with_it = vocab.choose_vocab(tok, ["en", "hi"], {"en": T["en"], "hi": T["hi"]}, max_vocab=500, vocab_texts=T["fr"])
    without = vocab.choose_vocab(
        tok, ["en", "hi"], {"en": T["en"][:2], "hi": T["hi"]}, max_vocab=500, vocab_texts=T["fr"]
    )
    assert used <= set(with_it.kept_ids) and len(used - set(without.kept_ids)) > 5
    cut = vocab.trimmed_tokenizer(tok, with_it.kept_ids)
    assert cut.convert_ids_to_tokens(cut(T["en"][2])["input_ids"]) == tok.convert_ids_to_tokens(
        tok(T["en"][2])["input_ids"]
    )


def test_scripts_are_measured_per_language():
    shares = vocab.language_scripts({"ja": ["日本語のテキストです。カタカナ"], "en": ["Plain text, café."]})
    assert set(shares["ja"]) == {"HAN", "HIRAGANA", "KATAKANA"} and shares["en"] == {"LATIN": 1.0}
    assert vocab.script_of("é") == "LATIN" and vocab.script_of("्") == "DEVANAGARI" and vocab.script_of("1") is None
    with pytest.raises(LangheadsError, match="no letters"):
        vocab.language_scripts({"xx": ["123 456"]})


def test_prune_with_trim_vocab_then_reload(tmp_path):
    """Heads removed, then the vocabulary: the loader replays both from the manifest."""
    from langheads import heads as H
    from langheads.edit import pruning

    folder = synthetic.save_tiny("gemma3", tmp_path / "orig", tokenizer="byte_fallback")
    loaded = load_model(str(folder))
    removed = [(0, 1), (2, 0), (2, 1)]
    exact = vocab.choose_vocab(loaded.tokenizer, ["en", "hi"], synthetic.TRAINING_TEXT)
    text = synthetic.TRAINING_TEXT["hi"][0]
    ids = torch.tensor([loaded.tokenizer(text)["input_ids"]])
    with torch.no_grad(), H.masked_heads(loaded.model, removed):
        expected = loaded.model(input_ids=ids).logits[0][:, exact.kept_ids]
    pruning.save(loaded, tmp_path / "both", {"note": "test"}, heads=removed, vocab_choice=exact)
    back = load_model(str(tmp_path / "both"))
    assert [e["op"] for e in back.manifest.edits] == ["remove_heads", "trim_vocab"]
    with torch.no_grad():
        got = back.model(input_ids=torch.tensor([back.tokenizer(text)["input_ids"]])).logits[0]
    assert _close(expected, got)


def test_trim_refuses_bad_input_in_one_line(tiny_dirs, tmp_path, capsys):
    cases = [
        (
            ["trim", "--model", str(tiny_dirs["llama"]), "--keep", "xx", "--out", str(tmp_path / "a")],
            "no data for language",
        ),
        (
            [
                "trim",
                "--model",
                str(tiny_dirs["llama"]),
                "--keep",
                "en",
                "--out",
                str(tmp_path / "a"),
                "--max-vocab",
                "0",
            ],
            "--max-vocab must be a whole number >= 1",
        ),
        (["trim", "--model", str(tmp_path / "missing"), "--keep", "en", "--out", str(tmp_path / "a")], "unknown model"),
        (
            ["trim", "--model", str(tiny_dirs["llama"]), "--keep", "en", "--out", str(tmp_path / "a"), "--rarity", "x"],
            "unknown --rarity",
        ),
        (
            [
                "trim",
                "--model",
                str(tiny_dirs["llama"]),
                "--keep",
                "en",
                "--out",
                str(tmp_path / "a"),
                "--rarity",
                "texts",
            ],
            "needs --vocab-texts",
        ),
    ]
    for argv, message in cases:
        assert main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0]
    assert not (tmp_path / "a").exists()


@pytest.mark.slow
def test_default_model_trim_is_exact(default_model, tmp_path):
    """Gemma 3 270M kept to en+hi: same token strings on every en and hi text of the corpus, and
    logits equal at the kept ids."""
    from langheads.corpus import load_corpus

    corpus = load_corpus()
    exact = vocab.choose_vocab(default_model.tokenizer, ["en", "hi"], vocab.decision_texts(corpus, ["en", "hi"]))
    assert 0.6 < len(exact.kept_ids) / 262144 < 0.75
    cut = vocab.trimmed_tokenizer(default_model.tokenizer, exact.kept_ids)
    for lang in ("en", "hi"):
        for t in corpus.texts(lang):
            a, b = default_model.tokenizer(t.text)["input_ids"], cut(t.text)["input_ids"]
            assert default_model.tokenizer.convert_ids_to_tokens(a) == cut.convert_ids_to_tokens(b)
    text = corpus.texts("hi", "report")[0].text
    a = torch.tensor([default_model.tokenizer(text)["input_ids"][:96]])
    with torch.no_grad():
        full = default_model.model(input_ids=a).logits[0][:, exact.kept_ids]
    small = copy.deepcopy(default_model.model)  # the fixture is shared: trim a copy
    vocab.trim_model_(small, exact.kept_ids)
    with torch.no_grad():
        got = small(input_ids=torch.tensor([cut(text)["input_ids"][:96]])).logits[0]
    assert _close(full, got)
    assert cut("人人生而自由")["input_ids"][1:4] == cut.convert_tokens_to_ids(["<0xE4>", "<0xBA>", "<0xBA>"])


def test_evaluate_reads_each_model_with_its_own_tokenizer(trimmed):
    """Kept languages: the same tokens, and NLL per byte can only fall; a dropped script is cut
    into more (byte) tokens by the trimmed tokenizer, and per byte still compares the two."""
    from langheads.evaluation.evaluate import evaluate_texts

    _, _, root = trimmed
    result = evaluate_texts(
        str(root / "trim"),
        str(root / "orig"),
        ["en", "hi", "zh"],
        str(root / "data.jsonl"),
        prompts=1,
        new_tokens=2,
        bootstrap=50,
    )
    table = result["table"].set_index("language")
    for lang in ("en", "hi"):
        assert table.loc[lang, "same_tokens"] == 1.0
        assert table.loc[lang, "nll_per_byte_after"] <= table.loc[lang, "nll_per_byte_before"] + 1e-9
    assert table.loc["zh", "same_tokens"] == 0.0
    assert table.loc["zh", "nll_per_byte_after"] > 0


def test_overwrite_replaces_only_a_folder_langheads_wrote(tmp_path, capsys):
    folder = synthetic.save_tiny("llama", tmp_path / "m", tokenizer="byte_fallback")
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    argv = ["trim", "--model", str(folder), "--keep", "en", "--out", str(mine), "--overwrite"]
    assert main(argv) == 2
    assert "not a folder langheads wrote" in capsys.readouterr().err
    assert (mine / "notes.txt").read_text() == "keep me"
    out = tmp_path / "out"
    assert main(["trim", "--model", str(folder), "--keep", "en", "--out", str(out)]) == 0
    assert main(["trim", "--model", str(folder), "--keep", "en,hi", "--out", str(out), "--overwrite"]) == 0
    assert read_manifest(out).records["trim_vocab"]["scripts"].keys() == {"en", "hi"}


def test_max_vocab_drops_placeholder_tokens_and_keeps_real_specials(tmp_path):
    """Reserved tokens no text produces (Gemma's <unusedN>, Llama 3's reserved specials) are
    embedding rows nothing reads: --max-vocab drops them (on the default model, 6,242 rows),
    exact mode keeps every added token, and special tokens with a use stay."""
    placeholders = ("<unused0>", "<unused1>", "<|reserved_special_token_0|>")
    orig = synthetic.save_tiny(
        "gemma3", tmp_path / "orig", tokenizer="byte_fallback", specials=placeholders + ("<start_of_turn>",)
    )
    data = training_jsonl(tmp_path / "data.jsonl")
    assert (
        main(
            [
                "trim",
                "--model",
                str(orig),
                "--keep",
                "en,hi",
                "--data",
                str(data),
                "--max-vocab",
                "400",
                "--out",
                str(tmp_path / "small"),
            ]
        )
        == 0
    )
    assert (
        main(["trim", "--model", str(orig), "--keep", "en,hi", "--data", str(data), "--out", str(tmp_path / "exact")])
        == 0
    )
    original, small, exact = (load_model(str(tmp_path / name)) for name in ("orig", "small", "exact"))
    small_vocab, exact_vocab = small.tokenizer.get_vocab(), exact.tokenizer.get_vocab()
    assert not set(placeholders) & set(small_vocab), set(placeholders) & set(small_vocab)
    assert set(placeholders) <= set(exact_vocab), set(placeholders) - set(exact_vocab)
    assert {"<start_of_turn>", "<bos>", "<eos>", "<pad>"} <= set(small_vocab)
    assert len(small_vocab) == small.model.get_input_embeddings().weight.shape[0] <= 400
    record = read_manifest(tmp_path / "small").records["trim_vocab"]
    assert record["reasons"]["placeholders dropped"] == 3
    exact_reasons = read_manifest(tmp_path / "exact").records["trim_vocab"]["reasons"]
    # each of the exact choice's tokens counted once: kept (by why), placeholders dropped or dropped as rarest
    assert sum(record["reasons"].values()) == sum(exact_reasons.values()) == len(exact_vocab)
    assert sum(v for k, v in record["reasons"].items() if "dropped" not in k) == len(small_vocab)
    assert record["reasons"]["special or added"] == exact_reasons["special or added"] - 3
    text = synthetic.TRAINING_TEXT["en"][0]
    ids = small.tokenizer(text, return_tensors="pt")["input_ids"]
    # the same token strings by their original ids: the original's logits at the kept ids are the trimmed model's
    kept = torch.tensor(
        [original.tokenizer.convert_tokens_to_ids(t) for t in small.tokenizer.convert_ids_to_tokens(ids[0])]
    )
    with torch.no_grad():
        before, after = original.model(kept[None]).logits[0], small.model(ids).logits[0]
    columns = torch.tensor(
        [
            original.tokenizer.convert_tokens_to_ids(t)
            for t in small.tokenizer.convert_ids_to_tokens(list(range(len(small_vocab))))
        ]
    )
    assert _close(before[:, columns], after)


def test_word_frequencies_of_chinese_need_no_segmenter():
    """--max-vocab --keep en,zh failed with "No module named 'jieba'": wordfreq's word_frequency()
    re-segments each word; the frequencies now come from the word list itself."""
    import wordfreq

    texts, weights = vocab.word_frequency_texts(["zh"], n_words=200)
    first = wordfreq.top_n_list("zh", 1)[0]
    assert texts[0] == " " + first and weights[0] == pytest.approx(0.85 * wordfreq.get_frequency_dict("zh")[first])
    assert len(texts) == len(weights) >= 200 and min(weights) > 0
