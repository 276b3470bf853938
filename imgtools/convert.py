"""The conversion engine: any format in, any format out, streamed, sharded and resumable.

A conversion is planned before anything is written, so that the output is the same however many
workers run it and however often it is resumed:

1. the input format lists its shards (files) and each is *scanned* for the byte size of every
   record (formats that can do this cheaply - TFRecord framing, tar headers, Parquet metadata -
   implement ``scan_shard``; any other format is read once);
2. the records of every split, in stored order, are cut into output shards by record count and
   byte size (the output format's defaults, or the user's ``shard_records`` / ``shard_bytes``);
   each output shard is a list of slices ``(input shard, start, stop)``;
3. output shards run in parallel through :func:`imgtools.runner.run_shards`; each worker reads
   its slices and writes one shard through the output format's writer, which publishes it
   atomically. A done-marker per shard makes ``resume`` skip finished shards.

Records pass through untouched (same encoded bytes, label, split, file name) unless ``size`` asks
for a resize. Memory is bounded by one output shard's buffering (Parquet row groups) plus the
plan, which holds a few numbers per output shard, never per image.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
import shutil
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

from imgtools.atomic import remove_stale_tmp
from imgtools.errors import UserError
from imgtools.formats import detect_format, get_format
from imgtools.formats.base import Format, InputShard
from imgtools.records import DATASET_META, SPLITS, DatasetInfo, Record
from imgtools.runner import ShardTask, resolve_jobs, run_shards

STATE_DIR = ".imgtools-convert"
"""Hidden folder in the output holding the plan and per-shard done-markers until the run ends."""

# ----------------------------------------------------------------------------------------------
# Helpers shared by the format modules (kept here so formats stay independent of each other).
# ----------------------------------------------------------------------------------------------

_SPLIT_WORDS = {
    "train": "train", "training": "train",
    "val": "val", "valid": "val", "validation": "val", "dev": "val",
    "unsup": "unsup", "unlabeled": "unsup", "unlabelled": "unsup", "unsupervised": "unsup",
    "test": "test",
}


def split_from_name(relpath: str, default: str = "train") -> str:
    """The split a file holds, from the first split-like word in its relative path.

    Covers our own names (``train-000000.tar``, ``val.tfrecord-00000-of-00002``), TFDS
    (``imagenette-validation.tfrecord-...``), Inception (``validation-00000-of-00128``), Hugging
    Face (``data/validation-00000-of-00001.parquet``) and the Kaggle flowers layout
    (``val/00-224x224-232.tfrec``). ``validation``/``valid`` map to our ``val``.
    """
    for word in re.split(r"[/\\._\-\s]+", relpath.lower()):
        if word in _SPLIT_WORDS:
            return _SPLIT_WORDS[word]
    return default


def split_sort_key(split: str) -> tuple[int, str]:
    """Canonical split order: train, val, unsup, then anything else alphabetically."""
    return (SPLITS.index(split) if split in SPLITS else len(SPLITS), split)


_MAGIC = (
    (b"\xff\xd8\xff", "jpg"),
    (b"\x89PNG\r\n\x1a\n", "png"),
    (b"GIF87a", "gif"),
    (b"GIF89a", "gif"),
    (b"BM", "bmp"),
)


def image_ext(data: bytes, filename: str | None = None) -> str:
    """File extension for encoded image bytes, from their magic number (not from the file name:
    ImageNet has a PNG named ``.JPEG``). WebDataset decoders pick their codec by this."""
    head = bytes(data[:12])
    for magic, ext in _MAGIC:
        if head.startswith(magic):
            return ext
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    if filename and "." in filename:
        return filename.rsplit(".", 1)[1].lower()
    return "bin"


def dataset_root(path: Path) -> Path:
    """The folder holding a dataset's sidecar: the path itself, or a file's parent."""
    return path if path.is_dir() else path.parent


def info_from_labels(path: Path, seen: Iterable[tuple[object, str | None, str | None]]
                     ) -> DatasetInfo:
    """The class list of foreign data from what its records say: ``seen`` yields ``(label,
    class name or None, wnid or None)`` per record; the first name and wnid met for a label
    win. Used by the record formats that carry labels inline (TFRecord, WebDataset)."""
    labels: set[int] = set()
    names: dict[int, str] = {}
    wnids: dict[int, str] = {}
    for label, name, wnid in seen:
        if isinstance(label, int) and label >= 0:
            labels.add(label)
            if name:
                names.setdefault(label, str(name))
            if wnid:
                wnids.setdefault(label, str(wnid))
    return DatasetInfo(name=dataset_root(path).name,
                       classes=generic_classes(labels, names, wnids),
                       label_order="as stored (integer labels)")


def generic_classes(labels: Iterable[int], names: dict[int, str] | None = None,
                    wnids: dict[int, str] | None = None) -> list:
    """A class list for foreign data that carries only integer labels (0..max seen).

    Ids are zero-padded label numbers (``007``) so folder output sorts in label order; names come
    from the data when it has them (TF-slim ``image/class/text``, WebDataset ``.json``)."""
    from imgtools.records import ClassInfo

    labels = [x for x in labels if x is not None and x >= 0]
    if not labels:
        return []
    count = max(labels) + 1
    width = max(3, len(str(count - 1)))
    names, wnids = names or {}, wnids or {}
    classes = []
    for i in range(count):
        wnid = wnids.get(i) or f"{i:0{width}d}"
        classes.append(ClassInfo(wnid=wnid, name=names.get(i) or wnid))
    return classes


def parse_size(text: str | int | None) -> int | None:
    """``"500MB"``, ``"1.5GB"``, ``"2GiB"`` or a plain number of bytes -> bytes (decimal units,
    as ``datasets`` uses for ``max_shard_size``). ``0``/``None`` means no limit."""
    if text is None:
        return None
    if isinstance(text, int):
        return text or None
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([kmgt]?i?b?)\s*", str(text).lower())
    if not m:
        raise UserError(f"not a size: {text!r}", fix="write it like 500MB, 1.5GB, 2GiB or 1000000")
    number, unit = float(m.group(1)), m.group(2).rstrip("b")
    scale = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12,
             "ki": 2**10, "mi": 2**20, "gi": 2**30, "ti": 2**40}[unit]
    return int(number * scale) or None


# ----------------------------------------------------------------------------------------------
# Resizing (only when asked): shortest side to ``size``, aspect ratio kept, as Imagenette does.
# ----------------------------------------------------------------------------------------------


_NON_JPEG_SUFFIXES = {"png", "webp", "bmp", "gif", "tif", "tiff", "ppm"}


def resize_record(record: Record, size: int) -> Record:
    """Resize one record exactly as ``imgtools build --size`` does (:mod:`imgtools.transform`:
    shortest side to ``size``, aspect kept, never upscaled, RGB JPEG out; an RGB JPEG already
    small enough keeps its exact bytes). A file that cannot be decoded is an error naming it:
    a conversion has no "skip and report" list, so nothing may vanish from it silently."""
    from imgtools.errors import CorruptDataError
    from imgtools.transform import BadImage, RenderOptions, render

    try:
        (data,), _note = render(record.image, RenderOptions(sizes=(size,)))
    except BadImage as e:
        raise CorruptDataError(f"cannot resize image {record.filename!r} (split "
                               f"{record.split}): {e.reason}",
                               fix="run `imgtools verify` on the input, or convert without "
                                   "--size to pass the bytes through untouched") from e
    if data is record.image:
        return record
    filename = record.filename
    stem, dot, ext = filename.rpartition(".")
    if dot and ext.lower() in _NON_JPEG_SUFFIXES:  # cifar-0001.png came in, a JPEG goes out
        filename = f"{stem}.jpg"
    return replace(record, image=data, filename=filename)


# ----------------------------------------------------------------------------------------------
# Planning
# ----------------------------------------------------------------------------------------------

DEFAULT_TASK_RECORDS = 1000
"""Records per task when the output format has no shards of its own (folder): enough to
amortise joblib's per-task overhead, small enough to spread over the workers."""


