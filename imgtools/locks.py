"""Keep two processes from writing the same output at once.

Two runs into the same output (easy: ``--out`` defaults to ``out``) would share shard markers
and overwrite each other's files. A run therefore holds an exclusive ``flock`` on one lock
file per output folder while it writes, beside that folder (``out/.NAME.imgtools-lock``). The
kernel drops the lock when the process dies, even by kill -9, so a stale lock file never
blocks ``--resume``. Where ``fcntl`` does not exist (Windows) there is no lock.

A ``flock`` belongs to the open file, not to the process: a child forked while the lock is held
(the local executor forks its workers) would hold it too, until the child exits. So every
forked child closes its copies of the held locks' descriptors at once (``os.register_at_fork``);
the lock stays the parent's alone.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from imgtools.errors import UserError

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None

LOCK_SUFFIX = ".imgtools-lock"
_held_fds: set[int] = set()


def _close_held_in_child() -> None:
    for fd in _held_fds:
        with contextlib.suppress(OSError):
            os.close(fd)
    _held_fds.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_close_held_in_child)


def lock_path(output: Path) -> Path:
    """The lock file of an output folder: a hidden sibling, so it is never part of the output
    and works before the output exists."""
    return output.parent / f".{output.name}{LOCK_SUFFIX}"


def _acquire(path: Path, what: str) -> int | None:
    """An open descriptor of ``path`` holding its exclusive lock."""
    if fcntl is None:
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise UserError(f"another imgtools process is writing {what} right now",
                            path=path,
                            fix="wait for it to finish (or stop it), or choose another output"
                            ) from None
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            _held_fds.add(fd)
            return fd
        os.close(fd)  # the holder removed the file as we opened it: lock the new one


@contextlib.contextmanager
def exclusive(outputs: list[Path]) -> Iterator[None]:
    """Hold the lock of each of ``outputs`` (folders, see :func:`lock_path`) while the block
    runs. Locks are taken in sorted order so two runs sharing some outputs never wait on each
    other in a cycle (they fail fast anyway)."""
    held: list[tuple[Path, int | None]] = []
    try:
        for out in sorted(outputs):
            path = lock_path(out)
            held.append((path, _acquire(path, str(out))))
        yield
    finally:
        for path, fd in reversed(held):
            if fd is not None:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)  # removed while still held, so no one locks a dead file
                _held_fds.discard(fd)
                os.close(fd)
