"""Record-format output files sized per format, independent of the work unit.

A build cuts its plan into work shards of ``--shard-size`` images (256) so that workers run in
parallel and a killed run resumes where it stopped. Files of that size are wrong for readers:
37 TFRecords of 9 MB for Imagenette's train split, where TensorFlow asks for 100+ MB files. So a
record-format build writes each work shard as a *part* inside its state folder, and when every
part is done, this module packs the parts of each split, in plan order, into files of the
format's own target (``shard_bytes`` / ``shard_records`` options, else the format's
``default_shard_bytes`` / ``default_shard_records``: 200 MB TFRecords, 500 MB Parquet,
WebDataset tars of at most 10,000 samples or 500 MB).

Packing is the record formats' second pass (:meth:`imgtools.formats.base.Format.second_pass`):
a same-format conversion of the parts (:func:`imgtools.pipeline.slices.plan_conversion` cuts
the record stream by the sizes the parts' headers give; each output file is written by the
format's own writer, so a packed file is exactly what that writer makes of those records).
The cut depends only on the records, so the files are the same whatever ``-j``; each packed
file has a done marker in the run folder (see :mod:`imgtools.pipeline.output`), so a run killed
while packing resumes there, and the parts go with the run folder when the output is
published.
"""

from __future__ import annotations

from pathlib import Path

from imgtools.atomic import atomic_write_text
from imgtools.checksums import sha256sum_line
from imgtools.formats.base import Format, PassContext
from imgtools.formats.common import parse_size
from imgtools.pipeline.slices import plan_conversion, read_slice
from imgtools.runner import ShardTask, resolve_jobs, run_shards, with_files

SIZE_OPTIONS = ("shard_bytes", "shard_records")
"""Build options that set the output file size (they mean the same in ``imgtools convert``)."""


class PackedParts:
    """Mixin for record formats (TFRecord, WebDataset, Parquet): work shards write parts, and
    the second pass packs them into files of the format's size (module docstring)."""

    writes_parts = True
    pass_options = frozenset(SIZE_OPTIONS)

    def second_pass(self, ctx: PassContext) -> list[tuple[str, str]]:
        assert isinstance(self, Format)
        return pack_parts(self, ctx)


def file_targets(fmt: Format, options: dict) -> tuple[int | None, int | None]:
    """``(max records, max bytes)`` of one output file: the options, else the format's."""
    records = options.get("shard_records") or fmt.default_shard_records
    nbytes = options.get("shard_bytes")
    nbytes = parse_size(nbytes) if nbytes else fmt.default_shard_bytes
    return records, nbytes


def pack_parts(fmt: Format, ctx: PassContext) -> list[tuple[str, str]]:
    """Pack the parts at ``ctx.parts`` into target-sized files in ``ctx.output``; ``(path
    relative to the output, sha256)`` of each file, in plan order."""
    if not ctx.parts.is_dir() or not fmt.files(ctx.parts):
        return []  # every image of the run was skipped: nothing to pack
    jobs = resolve_jobs(ctx.n_jobs)
    max_records, max_bytes = file_targets(fmt, ctx.options)
    plan = plan_conversion(fmt, fmt.input_shards(ctx.parts), ctx.info, max_records, max_bytes,
                           jobs, executor=ctx.executor)
    root = ctx.output
    tasks = [ShardTask(f"{out.split}-{out.index:05d}", {
        "fmt": fmt, "root": str(root), "shard": out, "info": ctx.info,
        "options": ctx.writer_options}, weight=out.records) for out in plan]
    done: dict[str, list[tuple[str, str]]] = {}
    for task, summary in run_shards(tasks, _pack_file, state_dir=ctx.state, n_jobs=jobs,
                                    resume=True, desc=f"pack {root.name}",
                                    total_weight=sum(o.records for o in plan), quiet=ctx.quiet,
                                    executor=ctx.executor):
        done[task.shard_id] = [tuple(f) for f in summary["checksums"]]
    return [f for task in tasks for f in done[task.shard_id]]


def _pack_file(task: ShardTask) -> dict:
    """Worker: write one output file from its slices of the parts (module level: picklable)."""
    p = task.payload
    fmt: Format = p["fmt"]
    out, info, root = p["shard"], p["info"], Path(p["root"])
    writer = fmt.open_writer(root, info, out.split, out.index, out.num_shards, digests=True,
                             **p["options"])
    try:
        for piece in out.slices:
            for record in read_slice(fmt, piece, info):
                writer.write(record)
    except BaseException:
        writer.abort()
        raise
    files = writer.close()
    return with_files({"checksums": [(f.relative_to(root).as_posix(), writer.digest(f))
                                     for f in files]}, files)


def write_file_checksums(path: Path, files: list[tuple[str, str]]) -> None:
    """``SHA256SUMS`` (``sha256sum -c`` format) of files a second pass wrote, in its order."""
    atomic_write_text(path, "".join(sha256sum_line(digest, rel) for rel, digest in files))