@dataclass(frozen=True)
class Slice:
    """Records ``start:stop`` of input shard ``shard``; ``offset``, when the scan knew it, is
    the byte offset of record ``start``, so a reader can seek there instead of walking."""

    shard: InputShard
    start: int
    stop: int
    offset: int | None = None


@dataclass(frozen=True)
class OutputShard:
    split: str
    index: int
    num_shards: int
    slices: tuple[Slice, ...]
    records: int
    nbytes: int


def scan_sizes(fmt: Format, shard: InputShard, info: DatasetInfo
               ) -> tuple[list[int], list[int] | None]:
    """Byte size of every record of ``shard``, in order, and where each starts in the file when
    the format can say (``scan_records``); cheap when the format can scan."""
    scan_records = getattr(fmt, "scan_records", None)
    if scan_records is not None:
        return scan_records(shard, info)
    scan = getattr(fmt, "scan_shard", None)
    if scan is not None:
        return list(scan(shard, info)), None
    return [len(r.image) for r in fmt.read_shard(shard, info)], None


def read_slice(fmt: Format, piece: Slice, info: DatasetInfo) -> Iterator[Record]:
    """Records ``start:stop`` of a shard; formats that can seek implement ``read_range`` (and
    take the slice's byte ``offset`` when the scan recorded one)."""
    read_range = getattr(fmt, "read_range", None)
    if read_range is not None:
        if piece.offset is not None:
            return read_range(piece.shard, info, piece.start, piece.stop, offset=piece.offset)
        return read_range(piece.shard, info, piece.start, piece.stop)
    return itertools.islice(fmt.read_shard(piece.shard, info), piece.start, piece.stop)


