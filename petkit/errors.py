"""One exception type for every mistake a user can fix.

The CLI prints a ``PetkitError`` as a single line plus its hint (no traceback unless
``--debug``) and exits 2. An operating-system error on a user's file (a full disk, a folder where
a file should be, no permission) is translated by :func:`from_os_error` into one too; anything
else is a bug, shown as one line that asks for ``--debug`` and a report.
"""

from __future__ import annotations

import errno


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


_OS_HINTS = {
    errno.ENOSPC: ("no space left on the device", "free some space or write to another disk; petkit left no half-written file"),
    errno.EDQUOT: ("disk quota exceeded", "free some space or write to another disk; petkit left no half-written file"),
    errno.EFBIG: ("file too large for this file system or the process's file-size limit",
                  "write to another file system, or raise the limit (ulimit -f)"),
    errno.EACCES: ("permission denied", "choose a path you may read or write, or fix its permissions"),
    errno.EPERM: ("operation not permitted", "choose a path you may read or write, or fix its permissions"),
    errno.EROFS: ("read-only file system", "write the output somewhere writable"),
    errno.EEXIST: ("already exists", "choose another output path"),
    errno.ENOTDIR: ("a part of the path is a file, not a folder", "choose an output path whose parent folders are folders"),
    errno.EISDIR: ("is a folder, not a file", "name a file (e.g. out.npz), not a folder"),
    errno.ENOENT: ("not found", "check the path"),
    errno.ENAMETOOLONG: ("file name too long", "choose a shorter path"),
    errno.EIO: ("input/output error", "the disk or network share failed; check it and try again"),
}


def from_os_error(exc: OSError) -> PetkitError:
    """One readable line for an operating-system error on a user's file."""
    what, hint = _OS_HINTS.get(exc.errno, (exc.strerror or type(exc).__name__, "check the path and try again"))
    where = exc.filename if exc.filename is not None else ""
    return PetkitError(f"{what}: {where}" if where else what, hint)
