"""Downsampled ImageNet (Imagenet8/16/32/64, or any subset) from a plain list of images.

``imgtools build --format pickle|npz`` makes these files from a recipe (:mod:`imgtools.build`);
this is the same job of the engine (:mod:`imgtools.pipeline.engine`) for a caller that has its
own list of images rather than a recipe: the :class:`~imgtools.transforms.square.SquareRows`
transform (the published resizer's pixels, :mod:`imgtools.transforms.square`) and the pickle
format, whose second pass makes the train mean, the seeded shuffle and the batch files
(:mod:`imgtools.formats.pickle_batches`). Outputs follow the one output protocol
(:mod:`imgtools.pipeline.output`): staged, resumable, published whole.
"""

from __future__ import annotations

import functools
import hashlib
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any, NamedTuple

from imgtools import __version__
from imgtools.errors import UserError
from imgtools.executors.base import Executor
from imgtools.formats import get_format
from imgtools.formats.pickle_batches import (
    OUTPUT_SPLITS,
    check_pass_options,
    check_sizes,
    output_dir_name,
)
from imgtools.pipeline.engine import Job, Outcome, RunOptions, run_job
from imgtools.pipeline.report import run_report
from imgtools.pipeline.units import PlanUnit
from imgtools.records import DatasetInfo
from imgtools.sources import locator_inputs
from imgtools.transforms.square import SquareRows

ShardSource = Callable[[], Iterable[Iterable[Any]]]
"""A function returning the shards afresh on every call: the list is walked a few times (its
digest, the inputs' identity, the work units), and no pass keeps more than one shard's items."""


class DownsampleItem(NamedTuple):
    """One source image: ``label`` is 0-based in the dataset's class order (sorted wnids unless
    the recipe pins another; None for unsup)."""

    src: str
    split: str
    label: int | None
    wnid: str | None = None

    @property
    def out_name(self) -> str:
        return Path(self.src).name


def iter_normalised(shards: Iterable[Iterable[Any]]) -> Iterator[tuple[Any, ...]]:
    """Items as the workers need them (anything with ``src``, ``split``, ``label`` and ``wnid``
    attributes), one non-empty shard at a time, splits and labels checked."""
    for shard in shards:
        items = []
        for item in shard:
            split = str(item.split)
            if split not in OUTPUT_SPLITS:
                raise UserError(f"split {split!r} of {item.src} is not one of {OUTPUT_SPLITS}")
            label = None if split == "unsup" else item.label
            if split != "unsup" and label is None:
                raise UserError(f"{item.src}: a {split} image needs a label")
            items.append(DownsampleItem(str(item.src), split,
                                        None if label is None else int(label),
                                        getattr(item, "wnid", None)))
        if items:
            yield tuple(items)


def items_digest(source: ShardSource) -> str:
    """SHA-256 of every item (path, split, label), streamed: part of the run's fingerprint."""
    h = hashlib.sha256()
    for items in iter_normalised(source()):
        h.update(b"\x00shard")
        for item in items:
            h.update(f"{item.src}\t{item.split}\t{item.label}\n".encode("utf-8",
                                                                         "surrogateescape"))
    return h.hexdigest()


def _units(source: ShardSource) -> Iterator[PlanUnit]:
    """One work unit per shard and split (a shard's parts are per split)."""
    for k, items in enumerate(iter_normalised(source())):
        for split in OUTPUT_SPLITS:
            part = [i for i in items if i.split == split]
            if part:
                yield PlanUnit(part, split, k, 0)


def _inputs(source: ShardSource) -> Iterator:
    return locator_inputs(item.src for items in iter_normalised(source()) for item in items)


def downsample_dataset(
    shards: Iterable[Iterable[Any]] | ShardSource,
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
    overwrite: bool = False,
    quiet: bool = False,
    label_base: str | None = None,
    executor: Executor | None = None,
) -> dict:
    """Make ``<out_root>/<info.name>_<s>x<s>/`` for every size: ``train_data_batch_1..N``,
    ``val_data`` (and ``unsup_data`` for unlabelled images), ``batches.meta``, the sidecar,
    ``SHA256SUMS`` and ``build-info.json``.

    ``shards``: lists of items with ``src``, ``split``, ``label`` (0-based in ``info.classes``
    order) and ``wnid``, or a function returning them afresh on each call (then memory holds
    only the shards being decoded, not the items); written labels are ``label + 1`` (for
    ImageNet-1k in map_clsloc order these are the devkit ids). ``label_base`` documents the
    class order in the metadata. Returns a summary: counts, files, skipped images with reasons,
    conversion notes.
    """
    sizes_t = check_sizes(list(sizes))
    check_pass_options({"batches": batches, "container": fmt}, 0)
    source: ShardSource
    if callable(shards):
        source = shards
    else:  # a one-pass iterable: it has to be kept (pass a function to keep memory flat)
        kept = list(shards)
        source = lambda: kept  # noqa: E731
    transform = SquareRows(sizes_t, crop=crop, fast=fast)
    outputs = [Path(out_root) / output_dir_name(info.name, s) for s in sizes_t]
    settings = {"command": "downsample", **transform.settings(), "format": fmt, "seed": seed,
                "batches": batches, "name": info.name, "items": items_digest(source)}
    job = Job(outputs=outputs, settings=settings, inputs=functools.partial(_inputs, source),
              units=functools.partial(_units, source), transform=transform,
              fmt=get_format("pickle"), info=info,
              format_options={"batches": batches, "container": fmt},
              per_output=[{"size": s, "seed": seed, "label_order": label_base}
                          for s in sizes_t], desc="downsample")
    report = run_job(job, RunOptions(n_jobs, resume, overwrite, quiet, executor),
                     functools.partial(_reports, job, sizes_t, settings))
    return {"counts": report.get("totals") or {}, "format": fmt, "seed": seed,
            "batches": batches, "skipped": report.get("skipped") or [],
            "repaired": report.get("repaired") or [],
            "sizes": {s: {"dir": str(d)} for s, d in zip(sizes_t, outputs)},
            "outputs": report["outputs"], "nothing_to_do": report.get("nothing_to_do", False)}


def _reports(job: Job, sizes: tuple[int, ...], settings: dict, outcome: Outcome) -> list[dict]:
    totals, seconds = outcome.totals, outcome.seconds
    report = run_report(
        tool="imgtools", tool_version=__version__, kind="build", command=" ".join(sys.argv),
        options={k: v for k, v in settings.items() if k != "items"},
        resizer=job.transform.settings()["resizer"], pixels=job.transform.pixels,
        classes=[asdict(c) for c in job.info.classes], label_order=job.info.label_order,
        labels="1-based (label index + 1)",
        totals=totals.split_totals(),
        skipped=sorted(totals.skipped, key=lambda s: s["path"]),
        repaired=sorted(totals.repaired, key=lambda s: s["path"]),
        seconds=round(seconds, 3),
        images_per_second=round(totals.images / seconds, 1) if seconds > 0 else None)
    return [dict(report, size=s, path=str(root)) for s, root in zip(sizes, job.outputs)]
