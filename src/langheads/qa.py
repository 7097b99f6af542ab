"""Question-answer data and how a model is asked: the paper's protocol scores answers, not
running text.

Items are corpus.Text objects whose `text` is the context, with a question (empty for a
cloze: continue the text) and a reference answer. They come from JSONL (`lang`, `context`,
`question`, `answer`), from SQuAD-format JSON (MLQA, XQuAD, TyDiQA-GoldP: CC BY-SA, so users
bring their own copies), or from the cloze set built here from the bundled corpus's report
part, so everything runs offline. `encode` turns an item into token ids and the index of the
first answer token, through the model's chat template or the plain template below.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

from .corpus import Corpus, Text, bundled_corpus
from .errors import LangheadsError

# The plain template, for models without a chat template (and --chat-template none):
#   question items:  "{context}\n\nQuestion: {question}\nAnswer:" then " {answer}"
#   cloze items:     "{context}" then "{answer}" (the answer keeps its own leading space)
PLAIN_QUESTION = "{context}Question: {question}\nAnswer:"
CLOZE_INSTRUCTION = "Continue this text:\n\n{context}"
_SENTENCE_END = re.compile(r"(?<=[.!?;।۔؟])\s+|(?<=[。！？])\s*")  # CJK full stops need no space after
NO_SPACES = re.compile(r"[\u0e00-\u0e7f\u3040-\u30ff\u3400-\u9fff]")  # Thai, kana, CJK: no spaces between words


def load_squad(path: Path, lang: str | None = None) -> Corpus:
    """A SQuAD-format file: data[].paragraphs[].{context, qas[].{id, question, answers[0].text}}."""
    lang = lang or language_from_name(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))["data"]
        items = [Text(lang, str(qa["id"]), _string(p["context"]), _string(qa["question"]),
                      _string(qa["answers"][0]["text"]))
                 for article in data for p in article["paragraphs"] for qa in p["qas"] if qa.get("answers")]
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, IndexError, AttributeError):
        raise LangheadsError(f"{path}: not SQuAD-format JSON (data[].paragraphs[].qas[] with id, question, "
                             "answers[].text)") from None
    if not items:
        raise LangheadsError(f"{path}: no answered questions")
    return Corpus(items, str(path))


def _string(value) -> str:
    """A SQuAD field as text: numbers (an answer "1948" stored as 1948) become their digits;
    anything else that is not text is refused."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise TypeError(f"not text: {type(value).__name__}")
    return value if isinstance(value, str) else str(value)


def language_from_name(path: Path) -> str:
    """The language code in a file name: xquad.hi.json -> hi; MLQA's dev-context-hi-question-hi.json
    -> hi (context and question languages must agree)."""
    codes = [p for p in re.split(r"[._\-]", path.stem) if re.fullmatch(r"[a-z]{2}(?:[a-z])?", p)
             and p not in {"dev", "test", "v1", "v2", "json"}]
    if len(set(codes)) != 1:
        raise LangheadsError(f"{path.name}: cannot tell its language from the file name; give --data-lang")
    return codes[0]


def cloze_corpus(corpus: Corpus | None = None) -> Corpus:
    """Cloze items from the report part of the bundled corpus: for each sentence of a report
    text, the previous sentence and the sentence up to its last words are the context, and
    those words (about a quarter of the sentence, at most 4 words or 6 characters in scripts
    without spaces) are the answer. Item ids are split into parts again, like any data."""
    corpus = corpus or bundled_corpus()
    items = []
    for lang in corpus.languages:
        for t in corpus.texts(lang, "report"):
            previous = ""
            for k, sentence in enumerate(s.strip() for s in _SENTENCE_END.split(t.text) if s.strip()):
                cut = _answer_cut(sentence)
                if cut is not None:
                    head = sentence[:cut].rstrip()
                    context = f"{previous} {head}" if previous else head
                    items.append(Text(lang, f"cloze-{t.id}-{k}", context, "", sentence[len(head):]))
                previous = sentence
    return Corpus(items, "cloze set from the bundled UDHR report part")


