"""``imgtools build``: a build plan as a job of the engine (:mod:`imgtools.pipeline.engine`).

The source is the plan (:mod:`imgtools.plan`: the recipe's images found in the user's ImageNet,
in any layout or archive); each work unit holds up to ``shard_size`` of its images of one split.
The transform is :class:`~imgtools.transforms.jpeg.ResizeJPEG` (every requested size from one
decode) for JPEG outputs, or :class:`~imgtools.transforms.square.SquareRows` for downsampled
ImageNet (``--format pickle|npz``), whose format makes the shuffled batches and the mean image in
its second pass. This module adds what only a build has: the fingerprint of the plan, the fastai
CSV, and the build report (``build-info.json``: counts, skipped and repaired files).
"""

from __future__ import annotations

import contextlib
import csv
import functools
import sys
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from imgtools import __version__
from imgtools.atomic import atomic_open
from imgtools.errors import UserError
from imgtools.executors.base import Executor
from imgtools.formats import get_format
from imgtools.formats.base import Format
from imgtools.formats.pickle_batches import (
    PUBLISHED_SIZES,
    check_pass_options,
    check_sizes,
    output_dir_name,
)
from imgtools.metadata.croissant import write_croissant
from imgtools.pipeline.engine import Job, Outcome, RunOptions, Totals, run_job
from imgtools.pipeline.report import run_report
from imgtools.pipeline.units import PlanUnit
from imgtools.plan import BuildPlan
from imgtools.records import SPLITS
from imgtools.sources import locator_inputs
from imgtools.splits import CSV_COLUMNS
from imgtools.transforms.base import Transform
from imgtools.transforms.jpeg import RenderOptions, ResizeJPEG
from imgtools.transforms.resample import resizer_name
from imgtools.transforms.square import SquareRows

DOWNSAMPLED = ("pickle", "npz")
"""``--format`` values of downsampled ImageNet: the pickle format, as pickles or as .npz."""


@dataclass
class BuildOptions:
    out: Path
    sizes: list[int | None]
    fmt: str = "folder"
    filter: str = "bilinear"
    quality: int = 90
    exact: bool = False
    n_jobs: int | None = None
    shard_size: int = 256
    resume: bool = False
    overwrite: bool = False
    quiet: bool = False
    format_options: dict = field(default_factory=dict)
    executor: Executor | None = None  # where shards run (None: this machine, n_jobs workers)

    def render_options(self) -> RenderOptions:
        return RenderOptions(tuple(self.sizes), self.filter, self.quality, self.exact)

    @property
    def downsampled(self) -> bool:
        return self.fmt in DOWNSAMPLED

    def run_options(self) -> RunOptions:
        return RunOptions(self.n_jobs, self.resume, self.overwrite, self.quiet, self.executor)


def size_label(size: int | None) -> str:
    return "full" if size is None else str(size)


def output_roots(plan: BuildPlan, opts: BuildOptions) -> list[Path]:
    if opts.downsampled:
        name = plan.recipe.output_name or plan.recipe.name
        return [opts.out / output_dir_name(name, s) for s in _square_sizes(opts)]
    suffix = "" if opts.fmt == "folder" else f"-{opts.fmt}"
    return [opts.out / (plan.recipe.folder_name(s) + suffix) for s in opts.sizes]


def build(plan: BuildPlan, opts: BuildOptions, command: str | None = None) -> dict:
    """Run the whole build; returns the report (also written as build-info.json per output).
    Outputs follow :mod:`imgtools.pipeline.output`: staged, then moved into place whole."""
    if opts.downsampled:
        plan = plan.for_downsampled()
    job = build_job(plan, opts)
    return run_job(job, opts.run_options(),
                   functools.partial(_metadata, plan, opts, job, command or " ".join(sys.argv)),
                   lambda totals: {**dict.fromkeys(plan.output_splits(), 0),
                                   **totals.split_totals()})


def build_job(plan: BuildPlan, opts: BuildOptions) -> Job:
    """The build as a job of the engine: arguments are checked here, before any work."""
    fmt, format_options = _format(opts)
    transform: Transform
    if opts.downsampled:
        sizes = _square_sizes(opts)
        transform = SquareRows(sizes, crop=bool(format_options.pop("crop", False)),
                               fast=not opts.exact)
        per_output = [{"size": s, "seed": plan.seed, "label_order": plan.info.label_order}
                      for s in sizes]
        check_pass_options(format_options, len(plan.items.get("train", ())))
    else:
        transform, per_output = ResizeJPEG(opts.render_options()), None
    shuffle = opts.fmt != "folder" and not opts.downsampled
    return Job(outputs=output_roots(plan, opts), settings=_fingerprint(plan, opts),
               inputs=functools.partial(_inputs, plan),
               units=functools.partial(_units, plan, opts.shard_size, shuffle),
               transform=transform, fmt=fmt, info=plan.info, format_options=format_options,
               per_output=per_output, total=plan.total(), desc=f"build {plan.recipe.name}")


def _format(opts: BuildOptions) -> tuple[Format, dict]:
    """The format and its options: ``npz`` is the pickle format writing ``.npz`` files."""
    options = dict(opts.format_options)
    if opts.fmt == "npz":
        options["container"] = "npz"
        return get_format("pickle"), options
    return get_format(opts.fmt), options


