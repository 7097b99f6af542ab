"""The judge against a real OpenAI-compatible server: `transformers serve` with a tiny local
model, started on 127.0.0.1 by the test and stopped after. What is checked is the plumbing
(requests, retries, the cache, replies without a verdict, a down endpoint), not the quality
of a random model's verdicts."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from langheads.cli import main
from langheads.errors import LangheadsError
from langheads.evaluation.judge import Judge, parse_verdict

from .conftest import ITEMS

SERVE = shutil.which("transformers", path=str(Path(sys.executable).parent))
pytestmark = pytest.mark.skipif(SERVE is None, reason="needs transformers[serving] (make test installs it)")
TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """(base URL, model name, a function that starts the server): not started yet, so the
    first test can watch the judge retry until it is up."""
    from transformers import AutoTokenizer

    from langheads import synthetic

    # room for the judge's prompts: transformers serve (>= 5.25) refuses requests longer than the model's context
    folder = synthetic.save_tiny(
        "llama", tmp_path_factory.mktemp("judge") / "judge-model", max_position_embeddings=2048
    )
    tok = AutoTokenizer.from_pretrained(folder)
    tok.chat_template = TEMPLATE
    tok.save_pretrained(folder)
    port = _free_port()
    procs = []

    def start():
        procs.append(
            subprocess.Popen(
                [SERVE, "serve", str(folder), "--host", "127.0.0.1", "--port", str(port), "--device", "cpu"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                env={**__import__("os").environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"},
            )
        )

    yield f"http://127.0.0.1:{port}/v1", str(folder), start
    for p in procs:
        p.terminate()
        p.wait(timeout=30)


def test_parse_verdict():
    assert [parse_verdict(r) for r in ["4", "Score: 4/5", "I'd give it 2.", "5 - correct", "", "ok", "10", "3.5"]] == [
        4,
        4,
        2,
        5,
        None,
        None,
        None,
        None,
    ]


def test_down_endpoint_is_one_line_and_exit_2(tiny_dirs, tmp_path, capsys):
    qa = tmp_path / "qa.jsonl"
    qa.write_text("".join(json.dumps(r) + "\n" for r in ITEMS[:12]), encoding="utf-8")
    port = _free_port()  # nothing listens there
    judge = Judge(f"http://127.0.0.1:{port}/v1", "m", tmp_path / "cache.jsonl", retries=2, backoff_s=0.05)
    with pytest.raises(LangheadsError, match="is not answering .* after 3 attempts; is the server up"):
        judge.rate("q", "a", "a", "en")
    assert judge.retried == 2 and judge.sent == 0
    assert (
        main(
            [
                "evaluate",
                "--baseline",
                str(tiny_dirs["llama"]),
                "--mask",
                "0.0",
                "--languages",
                "en",
                "--qa",
                str(qa),
                "--new-tokens",
                "3",
                "--judge",
                f"http://127.0.0.1:{port}/v1",
                "--judge-model",
                "m",
                "--judge-cache",
                str(tmp_path / "c2.jsonl"),
                "--out",
                str(tmp_path / "ev"),
            ]
        )
        == 2
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is not answering" in err[-1]
    assert not (tmp_path / "ev").exists()


def test_judge_retries_until_the_server_is_up_then_caches(served, tmp_path):
    url, name, start = served
    judge = Judge(url, name, tmp_path / "cache.jsonl", retries=9, backoff_s=0.25)
    start()
    began = time.time()
    verdict, reply = judge.rate("What colour is the sky?", "blue", "blue", "en")
    assert judge.sent == 1 and judge.retried >= 1, "the first attempt reached a server that was not up yet"
    assert verdict == parse_verdict(reply) and time.time() - began < 120
    again = Judge(url, name, tmp_path / "cache.jsonl")
    assert again.rate("What colour is the sky?", "blue", "blue", "en") == (verdict, reply)
    assert again.sent == 0 and again.cached == 1


def test_evaluate_with_the_judge_counts_requests_cache_and_unparsed(served, tiny_dirs, tmp_path, capsys):
    url, name, start = served
    qa = tmp_path / "qa.jsonl"
    qa.write_text("".join(json.dumps(r) + "\n" for r in ITEMS), encoding="utf-8")
    cache = tmp_path / "verdicts.jsonl"
    argv = [
        "evaluate",
        "--baseline",
        str(tiny_dirs["llama"]),
        "--mask",
        "1.2",
        "--languages",
        "en,fr",
        "--qa",
        str(qa),
        "--new-tokens",
        "3",
        "--judge",
        url,
        "--judge-model",
        name,
        "--judge-cache",
        str(cache),
    ]
    assert main([*argv, "--out", str(tmp_path / "first")]) == 0
    info = json.loads((tmp_path / "first" / "eval.json").read_text())
    rows = [r for r in info["table"] if r["metric"] == "judge_1to5"]
    items = sum(r["items"] for r in info["table"] if r["metric"] == "exact_match")
    assert info["judge"]["sent"] + info["judge"]["cached"] == 2 * items  # both models' answers, each once
    replies = [json.loads(line)["reply"] for line in cache.read_text().splitlines()]
    assert len(replies) == info["judge"]["sent"]  # one request per distinct (question, answer); the rest cached
    unparsed = sum(r["unparsed"] for r in rows)
    assert (unparsed > 0) == any(parse_verdict(r) is None for r in replies) and unparsed <= 2 * items
    for r in rows:  # items compared = answered pairs where both replies held a verdict
        assert r["items"] <= items and (r["items"] == 0) == (r["before"] is None or r["before"] != r["before"])
    capsys.readouterr()
    assert main([*argv, "--out", str(tmp_path / "second")]) == 0  # everything from the cache
    assert "0 requests, 0 retried" in capsys.readouterr().out
    again = json.loads((tmp_path / "second" / "eval.json").read_text())
    assert again["judge"]["sent"] == 0 and again["judge"]["cached"] == 2 * items
