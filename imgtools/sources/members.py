"""Locators: one string that says where an image's bytes are, and the readers that fetch them.

A plan item carries a locator instead of a path so that the shard workers (any process, any
executor) can read an image with nothing but that string: no source object, no index, no open
archive travels with a task. A locator is either

* a plain file path (an extracted tree), or
* ``<scheme>:<container file>//<member name>@<n1>+<n2>...``, where the numbers say where the
  member's bytes start and how long they are. ``tar:archive.tar//n01440764.tar/x.JPEG@OFF+SIZE``
  is read with one ``pread``; the member name is carried only so that a skipped image is listed
  with its name and offset (the report's ``skipped`` entries are locators).

Resolved container paths never hold ``//``, so the first ``//`` ends the container. Readers
raise the build's :class:`BadImage` (skipped and listed), never anything else.
"""

from __future__ import annotations

import functools
import os
import re
import struct
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path

import crc32c

from imgtools.transforms.jpeg import BadImage, read_bytes

SCHEMES = ("tar", "zip", "targz", "tfrecord", "parquet")
_LOCATOR = re.compile(r"^(tar|zip|targz|tfrecord|parquet):(.+?)//(.*)@(\d+(?:\+\d+)*)$", re.S)
_ZIP_LOCAL_HEADER = struct.Struct("<4s22xHH")  # signature ... name length, extra length
_ZIP_LOCAL_SIGNATURE = b"PK\x03\x04"


def make_locator(scheme: str, container: str | Path, member: str, *numbers: int) -> str:
    return f"{scheme}:{container}//{member}@{'+'.join(str(int(n)) for n in numbers)}"


def parse_locator(locator: str) -> tuple[str, str, str, list[int]] | None:
    """``(scheme, container, member, numbers)``, or None for a plain file path."""
    m = _LOCATOR.match(locator)
    if m is None:
        return None
    return m.group(1), m.group(2), m.group(3), [int(n) for n in m.group(4).split("+")]


def locator_inputs(locators: Iterable[str]) -> Iterator[tuple[str, int, int]]:
    """``(locator, size, mtime_ns)`` of every locator, for a run's fingerprint: a plain file's
    own, or the size and mtime of the archive or copy file holding the member (the member's
    offset and size are in the locator itself). Containers are stat'ed once per run of
    locators in the same container, not once per image."""
    last: tuple[str, int, int] | None = None
    for locator in locators:
        parsed = parse_locator(locator)
        path = locator if parsed is None else parsed[1]
        if last is None or last[0] != path or parsed is None:
            try:
                st = os.stat(path)
                last = (path, st.st_size, st.st_mtime_ns)
            except OSError:
                last = (path, -1, -1)
        yield locator, last[1], last[2]


def open_locator(locator: str) -> bytes:
    """The bytes of the image at ``locator``; :class:`BadImage` when they cannot be had."""
    parsed = parse_locator(locator)
    if parsed is None:
        return read_bytes(locator)
    scheme, container, member, numbers = parsed
    return _READERS[scheme](container, member, numbers)