def _square_sizes(opts: BuildOptions) -> tuple[int, ...]:
    if any(s is None for s in opts.sizes):
        raise UserError("pickle/npz need a square size such as --size 32, not 'full'",
                        fix=f"pass --size {', '.join(map(str, PUBLISHED_SIZES))} (any side "
                            "from 8 to 64)")
    return check_sizes([int(s) for s in opts.sizes if s is not None])


def _inputs(plan: BuildPlan) -> Iterator:
    """The identity of every source image, in plan order (a resumed build must read the same
    bytes as the interrupted one)."""
    return locator_inputs(item.src for split in SPLITS for item in plan.items.get(split, ()))


def _units(plan: BuildPlan, shard_size: int, shuffle: bool) -> Iterator[PlanUnit]:
    for shard_id, items in plan.shards(shard_size, shuffle):
        split = items[0].split
        yield PlanUnit(items, split, int(shard_id.rsplit("-", 1)[1]),
                       plan.num_shards(split, shard_size))


def _fingerprint(plan: BuildPlan, opts: BuildOptions) -> dict:
    """Every setting that decides the output's bytes (the inputs' identity is added by
    :func:`claim_outputs`)."""
    return {"command": "build", "recipe": plan.recipe.name, "split": plan.split_mode,
            "seed": plan.seed, "sizes": [size_label(s) for s in opts.sizes],
            "format": opts.fmt, "filter": opts.filter, "quality": opts.quality,
            "exact": opts.exact, "shard_size": opts.shard_size, "images": plan.total(),
            "resizer": resizer_name(opts.exact), "format_options": opts.format_options,
            "source": str(plan.source.root), "plan": plan.digest()}


def _metadata(plan: BuildPlan, opts: BuildOptions, job: Job, command: str,
              outcome: Outcome) -> list[dict]:
    """The fastai CSV (JPEG folders and records), croissant.json, and each output's
    report."""
    stagings = outcome.run.stagings
    report = _report(plan, opts, job.transform, outcome.totals, outcome.seconds, command)
    if not opts.downsampled:
        _write_csv([s / plan.recipe.csv_name for s in stagings], plan, outcome.totals)
    splits = list(report["totals"])
    reports = []
    for root, staging, size in zip(job.outputs, stagings, _report_sizes(opts), strict=True):
        write_croissant(staging, plan.info, opts.fmt, splits)
        reports.append(dict(report, size=size, path=str(root)))
    return reports


def _report_sizes(opts: BuildOptions) -> list:
    return list(_square_sizes(opts)) if opts.downsampled else [size_label(s) for s in opts.sizes]


def _write_csv(paths: list[Path], plan: BuildPlan, totals: Totals) -> None:
    """The fastai CSV, for the images that made it into the output (streamed). Every size gets
    the same rows, so they are made once and written to each size's copy."""
    dropped = {s["path"] for s in totals.skipped}
    with contextlib.ExitStack() as stack:
        writers = [csv.writer(stack.enter_context(atomic_open(p, "w")), lineterminator="\n")
                   for p in paths]
        for w in writers:
            w.writerow(CSV_COLUMNS)
        for item, row in plan.csv_rows():
            if item.src not in dropped:
                for w in writers:
                    w.writerow(row)


def _report(plan: BuildPlan, opts: BuildOptions, transform: Transform, totals: Totals,
            seconds: float, command: str) -> dict:
    # Unlabelled images are counted, not attributed to classes: their classes must not leak.
    counts = {s: dict(sorted(totals.counts[s].items())) for s in SPLITS
              if s in totals.counts and s != "unsup"}
    return run_report(
        tool="imgtools",
        tool_version=__version__,
        kind="build",
        command=command,
        recipe=plan.recipe.name,
        recipe_file=str(plan.recipe.path) if plan.recipe.path else None,
        source=str(plan.source.root),
        source_layout=plan.source.layout,
        val_labels=plan.source.val_label_source,
        options={"split": plan.split_mode, "seed": plan.seed, "valid_pct": plan.valid_pct,
                 "split_sources": plan.split_sources,
                 "sizes": [size_label(s) for s in opts.sizes], "format": opts.fmt,
                 "filter": opts.filter, "quality": opts.quality, "exact": opts.exact,
                 "shard_size": opts.shard_size, **opts.format_options},
        resizer=transform.settings()["resizer"],
        pixels=transform.pixels,
        classes=[asdict(c) for c in plan.info.classes],
        label_order=plan.info.label_order,
        labels="1-based (label index + 1)" if opts.downsampled else None,
        planned={s: len(v) for s, v in plan.items.items()},
        counts=counts,
        totals=totals.split_totals(),
        skipped=sorted(totals.skipped, key=lambda s: s["path"]),
        repaired=sorted(totals.repaired, key=lambda s: s["path"]),
        missing_from_tree=plan.missing,
        not_in_official_list=plan.unlisted,
        ignored_files=sorted(set(plan.source.ignored)),
        seconds=round(seconds, 3),
        images_per_second=round(totals.images / seconds, 1) if seconds > 0 else None,
    )
