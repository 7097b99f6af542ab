"""The second hardening round, case by case where the in-process bad-input table cannot show
it: a judge that trusts nothing it receives (redirects, escapes, replies that are not text, a
cache of foreign lines), custom code that never runs, a full disk, user text that is not
markup, texts longer than a model can read, a cache entry that is a link, and knowledge of
which scripts a language writes. Servers are the standard library's, on 127.0.0.1."""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from langheads.cli import main
from langheads.errors import LangheadsError
from langheads.evaluation.judge import Judge


class _Server:
    """A one-route HTTP server on a free loopback port: `reply(handler)` answers every POST;
    what each request carried is kept in `seen`."""

    def __init__(self, reply):
        seen = self.seen = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                seen.append({"path": self.path, "headers": dict(self.headers), "body": body})
                reply(self)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def _answer(status: int, body: bytes, headers: dict | None = None):
    def reply(handler):
        handler.send_response(status)
        for k, v in (headers or {}).items():
            handler.send_header(k, v)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    return reply


def _completion(content) -> bytes:
    return json.dumps({"choices": [{"message": {"role": "assistant", "content": content}}]}).encode()


@pytest.fixture
def servers():
    started = []

    def start(reply):
        started.append(_Server(reply))
        return started[-1]

    yield start
    for s in started:
        s.close()


def test_the_judge_follows_no_redirect_and_sends_the_key_nowhere_else(servers, tmp_path):
    elsewhere = servers(_answer(200, _completion("5")))
    redirecting = servers(_answer(307, b"", {"Location": elsewhere.url + "/chat/completions"}))
    judge = Judge(redirecting.url, "m", tmp_path / "cache.jsonl", retries=0, api_key="sk-secret")
    with pytest.raises(LangheadsError, match="answered with a redirect"):
        judge.rate("q", "r", "a", "en")
    assert len(redirecting.seen) == 1 and redirecting.seen[0]["headers"]["Authorization"] == "Bearer sk-secret"
    assert elsewhere.seen == []  # neither the request nor the key went to the other origin


def test_a_reply_that_is_not_text_is_refused_and_never_cached(servers, tmp_path):
    cache = tmp_path / "cache.jsonl"
    numeric = servers(_answer(200, _completion(5)))
    with pytest.raises(LangheadsError, match="content is int, not text"):
        Judge(numeric.url, "m", cache, retries=0).rate("q", "r", "a", "en")
    assert not cache.exists()  # nothing was cached, so a rerun against a good server asks again
    good = servers(_answer(200, _completion("4")))
    judge = Judge(good.url, "m", cache, retries=0)
    assert judge.rate("q", "r", "a", "en")[0] == 4 and judge.sent == 1
    again = Judge(good.url, "m", cache, retries=0)
    assert again.rate("q", "r", "a", "en")[0] == 4 and again.sent == 0 and again.cached == 1


def test_a_cached_entry_that_is_not_text_is_asked_again(servers, tmp_path, capsys):
    """A cache written by the old judge (a number cached before parsing) fails no rerun."""
    good = servers(_answer(200, _completion("3")))
    cache = tmp_path / "cache.jsonl"
    judge = Judge(good.url, "m", cache, retries=0)
    judge.rate("q", "r", "a", "en")
    key = json.loads(cache.read_text())["key"]
    cache.write_text(json.dumps({"key": key, "reply": 5}) + "\n" + '{"key": "cut sho')
    again = Judge(good.url, "m", cache, retries=0)
    assert "2 damaged cache line(s) skipped" in capsys.readouterr().err
    assert again.rate("q", "r", "a", "en")[0] == 3 and again.sent == 1


