"""Write files so that a reader never sees half of one.

Every output file is written under a temporary name in the same directory and renamed into
place when complete (or, for the images of a folder output, written unnamed and linked in):
a kill -9 leaves either the old state or the new file, never a torso. Temporary names start
with ``.tmp-`` so resume logic and readers can ignore and clean them.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import re
import sys
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO

TMP_PREFIX = ".tmp-"


def tmp_name(name: str) -> str:
    """The temporary name for a file called ``name``, unique per process and thread, so
    parallel workers of either kind never clash."""
    return f"{TMP_PREFIX}{os.getpid()}-{threading.get_ident()}-{name}"


def tmp_path_for(path: Path) -> Path:
    """The temporary sibling of ``path`` (see :func:`tmp_name`)."""
    return path.with_name(tmp_name(path.name))


@contextlib.contextmanager
def naming_errors(path: str | Path) -> Iterator[None]:
    """Give an OSError raised while writing ``path`` that path. A write that fails for a full
    disk raises ``OSError(ENOSPC)`` with no file name, and "No space left on device" alone does
    not say which disk or which output (pyarrow's errors carry the errno only in their text)."""
    try:
        yield
    except OSError as e:
        if e.filename:
            raise
        raise _named(e, path) from e


def _named(e: OSError, path: str | Path) -> OSError:
    """``e`` (which names no file) as an OSError naming ``path``."""
    code = e.errno
    if code is None and (m := re.search(r"\[errno (\d+)\]", str(e))):
        code = int(m.group(1))
    return OSError(code, (os.strerror(code) if code else None) or e.strerror or str(e),
                   os.fspath(path))


@contextlib.contextmanager
def atomic_open(path: str | Path, mode: str = "wb") -> Iterator[IO]:
    """Open ``path`` for writing through a temporary file renamed into place on success (its
    folder is made if missing)."""
    folder, name = os.path.split(os.fspath(path))
    if folder:
        os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, tmp_name(name))
    try:
        with naming_errors(path), open(tmp, mode, encoding=None if "b" in mode else "utf-8") as f:
            yield f
            f.flush()
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_open(path, "wb") as f:
        f.write(data)


class NameTaken(Exception):
    """:func:`atomic_write_new` found another file already at the path."""


