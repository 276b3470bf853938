"""Downsampled ImageNet (Imagenet8/16/32/64 and any subset) as CIFAR-style pickles or .npz.

The published files (Chrabaszcz et al. 2017, github PatrykChrabaszcz/Imagenet32_Scripts) are made
in two steps that each hold the whole dataset in RAM (15+ GB for Imagenet64). We make the same
files in bounded memory:

1. **Decode** (parallel, resumable shards via :func:`imgtools.runner.run_shards`): each image is
   decoded once and resized to every requested size; each shard writes its rows with ``pwrite``
   into one preallocated row file per (split, size) in the state folder, at slots fixed by the
   plan order. Broken files leave an all-zero slot and are listed, never fatal. Workers are
   threads (Pillow's decode and resize release the GIL): one process, so the peak memory is one
   interpreter, not one per core.
2. **Mean**: one sequential pass over each train row file sums the valid rows in int64. Sums of
   uint8 values are exact in float64, so ``sum / n`` is bit-for-bit ``np.mean(x, axis=0)``.
3. **Write** (parallel, resumable per output file): each output batch gathers its rows in the
   seeded shuffled order with ``pread`` in fixed-size chunks and streams them straight into the
   output file. Memory per worker is one chunk plus the labels of one batch, never a batch of
   pixels and never the dataset.

Pixels match the published ``image_resizer_imagent.py`` exactly by default: ``Image.open``, then
``convert("RGB")`` when the mode is not RGB, then ``resize((s, s), Image.BOX)`` from the full
decode; no EXIF rotation, no colour management, aspect ratio not kept. Rows are channel-planar
(all R, then all G, then all B), as ``image2numpy_imagenet_train.py`` stores them.
"""

from __future__ import annotations

import array
import contextlib
import hashlib
import json
import os
import pickle
import re
import shutil
import struct
import sys
import time
import zipfile
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, NamedTuple

import numpy as np
from PIL import Image

from imgtools import __version__
from imgtools.atomic import atomic_open, remove_stale_tmp
from imgtools.errors import UserError
from imgtools.executors.base import Executor
from imgtools.metadata.croissant import write_croissant
from imgtools.pipeline.output import claim_outputs
from imgtools.pipeline.report import already_complete, run_report, write_report
from imgtools.plan import BuildPlan, PlanItem
from imgtools.records import DatasetInfo
from imgtools.runner import ShardTask, run_shards, with_files
from imgtools.sources import locator_inputs, open_locator
from imgtools.transform import BadImage, bounded_draft, draft, open_image

FORMATS = ("pickle", "npz")
OUTPUT_SPLITS = ("train", "val", "unsup")
MIN_SIZE, MAX_SIZE = 8, 64  # the published Imagenet8..64; what --help promises
STATE_DIRNAME = ".imgtools-state"
META_NAME = "batches.meta"
PUBLISHED_SIZES = (8, 16, 32, 64)

# Bytes of pixel rows a writer holds at once (rounded to whole rows, at least one row).
GATHER_CHUNK_BYTES = 4 << 20
# Rows summed at once by the mean pass.
MEAN_CHUNK_BYTES = 4 << 20
# Draft (DCT-scaled decode) keeps at least this margin over the largest target size.
FAST_DRAFT_MARGIN = 2


class DownsampleItem(NamedTuple):
    """One source image: ``label`` is 0-based in the dataset's class order (sorted wnids unless
    the recipe pins another; None for unsup)."""

    src: str
    split: str
    label: int | None
    wnid: str | None = None


def output_dir_name(name: str, size: int) -> str:
    """``imagenet_32x32``: the per-size output folder (one folder per size, like the
    published ``Imagenet32_train`` / ``Imagenet32_val`` pairs but with both splits inside)."""
    return f"{name}_{size}x{size}"


def batch_file_names(split: str, batches: int, fmt: str) -> list[str]:
    """File names of one split: ``train_data_batch_1..N`` and ``val_data`` as published."""
    ext = ".npz" if fmt == "npz" else ""
    if split == "train":
        return [f"train_data_batch_{i}{ext}" for i in range(1, batches + 1)]
    return [f"{split}_data{ext}"]


