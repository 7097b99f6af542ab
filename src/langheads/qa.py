"""How a model is asked a question: the paper's protocol scores answers, not running text.

Items are corpus.Text objects whose `text` is the context, with a question (empty for a
cloze: continue the text) and a reference answer; corpus.py reads them (JSONL, SQuAD-format
JSON, the offline cloze set). `encode` turns an item into token ids and the index of the
first answer token, through the model's chat template or the plain template below.
"""

from __future__ import annotations

from pathlib import Path

from .corpus import Text
from .errors import LangheadsError

# The plain template, for models without a chat template (and --chat-template none):
#   question items:  "{context}\n\nQuestion: {question}\nAnswer:" then " {answer}"
#   cloze items:     "{context}" then "{answer}" (the answer keeps its own leading space)
PLAIN_QUESTION = "{context}Question: {question}\nAnswer:"
CLOZE_INSTRUCTION = "Continue this text:\n\n{context}"


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
        return tokenizer.apply_chat_template(
            [{"role": "user", "content": content}], chat_template=template, add_generation_prompt=True, tokenize=False
        )
    except jinja2.exceptions.SecurityError as e:
        raise LangheadsError(
            f"{name}: the template tried something jinja2's sandbox forbids ({str(e)[:120]}); it was not run further"
        ) from None
    except (jinja2.exceptions.TemplateError, TypeError, ValueError, KeyError, IndexError, AttributeError) as e:
        raise LangheadsError(f"{name} does not render: {type(e).__name__}: {str(e)[:160]}") from None


def prompt_text(item: Text, chat_template: str | None, tokenizer) -> str:
    """The prompt, as text, the answer follows."""
    if chat_template is None:
        if not item.question:
            return item.text
        context = item.text + "\n\n" if item.text else ""
        return PLAIN_QUESTION.format(context=context, question=item.question)
    content = (
        CLOZE_INSTRUCTION.format(context=item.text)
        if not item.question
        else (item.text + "\n\n" if item.text else "") + item.question
    )
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
