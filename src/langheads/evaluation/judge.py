"""A judge like the paper's: any OpenAI-compatible chat endpoint rates answers from 1 to 5.

The paper had GPT-3.5-Turbo judge Aya-23-8B's answers. Here the endpoint is the user's
(`--judge URL --judge-model NAME`: a hosted API, vLLM, `transformers serve`, llama.cpp's
server). Requests are retried with exponential back-off on connection errors, 429 and 5xx;
every reply is cached on disk under a hash of the request, so a rerun asks nothing again;
a reply with no verdict in it is counted, never guessed. The standard library's HTTP client
is enough: no SDK needed.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import LangheadsError, printable

PROMPT = """You are grading an answer to a question in {language}.
Question: {question}
Reference answer: {reference}
Answer to grade: {answer}

Rate the answer from 1 to 5: 5 = correct and complete, in the question's language; 4 = correct with small flaws;
3 = partly correct; 2 = mostly wrong or in another language; 1 = wrong, empty or unrelated.
Reply with the number only."""
VERDICT = re.compile(r"(?<![\d.])([1-5])(?!\d|\.\d)")


def parse_verdict(reply) -> int | None:
    """The first stand-alone digit 1-5 in the reply ("4", "Score: 4/5", "I'd give it 4."), else
    None (also for a reply that is not text at all)."""
    match = VERDICT.search(reply) if isinstance(reply, str) else None
    return int(match.group(1)) if match else None


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """A judge never follows a redirect: the request (and its API key) goes to the URL the user
    gave and nowhere else."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        raise urllib.error.HTTPError(req.full_url, code, f"redirect to {newurl} not followed", headers, fp)


_OPENER = urllib.request.build_opener(_NoRedirects)


def completion_text(reply) -> str:
    """The text of an OpenAI-style chat completion, checked: anything else raises ValueError."""
    content = reply["choices"][0]["message"]["content"] if isinstance(reply, dict) else None
    if content is None:
        return ""
    if not isinstance(content, str):
        raise ValueError(f"its message content is {type(content).__name__}, not text")
    return content


@dataclass
class Judge:
    url: str  # base URL of the endpoint, e.g. http://127.0.0.1:8000/v1
    model: str
    cache_path: Path
    retries: int = 5
    backoff_s: float = 1.0  # waits 1, 2, 4, 8, ... seconds between attempts
    timeout_s: float = 120.0
    api_key: str | None = field(default_factory=lambda: os.environ.get("OPENAI_API_KEY"))
    sent: int = 0  # requests that got an answer
    retried: int = 0  # attempts that failed and were tried again
    cached: int = 0  # verdicts read from the cache
    _cache: dict = field(default_factory=dict, repr=False)

    def __post_init__(self):
        self.cache_path = Path(self.cache_path)
        if self.cache_path.exists() or self.cache_path.is_symlink():
            self._cache = read_cache(self.cache_path)

    def rate(self, question: str, reference: str, answer: str, language: str) -> tuple[int | None, str]:
        """(verdict 1-5 or None when the reply has none, the reply)."""
        body = {
            "model": self.model,
            "temperature": 0,
            "max_tokens": 8,
            "messages": [
                {
                    "role": "user",
                    "content": PROMPT.format(language=language, question=question, reference=reference, answer=answer),
                }
            ],
        }
        key = hashlib.sha256(json.dumps(body, sort_keys=True, ensure_ascii=False).encode()).hexdigest()
        if key in self._cache:
            self.cached += 1
            reply = self._cache[key]
        else:  # only a checked reply (text) is cached; nothing unparseable is kept to fail a rerun
            reply = self._post(body)
            self._cache[key] = reply
            self.cache_path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.cache_path, "a", encoding="utf-8") as f:
                f.write(json.dumps({"key": key, "reply": reply}, ensure_ascii=False) + "\n")
        return parse_verdict(reply), reply

    def _post(self, body: dict) -> str:
        url = self.url.rstrip("/") + "/chat/completions"
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        data = json.dumps(body).encode()
        why = ""
        for attempt in range(self.retries + 1):
            if attempt:
                self.retried += 1
                time.sleep(self.backoff_s * 2 ** (attempt - 1))
            try:
                request = urllib.request.Request(url, data=data, headers=headers, method="POST")
                with _OPENER.open(request, timeout=self.timeout_s) as response:
                    reply = completion_text(json.loads(response.read()))
                self.sent += 1
                return reply
            except urllib.error.HTTPError as e:
                why = f"HTTP {e.code}"
                if 300 <= e.code < 400:
                    raise LangheadsError(
                        f"judge {url} answered with a redirect ({e.code}: {e.msg}); give the endpoint's final URL"
                    ) from None
                if e.code != 429 and e.code < 500:  # the request itself is wrong: retrying will not help
                    detail = printable(e.read().decode(errors="replace")[:200])
                    raise LangheadsError(f"judge {url} refused the request ({why}: {detail})") from None
            except (urllib.error.URLError, ConnectionError, TimeoutError) as e:
                why = printable(getattr(e, "reason", e))
            except (ValueError, KeyError, IndexError, TypeError) as e:  # JSONDecodeError is a ValueError
                why = (
                    f": {printable(e)}" if isinstance(e, ValueError) and not isinstance(e, json.JSONDecodeError) else ""
                )
                raise LangheadsError(
                    f"judge {url} answered, but not with an OpenAI-style chat completion{why}"
                ) from None
        raise LangheadsError(
            f"judge {url} is not answering ({why}) after {self.retries + 1} attempts; is the server up?"
        )


def read_cache(path: Path) -> dict[str, str]:
    """key -> reply of a judge cache file. A file that is not one (a folder, binary data,
    another program's file) is named in one line; a line cut by a crash, or an entry whose
    reply is not text, is skipped, so that verdict is asked again."""
    if path.is_dir():
        raise LangheadsError(f"--judge-cache {path} is a folder; give a file (JSONL of cached verdicts)")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise LangheadsError(f"--judge-cache {path} is not a judge cache (not UTF-8 text); give another file") from None
    except OSError as e:
        raise LangheadsError(f"--judge-cache {path}: cannot read it ({printable(e.strerror or e)})") from None
    cache, lines, entries = {}, [line for line in text.splitlines() if line.strip()], 0
    for line in lines:
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut by a crash
        if isinstance(row, dict) and "key" in row and "reply" in row:
            entries += 1  # one of ours, if perhaps from an older langheads (a reply that is not text)
            if isinstance(row["key"], str) and isinstance(row["reply"], str):
                cache[row["key"]] = row["reply"]
    if lines and not entries:
        raise LangheadsError(
            f"--judge-cache {path} holds no cached verdicts (not a file langheads' judge wrote); give another file"
        )
    if len(cache) < len(lines):
        print(
            f"langheads: note: {printable(path)}: {len(lines) - len(cache)} damaged cache line(s) skipped; "
            "those verdicts are asked again",
            file=sys.stderr,
        )
    return cache
