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

import functools
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

from imgtools import __version__
from imgtools.atomic import remove_stale_tmp
from imgtools.checksums import sha256_file
from imgtools.errors import CorruptDataError, UserError
from imgtools.executors.base import Executor
from imgtools.executors.local import LocalExecutor
from imgtools.formats import detect_format, get_format
from imgtools.formats.base import Format, InputShard
from imgtools.formats.common import parse_size, split_sort_key
from imgtools.pipeline.output import OutputRun, claim_outputs, tree_inputs
from imgtools.pipeline.report import (
    CHECKSUMS,
    already_complete,
    run_report,
    write_checksums,
    write_report,
)
from imgtools.records import DatasetInfo, Record
from imgtools.runner import ShardTask, resolve_jobs, run_shards, with_files
from imgtools.transform import BadImage, RenderOptions, render

# ----------------------------------------------------------------------------------------------
# Resizing (only when asked): shortest side to ``size``, aspect ratio kept, as Imagenette does.
# ----------------------------------------------------------------------------------------------


_NON_JPEG_SUFFIXES = {"png", "webp", "bmp", "gif", "tif", "tiff", "ppm"}


def resize_record(record: Record, size: int) -> Record:
    """Resize one record exactly as ``imgtools build --size`` does (:mod:`imgtools.transform`:
    shortest side to ``size``, aspect kept, never upscaled, RGB JPEG out; an RGB JPEG already
    small enough keeps its exact bytes). A file that cannot be decoded is an error naming it:
    a conversion has no "skip and report" list, so nothing may vanish from it silently."""

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


def read_slice(fmt: Format, piece: Slice, info: DatasetInfo) -> Iterator[Record]:
    """Records ``start:stop`` of a shard (seeking to the slice's byte ``offset`` when the scan
    recorded one)."""
    return fmt.read_range(piece.shard, info, piece.start, piece.stop, offset=piece.offset)


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


def _scan_one(fmt_name: str, info: DatasetInfo, shard: InputShard
              ) -> tuple[list[int], list[int] | None]:
    return get_format(fmt_name).scan_records(shard, info)


def plan_conversion(src_fmt: Format, shards: list[InputShard], info: DatasetInfo,
                    max_records: int | None, max_bytes: int | None, n_jobs: int,
                    quiet: bool = True, executor: Executor | None = None
                    ) -> list[OutputShard]:
    """Scan the input and cut every split into output shards (see the module docstring); the
    scans run on ``executor`` (default: this machine with ``n_jobs`` workers)."""
    from tqdm import tqdm

    for shard in shards:
        if not shard.split:
            raise UserError(f"the {src_fmt.name} reader gave no split for this input shard",
                            path=shard.path, fix="report this as a bug in imgtools")
    by_split: dict[str, list[InputShard]] = {}
    for shard in shards:
        by_split.setdefault(shard.split, []).append(shard)
    plan: list[OutputShard] = []
    executor = executor or LocalExecutor(n_jobs if len(shards) > 1 else 1)
    scan = functools.partial(_scan_one, src_fmt.name, info)
    for split in sorted(by_split, key=split_sort_key):
        group = by_split[split]
        sizes = executor.map(scan, group, tasks=len(group))
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
                                 **{**p["options"], "digests": True})
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
    root = Path(p["dst"])
    checksums = {str(f.relative_to(root)): writer.known_digests.get(f) or sha256_file(f)
                 for f in files}
    return with_files({"split": out.split, "records": records, "bytes_in": bytes_in,
                       "bytes_out": bytes_out, "checksums": [checksums]}, files)


# ----------------------------------------------------------------------------------------------
# The entry point
# ----------------------------------------------------------------------------------------------


def _check_paths(dst: Path, src: Path) -> None:
    """The output may neither sit inside the input nor contain it (``--overwrite`` would
    delete the input with it)."""
    if dst.resolve() == src.resolve() or src.resolve() in dst.resolve().parents:
        raise UserError("the output would be written inside the input", path=dst,
                        fix="choose an output folder outside the input dataset")
    if dst.resolve() in src.resolve().parents:
        raise UserError("the input is inside the output folder", path=dst,
                        fix="choose an output folder that does not contain the input")


def _settings(src: Path, src_name: str, to: str, size: int | None, options: dict,
              plan: list[OutputShard]) -> dict:
    """Every setting that decides the output's bytes (the inputs' identity is added by
    :func:`claim_outputs`)."""
    return {"command": "convert", "src": str(src.resolve()), "from": src_name, "to": to,
            "size": size, "options": {k: repr(v) for k, v in sorted(options.items())},
            "shards": [[o.split, o.num_shards, o.records] for o in plan]}


