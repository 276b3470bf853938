"""A shard file written from records' pieces, handed to ``writev`` as they are.

Why: a record on disk is several pieces - a TFRecord's length and CRCs around the serialized
Example, a tar member's header, the image, the padding. Joining them into one buffer, or writing
them through a ``BufferedWriter``, copies every image once more in memory before the kernel
copies it into the page cache; ``writev`` takes the pieces as they are. A record goes out at
once, while its bytes are still in the processor's caches: gathering 256 KB of 40 KB TFRecord
records before each ``writev`` cost the writer 12 % more CPU (its serialized Examples are new
buffers each, no longer cached when written; an experiment on an Intel Xeon VM, 13,394 images
of 320 px, 5 rounds, not a script in the repository). Small records (a 32-pixel JPEG is 1 KB)
are gathered up to :data:`GATHER_BYTES`, so that they do not cost a system call each. A file
hashed for ``SHA256SUMS`` is hashed here, piece by piece, while the bytes are in memory.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

GATHER_BYTES = 16 << 10
"""Pieces are written once they hold this many bytes: a typical ImageNet JPEG (20-110 KB) is
written with its own record, tiny ones together (16 and 64 KB cost the same as a ``writev`` a
record on 40 KB images; 256 KB 12 % more)."""
GATHER_PIECES = 256
"""... or once they are this many pieces: Linux takes at most 1,024 (``IOV_MAX``) a call."""


def write_all(fd: int, parts: list[bytes], size: int) -> None:
    """``os.writev`` until all ``size`` bytes of ``parts`` are written (a regular file rarely
    takes less, but may: only then are the pieces cut)."""
    written = os.writev(fd, parts)
    if written == size:
        return
    views = [memoryview(p) for p in parts]
    while True:
        while views and written >= len(views[0]):
            written -= len(views[0])
            views.pop(0)
        if not views:
            return
        views[0] = views[0][written:]
        written = os.writev(fd, views)


class GatheredFile:
    """A new file (``path``, created or truncated) written by :meth:`write`, with its sha256
    when ``digest``. :attr:`raw` is the unbuffered file underneath, for a writer that
    compresses into it instead (a GZIP TFRecord); the two are not mixed."""

    def __init__(self, path: Path, digest: bool = False):
        self.raw = open(path, "wb", buffering=0)  # noqa: SIM115 - closed in close()/abort()
        self._fd = self.raw.fileno()
        self._hash = hashlib.sha256() if digest else None
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        self.size = 0
        """Bytes written so far, gathered ones included: the offset of the next record."""

    def write(self, pieces: list[bytes], size: int) -> None:
        """One record's ``pieces`` (``size`` bytes in all), after every earlier record's."""
        if self._hash is not None:
            for piece in pieces:
                self._hash.update(piece)
        self._pending += pieces
        self._pending_bytes += size
        self.size += size
        if self._pending_bytes >= GATHER_BYTES or len(self._pending) >= GATHER_PIECES:
            self.flush()

    def flush(self) -> None:
        """Write the gathered pieces."""
        if self._pending:
            write_all(self._fd, self._pending, self._pending_bytes)
            self._pending.clear()
            self._pending_bytes = 0

    def hexdigest(self) -> str:
        assert self._hash is not None, "opened without digest"
        return self._hash.hexdigest()

    def close(self) -> None:
        """Write what is gathered and close the file (the caller renames or removes it)."""
        try:
            self.flush()
        finally:
            self.raw.close()

    def abort(self) -> None:
        """Close without writing what is gathered: the file is about to be removed."""
        self._pending.clear()
        self.raw.close()