def cut_shards(scans: Iterable[tuple], max_records: int | None, max_bytes: int | None
               ) -> list[tuple[list[Slice], int, int]]:
    """Cut one split's records, in order, into output shards of at most ``max_records`` records
    and ``max_bytes`` image bytes (a single bigger image still gets a shard). ``scans`` holds
    ``(shard, sizes)`` or ``(shard, sizes, offsets)`` per input shard. Returns
    ``(slices, records, bytes)`` per output shard."""
    shards: list[tuple[list[Slice], int, int]] = []
    slices: list[Slice] = []
    count = nbytes = 0
    for shard, sizes, *rest in scans:
        offsets = rest[0] if rest else None

        def piece(start: int, stop: int, shard=shard, offsets=offsets) -> Slice:
            return Slice(shard, start, stop, offsets[start] if offsets else None)

        start = 0
        for i, size in enumerate(sizes):
            full = (max_records and count >= max_records) or (
                max_bytes and nbytes + size > max_bytes)
            if count and full:
                if i > start:
                    slices.append(piece(start, i))
                shards.append((slices, count, nbytes))
                slices, count, nbytes, start = [], 0, 0, i
            count += 1
            nbytes += size
        if len(sizes) > start:
            slices.append(piece(start, len(sizes)))
    if count:
        shards.append((slices, count, nbytes))
    return shards


def _scan_one(fmt_name: str, shard: InputShard, info: DatasetInfo
              ) -> tuple[list[int], list[int] | None]:
    return scan_sizes(get_format(fmt_name), shard, info)


def plan_conversion(src_fmt: Format, shards: list[InputShard], info: DatasetInfo,
                    max_records: int | None, max_bytes: int | None, n_jobs: int,
                    quiet: bool = True) -> list[OutputShard]:
    """Scan the input and cut every split into output shards (see the module docstring)."""
    from joblib import Parallel, delayed
    from tqdm import tqdm

    for shard in shards:
        if not shard.split:
            raise UserError(f"the {src_fmt.name} reader gave no split for this input shard",
                            path=shard.path, fix="report this as a bug in imgtools")
    by_split: dict[str, list[InputShard]] = {}
    for shard in shards:
        by_split.setdefault(shard.split, []).append(shard)
    plan: list[OutputShard] = []
    parallel = Parallel(n_jobs=n_jobs if len(shards) > 1 else 1, return_as="generator")
    for split in sorted(by_split, key=split_sort_key):
        group = by_split[split]
        sizes = parallel(delayed(_scan_one)(src_fmt.name, s, info) for s in group)
        scans = ((shard, *scan) for shard, scan in zip(
            group, tqdm(sizes, total=len(group), desc=f"scan {split}", unit="file",
                        disable=quiet), strict=True))
        cuts = cut_shards(scans, max_records, max_bytes)
        plan.extend(OutputShard(split, i, len(cuts), tuple(sl), n, b)
                    for i, (sl, n, b) in enumerate(cuts))
    return plan


# ----------------------------------------------------------------------------------------------
# Workers
# ----------------------------------------------------------------------------------------------


