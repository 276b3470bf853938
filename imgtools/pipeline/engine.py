"""The engine: one run loop for every command that writes a dataset.

    source -> plan -> transform -> writer -> (second pass) -> metadata

A :class:`Job` says what to read (work units from a build plan or a dataset in any format,
:mod:`imgtools.pipeline.units`), what to do to each record (a transform,
:mod:`imgtools.transforms`), which format writes it and where. :func:`run_job` does the rest the
same way for ``build``, ``convert`` and downsampled ImageNet:

1. claim the outputs (:mod:`imgtools.pipeline.output`: lock, fingerprint, resume, overwrite);
2. run one shard task per unit through the executor (:mod:`imgtools.runner`), each task the
   same worker, :func:`run_shard`: read, transform, write, and return a small summary that
   becomes the shard's done marker;
3. when the format :attr:`~imgtools.formats.base.Format.writes_parts`, its second pass makes
   the output from the parts (record files of the format's size; pickle batches with the mean
   image), through the same executor, with its own markers;
4. metadata: ``SHA256SUMS``, the format's index files and sidecar, the job's own files (the
   fastai CSV) and ``build-info.json``, then the outputs move into place with one rename.

What differs between commands is data (the job), not code paths.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from imgtools.atomic import remove_stale_tmp
from imgtools.checksums import relative_name
from imgtools.errors import CorruptDataError
from imgtools.executors.base import Executor
from imgtools.formats.base import Format, PassContext
from imgtools.formats.common import split_sort_key
from imgtools.pipeline.identity import InputEntry, InputsFile
from imgtools.pipeline.output import OutputRun, claim_outputs
from imgtools.pipeline.packing import write_file_checksums
from imgtools.pipeline.report import CHECKSUMS, already_complete, write_checksums, write_report
from imgtools.pipeline.units import WorkUnit
from imgtools.records import DatasetInfo
from imgtools.runner import ShardTask, run_shards, with_files
from imgtools.transforms.base import Transform
from imgtools.transforms.jpeg import BadImage

PARTS = "parts"
PASS_STATE = "pass"

RECORDS_IN_FLIGHT = 16
"""How many records a shard task transforms before it writes them, when its transform renders
(:attr:`Transform.renders`). A JPEG's decode, resize and encode pass through megabytes and
leave the processor's caches cold for what comes after: writing each image right after its
own encode (create the file, write it, hash it) cost 1.7-1.8 times what writing them sixteen
at a time costs (``scripts/bench_in_flight.py``). A record that passes through untouched is
written as soon as it is read, the other way round: its bytes are in the caches then, and
holding sixteen cost the shard worker of a conversion to TFRecord 1.17 times the CPU
(``bench_in_flight.py --convert``).
The output's bytes and their order do not depend on it."""

SUMS_HELD_CHARS = 64 << 20
"""How much of the shards' ``SHA256SUMS`` lines (characters) a run keeps from their summaries
until it writes ``SHA256SUMS``, which then need not read them back from every marker (a JSON
parse of a line and a path per image); the lines of shards beyond it are read back. Memory
stays bounded whatever the number of images."""

BYTES_IN_FLIGHT = 16 << 20
"""...or fewer, once their images (of the first output) hold this many bytes: what a shard
holds at once stays small whatever the images' size."""


@dataclass(frozen=True)
class ShardSpec:
    """Everything one shard task needs, self-contained so that it runs on any executor."""

    unit: WorkUnit
    transform: Transform
    fmt: Format
    roots: tuple[str, ...]  # one folder per output: the staging folder, or its parts folder
    info: DatasetInfo
    writer_options: dict
    strict: bool  # an unusable image is an error (a conversion) rather than skipped and listed
    hash_files: bool  # the files are the output's own: hash them for SHA256SUMS


