"""One exception type for every mistake a user can fix.

The CLI prints a ``PetkitError`` as a single line plus its hint (no traceback unless
``--debug``); anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class PetkitError(Exception):
    """A problem with the user's input: says what is wrong, where, and how to fix it."""

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __reduce__(self):  # keep the hint when raised in a worker process
        return PetkitError, (self.message, self.hint)

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message} (hint: {self.hint})"
