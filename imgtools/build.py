"""Execute a plan: render every image at every size and hand it to a format's writer.

One shard task holds up to ``shard_size`` plan items of one split. A worker decodes each image
once, renders all requested sizes, and writes them through one :class:`ShardWriter` per size.
It returns a small summary (counts, skipped and repaired files, checksums) that the runner
stores as the shard's done marker, so ``--resume`` after a kill finishes only what is missing.
When every shard is done, the metadata is written: the fastai CSV, ``SHA256SUMS``,
``build-info.json`` and the format's own index files.
"""

from __future__ import annotations

import contextlib
import csv
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from imgtools import __version__
from imgtools.atomic import atomic_open, remove_stale_tmp
from imgtools.checksums import sha256_file
from imgtools.downsample import build_downsampled
from imgtools.executors.base import Executor
from imgtools.formats import get_format
from imgtools.metadata.croissant import write_croissant
from imgtools.pipeline import packing
from imgtools.pipeline.output import InputEntry, OutputRun, claim_outputs
from imgtools.pipeline.report import (
    CHECKSUMS,
    already_complete,
    run_report,
    write_checksums,
    write_report,
)
from imgtools.plan import BuildPlan, PlanItem
from imgtools.records import SPLITS, DatasetInfo, Record, safe_key
from imgtools.resample import resizer_name
from imgtools.runner import ShardTask, run_shards, with_files
from imgtools.sources import locator_inputs, open_locator
from imgtools.splits import CSV_COLUMNS
from imgtools.transform import PIXEL_POLICY, BadImage, RenderOptions, render


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


@dataclass(frozen=True)
class ShardJob:
    """Everything one shard needs: self-contained, so it can run on any joblib backend."""

    items: list[PlanItem]
    split: str
    shard_index: int
    num_shards: int
    roots: list[str]  # one output root per size
    fmt: str
    render: RenderOptions
    info: DatasetInfo
    format_options: dict


def size_label(size: int | None) -> str:
    return "full" if size is None else str(size)


def output_roots(plan: BuildPlan, opts: BuildOptions) -> list[Path]:
    suffix = "" if opts.fmt == "folder" else f"-{opts.fmt}"
    return [opts.out / (plan.recipe.folder_name(s) + suffix) for s in opts.sizes]


def run_build_shard(task: ShardTask) -> dict:
    """Worker: render and write one shard. Returns its summary (the done marker)."""
    job: ShardJob = task.payload
    fmt = get_format(job.fmt)
    # digests: a writer that can hash images while they are in memory (folder) does, so that
    # SHA256SUMS below need not read its files back; the other writers ignore the option.
    writers = [fmt.open_writer(Path(r), job.info, job.split, job.shard_index, job.num_shards,
                               digests=True, **job.format_options) for r in job.roots]
    skipped, repaired = [], []
    counts: dict[str, int] = {}
    try:
        for item in job.items:
            try:
                outputs, note = render(open_locator(item.src), job.render)
            except BadImage as e:
                skipped.append({"path": item.src, "reason": e.reason})
                continue
            if note:
                repaired.append({"path": item.src, "what": note})
            name = item.out_name
            cls = job.info.classes[item.label] if item.label is not None else None
            for writer, data in zip(writers, outputs):
                writer.write(Record(safe_key(name), item.split, item.label, data, name,
                                    item.wnid if cls else None, cls.name if cls else None))
            key = item.wnid if cls else "unlabelled"
            counts[key] = counts.get(key, 0) + 1
        written = [w.close() for w in writers]
    except BaseException:
        for w in writers:
            w.abort()
        raise
    # Parts of a record format are packed into other files, which packing hashes: hashing the
    # parts too would read every byte back for nothing.
    packed = job.fmt in packing.PACKED_FORMATS
    checksums = [{} if packed else {str(p.relative_to(r)): w.known_digests.get(p)
                                    or sha256_file(p) for p in paths}
                 for w, r, paths in zip(writers, job.roots, written)]
    return with_files({"split": job.split, "n": len(job.items), "counts": counts,
                       "skipped": skipped, "repaired": repaired, "checksums": checksums},
                      (p for paths in written for p in paths))


def build(plan: BuildPlan, opts: BuildOptions, command: str | None = None) -> dict:
    """Run the whole build; returns the report (also written as build-info.json per output).
    Outputs follow :mod:`imgtools.pipeline.output`: staged, then moved into place whole."""
    if opts.fmt in ("pickle", "npz"):
        return build_downsampled(plan.for_downsampled(), opts, command=command)
    started = time.time()
    get_format(opts.fmt).check_options(writer_options(opts))  # before any work
    roots = output_roots(plan, opts)
    with claim_outputs(roots, _fingerprint(plan, opts), _inputs(plan), resume=opts.resume,
                       overwrite=opts.overwrite) as run:
        if run.complete:
            return already_complete(roots)
        return _run_build(plan, opts, run, started, command)


def _inputs(plan: BuildPlan) -> Iterator[InputEntry]:
    """The identity of every source image, in plan order (a resumed build must read the same
    bytes as the interrupted one)."""
    return locator_inputs(item.src for split in SPLITS for item in plan.items.get(split, ()))


