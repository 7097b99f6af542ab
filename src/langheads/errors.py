"""One exception type for mistakes a user can fix; the CLI prints it as one line and exits 2."""


class LangheadsError(Exception):
    """Bad input: unknown model, unknown language, empty or malformed data, occupied output folder."""


def printable(text) -> str:
    """`text` with every control character (escape sequences, carriage returns, line breaks)
    written as a visible escape, so text from outside (a server's error body, a file name)
    can neither forge nor break langheads' own one-line messages."""
    import unicodedata

    return "".join(
        ch
        if unicodedata.category(ch) not in ("Cc", "Cf", "Zl", "Zp") or ch == " "
        else ch.encode("unicode_escape").decode("ascii")
        for ch in str(text)
    )


def terminal_safe(text) -> str:
    """`text` as printable() writes it, line by line: langheads' own line breaks stay, anything
    else that could steer a terminal (escape sequences from a folder's name) is made visible."""
    return "\n".join(printable(line) for line in str(text).split("\n"))


class SafeStream:
    """A text stream that writes through terminal_safe (the CLI's standard output)."""

    def __init__(self, stream):
        self._stream = stream

    def write(self, text: str) -> int:
        return self._stream.write(terminal_safe(text))

    def __getattr__(self, name):
        return getattr(self._stream, name)