def batch_bounds(n: int, batches: int) -> list[tuple[int, int]]:
    """The published split rule: ``n // batches`` rows per file, the last takes the rest."""
    size = n // batches
    bounds = [(i * size, (i + 1) * size) for i in range(batches - 1)]
    bounds.append(((batches - 1) * size, n))
    return bounds


# --------------------------------------------------------------------------- pixels


def open_rgb(path: str | Path, draft_size: int | None = None
             ) -> tuple[Image.Image, str | None, tuple[float, float, float, float] | None]:
    """Decode ``path`` to an RGB image the way the published resizer does; returns
    ``(image, note, box)`` where ``note`` names a conversion (``"CMYK->RGB"``) or is None, and
    ``box`` is the region of a DCT-scaled decode that holds the original picture (None when
    the image was not scaled).

    Deliberately *not* the build's RGB repair (which flattens transparency on white): the
    published script ignores EXIF rotation and ICC profiles and converts any non-RGB mode with
    Pillow's plain ``convert("RGB")``; anything else would change pixels. Unusable files raise
    the build's :class:`BadImage`, with the same reasons as every other report.
    ``draft_size`` enables JPEG DCT scaling (--fast).
    """
    im = open_image(open_locator(str(path)))
    request = bounded_draft(im, (draft_size, draft_size) if draft_size else None)
    try:
        box = draft(im, "RGB", request) if request else None
        im.load()
    except (OSError, SyntaxError, ValueError) as e:
        raise BadImage(f"corrupt or truncated image data: {e}") from e
    note = None
    if im.mode != "RGB":
        note = f"{im.format or '?'} {im.mode}->RGB"
        im = im.convert("RGB")
    elif im.format not in ("JPEG", "MPO"):
        note = f"{im.format} RGB"
    return im, note, box


def center_square(width: int, height: int) -> tuple[int, int, int, int]:
    """The largest centred square, as a resize ``box`` (so cropping costs no copy)."""
    side = min(width, height)
    left = (width - side) // 2
    top = (height - side) // 2
    return left, top, left + side, top + side


def resize_square(im: Image.Image, size: int, crop: bool,
                  scaled: tuple[float, float, float, float] | None = None) -> Image.Image:
    """BOX-resize to ``size`` x ``size``: the whole image (published), or its centre square.

    ``scaled`` is the region a DCT-scaled decode covers (``--fast``): the whole picture is then
    resized from exactly that region (a scaled decode is rounded up to whole pixels), or the
    centre square of it (the full-resolution square to within half an original pixel)."""
    if scaled is None:
        box = center_square(*im.size) if crop else None
        return im.resize((size, size), Image.Resampling.BOX, box=box)
    width, height = scaled[2], scaled[3]
    if crop:
        side = min(width, height)
        left, top = (width - side) / 2, (height - side) / 2
        box = (left, top, left + side, top + side)
    else:
        box = scaled
    return im.resize((size, size), Image.Resampling.BOX, box=box)


def planar_row(im: Image.Image) -> np.ndarray:
    """An RGB image as one CIFAR row: all R values, then all G, then all B (row-major)."""
    return np.asarray(im, dtype=np.uint8).transpose(2, 0, 1).reshape(-1)


def downsample_file(path: str | Path, sizes: Sequence[int], *, crop: bool = False,
                    fast: bool = False) -> tuple[dict[int, np.ndarray], str | None]:
    """Rows for every size in ``sizes`` from a single decode of ``path``."""
    draft_size = FAST_DRAFT_MARGIN * max(sizes) if fast else None
    im, note, scaled = open_rgb(path, draft_size)
    return {s: planar_row(resize_square(im, s, crop, scaled)) for s in sizes}, note


# --------------------------------------------------------------------------- pickle writer


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


