"""The identity of a run's input: every input file's locator, size and modification time, in
the run's order (``inputs.jsonl`` in the run folder, digested into the fingerprint), so that
``--resume`` refuses an input whose files changed and names the first that did
(:mod:`imgtools.pipeline.output`).

Listing and stat-ing every input file is work per image that happens before anything else of
a run, so it is written for speed: one ``listdir`` a folder, each ``stat`` relative to the open
folder, lines made in batches.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from json.encoder import encode_basestring_ascii as _dumps  # type: ignore[attr-defined]
from pathlib import Path
from stat import S_ISDIR, S_ISLNK, S_ISREG

InputEntry = tuple[str, int, int]  # locator, size in bytes, mtime in ns
# _dumps is json.dumps of a str without its checks: the locators are escaped once a file.


@dataclass(frozen=True)
class InputsFile:
    """An input identity already written by :func:`write_inputs` (in the output's parent
    folder), with its count and digest: a run that listed its input while planning hands this
    to :func:`~imgtools.pipeline.output.claim_outputs` instead of listing the input again."""

    path: Path
    count: int
    sha256: str


def path_inputs(paths: Iterable[str]) -> Iterator[InputEntry]:
    """``(path, size, mtime_ns)`` of every path, in the order given (a missing file gets -1:
    it is then refused or skipped by the run itself, and a resume sees it changed)."""
    for path in paths:
        try:
            st = os.stat(path)
        except OSError:
            yield path, -1, -1
            continue
        yield path, st.st_size, st.st_mtime_ns


FileStat = tuple[str, int, int, bool]  # name, size in bytes, mtime in ns, a regular file


def tree_inputs(root: Path) -> Iterator[InputEntry]:
    """Every file a reader of the dataset at ``root`` (a file or a folder) can see, in sorted
    order: the identity of a conversion's input. Hidden files are left out as readers leave
    them out."""
    root = Path(root)
    if root.is_file():
        yield from path_inputs([str(root)])
        return
    for folder, files in tree_listing(root):
        yield from folder_entries(folder, files)


def folder_entries(folder: str, files: list[FileStat]) -> Iterator[InputEntry]:
    """The identity entries of one folder of :func:`tree_listing`."""
    prefix = _prefix(folder)
    for name, size, mtime, _regular in files:
        yield prefix + name, size, mtime


def folder_lines(folder: str, files: list[FileStat]) -> str:
    """The lines :func:`write_inputs` writes for :func:`folder_entries`, made at once: the
    folder's part of every locator is escaped once, not once a file (JSON escapes character
    by character, so the escaped folder and escaped name joined are the escaped path)."""
    head = "[" + _dumps(_prefix(folder))[:-1]
    dumps = _dumps
    return "".join([f"{head}{dumps(name)[1:]}, {size}, {mtime}]\n"
                    for name, size, mtime, _regular in files])


def _prefix(folder: str) -> str:
    return folder if folder.endswith(os.sep) else folder + os.sep


def tree_listing(root: Path) -> Iterator[tuple[str, list[FileStat]]]:
    """The folders of ``root`` (a folder) as ``os.walk`` lists them, each with its visible
    files in name order and their stat: what :func:`tree_inputs` writes, given folder by
    folder so that a planner can take the sizes it needs from the same ``stat``
    (:func:`imgtools.pipeline.slices.plan_while_listing`) instead of making its own."""
    return _folder_listing(os.fspath(root))


def _folder_listing(folder: str) -> Iterator[tuple[str, list[FileStat]]]:
    """:func:`tree_listing` from ``folder``: its files in name order, then each sub-folder's
    (a folder that cannot be listed is left out, a symlink to a folder is not followed), with
    one ``listdir`` a folder and each name's ``stat`` relative to the open folder (a path walk
    of one name, not of the whole path; no entry object a file): this runs once per input
    file, before anything else of the run. A file that cannot be stat-ed (a dangling link, or
    gone) gets size and time -1."""
    files: list[FileStat] = []
    subfolders = []
    prefix = folder if folder.endswith(os.sep) else folder + os.sep
    with _listed(folder) as (names, fd):
        if names is None:
            return
        base, stat = ("" if fd is not None else prefix), os.stat  # a name in fd, or a path
        for name in names:
            try:
                st = stat(base + name, dir_fd=fd)
                if S_ISDIR(st.st_mode):
                    if not S_ISLNK(stat(base + name, dir_fd=fd, follow_symlinks=False).st_mode):
                        subfolders.append(prefix + name)
                    continue
            except OSError:
                files.append((name, -1, -1, False))
                continue
            files.append((name, st.st_size, st.st_mtime_ns, S_ISREG(st.st_mode)))
    yield folder, files
    for sub in subfolders:
        yield from _folder_listing(sub)


@contextlib.contextmanager
def _listed(folder: str) -> Iterator[tuple[list[str] | None, int | None]]:
    """The visible names of ``folder`` in name order (None when it cannot be listed), and the
    folder open (None where the platform cannot ``stat`` relative to it), which stays open
    while the caller uses them."""
    fd = None
    try:
        if os.listdir in os.supports_fd and os.stat in os.supports_dir_fd:
            fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        names = sorted(n for n in os.listdir(folder if fd is None else fd) if n[0] != ".")
    except OSError:
        names = None
    try:
        yield names, fd
    finally:
        if fd is not None:
            os.close(fd)


def write_inputs(path: Path, inputs: Iterable[InputEntry]) -> tuple[int, str]:
    """Stream ``inputs`` to ``path`` as JSON lines (``["locator", size, mtime_ns]``); their
    count and sha256. Lines are made and written in batches: this runs once per input file."""
    dumps = _dumps
    entries = iter(inputs)
    return write_input_lines(path, (
        "".join([f"[{dumps(loc)}, {int(size)}, {int(mtime)}]\n" for loc, size, mtime in batch])
        for batch in iter(lambda: list(itertools.islice(entries, 4096)), [])))


def write_input_lines(path: Path, chunks: Iterable[str]) -> tuple[int, str]:
    """:func:`write_inputs` for lines already made (:func:`folder_lines`), a chunk of whole
    lines at a time; their count (a JSON string holds no raw newline) and sha256."""
    digest = hashlib.sha256()
    count = 0
    with open(path, "wb") as f:
        for chunk in chunks:
            data = chunk.encode()
            digest.update(data)
            f.write(data)
            count += chunk.count("\n")
    return count, digest.hexdigest()


def _read_entries(lines: Iterable[str]) -> Iterator[InputEntry]:
    for line in lines:
        with contextlib.suppress(ValueError, TypeError):
            loc, size, mtime = json.loads(line)
            yield str(loc), int(size), int(mtime)


def first_input_change(before: Iterable[str] | None, now: Path) -> str:
    """Which input file differs between two input lists (both in the run's order)."""
    if before is None:
        return "the input files changed"
    with open(now, encoding="utf-8") as new:
        old_entries, new_entries = _read_entries(before), _read_entries(new)
        for count, (old, cur) in enumerate(zip(old_entries, new_entries)):
            if old == cur:
                continue
            if old[0] == cur[0]:
                return (f"input file {old[0]} changed (size {old[1]} then, {cur[1]} now"
                        f"{'' if old[1] != cur[1] else '; modified since'})")
            return f"input file #{count + 1} is {old[0]} then, {cur[0]} now"
        extra_old, extra_new = next(old_entries, None), next(new_entries, None)
        if extra_old:
            return f"input file {extra_old[0]} is gone"
        if extra_new:
            return f"input file {extra_new[0]} is new"
    return "the input files changed"