def test_an_error_body_cannot_forge_langheads_output(servers, tiny_dirs, tmp_path, capsys):
    forged = b"\x1b]0;pwned\x07\x1b[2J\rlangheads: all good\nwrote everything"
    hostile = servers(_answer(400, forged))
    code = main(
        [
            "evaluate",
            "--baseline",
            str(tiny_dirs["llama"]),
            "--languages",
            "en",
            "--qa",
            "cloze",
            "--mask",
            "0.1",
            "--new-tokens",
            "2",
            "--judge",
            hostile.url,
            "--judge-model",
            "m",
            "--judge-cache",
            str(tmp_path / "c.jsonl"),
            "--out",
            str(tmp_path / "e"),
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "\x1b" not in err and "\r" not in err and "\\x1b]0;pwned" in err and "refused the request (HTTP 400" in err
    assert not (tmp_path / "e").exists()


def test_custom_code_never_runs_even_past_the_refusal(tiny_dirs, tmp_path, monkeypatch):
    """The folder is refused in one line; and were that check gone, trust_remote_code=False
    still keeps transformers from running (or asking to run) the folder's code."""
    from langheads import models

    folder = tmp_path / "remote"
    shutil.copytree(tiny_dirs["llama"], folder)
    config = json.loads((folder / "config.json").read_text())
    config.update(
        model_type="evil-custom", auto_map={"AutoConfig": "evil.EvilConfig", "AutoModelForCausalLM": "evil.Evil"}
    )
    (folder / "config.json").write_text(json.dumps(config))
    marker = tmp_path / "RAN"
    (folder / "evil.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\nclass EvilConfig: pass\n")
    with pytest.raises(LangheadsError, match="asks to run the model's own code"):
        models.load_model(str(folder))
    monkeypatch.setattr(models, "refuse_custom_code", lambda folder, spec: None)
    monkeypatch.setattr("builtins.input", lambda *a: pytest.fail("transformers asked to run custom code"))
    with pytest.raises(LangheadsError, match="cannot load model"):
        models.load_model(str(folder))
    assert not marker.exists()


def test_cache_clear_never_follows_a_link(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LANGHEADS_CACHE", str(tmp_path / "cache"))
    entry = tmp_path / "cache" / "models" / "abc"
    entry.mkdir(parents=True)
    (entry / "langheads_source.json").write_text('{"gguf": "m.gguf"}')
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "langheads_source.json").write_text('{"gguf": "mine.gguf"}')
    (precious / "weights.safetensors").write_bytes(b"keep me")
    (tmp_path / "cache" / "models" / "link").symlink_to(precious, target_is_directory=True)
    assert main(["cache", "list"]) == 0 and "left alone" in capsys.readouterr().out
    assert main(["cache", "clear"]) == 0
    assert "removed 1 converted model(s)" in capsys.readouterr().out
    assert not entry.exists() and (precious / "weights.safetensors").read_bytes() == b"keep me"
    assert (tmp_path / "cache" / "models" / "link").is_symlink()


@pytest.fixture
def full_disk(tmp_path):
    """A 3 MB tmpfs, filled but for 64 KiB (needs root and mount, as CI has)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(disk)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        free = shutil.disk_usage(disk).free
        (disk / "filler").write_bytes(b"\0" * (free - 64 * 1024))
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)


def test_a_full_disk_is_one_line_and_leaves_no_temporary_file(full_disk, tiny_dirs, sample_data, capsys):
    code = main(
        [
            "scan",
            "--model",
            str(tiny_dirs["llama"]),
            "--data",
            str(sample_data),
            "--languages",
            "en,fr",
            "--out",
            str(full_disk / "run"),
            "--bootstrap",
            "20",
            "--quiet",
        ]
    )
    err = capsys.readouterr().err.strip().splitlines()  # the plan, printed before the work, then one line
    assert code == 2 and "Traceback" not in "".join(err), err
    assert [line for line in err if line.startswith("langheads:")] == err[-1:] and "No space left" in err[-1]
    left = [p for p in full_disk.rglob("*") if ".tmp" in p.name or p.name.startswith(".run.")]
    assert left == [] and not (full_disk / "run").exists()
    assert all(
        p.suffix == ".npz"
        for p in (full_disk / "run.units").rglob("*")
        if p.is_file() and p.parent.name not in ("log", "run.units")
    )  # what is in the store is whole units only


def test_user_text_is_drawn_as_plain_text(tiny_dirs, sample_data, tmp_path):
    """A model folder named like mathtext: the heatmap after the scan draws the name as is."""
    folder = tmp_path / "$\\frac$"
    shutil.copytree(tiny_dirs["llama"], folder)
    out = tmp_path / "run"
    assert (
        main(
            [
                "scan",
                "--model",
                str(folder),
                "--data",
                str(sample_data),
                "--languages",
                "en",
                "--out",
                str(out),
                "--bootstrap",
                "20",
                "--quiet",
            ]
        )
        == 0
    )
    assert (out / "heatmap.png").stat().st_size > 1000
    assert json.loads((out / "run.json").read_text())["model"]["id"] == "$\\frac$"


def test_texts_longer_than_gpt2_can_read_are_cut_to_its_positions(tiny_dirs, tmp_path):
    from langheads import heads as H
    from langheads import load_model, nll

    data = tmp_path / "long.jsonl"
    long = "A long sentence about the river and the hills. " * 12  # > 256 byte tokens
    data.write_text("".join(json.dumps({"lang": "en", "id": str(i), "text": f"{i} {long}"}) + "\n" for i in range(8)))
    loaded = load_model(str(tiny_dirs["gpt2"]))
    limit = H.position_limit(loaded.model)
    assert limit == loaded.model.config.n_positions and len(loaded.tokenizer(long)["input_ids"]) > limit
    assert max(map(len, nll.tokenize(loaded.tokenizer, [long], limit=limit))) == limit
    assert (
        main(
            [
                "scan",
                "--model",
                str(tiny_dirs["gpt2"]),
                "--data",
                str(data),
                "--languages",
                "en",
                "--out",
                str(tmp_path / "run"),
                "--bootstrap",
                "20",
                "--quiet",
            ]
        )
        == 0
    )


def test_japanese_keeps_katakana_its_texts_do_not_show():
    from langheads.edit import vocab

    no_katakana = ["すべての人間は、生まれながらにして自由であり、尊厳と権利とについて平等である。"]
    shares = vocab.language_scripts({"ja": no_katakana, "sr": ["Сва људска бића рађају се слободна."]})
    assert set(shares["ja"]) == {"HAN", "HIRAGANA", "KATAKANA"} and shares["ja"]["KATAKANA"] == 0.0
    assert set(shares["sr"]) == {"CYRILLIC", "LATIN"}
    assert vocab.written_in("ko") == ("HANGUL", "HAN") and vocab.written_in("sr-Latn") == ("LATIN",)
    assert vocab.script_of("コ") == "KATAKANA" and vocab.script_of("ー") == "KATAKANA"


def test_evaluate_max_tokens_gives_both_models_the_same_text(tmp_path):
    """A trimmed tokenizer cuts dropped-script text into more tokens; --max-tokens still gives
    both models the same characters (it counts the baseline's tokens, cut at a character)."""
    from langheads import load_model, synthetic
    from langheads.evaluation.evaluate import cut_texts, text_losses

    folder = synthetic.save_tiny("llama", tmp_path / "orig", tokenizer="byte_fallback")
    trimmed = tmp_path / "trimmed"
    assert main(["trim", "--model", str(folder), "--keep", "en", "--out", str(trimmed)]) == 0
    before, after = load_model(str(folder)), load_model(str(trimmed))
    texts = synthetic.TRAINING_TEXT["hi"][:2] + synthetic.TRAINING_TEXT["en"][:1]
    cut = cut_texts(before, texts, 8)
    assert all(t.startswith(c) and len(c) < len(t) for c, t in zip(cut, texts))
    assert all(8 <= len(before.tokenizer(c)["input_ids"]) <= 8 + 3 for c in cut)  # up to a whole character more
    b, a = text_losses(before, cut), text_losses(after, cut)
    assert list(b.bytes) == list(a.bytes) == [len(c.encode()) for c in cut]
    assert a.tokens[0] > b.tokens[0]  # the trimmed model reads the Hindi text in more tokens


def test_compare_says_which_languages_have_no_spearman():
    import pandas as pd

    from langheads.reporting.compare import mean_spearman

    table = pd.DataFrame({"language": ["en", "fr"], "spearman": [0.5, float("nan")]})
    assert mean_spearman(table) == "mean spearman 0.500 over 1 of 2 languages; undefined (constant scores): fr"
    assert "undefined" in mean_spearman(table.assign(spearman=float("nan")))


def test_a_pruning_with_uneven_layers_is_refused_by_scan_and_shown_by_info(tiny_dirs, tmp_path):
    """What langheads wrote, langheads reads or refuses in one line: a scan of an uneven pruning
    used to fail after loading (it reads one layout from config.json); info shows the real shapes."""
    from langheads import load_model
    from langheads.edit.pruning import save

    from .conftest import run_cli

    save(
        load_model(str(tiny_dirs["llama"])),
        tmp_path / "cut",
        {},
        heads={0: [0, 1]},
        neurons={1: list(range(8))},
        blocks={2: {"attention"}},
    )
    done = run_cli("scan", "--model", str(tmp_path / "cut"), "--languages", "en", "--out", str(tmp_path / "s"))
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1
    assert "keep different numbers of heads or MLP neurons" in done.stderr and not (tmp_path / "s").exists()
    info = run_cli("info", str(tmp_path / "cut")).stdout
    assert "L0 2q/1kv" in info and "L2 no attention" in info and f"mlp {96 - 8}" in info


def test_every_writer_says_a_full_disk_in_one_line(full_disk, tiny_dirs, capsys):
    """export (gguf's writer), trim and prune (safetensors) ended in a traceback on a full disk;
    the one way langheads writes files and folders now says what the disk said, and leaves
    nothing behind."""
    from langheads import load_model, synthetic
    from langheads.edit import pruning

    folder = synthetic.save_tiny("llama", full_disk.parent / "m", tokenizer="byte_fallback")
    pruning.save(load_model(str(folder)), full_disk.parent / "p", {}, heads=[(0, 0), (0, 1)])
    capsys.readouterr()
    commands = [
        ["export", str(full_disk.parent / "p"), "--gguf", str(full_disk / "p.gguf")],
        ["trim", "--model", str(folder), "--keep", "en", "--out", str(full_disk / "t")],
    ]
    for argv in commands:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert "Traceback" not in "".join(err) and "No space left" in err[-1], (argv, err)
        assert sorted(p.name for p in full_disk.iterdir()) == ["filler"], argv


def test_a_folder_name_with_terminal_escapes_reaches_neither_the_terminal_nor_a_figure(
    tiny_dirs, sample_data, tmp_path
):
    """A model folder named with an escape sequence (clear the screen, set the title) reached the
    terminal raw from scan and left the report's SVG figures invalid XML."""
    from .conftest import run_cli

    folder = tmp_path / "m\x1b[2J\x1b]0;owned\x07"
    shutil.copytree(tiny_dirs["llama"], folder)
    done = run_cli(
        "scan",
        "--model",
        str(folder),
        "--data",
        str(sample_data),
        "--languages",
        "en,fr",
        "--bootstrap",
        "20",
        "--out",
        str(tmp_path / "run"),
        "--quiet",
    )
    assert done.returncode == 0, done.stderr
    assert "\x1b" not in done.stdout + done.stderr and "\x07" not in done.stdout + done.stderr
    assert "\\x1b[2J" in done.stdout + done.stderr  # shown, made visible
    assert run_cli("report", str(tmp_path / "run"), "--out", str(tmp_path / "rep")).returncode == 0
    page = (tmp_path / "rep" / "report.html").read_text(encoding="utf-8")
    assert "\x1b" not in page and "\x07" not in page