def pread_exact(path: str, offset: int, size: int, what: str) -> bytes:
    """``size`` bytes at ``offset`` of ``path`` (one system call, no read-ahead), or
    :class:`BadImage` saying the archive ends too early."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as e:
        raise BadImage(f"unreadable archive: {e.strerror or e}") from e
    try:
        data = os.pread(fd, size, offset)
    except OSError as e:
        raise BadImage(f"unreadable archive: {e.strerror or e}") from e
    finally:
        os.close(fd)
    if len(data) != size:
        raise BadImage(f"truncated archive: {what} at offset {offset} needs {size} bytes, "
                       f"the file has {len(data)}")
    return data


def _read_tar(container: str, member: str, numbers: list[int]) -> bytes:
    """``OFFSET+SIZE``, or ``OFFSET+SIZE+AVAILABLE`` for a member the index found cut short
    (its tar, inner or outer, ends before the member's data does)."""
    offset, size = numbers[0], numbers[1]
    if len(numbers) > 2 and numbers[2] < size:
        raise BadImage(f"truncated archive: member {member!r} at offset {offset} has "
                       f"{numbers[2]} of its {size} bytes")
    if size == 0:
        raise BadImage("empty (zero-byte) file")
    return pread_exact(container, offset, size, f"member {member!r}")


def _read_zip(container: str, member: str, numbers: list[int]) -> bytes:
    """``HEADER_OFFSET+COMPRESSED+SIZE+CRC+METHOD`` from the central directory: the local
    header gives where the data starts; the data is inflated and its CRC-32 checked."""
    header_offset, compressed, size, crc, method = numbers
    head = pread_exact(container, header_offset, _ZIP_LOCAL_HEADER.size, f"zip member {member!r}")
    signature, name_len, extra_len = _ZIP_LOCAL_HEADER.unpack(head)
    if signature != _ZIP_LOCAL_SIGNATURE:
        raise BadImage(f"damaged zip: no local header for {member!r} at offset {header_offset}")
    data = pread_exact(container, header_offset + _ZIP_LOCAL_HEADER.size + name_len + extra_len,
                       compressed, f"zip member {member!r}")
    if method == 8:
        try:
            inflater = zlib.decompressobj(-15)
            data = inflater.decompress(data, size + 1) + inflater.flush()
        except zlib.error as e:
            raise BadImage(f"damaged zip member {member!r} at offset {header_offset}: {e}") from e
    elif method != 0:
        raise BadImage(f"zip member {member!r} uses compression method {method}; imgtools "
                       "reads stored and deflated members")
    if len(data) != size or zlib.crc32(data) != crc:
        raise BadImage(f"damaged zip member {member!r} at offset {header_offset}: bad CRC-32 "
                       "(the data differs from what the zip recorded)")
    if not data:
        raise BadImage("empty (zero-byte) file")
    return data


def _masked_crc(data: bytes) -> int:
    """TFRecord's masked CRC-32C (the format module has the same; importing it from here
    would tie the sources into the formats' import cycle)."""
    crc = crc32c.crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


@functools.cache
def _example_pb2():
    """protobuf's module for ``tf.train.Example``, imported at the first TFRecord record read
    and kept: an import statement in :func:`example_image` would cost 4 us a record. The
    format module's ``_example_pb2`` is the same; not imported from there for the reason
    :func:`_masked_crc` gives."""
    from tfrecord import example_pb2  # protobuf: imported only when a TFRecord is read

    return example_pb2


def example_image(payload: bytes) -> bytes | None:
    """The image bytes of a serialized ``tf.train.Example``: TFDS's ``image`` or slim's
    ``image/encoded`` feature."""
    feature = _example_pb2().Example.FromString(payload).features.feature
    for key in ("image", "image/encoded"):
        if key in feature and feature[key].bytes_list.value:
            return bytes(feature[key].bytes_list.value[0])
    return None


def _read_tfrecord(container: str, member: str, numbers: list[int]) -> bytes:
    """``OFFSET+LENGTH`` of one record of an uncompressed TFRecord file; both CRCs checked,
    the image taken from the Example's ``image`` (TFDS) or ``image/encoded`` (slim) feature."""
    offset, length = numbers
    frame = pread_exact(container, offset, 12 + length + 4, f"record {member!r}")
    length_crc, = struct.unpack("<I", frame[8:12])
    payload = frame[12:12 + length]
    data_crc, = struct.unpack("<I", frame[12 + length:])
    if _masked_crc(frame[:8]) != length_crc or _masked_crc(payload) != data_crc:
        raise BadImage(f"damaged TFRecord: record {member!r} at offset {offset} fails its CRC")
    try:
        image = example_image(payload)
    except Exception as e:  # protobuf raises DecodeError, a plain Exception subclass
        raise BadImage(f"record {member!r} at offset {offset} is not a tf.train.Example: "
                       f"{e}") from e
    if not image:
        raise BadImage(f"record {member!r} at offset {offset} holds no image bytes")
    return bytes(image)


@functools.lru_cache(maxsize=2)
def _parquet_row_group(container: str, row_group: int, column: str) -> list:
    """One row group's image bytes. Kept (two at a time, per process) because a shard reads
    its images in plan order, which visits a row group many times in a row."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pq.ParquetFile(container).read_row_group(row_group, columns=[column])
    values = table.column(column).combine_chunks()
    if pa.types.is_struct(values.type):
        values = values.field("bytes")
    return values.to_pylist()


def _read_parquet(container: str, member: str, numbers: list[int]) -> bytes:
    """``ROW_GROUP+ROW+COLUMN_INDEX`` of a Parquet file (the column by its index in the schema,
    so that any column name fits the locator's grammar)."""
    import pyarrow.parquet as pq

    row_group, row, column_index = numbers
    try:
        column = pq.read_schema(container).names[column_index]
        image = _parquet_row_group(container, row_group, column)[row]
    except (OSError, IndexError, ValueError) as e:
        raise BadImage(f"unreadable Parquet row {member!r} (row group {row_group}, "
                       f"row {row}): {e}") from e
    if not image:
        raise BadImage(f"Parquet row {member!r} holds no image bytes")
    return image


_GZIP_CHUNK = 1 << 16  # compressed bytes fed to zlib at a time
_GZIP_CHECKPOINT_EVERY = 64 << 20  # decompressed bytes between saved inflater states


class _GzipCursor:
    """Random reads from one ``.tar.gz`` per process. Reads mostly move forward (plan order);
    for the ones that go back, the inflater's state is saved every 64 MB of output
    (``zlib``'s ``Decompress.copy``, about 40 KB each), so a backward read inflates at most
    64 MB again instead of the whole file from its start."""

    def __init__(self) -> None:
        self.path: str | None = None
        self.fd: int | None = None

    def _start(self, path: str) -> None:
        self.close()
        self.fd, self.path = os.open(path, os.O_RDONLY), path
        self.inflater = zlib.decompressobj(wbits=31)
        self.in_pos, self.out_pos, self.buf = 0, 0, b""
        self.checkpoints: list[tuple[int, int, object]] = [(0, 0, self.inflater.copy())]

    def _restore(self, offset: int) -> None:
        out_pos, in_pos, state = max((c for c in self.checkpoints if c[0] <= offset),
                                     key=lambda c: c[0])
        self.inflater = state.copy()  # type: ignore[attr-defined]
        self.in_pos, self.out_pos, self.buf = in_pos, out_pos, b""

    def _fill(self) -> bool:
        """Inflate one more chunk onto ``buf``; False at the end of the file."""
        assert self.fd is not None
        chunk = os.pread(self.fd, _GZIP_CHUNK, self.in_pos)
        if not chunk:
            return False
        self.in_pos += len(chunk)
        out = self.inflater.decompress(chunk)
        while self.inflater.eof and self.inflater.unused_data:  # a multi-member gzip
            rest = self.inflater.unused_data
            self.inflater = zlib.decompressobj(wbits=31)
            out += self.inflater.decompress(rest)
        self.buf += out
        end = self.out_pos + len(self.buf)  # the inflater has given everything before this
        if end >= self.checkpoints[-1][0] + _GZIP_CHECKPOINT_EVERY:
            self.checkpoints.append((end, self.in_pos, self.inflater.copy()))
        return True

    def read(self, path: str, offset: int, size: int) -> bytes:
        if self.path != path:
            self._start(path)
        if offset < self.out_pos:
            self._restore(offset)
        while True:
            if self.out_pos < offset:  # drop what lies before the member
                cut = min(len(self.buf), offset - self.out_pos)
                self.buf, self.out_pos = self.buf[cut:], self.out_pos + cut
            if self.out_pos == offset and len(self.buf) >= size:
                break
            if not self._fill():
                break
        data = self.buf[:size] if self.out_pos == offset else b""
        self.buf, self.out_pos = self.buf[len(data):], self.out_pos + len(data)
        return data

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
        self.fd, self.path = None, None


_GZIP = _GzipCursor()


def _read_targz(container: str, member: str, numbers: list[int]) -> bytes:
    """``OFFSET+SIZE`` in the *uncompressed* stream of a ``.tar.gz``."""
    offset, size = numbers
    try:
        data = _GZIP.read(container, offset, size)
    except (OSError, EOFError, zlib.error) as e:
        _GZIP.close()
        raise BadImage(f"damaged .tar.gz reading member {member!r}: {e}") from e
    if len(data) != size:
        raise BadImage(f"truncated archive: member {member!r} at offset {offset} has "
                       f"{len(data)} of its {size} bytes")
    if not data:
        raise BadImage("empty (zero-byte) file")
    return data


_READERS = {"tar": _read_tar, "zip": _read_zip, "targz": _read_targz,
            "tfrecord": _read_tfrecord, "parquet": _read_parquet}