def run_shard(task: ShardTask) -> dict:
    """Worker: read the unit's records, transform each, write them with one writer per output.
    Returns the shard's summary (counts, skipped and repaired inputs, checksums, files)."""
    spec: ShardSpec = task.payload
    unit = spec.unit
    writers = [spec.fmt.open_writer(Path(root), spec.info, unit.split, unit.index,
                                    unit.num_shards, digests=spec.hash_files,
                                    **spec.writer_options) for root in spec.roots]
    tally = _ShardTally()
    try:
        if spec.transform.renders:
            _transform_in_flights(spec, writers, tally)
        else:  # each record written as soon as it is read (RECORDS_IN_FLIGHT says why)
            for where, read in unit.entries(spec.info):
                for writer, record in zip(writers, _transformed(spec, where, read, tally)):
                    writer.write(record)
        written = [w.close() for w in writers]
    except BaseException:
        for w in writers:
            w.abort()
        raise
    # SHA256SUMS's lines of each output, as text: a dict of {path: digest} per image cost
    # more to write into the marker and read back than to make the lines here.
    sums = [w.sha256sum_text(root, paths) if spec.hash_files else ""
            for w, root, paths in zip(writers, spec.roots, written)]
    summary = {"split": unit.split, **tally.summary(), "sha256sums": sums}
    if spec.hash_files and any(w.file_facts for w in writers):
        summary["file_facts"] = [{relative_name(p, root): facts
                                  for p, facts in w.file_facts.items()}
                                 for w, root in zip(writers, spec.roots)]
    return with_files(summary, [p for paths in written for p in paths],
                      sizes=[n for w, paths in zip(writers, written) for n in w.sizes(paths)],
                      folders={f for w, paths in zip(writers, written) for f in w.folders(paths)})


def _transform_in_flights(spec: ShardSpec, writers: list, tally: _ShardTally) -> None:
    """Transform the unit's records :data:`RECORDS_IN_FLIGHT` (or :data:`BYTES_IN_FLIGHT`)
    at a time, writing each flight after its last transform."""
    in_flight: list[list] = []
    written_bytes = 0  # tally.bytes_out when in_flight was last written
    for where, read in spec.unit.entries(spec.info):
        in_flight.append(_transformed(spec, where, read, tally))
        if (len(in_flight) >= RECORDS_IN_FLIGHT
                or tally.bytes_out - written_bytes >= BYTES_IN_FLIGHT):
            _write_all(writers, in_flight)
            written_bytes = tally.bytes_out
    _write_all(writers, in_flight)


def _write_all(writers: list, in_flight: list[list]) -> None:
    """Write the records transformed so far, in their order (an input that was skipped has
    none), and empty ``in_flight``."""
    for outputs in in_flight:
        for writer, record in zip(writers, outputs):
            writer.write(record)
    in_flight.clear()


@dataclass
class _ShardTally:
    n: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    skipped: list[dict] = field(default_factory=list)
    repaired: list[dict] = field(default_factory=list)

    def summary(self) -> dict:
        return {"n": self.n, "bytes_in": self.bytes_in, "bytes_out": self.bytes_out,
                "counts": self.counts, "skipped": self.skipped, "repaired": self.repaired}


def _transformed(spec: ShardSpec, where: str, read: Callable, tally: _ShardTally) -> list:
    """The output records of one input ([] when it is skipped), counted in ``tally``."""
    tally.n += 1
    try:
        record = read()
        tally.bytes_in += len(record.image)
        outputs, note = spec.transform.apply(record)
    except BadImage as e:
        if spec.strict:
            raise CorruptDataError(f"cannot resize image {where}: {e.reason}",
                                   fix="run `imgtools verify` on the input, or convert "
                                       "without --size to pass the bytes through "
                                       "untouched") from e
        tally.skipped.append({"path": where, "reason": e.reason})
        return []
    if note:
        tally.repaired.append({"path": where, "what": note})
    tally.bytes_out += len(outputs[0].image)
    key = record.wnid or ("unlabelled" if record.label is None else str(record.label))
    tally.counts[key] = tally.counts.get(key, 0) + 1
    return outputs