def write_pickle_batch(f: BinaryIO, rows: RowSource, labels: np.ndarray | None,
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


def write_npz_batch(f: BinaryIO, rows: RowSource, labels: np.ndarray | None,
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


# --------------------------------------------------------------------------- row files


@dataclass
class RowSource:
    """Rows ``slots`` (in this order) of a row file, read back in bounded chunks with pread."""

    path: Path
    width: int
    slots: np.ndarray

    @property
    def n(self) -> int:
        return len(self.slots)

    def chunks(self) -> Iterator[np.ndarray]:
        rows_per_chunk = max(1, min(self.n, GATHER_CHUNK_BYTES // self.width))
        buf = np.empty((rows_per_chunk, self.width), dtype=np.uint8)
        fd = os.open(self.path, os.O_RDONLY)
        try:
            for start in range(0, self.n, rows_per_chunk):
                part = np.asarray(self.slots[start:start + rows_per_chunk], dtype=np.int64)
                out = buf[: len(part)]
                for pos in np.argsort(part, kind="stable"):  # read in file order
                    _pread_exact(fd, out[pos], int(part[pos]) * self.width, self.path)
                yield out
        finally:
            os.close(fd)


def _pread_exact(fd: int, row: np.ndarray, offset: int, path: Path) -> None:
    got = os.preadv(fd, [row], offset)
    if got != row.nbytes:
        raise UserError(f"row file ends early (read {got} of {row.nbytes} bytes at {offset})",
                        path=path, fix="the state folder is damaged: run again without --resume")


def _row_file(state: Path, split: str, size: int) -> Path:
    return state / f"rows-{split}-{size}.u8"


def _prepare_row_file(path: Path, n_slots: int, width: int) -> None:
    """Preallocate (sparse) so shards can write their slots in any order, concurrently."""
    with open(path, "ab") as f:
        f.truncate(n_slots * width)


# --------------------------------------------------------------------------- the plan


@dataclass(frozen=True)
class DecodeJob:
    """Payload of one decode shard: its items and where each split's rows start."""

    items: tuple[DownsampleItem, ...]
    first_slot: dict[str, int]
    sizes: tuple[int, ...]
    crop: bool
    fast: bool
    state: str


@dataclass(frozen=True)
class WriteJob:
    """Payload of one output file: which slice of the shuffled order goes where."""

    state: str
    split: str
    size: int
    start: int
    end: int
    out: str
    fmt: str
    with_mean: bool
    with_labels: bool


ShardSource = Callable[[], Iterable[Iterable[Any]]]
"""A function returning the shards afresh on every call: the plan is walked twice (a scan,
then the decode tasks), and no pass keeps more than one shard's items."""


def iter_normalised(shards: Iterable[Iterable[Any]]) -> Iterator[tuple[Any, ...]]:
    """Items as the workers need them (anything with ``src``, ``split``, ``label`` and ``wnid``
    attributes), one non-empty shard at a time, splits and labels checked. The build planner's
    own items already have that shape and are kept as they are rather than copied."""
    for shard in shards:
        items = []
        for item in shard:
            split = str(item.split)
            if split not in OUTPUT_SPLITS:
                raise UserError(f"split {split!r} of {item.src} is not one of {OUTPUT_SPLITS}")
            label = None if split == "unsup" else item.label
            if split != "unsup" and label is None:
                raise UserError(f"{item.src}: a {split} image needs a label")
            if isinstance(item, PlanItem) and (split != "unsup" or item.label is None):
                items.append(item)
                continue
            items.append(DownsampleItem(str(item.src), split,
                                        None if label is None else int(label),
                                        getattr(item, "wnid", None)))
        if items:
            yield tuple(items)


@dataclass
class PlanScan:
    """What the run needs to know about the whole plan, in memory that does not hold items:
    per shard, where each split's rows start; per split, the slot count and the labels
    (8 bytes an image)."""

    fingerprint: str
    first_slots: list[dict[str, int]]
    shard_lengths: list[int]
    n_slots: dict[str, int]
    labels: dict[str, array.array]


def scan_plan(source: ShardSource, settings: dict) -> PlanScan:
    """One streaming pass: the fingerprint a resumed run must share with the killed one (the
    items and every setting), slot offsets and labels."""
    h = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
    next_slot: Counter[str] = Counter()
    firsts, lengths = [], []
    labels = {split: array.array("q") for split in OUTPUT_SPLITS if split != "unsup"}
    for items in iter_normalised(source()):
        h.update(b"\x00shard")
        firsts.append({split: next_slot[split] for split in OUTPUT_SPLITS})
        lengths.append(len(items))
        for item in items:
            h.update(f"{item.src}\t{item.split}\t{item.label}\n".encode("utf-8", "surrogateescape"))
            next_slot[item.split] += 1
            if item.split != "unsup":
                labels[item.split].append(item.label)
    return PlanScan(h.hexdigest(), firsts, lengths, dict(next_slot), labels)


def _open_state(state: Path, fingerprint: str, resume: bool) -> None:
    stamp = state / "fingerprint.txt"
    if resume and state.is_dir():
        if not stamp.is_file() or stamp.read_text().strip() != fingerprint:
            raise UserError(
                "--resume: the unfinished run used different images or settings", path=state,
                fix="rerun with exactly the same arguments, or drop --resume to start over")
        remove_stale_tmp(state)
        return
    if state.exists():
        shutil.rmtree(state)
    state.mkdir(parents=True)
    stamp.write_text(fingerprint + "\n")


# --------------------------------------------------------------------------- phase 1: decode


def decode_shard(task: ShardTask) -> dict:
    """Worker: decode each item once, write its rows for every size into its slot.

    Returns only small metadata: per-item failures (split, slot within the shard's part of the
    split, path, reason) and conversion notes (path, note).
    Rows of a failed item stay zero (the buffer starts zeroed), so a rerun after a kill
    rewrites the whole slot range identically.
    """
    job: DecodeJob = task.payload
    state = Path(job.state)
    by_split: dict[str, list[int]] = {}
    for i, item in enumerate(job.items):
        by_split.setdefault(item.split, []).append(i)
    failed: list[list] = []
    notes: list[list] = []
    rows = {(split, s): np.zeros((len(idx), 3 * s * s), dtype=np.uint8)
            for split, idx in by_split.items() for s in job.sizes}
    for split, indices in by_split.items():
        for local, i in enumerate(indices):
            try:
                resized, note = downsample_file(job.items[i].src, job.sizes, crop=job.crop,
                                                fast=job.fast)
            except BadImage as e:
                failed.append([split, local, job.items[i].src, e.reason])
                continue
            if note:
                notes.append([job.items[i].src, note])
            for s, row in resized.items():
                rows[(split, s)][local] = row
    for (split, s), block in rows.items():
        _write_slots(_row_file(state, split, s), block, job.first_slot[split])
    return {"n": len(job.items), "failed": failed, "notes": notes}


def _write_slots(path: Path, block: np.ndarray, first_slot: int) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        offset = first_slot * block.shape[1]
        view = memoryview(block).cast("B")
        written = 0
        while written < len(view):
            written += os.pwrite(fd, view[written:], offset + written)
    finally:
        os.close(fd)


def _decode_tasks(source: ShardSource, scan: PlanScan, sizes: tuple[int, ...], crop: bool,
                  fast: bool, state: Path) -> Iterator[ShardTask]:
    """Decode tasks, made as joblib asks for them: only the shards in flight hold items."""
    for k, items in enumerate(iter_normalised(source())):
        job = DecodeJob(items, scan.first_slots[k], sizes, crop, fast, str(state))
        yield ShardTask(f"decode-{k:06d}", job, weight=len(items))


# --------------------------------------------------------------------------- phase 2: mean


def train_mean(path: Path, width: int, valid: np.ndarray) -> np.ndarray:
    """``np.mean(all_train_rows, axis=0)`` bit for bit, reading the row file in chunks.

    numpy sums uint8 rows into float64 and divides by n; every partial sum is an integer below
    2**53, so it is exact in any order, and int64 sums converted once give the same bits.
    """
    total = np.zeros(width, dtype=np.int64)
    rows_per_chunk = max(1, MEAN_CHUNK_BYTES // width)
    n_slots = len(valid)
    with open(path, "rb") as f:
        for start in range(0, n_slots, rows_per_chunk):
            count = min(rows_per_chunk, n_slots - start)
            chunk = np.fromfile(f, dtype=np.uint8, count=count * width).reshape(count, width)
            total += chunk.sum(axis=0, dtype=np.int64)
            skipped = ~valid[start:start + count]
            if skipped.any():  # zero-filled slots of broken files; subtract to be exact anyway
                total -= chunk[skipped].sum(axis=0, dtype=np.int64)
    n = int(valid.sum())
    return total.astype(np.float64) / n


# --------------------------------------------------------------------------- phase 3: write


def write_batch(task: ShardTask) -> dict:
    """Worker: stream one output file (atomically) from the row file in shuffled order."""
    job: WriteJob = task.payload
    state = Path(job.state)
    width = 3 * job.size * job.size
    order = np.load(state / f"order-{job.split}.npy", mmap_mode="r")
    rows = RowSource(_row_file(state, job.split, job.size), width, order[job.start:job.end])
    labels = None
    if job.with_labels:
        labels = np.load(state / f"labels-{job.split}.npy", mmap_mode="r")[job.start:job.end]
    mean = np.load(state / f"mean-{job.size}.npy") if job.with_mean else None
    with atomic_open(job.out, "wb") as f:
        WRITERS[job.fmt](f, rows, labels, mean)
    return with_files({"file": job.out, "rows": job.end - job.start}, [job.out])


# --------------------------------------------------------------------------- entry point


def downsample_dataset(
    shards: Iterable[Iterable[Any]],
    out_root: Path,
    sizes: Sequence[int],
    *,
    info: DatasetInfo,
    fmt: str = "pickle",
    seed: int = 0,
    batches: int = 10,
    crop: bool = False,
    fast: bool = False,
    n_jobs: int | None = None,
    resume: bool = False,
    keep_state: bool = False,
    quiet: bool = False,
    label_base: str | None = None,
    state_dir: Path | None = None,
    executor: Executor | None = None,
) -> dict:
    """Make ``<out_root>/<info.name>_<s>x<s>/`` for every size: ``train_data_batch_1..N``,
    ``val_data`` (and ``unsup_data`` for unlabelled images), ``batches.meta`` and the sidecar.

    ``shards``: lists of items with ``src``, ``split``, ``label`` (0-based in ``info.classes``
    order) and ``wnid``, or a function returning them afresh on each call (then memory holds
    only the shards being decoded, not the plan's items); written labels are ``label + 1``
    (for ImageNet-1k in map_clsloc order these are the devkit ids). ``label_base`` documents
    the class order in the metadata. Returns a summary: counts, files, skipped images with
    reasons, conversion notes.
    """
    sizes_t = _check_args(sizes, fmt, batches)
    out_root = Path(out_root)
    if callable(shards):
        source: ShardSource = shards
    else:  # a one-pass iterable: it has to be kept (pass a function to keep memory flat)
        kept = list(shards)
        source = lambda: kept  # noqa: E731
    settings = {"sizes": sizes_t, "crop": crop, "fast": fast, "fmt": fmt, "seed": seed,
                "batches": batches, "name": info.name}
    scan = scan_plan(source, settings)
    if not scan.shard_lengths:
        raise UserError("no images to downsample", fix="check --src and the recipe's classes")
    check_batches(batches, scan.n_slots.get("train", 0))
    state = Path(state_dir) if state_dir else out_root / STATE_DIRNAME / f"downsample-{info.name}"
    _open_state(state, scan.fingerprint, resume)

    n_slots = scan.n_slots
    for split, n in n_slots.items():
        for s in sizes_t:
            _prepare_row_file(_row_file(state, split, s), n, 3 * s * s)
    decoded = {task.shard_id: result for task, result in run_shards(
        _decode_tasks(source, scan, sizes_t, crop, fast, state), decode_shard,
        state_dir=state / "done-decode", n_jobs=n_jobs, resume=resume, desc="downsample",
        total_weight=sum(scan.shard_lengths), quiet=quiet, prefer="threads",
        executor=executor)}
    failed_slots, skipped, repaired = _collect_failures(scan, decoded)

    counts = _save_orders(state, scan, failed_slots, seed)
    if not counts.get("train") and not counts.get("val"):
        shown = "\n    ".join(f"{s['path']}: {s['reason']}" for s in skipped[:10])
        more = f"\n    ... and {len(skipped) - 10} more" if len(skipped) > 10 else ""
        remove_state(state)  # nothing to resume: the row files would only take disk space
        raise UserError(f"every image failed to decode ({len(skipped)} images); nothing to "
                        f"write:\n    {shown}{more}",
                        fix="check that --src points at the images and that they are readable")
    check_batches(batches, counts.get("train", 0))  # skipped images may leave fewer
    valid_train = _valid_mask(n_slots.get("train", 0), failed_slots.get("train", set()))
    for s in sizes_t:
        if counts.get("train"):
            # Where the row file is: a cluster's worker reads it, only the mean comes back.
            mean = (executor.call if executor else _call)(
                train_mean, _row_file(state, "train", s), 3 * s * s, valid_train)
            np.save(state / f"mean-{s}.npy", mean)

    write_tasks = list(_write_tasks(state, out_root, info.name, sizes_t, counts, fmt, batches))
    list(run_shards(write_tasks, write_batch, state_dir=state / "done-write", n_jobs=n_jobs,
                    resume=resume, desc="write", total_weight=len(write_tasks), quiet=quiet,
                    unit="file", prefer="threads", executor=executor))
    for s in sizes_t:  # a write retried after its worker died left that attempt's temporary
        remove_stale_tmp(out_root / output_dir_name(info.name, s))

    summary = _finish(out_root, info, sizes_t, counts, fmt, batches, skipped, repaired, settings,
                      label_base)
    if not keep_state:  # a caller that writes its own reports removes it after them
        remove_state(state)
    return summary


def _call(fn: Callable[..., Any], *args: Any) -> Any:
    return fn(*args)


def remove_state(state: Path) -> None:
    """Delete a finished run's state, and its parent if no other run's state is left in it."""
    shutil.rmtree(state, ignore_errors=True)
    with contextlib.suppress(OSError):
        state.parent.rmdir()


def _check_args(sizes: Sequence[int], fmt: str, batches: int) -> tuple[int, ...]:
    if fmt not in FORMATS:
        raise UserError(f"unknown downsampled format {fmt!r}", fix="use --format pickle or npz")
    if not sizes:
        raise UserError("no --size given", fix="pass e.g. --size 32 (8, 16, 32, 64 published)")
    bad = [s for s in sizes if not MIN_SIZE <= int(s) <= MAX_SIZE]
    if bad:
        raise UserError(f"size {bad[0]} is out of range",
                        fix=f"sizes are square sides from {MIN_SIZE} to {MAX_SIZE} "
                            "(published: 8, 16, 32, 64)")
    if batches < 1:
        raise UserError(f"--batches {batches}: need at least 1 train file", fix="e.g. --batches 10")
    return tuple(sorted({int(s) for s in sizes}))


def check_batches(batches: int, train_images: int) -> None:
    """Every train file must hold at least one image: more files than train images would write
    empty batches (and an absurd --batches, millions of files until the disk is full)."""
    if train_images and batches > train_images:
        raise UserError(f"--batches {batches} is more than the {train_images} train images: "
                        "some train_data_batch files would be empty",
                        fix=f"pass --batches {min(10, train_images)} (at most {train_images})")


def _collect_failures(scan: PlanScan, decoded: dict[str, dict]
                      ) -> tuple[dict[str, set[int]], list[dict], list[dict]]:
    """Turn per-shard failure lists into global slot numbers per split; list conversions.
    Shards are taken in plan order, so the report lists them the same way on every run."""
    failed: dict[str, set[int]] = {}
    skipped: list[dict] = []
    repaired: list[dict] = []
    for shard_id in sorted(decoded):
        result = decoded[shard_id]
        first = scan.first_slots[int(shard_id.rsplit("-", 1)[1])]
        repaired.extend({"path": src, "what": note} for src, note in result["notes"])
        for split, local, src, reason in result["failed"]:
            failed.setdefault(split, set()).add(first[split] + local)
            skipped.append({"path": src, "split": split, "reason": reason})
    return failed, skipped, repaired


def _valid_mask(n: int, failed: set[int]) -> np.ndarray:
    mask = np.ones(n, dtype=bool)
    if failed:
        mask[np.fromiter(failed, dtype=np.int64)] = False
    return mask


def _save_orders(state: Path, scan: PlanScan, failed: dict[str, set[int]], seed: int
                 ) -> dict[str, int]:
    """Per split: the output order of slots (train shuffled with ``seed``; val and unsup in
    plan order, as the published val file is unshuffled) and the labels in that order."""
    counts = {}
    for split, n in scan.n_slots.items():
        valid = np.flatnonzero(_valid_mask(n, failed.get(split, set())))
        if split == "train":
            valid = valid[np.random.default_rng(seed).permutation(len(valid))]
        np.save(state / f"order-{split}.npy", valid)
        if split != "unsup":
            labels = np.frombuffer(scan.labels[split], dtype=np.int64, count=n)
            np.save(state / f"labels-{split}.npy", labels[valid] + 1)
        counts[split] = len(valid)
    return counts


def _write_tasks(state: Path, out_root: Path, name: str, sizes: tuple[int, ...],
                 counts: dict[str, int], fmt: str, batches: int) -> Iterator[ShardTask]:
    for s in sizes:
        out_dir = out_root / output_dir_name(name, s)
        out_dir.mkdir(parents=True, exist_ok=True)
        for split in OUTPUT_SPLITS:
            n = counts.get(split, 0)
            if not n:
                continue
            n_files = batches if split == "train" else 1
            names = batch_file_names(split, n_files, fmt)
            for file_name, (start, end) in zip(names, batch_bounds(n, n_files), strict=True):
                job = WriteJob(str(state), split, s, start, end, str(out_dir / file_name), fmt,
                               with_mean=split == "train", with_labels=split != "unsup")
                yield ShardTask(f"write-{s}-{Path(file_name).stem}", job, weight=1)


_STALE_OUTPUT = re.compile(r"^(train_data_batch_\d+|val_data|unsup_data)(\.npz)?$")


def _finish(out_root: Path, info: DatasetInfo, sizes: tuple[int, ...], counts: dict[str, int],
            fmt: str, batches: int, skipped: list[dict], repaired: list[dict], settings: dict,
            label_base: str | None) -> dict:
    """Remove files a previous run with other settings left, write metadata, summarise."""
    per_size = {}
    for s in sizes:
        out_dir = out_root / output_dir_name(info.name, s)
        expected = {n for split, c in counts.items() if c
                    for n in batch_file_names(split, batches if split == "train" else 1, fmt)}
        for old in out_dir.iterdir():
            if _STALE_OUTPUT.match(old.name) and old.name not in expected:
                old.unlink()
        write_meta(out_dir, info, s, counts, batches, label_base)
        extra = dict(info.extra, downsample={**settings, "size": s, "label_base": 1,
                                             "label_order": label_base or info.label_order,
                                             "skipped": len(skipped)})
        DatasetInfo(info.name, info.classes, info.label_order, extra).save(
            out_dir, dict(counts), fmt="pickle")  # an empty split is listed with 0
        per_size[s] = {"dir": str(out_dir), "files": sorted(expected)}
    return {"counts": counts, "sizes": per_size, "format": fmt, "seed": settings["seed"],
            "batches": batches, "skipped": sorted(skipped, key=lambda r: r["path"]),
            "repaired": sorted(repaired, key=lambda r: r["path"])}


def write_meta(out_dir: Path, info: DatasetInfo, size: int, counts: dict[str, int],
               batches: int, label_base: str | None) -> None:
    """``batches.meta`` like CIFAR-10's (``label_names``, ``num_cases_per_batch``,
    ``num_vis``) plus ``wnids``; label ``k`` in the data files is ``label_names[k - 1]``.
    Plain lists and ints only, so any Python 3 reads it without numpy."""
    meta = {
        "label_names": info.class_names,
        "wnids": info.wnids,
        "label_base": 1,
        "label_order": label_base or info.label_order,
        "num_cases_per_batch": counts.get("train", 0) // batches,
        "num_vis": 3 * size * size,
        "image_size": size,
        "counts": {k: v for k, v in counts.items() if v},
    }
    with atomic_open(out_dir / META_NAME, "wb") as f:
        pickle.dump(meta, f, protocol=3)


# --------------------------------------------------------------------------- build glue


def build_downsampled(plan: BuildPlan, opts: Any, command: str | None = None) -> dict:
    """``imgtools build ... --format pickle|npz``: run :func:`downsample_dataset` on a
    :class:`imgtools.plan.BuildPlan` with the build's options, through the same output
    protocol as every build (:mod:`imgtools.pipeline.output`), and write ``build-info.json``
    (the build report: counts, skipped files with reasons, conversions) in each output."""
    if any(s is None for s in opts.sizes):
        raise UserError("pickle/npz need a square size such as --size 32, not 'full'",
                        fix=f"pass --size 8, 16, 32 or 64 (any side from {MIN_SIZE} to {MAX_SIZE})")
    name = plan.recipe.output_name or plan.recipe.name
    sizes = sorted({int(s) for s in opts.sizes})
    batches = int(opts.format_options.get("batches", 10))
    # Bad arguments fail before --overwrite deletes anything.
    _check_args(sizes, opts.fmt, batches)
    check_batches(batches, len(plan.items.get("train", ())))
    out_dirs = [Path(opts.out) / output_dir_name(name, s) for s in sizes]
    settings = {"command": "build", "recipe": plan.recipe.name, "split": plan.split_mode,
                "seed": plan.seed, "sizes": sizes, "format": opts.fmt, "exact": opts.exact,
                "shard_size": opts.shard_size, "format_options": opts.format_options,
                "source": str(plan.source.root), "plan": plan.digest()}
    inputs = locator_inputs(item.src for split in OUTPUT_SPLITS
                            for item in plan.items.get(split, ()))
    with claim_outputs(out_dirs, settings, inputs, resume=opts.resume,
                       overwrite=opts.overwrite) as run:
        if run.complete:
            return already_complete(out_dirs)
        info = DatasetInfo(name, plan.info.classes, plan.info.label_order, dict(plan.info.extra))
        started = time.time()
        summary = downsample_dataset(
            lambda: (items for _shard_id, items in plan.shards(opts.shard_size, False)),
            run.folder, sizes,
            info=info, fmt=opts.fmt, seed=plan.seed, batches=batches,
            crop=bool(opts.format_options.get("crop", False)), fast=not opts.exact,
            n_jobs=opts.n_jobs, resume=run.resumed, quiet=opts.quiet,
            label_base=plan.info.label_order, state_dir=run.work, keep_state=True,
            executor=opts.executor)
        seconds = time.time() - started
        report = run_report(
            tool="imgtools", tool_version=__version__, kind="build",
            command=command or " ".join(sys.argv),
            recipe=plan.recipe.name, source=str(plan.source.root),
            options={"split": plan.split_mode, "seed": plan.seed, "sizes": sizes,
                     "format": opts.fmt, "exact": opts.exact, **opts.format_options},
            classes=[{"wnid": c.wnid, "name": c.name} for c in info.classes],
            label_order=plan.info.label_order, labels="1-based (label index + 1)",
            planned={s: len(v) for s, v in plan.items.items()},
            totals=summary["counts"], skipped=summary["skipped"],
            repaired=summary["repaired"], missing_from_tree=plan.missing,
            ignored_files=sorted(set(plan.source.ignored)),
            seconds=round(seconds, 3),
            images_per_second=(round(sum(summary["counts"].values()) / seconds, 1)
                               if seconds > 0 else None),
        )
        for s, out_dir in zip(sizes, out_dirs, strict=True):
            write_croissant(run.staging(out_dir), plan.info, opts.fmt, list(summary["counts"]))
            write_report(run.staging(out_dir), dict(report, size=s, path=str(out_dir),
                                                    files=summary["sizes"][s]["files"]))
        remove_state(run.work)  # the row files are not part of any output
        run.publish()
    report["outputs"] = [str(d) for d in out_dirs]
    return report
