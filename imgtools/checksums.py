"""File digests, shared by the build (SHA256SUMS), verify, push-hub and the split lists."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from pathlib import Path

HASH_BLOCK = 256 << 10


def sha256_file(path: str | Path) -> str:
    """Hex SHA-256 of a file, read into one reused 256 KiB buffer (constant memory for any
    file size, and no new bytes object per block)."""
    digest = hashlib.sha256()
    buf = bytearray(HASH_BLOCK)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buf):
            digest.update(view[:n])
    return digest.hexdigest()


_ESCAPES = {"\\": "\\\\", "\n": "\\n", "\r": "\\r"}


def sha256sum_line(digest: str, name: str) -> str:
    """One ``sha256sum`` line for ``name``, escaped as GNU coreutils escapes it: a name holding
    a backslash, newline or carriage return is written with ``\\\\``, ``\\n``, ``\\r`` and the
    line starts with a backslash, so ``sha256sum -c`` reads every name back exactly."""
    if not any(ch in name for ch in _ESCAPES):
        return f"{digest}  {name}\n"
    return "\\" + f"{digest}  " + "".join(_ESCAPES.get(ch, ch) for ch in name) + "\n"


def sha256sum_lines(entries: Iterable[tuple[str, str]]) -> str:
    """The ``sha256sum`` lines of ``(digest, name)`` pairs, as :func:`sha256sum_line` writes
    each: one look for the escaped characters in all the names at once (a shard's lines are
    made once per image)."""
    entries = list(entries)
    if any(ch in "".join([name for _digest, name in entries]) for ch in _ESCAPES):
        return "".join([sha256sum_line(digest, name) for digest, name in entries])
    return "".join([f"{digest}  {name}\n" for digest, name in entries])


def parse_sha256sum_line(line: str) -> tuple[str, str] | None:
    """``(digest, name)`` of a ``sha256sum`` line (GNU escapes undone; a ``*`` binary-mode
    marker dropped), or None when the line has another shape."""
    escaped = line.startswith("\\")
    digest, sep, name = line[escaped:].partition(" ")
    if not sep or len(digest) != 64 or not name or name[0] not in " *":
        return None
    name = name[1:]
    if escaped:
        out, chars = [], iter(name)
        for ch in chars:
            if ch == "\\":
                nxt = next(chars, "")
                mapped = {"\\": "\\", "n": "\n", "r": "\r"}.get(nxt)
                if mapped is None:
                    return None
                out.append(mapped)
            else:
                out.append(ch)
        name = "".join(out)
    try:
        int(digest, 16)
    except ValueError:
        return None
    return digest.lower(), name


def relative_name(path: str | Path, root: str) -> str:
    """``path`` relative to ``root``, which holds it: a slice of the string, since this runs
    once per image (pathlib's ``relative_to`` costs more than the image's hash)."""
    text = os.fspath(path)
    prefix = root.rstrip(os.sep) + os.sep
    return text[len(prefix):] if text.startswith(prefix) else os.path.relpath(text, root)