# ----------------------------------------------------------------------------------------------
# A run
# ----------------------------------------------------------------------------------------------


@dataclass
class Job:
    """One run, as data. ``units`` and ``inputs`` are functions so that the plan is walked as
    a stream (no pass keeps more than a shard's items). ``format_options`` are the user's
    (checked against what the format declares; its writer's go to the shards, its second
    pass's to that pass); ``per_output`` adds what the second pass must know about each
    output (a pickle's side, the plan's seed)."""

    outputs: list[Path]
    settings: dict
    inputs: Callable[[], Iterable[InputEntry] | InputsFile]
    units: Callable[[], Iterable[WorkUnit]]
    transform: Transform
    fmt: Format
    info: DatasetInfo
    format_options: dict = field(default_factory=dict)
    per_output: list[dict] | None = None
    second_pass: bool = True
    """False when the units are already the output files (a conversion's plan cut them to
    the format's size), so a format that packs parts writes its files directly."""
    strict: bool = False
    total: int | None = None
    desc: str = "build"

    @property
    def in_parts(self) -> bool:
        return self.fmt.writes_parts and self.second_pass


@dataclass
class RunOptions:
    n_jobs: int | None = None
    resume: bool = False
    overwrite: bool = False
    quiet: bool = False
    executor: Executor | None = None


@dataclass
class Totals:
    """The shards' summaries, added up (per split: counts per class or "unlabelled")."""

    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    skipped: list[dict] = field(default_factory=list)
    repaired: list[dict] = field(default_factory=list)
    images: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    file_facts: dict[int, dict[str, dict]] = field(default_factory=dict)
    """Per output (its index in the job's outputs), what the writers know of each file of many
    records (:attr:`ShardWriter.file_facts`): one entry per output file."""
    held_sums: dict[str, list[str]] = field(default_factory=dict)
    """Shards' ``SHA256SUMS`` lines per output, by shard id, up to :data:`SUMS_HELD_CHARS`."""
    held_chars: int = 0

    def add(self, summary: dict, shard_id: str | None = None) -> None:
        sums = summary.get("sha256sums")
        if shard_id is not None and isinstance(sums, list) and \
                self.held_chars < SUMS_HELD_CHARS:
            self.held_sums[shard_id] = sums
            self.held_chars += sum(map(len, sums))
        per = self.counts.setdefault(summary["split"], {})
        for key, n in summary["counts"].items():
            per[key] = per.get(key, 0) + n
        self.skipped += summary["skipped"]
        self.repaired += summary["repaired"]
        self.images += summary["n"]
        self.bytes_in += summary["bytes_in"]
        self.bytes_out += summary["bytes_out"]
        for output, facts in enumerate(summary.get("file_facts", ())):
            self.file_facts.setdefault(output, {}).update(facts)

    def split_totals(self) -> dict[str, int]:
        """Images per split, in split order (train, val, unsup, then any other)."""
        return {split: sum(self.counts[split].values())
                for split in sorted(self.counts, key=split_sort_key)}


@dataclass
class Outcome:
    """What :func:`run_job` hands the job's metadata step: the run (its staging folders), the
    totals and when it started."""

    run: OutputRun
    totals: Totals
    started: float

    @property
    def seconds(self) -> float:
        return time.time() - self.started


Metadata = Callable[[Outcome], list[dict]]
"""The job's own metadata step: writes its extra files into the staging folders (the fastai
CSV, croissant.json) and returns the report of each output (``build-info.json``)."""


