"""One exception type for mistakes a user can fix; the CLI prints it as one line and exits 2."""


class LangheadsError(Exception):
    """Bad input: unknown model, unknown language, empty or malformed data, occupied output folder."""
