"""``imgtools convert``: any format in, any format out - a job of the engine
(:mod:`imgtools.pipeline.engine`) whose source is a dataset in a registered format.

The input is planned before anything is written (:mod:`imgtools.pipeline.slices`: every input
shard scanned for its records' sizes - a JPEG folder's taken from the listing that records the
input's identity - each split cut into output shards of the output format's size or the user's
``shard_records``/``shard_bytes``), so the output is the same however many workers run it and
however often it is resumed. Each output shard is one work unit
(:class:`~imgtools.pipeline.units.SliceUnit`); records pass through untouched (same encoded
bytes, label, split, file name), or are resized exactly as ``build --size`` does when ``size``
asks (:class:`~imgtools.transforms.jpeg.ResizeJPEG`). To pickle or npz (``--size N``), each
image becomes the published resizer's N x N planar row
(:class:`~imgtools.transforms.square.SquareRows`) and the pickle format's second pass makes the
seeded shuffle, the train mean and the batch files, as ``build --format pickle`` does. An image
that cannot be resized is an error naming it: a conversion has no "skip and report" list, so
nothing may vanish from it silently. Memory is bounded by one output shard's buffering (Parquet
row groups) plus the plan, which holds a few numbers per output shard, never per image.
"""

from __future__ import annotations

import contextlib
import functools
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from imgtools import __version__
from imgtools.atomic import tmp_name
from imgtools.errors import UserError
from imgtools.executors.base import Executor
from imgtools.formats import detect_format, get_format
from imgtools.formats.base import Format, InputShard
from imgtools.formats.common import parse_size, split_sort_key
from imgtools.formats.pickle_batches import (
    OUTPUT_SPLITS,
    PUBLISHED_SIZES,
    check_pass_options,
    check_sizes,
)
from imgtools.pipeline.engine import Job, Outcome, RunOptions, Totals, run_job
from imgtools.pipeline.identity import InputsFile, tree_inputs
from imgtools.pipeline.output import check_output_paths
from imgtools.pipeline.report import run_report
from imgtools.pipeline.slices import (
    DEFAULT_TASK_RECORDS,
    OutputShard,
    plan_conversion,
    plan_while_listing,
)
from imgtools.pipeline.units import SliceUnit
from imgtools.records import DatasetInfo
from imgtools.runner import resolve_jobs
from imgtools.transforms.base import Transform
from imgtools.transforms.jpeg import RenderOptions, ResizeJPEG
from imgtools.transforms.passthrough import Passthrough
from imgtools.transforms.square import SquareRows


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
    ``format_options`` go to the output writer (TFRecord: ``schema``, ``compression``; pickle
    and npz: ``batches``, ``seed``, ``crop``, and ``size`` is the square side, 8 to 64).

    Returns a summary: ``{"from", "to", "src", "dst", "splits": {split: records},
    "records", "bytes_in", "bytes_out", "shards", "seconds", "records_per_s", "mb_per_s"}``.
    """
    started = time.perf_counter()
    src, dst = Path(src), Path(dst)
    src_fmt = get_format(src_format) if src_format else detect_format(src)
    dst_fmt, format_options = _target(to, format_options)
    if size is not None and size <= 0:
        raise UserError(f"--size must be a positive number of pixels, not {size}")
    if "max_shard_bytes" in format_options:
        shard_bytes = format_options.pop("max_shard_bytes")
    rows = ROWS in dst_fmt.takes
    transform, seed = _transform(dst_fmt, size, format_options, shard_records, shard_bytes)
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
    with _planned(src_fmt, src, dst, shards, info, max_records, max_bytes, jobs, quiet,
                  executor) as (plan, inputs):
        if not plan:
            raise UserError("the input holds no records", path=src,
                            fix="check that this is the dataset you meant; nothing was "
                                "written")
        if rows:
            _check_rows_target(plan, format_options, src)
        settings = _settings(src, src_fmt.name, to, size,
                             {**format_options, **({"seed": seed, **transform.settings()}
                                                   if rows else {}),
                              **{f"read:{k}": v for k, v in read_options.items()}}, plan)
        job = Job(outputs=[dst], settings=settings,
                  inputs=inputs if callable(inputs) else lambda: inputs,
                  units=lambda: (SliceUnit(src_fmt, o) for o in plan), transform=transform,
                  fmt=dst_fmt, info=info, format_options=format_options, second_pass=rows,
                  per_output=[{"size": size, "seed": seed, "label_order": info.label_order}]
                  if rows else None,
                  strict=True, total=sum(o.records for o in plan),
                  desc=f"{src_fmt.name} -> {to}")
        input_splits = {s.split for s in shards}
        report = functools.partial(_report, src, dst, src_fmt, to, size, settings, info,
                                   len(plan), input_splits, command or " ".join(sys.argv),
                                   started)
        return run_job(job, RunOptions(n_jobs, resume, overwrite, quiet, executor),
                       lambda outcome: [report(outcome)],
                       functools.partial(_split_counts, input_splits))


@contextlib.contextmanager
def _planned(src_fmt: Format, src: Path, dst: Path, shards: list[InputShard],
             info: DatasetInfo, max_records: int | None, max_bytes: int | None, jobs: int,
             quiet: bool, executor: Executor | None
             ) -> Iterator[tuple[list[OutputShard], InputsFile | Callable[[], Iterator]]]:
    """The plan, and the input's identity: for a JPEG folder both from one listing
    (:func:`plan_while_listing`: one ``stat`` per image, not two), the identity written
    beside the output (where the run claims it, or removed); otherwise the input is scanned
    and its identity listed when the output is claimed."""
    if not (src_fmt.records_are_files and src.is_dir()):
        yield (plan_conversion(src_fmt, shards, info, max_records, max_bytes, jobs, quiet,
                               executor), functools.partial(tree_inputs, src))
        return
    check_output_paths([dst])
    made = [p for p in (dst.parent, *dst.parent.parents) if not p.exists()]
    dst.parent.mkdir(parents=True, exist_ok=True)
    spool = dst.parent / tmp_name("inputs.jsonl")
    try:
        yield plan_while_listing(src_fmt, src, shards, info, max_records, max_bytes, spool)
    finally:
        with contextlib.suppress(FileNotFoundError):
            spool.unlink()
        for folder in made:  # folders made only to hold the identity, if the run made none
            with contextlib.suppress(OSError):
                folder.rmdir()


ROWS = SquareRows.produces


def _target(to: str, options: dict) -> tuple[Format, dict]:
    """The output format and its options: ``npz`` is the pickle format in NumPy's container."""
    if to == "npz":
        return get_format("pickle"), {**options, "container": "npz"}
    return get_format(to), dict(options)