def _shard_id(out: OutputShard) -> str:
    return f"{out.split}-{out.index:05d}-of-{out.num_shards:05d}"


def _convert_shard(task: ShardTask) -> dict:
    """Worker: read the slices of one output shard and write it (module-level: picklable)."""
    p = task.payload
    src_fmt, dst_fmt = get_format(p["src_format"]), get_format(p["to"])
    out: OutputShard = p["shard"]
    info: DatasetInfo = p["info"]
    size = p["size"]
    records = bytes_in = bytes_out = 0
    writer = dst_fmt.open_writer(Path(p["dst"]), info, out.split, out.index, out.num_shards,
                                 **p["options"])
    try:
        for piece in out.slices:
            for record in read_slice(src_fmt, piece, info):
                bytes_in += len(record.image)
                if size:
                    record = resize_record(record, size)
                writer.write(record)
                records += 1
                bytes_out += len(record.image)
        if records != out.records:
            raise UserError(
                f"read {records} records where the scan counted {out.records}",
                path=out.slices[0].shard.path if out.slices else None,
                fix="the input changed during the conversion; run it again")
    except BaseException:
        writer.abort()
        raise
    files = writer.close()
    return {"split": out.split, "records": records, "bytes_in": bytes_in,
            "bytes_out": bytes_out, "files": [str(f) for f in files]}


# ----------------------------------------------------------------------------------------------
# The entry point
# ----------------------------------------------------------------------------------------------


def _prepare_dst(dst: Path, src: Path, resume: bool, overwrite: bool) -> None:
    """Refuse to mix a new dataset into existing files; ``overwrite`` only deletes what is
    recognisably an imgtools output, so a typo can never wipe a user's folder."""
    if dst.resolve() == src.resolve() or src.resolve() in dst.resolve().parents:
        raise UserError("the output would be written inside the input", path=dst,
                        fix="choose an output folder outside the input dataset")
    if dst.resolve() in src.resolve().parents:  # --overwrite would delete the input with it
        raise UserError("the input is inside the output folder", path=dst,
                        fix="choose an output folder that does not contain the input")
    if not dst.exists():
        return
    if not dst.is_dir():
        raise UserError("output exists and is not a folder", path=dst, fix="choose another path")
    if not any(dst.iterdir()) or resume:
        return
    if overwrite:
        if (dst / DATASET_META).is_file() or (dst / STATE_DIR).is_dir():
            shutil.rmtree(dst)
            return
        raise UserError("--overwrite refuses to delete a folder imgtools did not write",
                        path=dst, fix="delete it yourself or choose another output folder")
    raise UserError("output folder exists and is not empty", path=dst,
                    fix="choose a new folder, add --overwrite to replace an imgtools output, "
                        "or --resume to finish an interrupted run")


def _fingerprint(src: Path, src_name: str, to: str, size: int | None, options: dict,
                 plan: list[OutputShard]) -> str:
    """Identifies a run: resuming with other settings would mix two datasets."""
    desc = json.dumps({"src": str(src.resolve()), "from": src_name, "to": to, "size": size,
                       "options": {k: repr(v) for k, v in sorted(options.items())},
                       "shards": [(o.split, o.num_shards, o.records) for o in plan]},
                      sort_keys=True)
    return hashlib.sha256(desc.encode()).hexdigest()[:16]


def _check_resume(state: Path, fingerprint: str, resume: bool) -> None:
    from imgtools.atomic import atomic_write_text

    marker = state / "run.json"
    if resume and marker.is_file():
        previous = json.loads(marker.read_text()).get("fingerprint")
        if previous != fingerprint:
            raise UserError("--resume with different input or settings than the interrupted run",
                            path=state.parent,
                            fix="repeat the original command with --resume, or use --overwrite "
                                "to start over")
    if not resume and state.exists():
        shutil.rmtree(state)
    state.mkdir(parents=True, exist_ok=True)
    atomic_write_text(marker, json.dumps({"fingerprint": fingerprint}))