def _answer_cut(sentence: str) -> int | None:
    """Where a sentence's answer starts (None: too short to make an item)."""
    body = sentence.rstrip(" .!?;।۔。！？؟")
    if NO_SPACES.search(body) and body.count(" ") < 3:
        return len(body) - 6 if len(body) >= 18 else None
    words = list(re.finditer(r"\S+", body))
    if len(words) < 8:
        return None
    return words[-min(4, max(2, len(words) // 4))].start()


def template_of(tokenizer, choice: str = "auto") -> tuple[str, str | None]:
    """(name, chat template or None): `auto` uses the tokenizer's own when it has one,
    `none` the plain template, anything else a Jinja file."""
    if choice == "none":
        return "plain", None
    if choice == "auto":
        own = getattr(tokenizer, "chat_template", None)
        if not own:
            return "plain", None
        name, template = "chat (the model's own)", own
    else:
        path = Path(choice)
        if not path.is_file():
            raise LangheadsError(f"--chat-template: no such file: {choice} (or use auto or none)")
        try:
            name, template = f"chat ({path.name})", path.read_text(encoding="utf-8")
        except UnicodeDecodeError as e:
            raise LangheadsError(f"--chat-template {choice}: not UTF-8 text (byte {e.start})") from None
    if not isinstance(template, str):  # a folder's template may be a list of named templates
        raise LangheadsError(f"{name}: not one Jinja template; give --chat-template FILE or none")
    _render(tokenizer, "", template, name)  # a broken or hostile template is refused before any work
    return name, template


def _render(tokenizer, content: str, template: str, name: str = "the chat template") -> str:
    """A user turn through `template` (transformers renders it in jinja2's sandbox); whatever
    the template does wrong is one line."""
    import jinja2

    try:
        return tokenizer.apply_chat_template([{"role": "user", "content": content}], chat_template=template,
                                             add_generation_prompt=True, tokenize=False)
    except jinja2.exceptions.SecurityError as e:
        raise LangheadsError(f"{name}: the template tried something jinja2's sandbox forbids ({str(e)[:120]}); "
                             "it was not run further") from None
    except (jinja2.exceptions.TemplateError, TypeError, ValueError, KeyError, IndexError, AttributeError) as e:
        raise LangheadsError(f"{name} does not render: {type(e).__name__}: {str(e)[:160]}") from None


def prompt_text(item: Text, chat_template: str | None, tokenizer) -> str:
    """The prompt, as text, the answer follows."""
    if chat_template is None:
        if not item.question:
            return item.text
        context = item.text + "\n\n" if item.text else ""
        return PLAIN_QUESTION.format(context=context, question=item.question)
    content = (CLOZE_INSTRUCTION.format(context=item.text) if not item.question
               else (item.text + "\n\n" if item.text else "") + item.question)
    return _render(tokenizer, content, chat_template)


def prompt_ids(tokenizer, item: Text, chat_template: str | None) -> list[int]:
    """The prompt's token ids (a chat template writes its own BOS; the plain one gets the
    tokenizer's)."""
    return tokenizer(prompt_text(item, chat_template, tokenizer), add_special_tokens=chat_template is None)["input_ids"]


def encode(tokenizer, item: Text, chat_template: str | None) -> tuple[list[int], int]:
    """(token ids of prompt + answer, index of the first answer token). The prompt and the
    answer are tokenized apart, so the answer's tokens never merge with the prompt's."""
    if not item.answer.strip():
        raise LangheadsError(f"item {item.id} ({item.lang}) has no answer")
    prompt = prompt_ids(tokenizer, item, chat_template)
    if chat_template is not None:
        answer = item.answer.strip()
    elif item.question:
        answer = " " + item.answer.strip()
    else:
        answer = item.answer  # a cloze answer keeps its own leading space (none in scripts without spaces)
    answer_ids = tokenizer(answer, add_special_tokens=False)["input_ids"]
    if not answer_ids:
        raise LangheadsError(f"item {item.id} ({item.lang}): the answer makes no tokens")
    return prompt + answer_ids, len(prompt)
