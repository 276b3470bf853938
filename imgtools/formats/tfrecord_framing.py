"""TFRecord framing: records on disk (length, masked CRC-32C of the length, payload, masked
CRC-32C of the payload), plain or in one GZIP stream, and the ``tfrecord2idx`` index
(``<file>.index``: ``offset length`` per record) that the ``tfrecord`` package's
``TFRecordDataset`` seeks by to shard and shuffle.

Reading checks both masked CRC-32C values of every record ourselves: the ``tfrecord`` package's
reader does not check them, and a flipped bit would otherwise become a silently wrong image.
What the payloads hold (``tf.train.Example``) is :mod:`imgtools.formats.tfrecord_example`'s.
"""

from __future__ import annotations

import gzip
import os
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import crc32c

from imgtools.errors import CorruptDataError

_GZIP_MAGIC = b"\x1f\x8b"
_HEADER = struct.Struct("<QI")
_CRC = struct.Struct("<I")
_MASK_DELTA = 0xA282EAD8


def masked_crc(data: bytes) -> int:
    """TFRecord's masked CRC-32C (Castagnoli): rotate right 15 bits, add a constant."""
    return _mask(crc32c.crc32c(data))


def _mask(crc: int) -> int:
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


def frame_parts(payload: list[bytes]) -> list[bytes]:
    """One record on disk (length, its CRC, payload, payload's CRC) as a list of pieces, the
    payload's pieces included as they are: a writer hands them to ``writev``, so an image is
    never copied into a new buffer. The CRC runs over the pieces in turn."""
    size = sum(len(p) for p in payload)
    crc = 0
    for piece in payload:
        crc = crc32c.crc32c(piece, value=crc)
    length = struct.pack("<Q", size)
    return [length + _CRC.pack(masked_crc(length)), *payload, _CRC.pack(_mask(crc))]


def open_records(path: Path) -> BinaryIO:
    f = open(path, "rb")  # noqa: SIM115 - returned to the caller, closed there
    if f.read(2) == _GZIP_MAGIC:
        f.close()
        return gzip.open(path, "rb")  # type: ignore[return-value]
    f.seek(0)
    return f


def _read_exact(f: BinaryIO, n: int, path: Path, offset: int, what: str) -> bytes:
    try:
        data = f.read(n)
    except (EOFError, gzip.BadGzipFile, OSError) as e:
        raise CorruptDataError(f"truncated or damaged GZIP stream while reading {what}: {e}",
                               path=path, offset=offset,
                               fix="the file was cut short or damaged; copy it again") from e
    if len(data) != n:
        raise CorruptDataError(f"truncated record: {what} needs {n} bytes, the file has "
                               f"{len(data)} left", path=path, offset=offset,
                               fix="the file was cut short (interrupted copy or download?); "
                                   "copy it again or regenerate it")
    return data


def _read_length(f: BinaryIO, path: Path, offset: int, check_crc: bool,
                 what: str = "") -> int | None:
    """The payload length from the 12-byte record header at ``offset``; None at a clean end
    of file. A short header or (when asked) a bad length CRC is a :class:`CorruptDataError`."""
    try:
        head = f.read(_HEADER.size)
    except (EOFError, OSError) as e:
        raise CorruptDataError(f"damaged GZIP stream: {e}", path=path, offset=offset,
                               fix="copy the file again") from e
    if not head:
        return None
    if len(head) != _HEADER.size:
        raise CorruptDataError("truncated record header", path=path, offset=offset,
                               fix="the file was cut short; copy it again")
    length, length_crc = _HEADER.unpack(head)
    if check_crc and masked_crc(head[:8]) != length_crc:
        raise CorruptDataError(
            f"{what}length CRC mismatch (not a TFRecord file, or damaged)",
            path=path, offset=offset, fix="copy the file again or regenerate it")
    return length


def iter_frames(path: Path, skip: int = 0, check_crc: bool = True) -> Iterator[tuple[int, bytes]]:
    """Yield ``(offset, payload)`` of every record after the first ``skip`` (which are stepped
    over by seeking, without reading their payloads), checking both CRCs."""
    with open_records(path) as f:
        offset = 0
        index = 0
        while True:
            length = _read_length(f, path, offset, check_crc, f"record {index}: ")
            if length is None:
                return
            if index < skip:
                _skip(f, length + 4, path, offset)
            else:
                payload = _read_exact(f, length, path, offset, f"record {index}")
                crc = _read_exact(f, 4, path, offset, f"record {index} CRC")
                if check_crc and masked_crc(payload) != _CRC.unpack(crc)[0]:
                    raise CorruptDataError(f"record {index}: data CRC mismatch", path=path,
                                           offset=offset,
                                           fix="the file is damaged; copy it again or "
                                               "regenerate it")
                yield offset, payload
            offset += _HEADER.size + length + 4
            index += 1


def _skip(f: BinaryIO, n: int, path: Path, offset: int) -> None:
    if isinstance(f, gzip.GzipFile):
        _read_exact(f, n, path, offset, "a skipped record")
        return
    end = f.seek(n, os.SEEK_CUR)
    if end > os.fstat(f.fileno()).st_size:
        raise CorruptDataError("truncated record", path=path, offset=offset,
                               fix="the file was cut short; copy it again")


def scan_lengths(path: Path) -> Iterator[tuple[int, int]]:
    """``(offset, payload length)`` of every record from the headers alone (length CRC checked;
    a truncated last record is detected from the file size)."""
    size = path.stat().st_size
    with open_records(path) as f:
        gz = isinstance(f, gzip.GzipFile)
        offset = 0
        while True:
            length = _read_length(f, path, offset, check_crc=True)
            if length is None:
                return
            end = offset + _HEADER.size + length + 4
            if gz:
                _read_exact(f, length + 4, path, offset, "a record")
            elif end > size:
                raise CorruptDataError(f"truncated record: needs {end - offset} bytes, the file "
                                       f"has {size - offset} left", path=path, offset=offset,
                                       fix="the file was cut short; copy it again")
            else:
                f.seek(length + 4, os.SEEK_CUR)
            yield offset, length
            offset = end


def index_problems(path: Path, framing: list[tuple[int, int]]) -> list[dict]:
    """The shard's ``tfrecord2idx`` index (``<file>.index``: ``offset length`` per record) must
    hold exactly the records' framing: the ``tfrecord`` reader seeks by it, so an index copied
    from another shard makes it read garbage or the wrong records."""
    index = path.with_name(path.name + ".index")
    if not index.is_file():
        return []
    try:
        entries = [tuple(int(v) for v in line.split())
                   for line in index.read_text(encoding="utf-8").splitlines() if line.strip()]
    except (ValueError, UnicodeDecodeError):
        return [{"path": str(index), "what": "index is not `offset length` lines of numbers"}]
    if entries == framing:
        return []
    if len(entries) != len(framing):
        what = f"index lists {len(entries)} records, the shard holds {len(framing)}"
    else:
        first = next(i for i, (a, b) in enumerate(zip(entries, framing)) if a != b)
        what = (f"index entry {first} says {' '.join(map(str, entries[first]))}, the record is "
                f"at {framing[first][0]} with {framing[first][1]} bytes")
    return [{"path": str(index), "what": f"{what} (an index of another file?)"}]
