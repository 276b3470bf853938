"""Write files so that a reader never sees half of one.

Every output file is written under a temporary name in the same directory and renamed into
place when complete: a kill -9 leaves either the old state or the new file, never a torso.
Temporary names start with ``.tmp-`` so resume logic and readers can ignore and clean them.
The images of a folder output are the exception (:func:`write_new`): one file each, written
in place inside the run's staging folder, which no reader sees before the whole output is
renamed into place.

Reading a whole file (:func:`read_file`, :func:`read_whole`) lives here too: the other half
of what a conversion does with each image's file.
"""

from __future__ import annotations

import contextlib
import ctypes
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
        raise named(e, path) from e


def named(e: OSError, path: str | Path) -> OSError:
    """``e`` (which names no file) as an OSError naming ``path``: what :func:`naming_errors`
    raises, for code that writes once per record and cannot afford a context manager each
    time."""
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
    """:func:`write_new` found another file already at the path."""


def write_new(path: str, data: bytes) -> None:
    """Write ``data`` to the new file ``path`` (a string, in an existing folder), never over a
    different file: two records with one name must not silently become one file.

    Not atomic, and need not be: a folder output's images are written inside the run's
    staging folder, which becomes the output by one rename once every shard is done
    (:mod:`imgtools.pipeline.output`), so no reader ever sees a part of an image. What a kill
    leaves in the staging folder is handled here, on ``--resume`` (or a cluster's retry of
    the shard): a taken name holding exactly ``data`` is the file an earlier attempt finished,
    and is kept; one holding the first part of ``data`` (possibly nothing) is one it was
    writing, and is written again. Anything else is another record's file (:class:`NameTaken`).
    A collision this cannot see (two records with the same bytes, or one whose bytes begin
    another's) leaves fewer files than records, which the folder format's ``finalize`` counts.

    One ``open(O_CREAT | O_EXCL)``, writes and a ``close`` an image: the least a file costs.
    Publishing each image by a hard link from an unnamed or temporary file (as this did
    before) cost one directory operation more an image (13 us of CPU on the development VM,
    ``scripts/bench_file_writes.py``; 12 % of a conversion's floor), to protect against a
    torso that the staging folder already keeps from every reader."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_BINARY, 0o666)
    except FileExistsError:
        if _holds(path, data):
            return
        if not _begins(path, data):
            raise NameTaken(path) from None
        fd = os.open(path, os.O_WRONLY | os.O_TRUNC | _O_BINARY)
    try:
        view = memoryview(data)
        while view:  # a short write continues with the rest
            view = view[os.write(fd, view):]
    except BaseException as e:
        with contextlib.suppress(OSError):
            os.close(fd)
        if not isinstance(e, OSError):
            raise  # a kill's stand-in (Ctrl-C): what was written is for the resume to judge
        _unlink_quietly(path)  # created or truncated above: this record's own file
        raise named(e, path) from e
    try:
        os.close(fd)  # a network filesystem may report a failed write only here
    except OSError as e:
        _unlink_quietly(path)
        raise named(e, path) from e


def _unlink_quietly(path: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)


_O_BINARY = getattr(os, "O_BINARY", 0)  # Windows: no newline translation


def _holds(path: str, data: bytes) -> bool:
    try:
        if os.path.getsize(path) != len(data):
            return False
        with open(path, "rb") as f:
            return f.read() == data
    except OSError:
        return False


def _begins(path: str, data: bytes) -> bool:
    """Whether the file at ``path`` holds the first part of ``data``: what an interrupted
    write of it leaves (after a power cut too: ext4 and XFS extend a file's size only over
    data that reached the disk)."""
    try:
        size = os.path.getsize(path)
        if size >= len(data):
            return False
        with open(path, "rb") as f:
            return f.read(size + 1) == data[:size]
    except OSError:
        return False


def read_whole(fd: int, size: int) -> bytes:
    """The bytes of the open file ``fd`` from where it stands, ``size`` being its size from
    ``os.fstat``: one ``read`` of ``size + 1`` bytes, which comes back short at the end.
    ``open(path, "rb").read()`` makes four more system calls for the same bytes (``ioctl``
    to ask whether it is a terminal, a second ``fstat``, ``lseek``, and a second ``read``
    that finds the end): 4 us an image on the development VM, about 4 % of a conversion's
    floor (``scripts/bench_file_reads.py``). A file that grew since the ``fstat``, or a
    filesystem that returns less than asked (a FUSE one may), is read on to its end as
    ``read()`` would."""
    data = os.read(fd, size + 1)
    if len(data) == size:
        return data
    chunks = [data]
    while chunk := os.read(fd, max(size, 1 << 16)):
        chunks.append(chunk)
    return b"".join(chunks)


def read_file(path: str) -> bytes:
    """The bytes of the file ``path``: :func:`read_whole` after one ``fstat``. An error while
    reading names the file, as one while opening it does."""
    fd = os.open(path, os.O_RDONLY | _O_BINARY)
    try:
        return read_whole(fd, os.fstat(fd).st_size)
    except OSError as e:
        raise named(e, path) from e
    finally:
        os.close(fd)


def atomic_write_text(path: str | Path, text: str) -> None:
    with atomic_open(path, "w") as f:
        f.write(text)


def walk_folders(root: str | Path) -> Iterator[tuple[str, str, list[str], list[str]]]:
    """``(path, path relative to root, file names, sub-folder names)`` of every folder under
    ``root``, top-down, names in listing order, with one ``scandir`` a folder and no list of
    every path (a folder output's images): a symlink counts as a file and is not followed, a
    folder that cannot be listed is left out (as ``os.walk`` leaves it). The caller may sort
    the sub-folders in place (they are visited in that order) or prune them.

    A folder with two links holds no sub-folder (each sub-folder's ``..`` is a link to it, on
    ext4, XFS and tmpfs alike): its names then come from ``listdir``, without an entry object
    each (this walks every image of a folder output). Elsewhere (btrfs gives every folder one
    link) each entry's type is looked at."""
    stack = [(os.fspath(root), ".")]
    while stack:
        path, rel = stack.pop()
        try:
            if os.stat(path, follow_symlinks=False).st_nlink == 2:
                yield path, rel, os.listdir(path), []
                continue
            with os.scandir(path) as it:
                entries = [(e.name, e.is_dir(follow_symlinks=False)) for e in it]
        except OSError:
            continue
        dirs = [name for name, is_dir in entries if is_dir]
        yield path, rel, [name for name, is_dir in entries if not is_dir], dirs
        stack.extend((os.path.join(path, d), d if rel == "." else os.path.join(rel, d))
                     for d in reversed(dirs))


def remove_stale_tmp(root: str | Path) -> int:
    """Delete temporary files a killed run left under ``root``; returns how many."""
    n = 0
    for path, _rel, names, _dirs in walk_folders(root):
        for name in names:
            if name.startswith(TMP_PREFIX):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(os.path.join(path, name))
                    n += 1
    return n


def folders_of(paths: Iterable[str]) -> set[str]:
    """The folders holding ``paths``: ``os.path.dirname`` once per folder, not once per file
    (a folder output's shard syncs thousands of images in a few folders)."""
    folders: dict[str, str] = {}
    for path in paths:
        head = path[:path.rfind(os.sep) + 1]  # the same head, the same dirname
        if head not in folders:
            folders[head] = os.path.dirname(path) or "."
    return set(folders.values())


def sync_files(paths: Iterable[str | Path], folders: Iterable[str] | None = None) -> None:
    """Make ``paths`` and the folders holding them durable before a marker vouches for them.

    A done marker that survives a power cut while the files it vouches for do not would make
    ``--resume`` skip a shard whose output is gone. On Linux one ``syncfs`` per filesystem
    flushes everything at once (a per-file ``fsync`` costs a disk round trip per image);
    elsewhere each file and folder is fsync'ed. ``folders``: the folders holding ``paths``,
    when their writers know them - ``syncfs`` then needs nothing else, and ``paths`` (an
    image each, in a folder output) are not even gone through."""
    if folders is None:
        paths = [os.fspath(p) for p in paths]
        folders = folders_of(paths)
    folders = sorted(folders)
    if not folders:
        return
    if _syncfs is not None:
        devices: dict[int, str] = {}
        for folder in folders:
            with contextlib.suppress(OSError):
                devices.setdefault(os.stat(folder).st_dev, folder)
        if all(_syncfs_folder(folder) for folder in devices.values()):
            return
    for path in (*map(os.fspath, paths), *folders):
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
