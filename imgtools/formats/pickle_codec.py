"""The byte streams of CIFAR-style downsampled ImageNet files: pickles and ``.npz``.

Written by hand so that a batch of rows is streamed from disk into the file in bounded memory
(see :class:`_PickleOps` for why, and the measurement that keeps it); :mod:`.pickle_batches`
feeds them rows in chunks.
"""

from __future__ import annotations

import struct
import zipfile
from collections.abc import Iterator
from typing import BinaryIO, Protocol

import numpy as np


class Rows(Protocol):
    """``n`` rows of ``width`` bytes, handed over in chunks (2-D uint8 arrays)."""

    n: int
    width: int

    def chunks(self) -> Iterator[np.ndarray]: ...


class _PickleOps:
    """Pickle opcodes, written by hand so that the ``data`` bytes can be streamed.

    ``pickle.dump`` needs the whole array in memory plus (protocol <= 4) a copy of its bytes,
    and numpy 2 names ``numpy._core.multiarray`` in the stream, which numpy < 1.26 cannot load.
    We emit the stream numpy 1.x wrote for the published files (``numpy.core.multiarray.
    _reconstruct``), which every numpy since 1.x loads; protocol 3 unless a bytes object
    exceeds 4 GiB (then protocol 4, BINBYTES8).

    Measured by ``scripts/bench_codecs.py`` (a batch of 5,000 64 px rows of the corpus photos,
    best of 7, 2 shared cores): 0.008 ms of CPU a row against 0.021 ms for ``pickle.dump`` of
    the same arrays loaded from the row file, with a peak of 4.3 MB of traced allocations
    against 123 MB (the batch, then a copy); ``write_npz_batch`` 0.010 ms against 0.012 ms for
    ``np.savez``, 4.3 MB against 123 MB. A published batch holds about 128,000 rows (1.5 GB at
    64 px): only streaming keeps memory bounded.
    """

    def __init__(self, f: BinaryIO):
        self.f = f

    def header(self, protocol: int) -> None:
        self.f.write(b"\x80" + bytes([protocol]))

    def text(self, s: str) -> None:
        raw = s.encode("utf-8")
        self.f.write(b"X" + struct.pack("<I", len(raw)) + raw)

    def integer(self, v: int) -> None:
        if 0 <= v < 256:
            self.f.write(b"K" + bytes([v]))
        elif 0 <= v < 65536:
            self.f.write(b"M" + struct.pack("<H", v))
        elif -(2**31) <= v < 2**31:
            self.f.write(b"J" + struct.pack("<i", v))
        else:
            raise ValueError(f"integer {v} out of the 32-bit range this writer emits")

    def global_(self, module: str, name: str) -> None:
        self.f.write(b"c" + module.encode() + b"\n" + name.encode() + b"\n")

    def bytes_header(self, n: int) -> None:
        """Start a bytes object of ``n`` bytes; the caller writes exactly ``n`` bytes next."""
        if n < 256:
            self.f.write(b"C" + bytes([n]))
        elif n < 2**32:
            self.f.write(b"B" + struct.pack("<I", n))
        else:
            self.f.write(b"\x8e" + struct.pack("<Q", n))

    def dtype(self, code: str) -> None:
        """``np.dtype(code)`` with the state numpy pickles (byte order ``|`` or ``<``)."""
        order = "|" if np.dtype(code).itemsize == 1 else "<"
        self.global_("numpy", "dtype")
        self.text(code)
        self.f.write(b"\x89\x88\x87R(")  # False, True, TUPLE3, REDUCE, MARK
        self.integer(3)
        self.text(order)
        self.f.write(b"NNN")
        self.integer(-1)
        self.integer(-1)
        self.integer(0)
        self.f.write(b"tb")  # TUPLE, BUILD

    def ndarray_start(self, shape: tuple[int, ...], code: str) -> None:
        """Everything of a C-ordered ndarray before its raw bytes (then :meth:`ndarray_end`)."""
        self.global_("numpy.core.multiarray", "_reconstruct")
        self.global_("numpy", "ndarray")
        self.integer(0)
        self.f.write(b"\x85C\x01b\x87R(")  # TUPLE1, b'b', TUPLE3, REDUCE, MARK
        self.integer(1)
        for dim in shape:
            self.integer(dim)
        self.f.write({1: b"\x85", 2: b"\x86", 3: b"\x87"}[len(shape)])
        self.dtype(code)
        self.f.write(b"\x89")  # is_fortran = False
        itemsize = np.dtype(code).itemsize
        self.bytes_header(int(np.prod(shape, dtype=np.int64)) * itemsize)

    def ndarray_end(self) -> None:
        self.f.write(b"tb")

    def int_list(self, values: np.ndarray) -> None:
        self.f.write(b"]")
        for start in range(0, len(values), 1000):  # APPENDS in batches of 1000, as pickle does
            self.f.write(b"(")
            for v in values[start:start + 1000].tolist():
                self.integer(v)
            self.f.write(b"e")


def _needs_protocol_4(n_bytes: int) -> bool:
    return n_bytes >= 2**32


def write_pickle_batch(f: BinaryIO, rows: Rows, labels: np.ndarray | None,
                       mean: np.ndarray | None) -> None:
    """One published-format file: ``{'data': uint8 N x D, 'labels': [int], 'mean': f8 D}``
    (``mean`` only in train files, ``labels`` absent for unlabelled data)."""
    ops = _PickleOps(f)
    ops.header(4 if _needs_protocol_4(rows.n * rows.width) else 3)
    f.write(b"}(")  # EMPTY_DICT, MARK
    ops.text("data")
    ops.ndarray_start((rows.n, rows.width), "u1")
    for chunk in rows.chunks():
        f.write(memoryview(chunk).cast("B"))
    ops.ndarray_end()
    if labels is not None:
        ops.text("labels")
        ops.int_list(labels)
    if mean is not None:
        ops.text("mean")
        ops.ndarray_start((len(mean),), "f8")
        f.write(np.ascontiguousarray(mean, dtype="<f8").tobytes())
        ops.ndarray_end()
    f.write(b"u.")  # SETITEMS, STOP


def write_npz_batch(f: BinaryIO, rows: Rows, labels: np.ndarray | None,
                    mean: np.ndarray | None) -> None:
    """The same arrays as an uncompressed ``.npz`` (as image-net.org serves them), written
    member by member with fixed timestamps so equal input gives equal bytes (``np.savez``
    stamps the current time into the zip)."""
    with zipfile.ZipFile(f, "w", compression=zipfile.ZIP_STORED) as zf:
        with zf.open(_zip_member("data.npy"), "w", force_zip64=True) as member:
            header = {"descr": "|u1", "fortran_order": False, "shape": (rows.n, rows.width)}
            np.lib.format.write_array_header_1_0(member, header)
            for chunk in rows.chunks():
                member.write(memoryview(chunk).cast("B"))
        if labels is not None:
            with zf.open(_zip_member("labels.npy"), "w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.asarray(labels, dtype="<i8"))
        if mean is not None:
            with zf.open(_zip_member("mean.npy"), "w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.asarray(mean, dtype="<f8"))


def _zip_member(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
    info.compress_type = zipfile.ZIP_STORED
    info.external_attr = 0o644 << 16
    return info


WRITERS = {"pickle": write_pickle_batch, "npz": write_npz_batch}
