"""Errors a user can act on.

Every failure the user can fix is raised as :class:`UserError` with three parts (which file,
what is wrong, what to do), so the CLI can print it without a traceback and exit with a code
that tells scripts what kind of failure it was.
"""

from __future__ import annotations

from pathlib import Path

# Exit codes (documented in the README): 0 ok, 1 the job ran but found problems
# (e.g. verify found a corrupt record), 2 bad usage or bad input, 3 network/Hub failure,
# 130 interrupted.
EXIT_OK = 0
EXIT_PROBLEMS = 1
EXIT_BAD_INPUT = 2
EXIT_REMOTE = 3


class UserError(Exception):
    """A problem with the user's input or environment, explained so they can fix it."""

    exit_code = EXIT_BAD_INPUT

    def __init__(self, what: str, *, path: str | Path | None = None, fix: str | None = None):
        self.what = what
        self.path = str(path) if path is not None else None
        self.fix = fix
        super().__init__(self.message())

    def message(self) -> str:
        head = f"{self.path}: {self.what}" if self.path else self.what
        return f"{head}\n  what to do: {self.fix}" if self.fix else head


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
