"""Errors a user can act on.

Every failure the user can fix is raised as :class:`UserError` with three parts (which file,
what is wrong, what to do), so the CLI can print it without a traceback and exit with a code
that tells scripts what kind of failure it was.
"""

from __future__ import annotations

import os
from pathlib import Path

# Exit codes (documented in the README): 0 ok, 1 the job ran but found problems
# (e.g. verify found a corrupt record), 2 bad usage or bad input, 3 network/Hub failure,
# 130 interrupted.
EXIT_OK = 0
EXIT_PROBLEMS = 1
EXIT_BAD_INPUT = 2
EXIT_REMOTE = 3


def shown_path(path: str | Path) -> str:
    """``path`` as text that can always be printed and stored in JSON or CSV: a name that is
    not valid UTF-8 (os.listdir hands those out with surrogate escapes) shows its raw bytes
    as ``\\xff``, the way ``ls --quoting-style=escape`` would, instead of crashing the writer."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def is_utf8_name(path: str | Path) -> bool:
    """Whether a file name (as the OS gave it) is valid UTF-8, so it can be stored as text."""
    try:
        os.fspath(path).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


class UserError(Exception):
    """A problem with the user's input or environment, explained so they can fix it."""

    exit_code = EXIT_BAD_INPUT

    def __init__(self, what: str, *, path: str | Path | None = None, fix: str | None = None):
        self.what = what
        self.path = shown_path(path) if path is not None else None
        self.fix = fix
        super().__init__(self.message())

    def message(self) -> str:
        head = f"{self.path}: {self.what}" if self.path else self.what
        return f"{head}\n  what to do: {self.fix}" if self.fix else head

    def as_json(self) -> dict:
        """The error as ``--json`` prints it: scripts get the same three parts and the code."""
        return {"error": {"what": self.what, "path": self.path, "fix": self.fix,
                          "exit_code": self.exit_code, "kind": type(self).__name__}}


class RemoteError(UserError):
    """The network or the Hugging Face Hub refused or failed."""

    exit_code = EXIT_REMOTE


class CorruptDataError(UserError):
    """A dataset file is damaged (bad CRC, truncated record, undecodable image)."""

    def __init__(self, what: str, *, path: str | Path | None = None,
                 offset: int | None = None, fix: str | None = None):
        if offset is not None:
            what = f"{what} (at byte offset {offset})"
        self.offset = offset
        super().__init__(what, path=path, fix=fix)
