"""Bundled and user data, splits, and clear errors for bad data."""

import pytest

from langheads.corpus import PARTS, UDHR_VARIANTS, bundled_corpus, load_corpus, split_of
from langheads.errors import LangheadsError

REQUIRED = "en hi fr de es pt it ru zh ja ko ar fa tr vi id bn ur ta sw".split()


def test_bundled_corpus_has_the_required_languages_aligned():
    corpus = bundled_corpus()
    assert set(REQUIRED) <= set(corpus.languages) == set(UDHR_VARIANTS)
    for lang in corpus.languages:
        texts = corpus.texts(lang)
        assert [t.id for t in texts] == [str(n) for n in range(1, 31)]
        assert all(t.text.strip() for t in texts)
    assert corpus.texts("en")[0].text.startswith("All human beings are born free")


def test_split_is_by_id_and_the_same_in_every_language():
    corpus = bundled_corpus()
    parts = {lang: [split_of(t.id) for t in corpus.texts(lang)] for lang in corpus.languages}
    assert len({tuple(p) for p in parts.values()}) == 1
    en = parts["en"]
    assert [en.count(p) for p in PARTS] == [15, 7, 8]
    scoring = {t.id for t in corpus.texts("hi", "scoring")}
    report = {t.id for t in corpus.texts("hi", "report")}
    assert scoring and report and not scoring & report
    assert len(corpus.texts("fr", "scoring", limit=4)) == 4


def test_user_folder_and_jsonl(sample_data, sample_jsonl):
    folder, jsonl = load_corpus(sample_data), load_corpus(sample_jsonl)
    assert folder.languages == jsonl.languages == ["en", "fr", "hi"]
    assert [t.text for t in folder.texts("fr")] == [t.text for t in jsonl.texts("fr")]


def test_bad_data(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "en.txt").write_text("\n  \n")
    with pytest.raises(LangheadsError, match="empty"):
        load_corpus(tmp_path / "empty")
    (tmp_path / "latin1").mkdir()
    (tmp_path / "latin1" / "de.txt").write_bytes("Grüße".encode("latin-1"))
    with pytest.raises(LangheadsError, match="not UTF-8"):
        load_corpus(tmp_path / "latin1")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"lang": "en", "text": "ok"}\n{"lang": "en"\n')
    with pytest.raises(LangheadsError, match=r"bad.jsonl:2"):
        load_corpus(bad)
    with pytest.raises(LangheadsError, match="no data for language 'xx'"):
        bundled_corpus().texts("xx")
    with pytest.raises(LangheadsError, match="not found"):
        load_corpus(tmp_path / "missing")