def run_job(job: Job, opts: RunOptions, metadata: Metadata,
            counts_for_sidecar: Callable[[Totals], dict[str, int]] | None = None) -> dict:
    """Run ``job`` (module docstring); returns the first output's report, plus ``outputs``.
    ``counts_for_sidecar`` gives the per-split counts the format's sidecar lists (default:
    the splits that received records)."""
    started = time.time()
    if job.transform.produces not in job.fmt.takes:
        raise ValueError(f"the {job.fmt.name} writer takes {sorted(job.fmt.takes)}, not "
                         f"the {job.transform.produces!r} that {job.transform} produces")
    job.fmt.check_options(job.format_options)  # before any work
    with claim_outputs(job.outputs, job.settings, job.inputs(), resume=opts.resume,
                       overwrite=opts.overwrite) as run:
        if run.complete:
            return already_complete(job.outputs)
        totals = Totals()
        shard_ids: list[str] = []
        for task, summary in run_shards(_tasks(job, run, shard_ids), run_shard,
                                         state_dir=run.markers, n_jobs=opts.n_jobs,
                                         resume=run.resumed, desc=job.desc,
                                         total_weight=job.total, quiet=opts.quiet,
                                         prefer=job.transform.prefer,
                                         executor=opts.executor):
            totals.add(summary, task.shard_id)
        if opts.executor is not None and opts.executor.retries_tasks:
            _remove_dead_attempts(run)
        _second_pass_and_checksums(job, run, opts, totals, shard_ids)
        reports = metadata(Outcome(run, totals, started))
        counts = (counts_for_sidecar or Totals.split_totals)(totals)
        for output, (staging, report) in enumerate(zip(run.stagings, reports, strict=True)):
            job.fmt.finalize(staging, job.info, counts, totals.file_facts.get(output))
            write_report(staging, report)
        run.publish()
    return {**reports[0], "outputs": [str(r) for r in job.outputs]}


def _remove_dead_attempts(run: OutputRun) -> None:
    """The temporary files of task attempts whose worker died (the task then ran again and
    finished): only an executor that retries tasks leaves any (a local run whose worker dies
    fails, and ``--resume`` removes them when it starts), so a local run does not walk every
    file of its output for them."""
    for folder in (*run.stagings, run.work):
        if folder.exists():
            remove_stale_tmp(folder)


def work_roots(job: Job, run: OutputRun) -> list[Path]:
    """Where the shards write: the staging folders, or a parts folder per output."""
    if not job.in_parts:
        return run.stagings
    return [run.work / PARTS / root.name for root in run.roots]


def _tasks(job: Job, run: OutputRun, shard_ids: list[str]) -> Iterator[ShardTask]:
    roots = tuple(str(r) for r in work_roots(job, run))
    writer_options, _ = job.fmt.split_options(job.format_options)
    for unit in job.units():
        shard_ids.append(unit.shard_id)
        yield ShardTask(unit.shard_id, ShardSpec(unit, job.transform, job.fmt, roots, job.info,
                                                 writer_options, job.strict,
                                                 not job.in_parts),
                        weight=unit.weight)


def _second_pass_and_checksums(job: Job, run: OutputRun, opts: RunOptions, totals: Totals,
                               shard_ids: list[str]) -> None:
    """``SHA256SUMS`` of every output: from the shards' lines (those the run holds, the rest
    from their markers), or from the second pass that made the output files from the parts."""
    if not job.in_parts:
        write_checksums([s / CHECKSUMS for s in run.stagings], run.markers, shard_ids,
                        totals.held_sums)
        return
    writer_options, pass_options = job.fmt.split_options(job.format_options)
    per_output = job.per_output or [{} for _ in run.roots]
    for parts, root, extra in zip(work_roots(job, run), run.roots, per_output, strict=True):
        staging = run.staging(root)
        files = job.fmt.second_pass(PassContext(
            parts=parts, output=staging, state=run.work / PASS_STATE / root.name, info=job.info,
            options={**pass_options, **extra}, writer_options=writer_options,
            n_jobs=opts.n_jobs, quiet=opts.quiet, executor=opts.executor,
            skipped=totals.skipped))
        write_file_checksums(staging / CHECKSUMS, files)
