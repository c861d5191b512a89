"""The one exception type for a user's mistake: the CLI prints it as one line and exits 2."""


class FedsimError(Exception):
    """Bad input (config, path, data file, name): the message says what, where and how to fix."""


class FatalClientError(FedsimError):
    """A client's error that would recur every round (a config problem, e.g. a non-finite
    gradient-ascent step): the server stops the run at its first occurrence.

    The engine hands the server only the text of a client's error, so the text carries a
    marker (`FATAL_MARK`) that `fatal_message` finds again.
    """

    def __str__(self) -> str:
        return FATAL_MARK + super().__str__()


FATAL_MARK = "fedsim-fatal: "


def fatal_message(reason: str) -> str | None:
    """The message of a `FatalClientError` inside a client error's text, or None."""
    _, mark, rest = reason.partition(FATAL_MARK)
    return rest.rstrip("'>\n ").strip() if mark else None