def convert(src: str | Path, dst: str | Path, to: str, *, n_jobs: int | None = None,
            size: int | None = None, resume: bool = False, overwrite: bool = False,
            quiet: bool = False, src_format: str | None = None,
            read_options: dict | None = None, shard_records: int | None = None,
            shard_bytes: int | str | None = None, **format_options) -> dict:
    """Convert the dataset at ``src`` (format detected, or ``src_format``) to format ``to`` in
    the new folder ``dst``.

    ``read_options`` go to the input reader (TFRecord: ``image_key``, ``label_key``,
    ``filename_key``). ``shard_records``/``shard_bytes`` cap output shards (defaults per format:
    ``FORMAT.default_shard_records``/``default_shard_bytes``); ``max_shard_bytes`` is accepted as
    an alias of ``shard_bytes`` (the ``datasets.push_to_hub`` spelling). Other
    ``format_options`` go to the output writer (TFRecord: ``schema``, ``compression``).

    Returns a summary: ``{"from", "to", "src", "dst", "splits": {split: records},
    "records", "bytes_in", "bytes_out", "shards", "seconds", "records_per_s", "mb_per_s"}``.
    """
    started = time.perf_counter()
    src, dst = Path(src), Path(dst)
    src_fmt = get_format(src_format) if src_format else detect_format(src)
    dst_fmt = get_format(to)
    if size is not None and size <= 0:
        raise UserError(f"--size must be a positive number of pixels, not {size}")
    if "max_shard_bytes" in format_options:
        shard_bytes = format_options.pop("max_shard_bytes")
    max_bytes = parse_size(shard_bytes) if shard_bytes is not None else getattr(
        dst_fmt, "default_shard_bytes", None)
    max_records = shard_records if shard_records is not None else getattr(
        dst_fmt, "default_shard_records", None)
    if not max_records and not max_bytes:
        max_records = DEFAULT_TASK_RECORDS
    _prepare_dst(dst, src, resume, overwrite)

    jobs = resolve_jobs(n_jobs)
    read_options = read_options or {}
    if read_options and src_fmt.name != "tfrecord":
        raise UserError(f"{', '.join(sorted(read_options))} apply to TFRecord input only, and "
                        f"this input is {src_fmt.name}", path=src, fix="drop them")
    info = src_fmt.read_info(src, **read_options)
    shards = src_fmt.input_shards(src, **read_options)
    plan = plan_conversion(src_fmt, shards, info, max_records, max_bytes, jobs, quiet)
    if not plan:
        raise UserError("the input holds no records", path=src,
                        fix="check that this is the dataset you meant; nothing was written")

    state = dst / STATE_DIR
    if resume and dst.is_dir():
        remove_stale_tmp(dst)  # temporary files of the interrupted run's unfinished shards
    options = dict(format_options)
    fingerprint = _fingerprint(src, src_fmt.name, dst_fmt.name, size,
                               {**options, **{f"read:{k}": v for k, v in read_options.items()}},
                               plan)
    _check_resume(state, fingerprint, resume)
    tasks = [ShardTask(_shard_id(o), {"src_format": src_fmt.name, "to": dst_fmt.name,
                                      "dst": str(dst), "shard": o, "info": info, "size": size,
                                      "options": options}, weight=o.records) for o in plan]
    counts: dict[str, int] = {}
    bytes_in = bytes_out = 0
    for _task, summary in run_shards(tasks, _convert_shard, state_dir=state, n_jobs=jobs,
                                     resume=resume, desc=f"{src_fmt.name} -> {dst_fmt.name}",
                                     total_weight=sum(o.records for o in plan), quiet=quiet):
        counts[summary["split"]] = counts.get(summary["split"], 0) + summary["records"]
        bytes_in += summary["bytes_in"]
        bytes_out += summary["bytes_out"]
    for shard in shards:  # a split whose input holds no record is listed with 0
        counts.setdefault(shard.split, 0)
    counts = {s: counts[s] for s in sorted(counts, key=split_sort_key)}
    dst_fmt.finalize(dst, info, counts)
    shutil.rmtree(state, ignore_errors=True)
    seconds = time.perf_counter() - started
    records = sum(counts.values())
    return {"from": src_fmt.name, "to": dst_fmt.name, "src": str(src), "dst": str(dst),
            "splits": counts, "records": records, "bytes_in": bytes_in, "bytes_out": bytes_out,
            "shards": len(plan), "classes": len(info.classes), "seconds": round(seconds, 3),
            "records_per_s": round(records / seconds, 1) if seconds else None,
            "mb_per_s": round(bytes_in / 1e6 / seconds, 1) if seconds else None}
