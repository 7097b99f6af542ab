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
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from .errors import LangheadsError

PROMPT = """You are grading an answer to a question in {language}.
Question: {question}
Reference answer: {reference}
Answer to grade: {answer}

Rate the answer from 1 to 5: 5 = correct and complete, in the question's language; 4 = correct with small flaws;
3 = partly correct; 2 = mostly wrong or in another language; 1 = wrong, empty or unrelated.
Reply with the number only."""
VERDICT = re.compile(r"(?<![\d.])([1-5])(?!\d|\.\d)")


def parse_verdict(reply: str) -> int | None:
    """The first stand-alone digit 1-5 in the reply ("4", "Score: 4/5", "I'd give it 4."), else None."""
    match = VERDICT.search(reply or "")
    return int(match.group(1)) if match else None


@dataclass
class Judge:
    url: str                       # base URL of the endpoint, e.g. http://127.0.0.1:8000/v1
    model: str
    cache_path: Path
    retries: int = 5
    backoff_s: float = 1.0         # waits 1, 2, 4, 8, ... seconds between attempts
    timeout_s: float = 120.0
    api_key: str | None = field(default_factory=lambda: os.environ.get("OPENAI_API_KEY"))
    sent: int = 0                  # requests that got an answer
    retried: int = 0               # attempts that failed and were tried again
    cached: int = 0                # verdicts read from the cache
    _cache: dict = field(default_factory=dict, repr=False)

    def __post_init__(self):
        self.cache_path = Path(self.cache_path)
        if self.cache_path.exists():
            for line in self.cache_path.read_text(encoding="utf-8").splitlines():
                try:
                    row = json.loads(line)
                    self._cache[row["key"]] = row["reply"]
                except (json.JSONDecodeError, KeyError, TypeError):
                    continue  # a line cut by a crash: that verdict is asked again

    def rate(self, question: str, reference: str, answer: str, language: str) -> tuple[int | None, str]:
        """(verdict 1-5 or None when the reply has none, the reply)."""
        body = {"model": self.model, "temperature": 0, "max_tokens": 8, "messages": [{"role": "user", "content":
                PROMPT.format(language=language, question=question, reference=reference, answer=answer)}]}
        key = hashlib.sha256(json.dumps(body, sort_keys=True, ensure_ascii=False).encode()).hexdigest()
        if key in self._cache:
            self.cached += 1
            reply = self._cache[key]
        else:
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
                with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                    reply = json.loads(response.read())
                self.sent += 1
                return reply["choices"][0]["message"]["content"] or ""
            except urllib.error.HTTPError as e:
                why = f"HTTP {e.code}"
                if e.code != 429 and e.code < 500:  # the request itself is wrong: retrying will not help
                    detail = e.read().decode(errors="replace")[:200].replace("\n", " ")
                    raise LangheadsError(f"judge {url} refused the request ({why}: {detail})") from None
            except (urllib.error.URLError, ConnectionError, TimeoutError) as e:
                why = str(getattr(e, "reason", e))
            except (json.JSONDecodeError, KeyError, IndexError, TypeError):
                raise LangheadsError(f"judge {url} answered, but not with an OpenAI-style chat completion") from None
        raise LangheadsError(f"judge {url} is not answering ({why}) after {self.retries + 1} attempts; is the "
                             "server up?")
