"""The shard file that TFRecord and WebDataset writers write through: records' pieces gathered
and written by ``writev``, in order, whole, hashed as written; nothing of an aborted file's
gathered pieces reaches the disk."""

from __future__ import annotations

import hashlib
import os

import pytest

from imgtools.formats import gathered
from imgtools.formats.gathered import GatheredFile, write_all


@pytest.mark.parametrize("most", [1, 3, 5, 10, 17])
def test_a_short_writev_is_continued_until_every_piece_is_written(tmp_path, monkeypatch, most):
    """A record goes out as pieces in one ``writev``; when the kernel takes fewer bytes (a
    regular file rarely does, but may), the rest follows, whatever piece it stopped in."""

    def short_writev(fd, pieces):
        return os.write(fd, b"".join(bytes(p) for p in pieces)[:most])

    monkeypatch.setattr(os, "writev", short_writev)
    pieces = [b"abc", b"defghij", b"", b"klmnopq"]
    fd = os.open(tmp_path / "f", os.O_WRONLY | os.O_CREAT)
    try:
        write_all(fd, pieces, 17)
    finally:
        os.close(fd)
    assert (tmp_path / "f").read_bytes() == b"".join(pieces)


def _records(count: int, size: int) -> list[list[bytes]]:
    return [[b"h%05d" % i, bytes([i % 251]) * size, b"t"] for i in range(count)]


@pytest.mark.parametrize(("count", "size"), [(0, 1), (1, 10), (700, 3), (40, 50_000),
                                             (3, 600_000)])
def test_records_are_written_whole_in_order_with_their_digest(tmp_path, monkeypatch, count,
                                                              size):
    """Small records gathered by the piece limit, large ones by the byte limit, one larger
    than the limit alone: the file is the records' pieces in order, its sha256 theirs, its
    size what was written, and no ``writev`` is handed more pieces than Linux takes."""
    calls: list[int] = []
    real_writev = os.writev

    def counting_writev(fd, pieces):
        calls.append(len(pieces))
        return real_writev(fd, pieces)

    monkeypatch.setattr(os, "writev", counting_writev)
    records = _records(count, size)
    f = GatheredFile(tmp_path / "shard", digest=True)
    for pieces in records:
        f.write(pieces, sum(map(len, pieces)))
    f.close()
    expected = b"".join(b"".join(pieces) for pieces in records)
    assert (tmp_path / "shard").read_bytes() == expected
    assert f.hexdigest() == hashlib.sha256(expected).hexdigest()
    assert f.size == len(expected)
    assert all(0 < n <= 1024 for n in calls)
    if size >= gathered.GATHER_BYTES:
        assert len(calls) == count  # a record over the limit goes out alone, at once
    elif count * size >= 2 * gathered.GATHER_BYTES or 3 * count >= 2 * gathered.GATHER_PIECES:
        assert 1 < len(calls) < count  # gathered: neither one call a record nor one call


def test_pieces_wait_in_memory_until_a_limit_then_go_out(tmp_path):
    f = GatheredFile(tmp_path / "shard")
    f.write([b"a" * 10, b"b"], 11)
    assert (tmp_path / "shard").read_bytes() == b""
    f.write([b"c" * gathered.GATHER_BYTES], gathered.GATHER_BYTES)
    assert (tmp_path / "shard").stat().st_size == 11 + gathered.GATHER_BYTES
    f.write([b"d"], 1)
    f.close()
    assert (tmp_path / "shard").read_bytes().endswith(b"cd")


def test_an_aborted_file_gets_none_of_its_gathered_pieces(tmp_path):
    f = GatheredFile(tmp_path / "shard", digest=True)
    f.write([b"never written"], 13)
    f.abort()
    assert (tmp_path / "shard").read_bytes() == b""