def atomic_write_new(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` (a string, in an existing folder) atomically, but never over
    a different file: two records with one name must not silently become one file.

    Publishing is a hard link of the finished file, which fails if the name is taken. A taken
    name holding exactly ``data`` is accepted: a resumed shard rewrites the files it wrote
    before it was killed. On Linux the file is written unnamed (``O_TMPFILE``) and linked in
    with ``linkat``: one directory operation an image instead of three (temporary name, link,
    unlink), and a kill leaves no temporary file at all. Elsewhere, or on a filesystem without
    ``O_TMPFILE``, a named temporary file; without hard links (FAT, some network
    filesystems), a check and a rename."""
    global _unnamed_files
    if _unnamed_files:
        try:
            _write_unnamed_new(path, data)
            return
        except _NoUnnamedFiles:
            _unnamed_files = False
    folder, name = os.path.split(path)
    tmp = os.path.join(folder, tmp_name(name))
    try:
        with naming_errors(path), open(tmp, "wb") as f:
            f.write(data)
        try:
            _link_new(tmp, path, data)
        except OSError:  # no hard links here (FAT, some network filesystems)
            if os.path.exists(path) and not _holds(path, data):
                raise NameTaken(path) from None
            os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


_unnamed_files = sys.platform.startswith("linux") and hasattr(os, "O_TMPFILE")
"""Whether :func:`atomic_write_new` writes unnamed files; turned off for the process the
first time the filesystem or the kernel refuses them."""

_UNNAMED_REFUSED = {errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL}
"""What ``open(O_TMPFILE)`` fails with where unnamed files are not supported (a filesystem
without them; a kernel older than 3.11 sees O_DIRECTORY)."""

_PROC_FD = "/proc/self/fd/"
_anchor: list[int] = []  # a directory fd: any, so that os.link() calls linkat()


class _NoUnnamedFiles(Exception):
    """This filesystem or kernel cannot write unnamed files: use a temporary name."""


def _write_unnamed_new(path: str, data: bytes) -> None:
    folder = os.path.dirname(path) or "."
    try:
        fd = os.open(folder, os.O_TMPFILE | os.O_WRONLY, 0o666)
    except OSError as e:
        if e.errno in _UNNAMED_REFUSED:
            raise _NoUnnamedFiles from e
        raise OSError(e.errno, e.strerror, path) from e
    try:
        try:  # what naming_errors does, without a context manager per image
            view = memoryview(data)
            while view:  # a short write continues with the rest
                view = view[os.write(fd, view):]
        except OSError as e:
            raise _named(e, path) from e
        if not _anchor:
            _anchor.append(os.open("/", os.O_RDONLY | os.O_DIRECTORY))
        try:
            # With a dir fd given, os.link is linkat(..., AT_SYMLINK_FOLLOW): the /proc link
            # is followed to the open file itself (plain link() would refuse, EXDEV).
            _link_new(f"{_PROC_FD}{fd}", path, data, src_dir_fd=_anchor[0],
                      follow_symlinks=True)
        except OSError as e:
            if e.errno in (errno.ENOENT, errno.EXDEV, errno.EPERM) and os.path.isdir(folder):
                raise _NoUnnamedFiles from e  # no /proc here, or linkat refused
            raise OSError(e.errno, e.strerror, path) from e
    finally:
        os.close(fd)


def _link_new(src: str, path: str, data: bytes, **link_options) -> None:
    """Publish ``src`` as ``path`` by a hard link, which never replaces a file; a taken name is
    accepted only when it already holds exactly ``data``."""
    try:
        os.link(src, path, **link_options)
    except FileExistsError:
        if not _holds(path, data):
            raise NameTaken(path) from None


def _holds(path: str, data: bytes) -> bool:
    try:
        if os.path.getsize(path) != len(data):
            return False
        with open(path, "rb") as f:
            return f.read() == data
    except OSError:
        return False


def atomic_write_text(path: str | Path, text: str) -> None:
    with atomic_open(path, "w") as f:
        f.write(text)


def remove_stale_tmp(root: str | Path) -> int:
    """Delete temporary files a killed run left under ``root``; returns how many."""
    n = 0
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            if name.startswith(TMP_PREFIX):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(os.path.join(dirpath, name))
                    n += 1
    return n


def sync_files(paths: Iterable[str | Path]) -> None:
    """Make ``paths`` and the folders holding them durable before a marker vouches for them.

    A done marker that survives a power cut while the files it vouches for do not would make
    ``--resume`` skip a shard whose output is gone. On Linux one ``syncfs`` per filesystem
    flushes everything at once (a per-file ``fsync`` costs a disk round trip per image);
    elsewhere each file and folder is fsync'ed."""
    paths = [os.fspath(p) for p in paths]
    if not paths:
        return
    folders = sorted({os.path.dirname(p) or "." for p in paths})
    if _syncfs is not None:
        devices: dict[int, str] = {}
        for folder in folders:
            with contextlib.suppress(OSError):
                devices.setdefault(os.stat(folder).st_dev, folder)
        if all(_syncfs_folder(folder) for folder in devices.values()):
            return
    for path in (*paths, *folders):
        _fsync_path(path)


def sync_folder(folder: str | Path) -> None:
    """fsync a folder, so that a rename or a new entry in it survives a crash."""
    _fsync_path(os.fspath(folder))


def _fsync_path(path: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):  # some filesystems refuse fsync on folders
            os.fsync(fd)
    finally:
        os.close(fd)


def _load_syncfs():
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.syncfs
    except (OSError, AttributeError):
        return None


def _syncfs_folder(folder: str) -> bool:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return False
    try:
        return _syncfs(fd) == 0
    finally:
        os.close(fd)


_syncfs = _load_syncfs()