def _run_build(plan: BuildPlan, opts: BuildOptions, run: OutputRun, started: float,
               command: str | None) -> dict:
    fmt = get_format(opts.fmt)
    shuffle = opts.fmt != "folder"
    stagings = run.stagings
    tasks = _tasks(plan, opts, packing.work_roots(opts.fmt, run.work, stagings), shuffle)
    totals = _Totals()
    for _task, summary in run_shards(tasks, run_build_shard, state_dir=run.markers,
                                     n_jobs=opts.n_jobs, resume=run.resumed,
                                     desc=f"build {plan.recipe.name}",
                                     total_weight=plan.total(), quiet=opts.quiet,
                                     executor=opts.executor):
        totals.add(summary)
    for folder in (*stagings, run.work):  # a task retried after its worker died left
        if folder.exists():                # that attempt's temporaries
            remove_stale_tmp(folder)
    seconds = time.time() - started
    report = _report(plan, opts, totals, seconds, command)
    _write_csv([s / plan.recipe.csv_name for s in stagings], plan, totals)
    packed = packing.pack_outputs(opts.fmt, stagings, run.work, plan.info, opts.format_options,
                                  opts.n_jobs, opts.quiet)  # record formats: sized files
    if packed is None:
        write_checksums([s / CHECKSUMS for s in stagings], run.markers,
                        _shard_ids(plan, opts.shard_size))
    else:
        for staging, files in zip(stagings, packed):
            packing.write_checksums(staging / CHECKSUMS, files)
    for i, (root, staging) in enumerate(zip(run.roots, stagings)):
        fmt.finalize(staging, plan.info, {**dict.fromkeys(plan.output_splits(), 0),
                                          **report["totals"]})
        write_croissant(staging, plan.info, opts.fmt, list(report["totals"]))  # folders too
        write_report(staging, dict(report, size=size_label(opts.sizes[i]), path=str(root)))
    run.publish()
    report["outputs"] = [str(r) for r in run.roots]
    return report


def _fingerprint(plan: BuildPlan, opts: BuildOptions) -> dict:
    """Every setting that decides the output's bytes (the inputs' identity is added by
    :func:`claim_outputs`)."""
    return {"command": "build", "recipe": plan.recipe.name, "split": plan.split_mode,
            "seed": plan.seed, "sizes": [size_label(s) for s in opts.sizes],
            "format": opts.fmt, "filter": opts.filter, "quality": opts.quality,
            "exact": opts.exact, "shard_size": opts.shard_size, "images": plan.total(),
            "resizer": resizer_name(opts.exact), "format_options": opts.format_options,
            "source": str(plan.source.root), "plan": plan.digest()}


def writer_options(opts: BuildOptions) -> dict:
    """The format options a work shard's writer takes: all but the output-file sizes, which
    the packing pass applies (:mod:`imgtools.pipeline.packing`)."""
    return {k: v for k, v in opts.format_options.items() if k not in packing.SIZE_OPTIONS}


def _tasks(plan: BuildPlan, opts: BuildOptions, roots: list[Path], shuffle: bool):
    for shard_id, items in plan.shards(opts.shard_size, shuffle):
        split = items[0].split
        index = int(shard_id.rsplit("-", 1)[1])
        job = ShardJob(items, split, index, plan.num_shards(split, opts.shard_size),
                       [str(r) for r in roots], opts.fmt, opts.render_options(), plan.info,
                       writer_options(opts))
        yield ShardTask(shard_id, job, weight=len(items))


@dataclass
class _Totals:
    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    skipped: list[dict] = field(default_factory=list)
    repaired: list[dict] = field(default_factory=list)
    images: int = 0

    def add(self, summary: dict) -> None:
        per = self.counts.setdefault(summary["split"], {})
        for wnid, n in summary["counts"].items():
            per[wnid] = per.get(wnid, 0) + n
        self.skipped += summary["skipped"]
        self.repaired += summary["repaired"]
        self.images += summary["n"]


def _shard_ids(plan: BuildPlan, shard_size: int) -> Iterator[str]:
    """The ids :meth:`BuildPlan.shards` gives, without materialising any shard."""
    for split in SPLITS:
        for k in range(plan.num_shards(split, shard_size)):
            yield f"{split}-{k:05d}"


def _write_csv(paths: list[Path], plan: BuildPlan, totals: _Totals) -> None:
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


def _report(plan: BuildPlan, opts: BuildOptions, totals: _Totals, seconds: float,
            command: str | None) -> dict:
    # Unlabelled images are counted, not attributed to classes: their classes must not leak.
    counts = {s: dict(sorted(totals.counts[s].items())) for s in SPLITS
              if s in totals.counts and s != "unsup"}
    split_totals = {s: sum(totals.counts[s].values()) for s in SPLITS if s in totals.counts}
    return run_report(
        tool="imgtools",
        tool_version=__version__,
        kind="build",
        command=command or " ".join(sys.argv),
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
        resizer=resizer_name(opts.exact),
        pixels=PIXEL_POLICY,
        classes=[asdict(c) for c in plan.info.classes],
        label_order=plan.info.label_order,
        planned={s: len(v) for s, v in plan.items.items()},
        counts=counts,
        totals=split_totals,
        skipped=sorted(totals.skipped, key=lambda s: s["path"]),
        repaired=sorted(totals.repaired, key=lambda s: s["path"]),
        missing_from_tree=plan.missing,
        not_in_official_list=plan.unlisted,
        ignored_files=sorted(set(plan.source.ignored)),
        seconds=round(seconds, 3),
        images_per_second=round(totals.images / seconds, 1) if seconds > 0 else None,
    )
