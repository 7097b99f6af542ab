"""Settings dataclasses are the schema of the command line: each option is defined once, on
its field (`option(...)`: default, help, how the command line's text becomes the value), and
the CLI's parser is generated from the fields (`add_options`), the way HfArgumentParser does
it. The dataclass's `__post_init__` checks the values, so the library and the CLI refuse alike.
"""

from __future__ import annotations

import argparse
from dataclasses import MISSING, field, fields


def comma_list(value: str) -> list[str]:
    """'en, hi,fr' -> ['en', 'hi', 'fr'] (the form every language list takes on the command line)."""
    return [v.strip() for v in value.split(",") if v.strip()]


PARSERS = {"int": int, "float": float, "str": str, "list[str]": comma_list}


def option(
    default=MISSING,
    *,
    help: str,
    factory=None,
    flag: str | None = None,
    metavar: str | None = None,
    positional: bool = False,
    repeat: bool = False,
    aliases: tuple[str, ...] = (),
    choices=None,
):
    """A settings field that is also a command-line option (flag: --the-field-name), or, with
    `positional`, an argument given by place (the field's name in the usage); `repeat`: a
    list[str] whose flag may be given several times, one value each; `aliases`: other flags
    for the same option (older names); `choices`: the values it takes (a tuple, or a function
    returning them, read when asked), the one list its help shows and `check_choices` checks."""
    meta = {
        "choices": choices,
        "help": help,
        "flag": flag,
        "metavar": metavar,
        "positional": positional,
        "repeat": repeat,
        "aliases": aliases,
    }
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


def choices_of(f) -> tuple[str, ...] | None:
    """The values a field's option takes, or None where any value goes."""
    given = f.metadata.get("choices")
    return tuple(given() if callable(given) else given) if given is not None else None


def help_of(f) -> str:
    """A field's help: its choices first ('a | b | c: ...'), where it has them."""
    names = choices_of(f)
    text = f.metadata["help"]
    return text if names is None else " | ".join(names) + (f": {text}" if text else "")


def check_choices(settings) -> None:
    """Refuse, in one line naming the option and its choices, a value not among a field's choices."""
    from . import checks

    for f in fields(settings):
        names = choices_of(f) if "help" in f.metadata else None
        if names is not None and getattr(settings, f.name) is not None:
            checks.choice(settings, f.name, names)


def add_options(parser: argparse.ArgumentParser, cls, skip: tuple[str, ...] = ()) -> None:
    """One argument per `option` field of `cls`, with its help and default."""
    for f in fields(cls):
        if "help" not in f.metadata or f.name in skip:
            continue
        flags = [f.metadata["flag"] or "--" + f.name.replace("_", "-"), *f.metadata.get("aliases", ())]
        kind = str(f.type).replace(" | None", "")
        if f.metadata.get("positional"):
            parser.add_argument(f.name, type=PARSERS[kind], metavar=f.metadata["metavar"], help=help_of(f))
            continue
        if kind == "bool":
            parser.add_argument(*flags, dest=f.name, action="store_true", help=help_of(f))
            continue
        required = f.default is MISSING and f.default_factory is MISSING
        default = None if required else f.default if f.default is not MISSING else f.default_factory()
        if f.metadata.get("repeat"):
            parser.add_argument(
                *flags,
                dest=f.name,
                action="append",
                type=str,
                default=default,
                required=required,
                metavar=f.metadata["metavar"],
                help=help_of(f),
            )
            continue
        parser.add_argument(
            *flags,
            dest=f.name,
            type=PARSERS[kind],
            default=default,
            required=required,
            metavar=f.metadata["metavar"],
            help=help_of(f),
        )


def from_args(cls, args: argparse.Namespace, **given):
    """An instance of `cls` from the parsed options its fields define (and `given` values)."""
    values = {f.name: getattr(args, f.name) for f in fields(cls) if "help" in f.metadata and hasattr(args, f.name)}
    return cls(**{**values, **given})
