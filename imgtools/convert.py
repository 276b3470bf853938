"""``imgtools convert``: any format in, any format out - a job of the engine
(:mod:`imgtools.pipeline.engine`) whose source is a dataset in a registered format.

The input is planned before anything is written (:mod:`imgtools.pipeline.slices`: every input
shard scanned for its records' sizes, each split cut into output shards of the output format's
size or the user's ``shard_records``/``shard_bytes``), so the output is the same however many
workers run it and however often it is resumed. Each output shard is one work unit
(:class:`~imgtools.pipeline.units.SliceUnit`); records pass through untouched (same encoded
bytes, label, split, file name), or are resized exactly as ``build --size`` does when ``size``
asks (:class:`~imgtools.transforms.jpeg.ResizeJPEG`). An image that cannot be resized is an
error naming it: a conversion has no "skip and report" list, so nothing may vanish from it
silently. Memory is bounded by one output shard's buffering (Parquet row groups) plus the plan,
which holds a few numbers per output shard, never per image.
"""

from __future__ import annotations

import functools
import sys
import time
from pathlib import Path

from imgtools import __version__
from imgtools.errors import UserError
from imgtools.executors.base import Executor
from imgtools.formats import detect_format, get_format
from imgtools.formats.base import Format
from imgtools.formats.common import parse_size, split_sort_key
from imgtools.pipeline.engine import Job, Outcome, RunOptions, Totals, run_job
from imgtools.pipeline.output import tree_inputs
from imgtools.pipeline.report import run_report
from imgtools.pipeline.slices import DEFAULT_TASK_RECORDS, OutputShard, plan_conversion
from imgtools.pipeline.units import SliceUnit
from imgtools.records import DatasetInfo
from imgtools.runner import resolve_jobs
from imgtools.transforms.base import Transform
from imgtools.transforms.jpeg import RenderOptions, ResizeJPEG
from imgtools.transforms.passthrough import Passthrough


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
    ``format_options`` go to the output writer (TFRecord: ``schema``, ``compression``).

    Returns a summary: ``{"from", "to", "src", "dst", "splits": {split: records},
    "records", "bytes_in", "bytes_out", "shards", "seconds", "records_per_s", "mb_per_s"}``.
    """
    started = time.perf_counter()
    src, dst = Path(src), Path(dst)
    src_fmt = get_format(src_format) if src_format else detect_format(src)
    dst_fmt = get_format(to)
    if not dst_fmt.writes:
        raise UserError(f"converting to {dst_fmt.name} is not supported: its rows are made "
                        "from source images by a build", path=dst,
                        fix="build it from ImageNet with: imgtools build <dataset> --src ... "
                            "--size 32 --format pickle (or npz)")
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

    settings = _settings(src, src_fmt.name, dst_fmt.name, size,
                         {**format_options, **{f"read:{k}": v for k, v in read_options.items()}},
                         plan)
    transform: Transform = (ResizeJPEG(RenderOptions(sizes=(size,))) if size
                            else Passthrough())
    job = Job(outputs=[dst], settings=settings, inputs=functools.partial(tree_inputs, src),
              units=lambda: (SliceUnit(src_fmt, o) for o in plan), transform=transform,
              fmt=dst_fmt, info=info, format_options=dict(format_options), second_pass=False,
              strict=True, total=sum(o.records for o in plan),
              desc=f"{src_fmt.name} -> {dst_fmt.name}")
    input_splits = {s.split for s in shards}
    report = functools.partial(_report, src, dst, src_fmt, dst_fmt, size, settings, info,
                               len(plan), command or " ".join(sys.argv), started)
    return run_job(job, RunOptions(n_jobs, resume, overwrite, quiet, executor),
                   lambda outcome: [report(outcome)],
                   functools.partial(_split_counts, input_splits))


def _split_counts(input_splits: set, totals: Totals) -> dict[str, int]:
    """Records per split, in split order; a split whose input holds no record is listed
    with 0."""
    counts = {**dict.fromkeys(input_splits, 0), **totals.split_totals()}
    return {s: counts[s] for s in sorted(counts, key=split_sort_key)}


def _report(src: Path, dst: Path, src_fmt: Format, dst_fmt: Format, size: int | None,
            settings: dict, info: DatasetInfo, shards: int, command: str, started: float,
            outcome: Outcome) -> dict:
    seconds = time.perf_counter() - started
    counts = {s: n for s, n in _split_counts(set(), outcome.totals).items()}
    records = sum(counts.values())
    bytes_in = outcome.totals.bytes_in
    return run_report(
        tool="imgtools", tool_version=__version__, kind="convert", command=command,
        options=settings["options"],
        classes=[{"wnid": c.wnid, "name": c.name} for c in info.classes],
        label_order=info.label_order,
        **{"from": src_fmt.name}, to=dst_fmt.name, src=str(src), dst=str(dst),
        path=str(dst), size=size, totals=counts, splits=counts, records=records,
        bytes_in=bytes_in, bytes_out=outcome.totals.bytes_out, shards=shards,
        seconds=round(seconds, 3),
        images_per_second=round(records / seconds, 1) if seconds else None,
        records_per_s=round(records / seconds, 1) if seconds else None,
        mb_per_s=round(bytes_in / 1e6 / seconds, 1) if seconds else None)
