"""Checks every settings dataclass runs on itself, so the library and the CLI refuse the same
bad values, in one line, before any model loads. Messages name the CLI option (--max-tokens
for max_tokens)."""

from __future__ import annotations

import math

from .errors import LangheadsError


def option(name: str) -> str:
    return "--" + name.replace("_", "-")


def count(settings, name: str, minimum: int = 1, optional: bool = False, maximum: int | None = None) -> None:
    """An integer of at least `minimum` and at most `maximum` (None allowed when optional)."""
    value = getattr(settings, name)
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise LangheadsError(f"{option(name)} must be a whole number >= {minimum}, not {value!r}")
    if maximum is not None and value > maximum:
        raise LangheadsError(f"{option(name)} must be at most {maximum:,}, not {value:,}")


def number(
    settings, name: str, low: float, high: float = math.inf, low_open: bool = False, high_open: bool = False
) -> None:
    """A finite number in [low, high] (an end excluded when open)."""
    value = getattr(settings, name)
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (value > low if low_open else value >= low) and (value < high if high_open else value <= high)
    if not ok:
        interval = f"{'(' if low_open else '['}{low}, {high}{')' if high_open or high == math.inf else ']'}"
        raise LangheadsError(f"{option(name)} must be a finite number in {interval}, not {value!r}")


def choice(settings, name: str, allowed) -> None:
    value = getattr(settings, name)
    if value not in allowed:
        raise LangheadsError(f"unknown {option(name)} '{value}'; choose one of {', '.join(allowed)}")


def languages(settings, name: str, minimum: int = 1) -> None:
    value = getattr(settings, name)
    if not isinstance(value, list) or len(value) < minimum or not all(isinstance(v, str) and v for v in value):
        raise LangheadsError(f"{option(name)} needs at least {minimum} language code(s), e.g. en,hi")
    from .corpus import check_code

    for code in value:
        check_code(code, option(name))
    if len(set(value)) != len(value):
        raise LangheadsError(f"{option(name)} names a language twice: {','.join(value)}")