def _transform(fmt: Format, size: int | None, options: dict, shard_records: int | None,
               shard_bytes: int | str | None) -> tuple[Transform, int | None]:
    """What happens to each record, and the shuffle seed of a pickle output (``options``
    loses the transform's own: ``seed``, ``crop``). An encoded-image writer gets the bytes
    untouched, or resized as ``build --size`` does; a pickle's writer gets the published
    resizer's square rows (:mod:`imgtools.transforms.square`), as ``build --format pickle``
    makes them."""
    if ROWS not in fmt.takes:
        return (ResizeJPEG(RenderOptions(sizes=(size,))) if size else Passthrough()), None
    if size is None:
        raise UserError(f"--to {fmt.name} needs --size N: the side of its square images",
                        fix=f"add --size 32 (published: {', '.join(map(str, PUBLISHED_SIZES))};"
                            " any side from 8 to 64)")
    if shard_records is not None or shard_bytes is not None:
        raise UserError("--shard-records/--shard-bytes size record files; pickle and npz "
                        "outputs are split into --batches files",
                        fix="drop them (--batches N sets the number of train files)")
    (side,) = check_sizes([size])
    seed = options.pop("seed", 0)
    return SquareRows((side,), crop=bool(options.pop("crop", False)), fast=False), seed


def _check_rows_target(plan: list[OutputShard], options: dict, src: Path) -> None:
    """Downsampled-ImageNet files hold train, val and unsup; anything else has no place there
    (it would vanish), and the batch count must leave every train file an image."""
    other = sorted({o.split for o in plan} - set(OUTPUT_SPLITS), key=split_sort_key)
    if other:
        raise UserError(f"split {other[0]!r} has no file in downsampled ImageNet's layout "
                        f"(train_data_batch_*, val_data, unsup_data)", path=src,
                        fix="convert to folder, tfrecord, webdataset or parquet, or rename "
                            "the split to val")
    check_pass_options(options, sum(o.records for o in plan if o.split == "train"))


def _split_counts(input_splits: set, totals: Totals) -> dict[str, int]:
    """Records per split, in split order; a split whose input holds no record is listed
    with 0."""
    counts = {**dict.fromkeys(input_splits, 0), **totals.split_totals()}
    return {s: counts[s] for s in sorted(counts, key=split_sort_key)}


def _report(src: Path, dst: Path, src_fmt: Format, to: str, size: int | None,
            settings: dict, info: DatasetInfo, shards: int, input_splits: set, command: str,
            started: float, outcome: Outcome) -> dict:
    seconds = time.perf_counter() - started
    counts = _split_counts(input_splits, outcome.totals)  # an empty input split: 0, as before
    records = sum(counts.values())
    bytes_in = outcome.totals.bytes_in
    return run_report(
        tool="imgtools", tool_version=__version__, kind="convert", command=command,
        options=settings["options"],
        classes=[{"wnid": c.wnid, "name": c.name} for c in info.classes],
        label_order=info.label_order,
        labels="1-based (label index + 1)" if to in ("pickle", "npz") else None,
        **{"from": src_fmt.name}, to=to, src=str(src), dst=str(dst),
        path=str(dst), size=size, totals=counts, splits=counts, records=records,
        bytes_in=bytes_in, bytes_out=outcome.totals.bytes_out, shards=shards,
        seconds=round(seconds, 3),
        images_per_second=round(records / seconds, 1) if seconds else None,
        records_per_s=round(records / seconds, 1) if seconds else None,
        mb_per_s=round(bytes_in / 1e6 / seconds, 1) if seconds else None)