def _run_conversion(run: OutputRun, plan: list[OutputShard], src_fmt: Format, dst_fmt: Format,
                    info: DatasetInfo, size: int | None, options: dict, jobs: int, quiet: bool,
                    executor: Executor | None = None, input_splits: set[str] | None = None
                    ) -> tuple[dict[str, int], int, int]:
    """Write every output shard into the run's staging folder, then the format's metadata."""
    staging = run.stagings[0]
    tasks = [ShardTask(_shard_id(o), {"src_format": src_fmt.name, "to": dst_fmt.name,
                                      "dst": str(staging), "shard": o, "info": info,
                                      "size": size, "options": options}, weight=o.records)
             for o in plan]
    counts: dict[str, int] = {}
    bytes_in = bytes_out = 0
    for _task, summary in run_shards(tasks, _convert_shard, state_dir=run.markers, n_jobs=jobs,
                                     resume=run.resumed,
                                     desc=f"{src_fmt.name} -> {dst_fmt.name}",
                                     total_weight=sum(o.records for o in plan), quiet=quiet,
                                     executor=executor):
        counts[summary["split"]] = counts.get(summary["split"], 0) + summary["records"]
        bytes_in += summary["bytes_in"]
        bytes_out += summary["bytes_out"]
    remove_stale_tmp(staging)  # a task retried after its worker died left its temporaries
    for split in input_splits or ():  # a split whose input holds no record is listed with 0
        counts.setdefault(split, 0)
    counts = {s: counts[s] for s in sorted(counts, key=split_sort_key)}
    write_checksums([staging / CHECKSUMS], run.markers, (_shard_id(o) for o in plan))
    dst_fmt.finalize(staging, info, counts)
    return counts, bytes_in, bytes_out


def convert(src: str | Path, dst: str | Path, to: str, *, n_jobs: int | None = None,
            size: int | None = None, resume: bool = False, overwrite: bool = False,
            quiet: bool = False, src_format: str | None = None,
            read_options: dict | None = None, shard_records: int | None = None,
            shard_bytes: int | str | None = None, command: str | None = None,
            executor: Executor | None = None,
            **format_options) -> dict:
    """Convert the dataset at ``src`` (format detected, or ``src_format``) to format ``to`` in
    the new folder ``dst``.

    ``read_options`` go to the input reader (TFRecord: ``image_key``, ``label_key``,
    ``filename_key``). ``shard_records``/``shard_bytes`` cap output shards (defaults per format:
    ``FORMAT.default_shard_records``/``default_shard_bytes``); ``max_shard_bytes`` is accepted as
    an alias of ``shard_bytes`` (the ``datasets.push_to_hub`` spelling). ``executor`` runs the
    scan and the shards (default: this machine with ``n_jobs`` workers). Other
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
    read_options = read_options or {}
    src_fmt.check_options(read_options, "reader")
    dst_fmt.check_options(format_options)
    max_bytes = (parse_size(shard_bytes) if shard_bytes is not None
                 else dst_fmt.default_shard_bytes)
    max_records = (shard_records if shard_records is not None
                   else dst_fmt.default_shard_records)
    if not max_records and not max_bytes:
        max_records = DEFAULT_TASK_RECORDS
    _check_paths(dst, src)

    jobs = resolve_jobs(n_jobs)
    info = src_fmt.read_info(src, **read_options)
    shards = src_fmt.input_shards(src, **read_options)
    plan = plan_conversion(src_fmt, shards, info, max_records, max_bytes, jobs, quiet, executor)
    if not plan:
        raise UserError("the input holds no records", path=src,
                        fix="check that this is the dataset you meant; nothing was written")

    options = dict(format_options)
    settings = _settings(src, src_fmt.name, dst_fmt.name, size,
                         {**options, **{f"read:{k}": v for k, v in read_options.items()}}, plan)
    with claim_outputs([dst], settings, tree_inputs(src), resume=resume,
                       overwrite=overwrite) as run:
        if run.complete:
            return already_complete([dst])
        counts, bytes_in, bytes_out = _run_conversion(run, plan, src_fmt, dst_fmt, info, size,
                                                      options, jobs, quiet, executor,
                                                      {s.split for s in shards})
        seconds = time.perf_counter() - started
        records = sum(counts.values())
        summary = run_report(
            tool="imgtools", tool_version=__version__, kind="convert",
            command=command or " ".join(sys.argv), options=settings["options"],
            classes=[{"wnid": c.wnid, "name": c.name} for c in info.classes],
            label_order=info.label_order,
            **{"from": src_fmt.name}, to=dst_fmt.name, src=str(src), dst=str(dst),
            path=str(dst), size=size, totals=counts, splits=counts, records=records,
            bytes_in=bytes_in, bytes_out=bytes_out, shards=len(plan),
            seconds=round(seconds, 3), images_per_second=round(records / seconds, 1)
            if seconds else None,
            records_per_s=round(records / seconds, 1) if seconds else None,
            mb_per_s=round(bytes_in / 1e6 / seconds, 1) if seconds else None)
        write_report(run.stagings[0], summary)
        run.publish()
    return summary
