"""``imgtools convert``: move a dataset between folder, TFRecord, WebDataset and Parquet, or
make downsampled-ImageNet pickles/npz of it."""

from __future__ import annotations

import json
import re
import shlex
import sys
from pathlib import Path

import click

from imgtools.commands.executor_options import cli_executor, executor_options, is_remote
from imgtools.errors import UserError
from imgtools.formats import ALIASES, CONVERT_TARGETS, FORMAT_NAMES

WRITABLE = CONVERT_TARGETS
READABLE = FORMAT_NAMES
_DIRECTION = re.compile(r"^([a-z]+)-to-([a-z]+)$")


def _direction(args: tuple[str, ...], to: str | None) -> tuple[str | None, str, str, str]:
    """(input format or None to detect, output format, src, dst) from the positional args."""
    def canonical(name: str, allowed: tuple[str, ...]) -> str:
        if not (name == "npz" and name in allowed):  # npz output: the pickle format's container
            name = ALIASES.get(name, name)
        if name not in allowed:
            raise UserError(f"unknown format {name!r}", fix=f"use one of: {', '.join(allowed)}")
        return name

    if len(args) == 3 and (m := _DIRECTION.match(args[0])):
        src_fmt, dst_fmt = canonical(m.group(1), READABLE), canonical(m.group(2), WRITABLE)
        if to and canonical(to, WRITABLE) != dst_fmt:
            raise UserError(f"{args[0]} contradicts --to {to}", fix="give one or the other")
        return src_fmt, dst_fmt, args[1], args[2]
    if len(args) == 2:
        if not to:
            raise UserError("which format should the output be?",
                            fix=f"add --to {'|'.join(WRITABLE)}, or name the direction first: "
                                "imgtools convert folder-to-parquet SRC DST")
        return None, canonical(to, WRITABLE), args[0], args[1]
    raise UserError(f"expected SRC DST (or A-to-B SRC DST), got {len(args)} arguments: "
                    f"{' '.join(args)}", fix="see imgtools convert --help")


@click.command(context_settings={"show_default": True})
@click.argument("args", nargs=-1, metavar="[A-to-B] SRC DST")
@click.option("--to", "to", metavar="FORMAT",
              help=f"Output format: {', '.join(WRITABLE)} (or wds, tfrec, hf).")
@click.option("--from", "src_format", metavar="FORMAT",
              help="Input format, when detection should be skipped. [default: detected]")
@click.option("--size", type=click.IntRange(1), default=None,
              help="Resize so the shortest side is at most N pixels (as `build --size` does). "
                   "Without it image bytes are copied untouched.")
@click.option("--shard-records", type=click.IntRange(1), default=None,
              help="At most N images per output file. [default: webdataset 10000, others "
                   "unlimited]")
@click.option("--shard-bytes", metavar="SIZE", default=None,
              help="At most SIZE of image bytes per output file, e.g. 500MB, 1GB. "
                   "[default: webdataset and parquet 500MB, tfrecord 200MB]")
@click.option("--schema", type=click.Choice(["tfds", "slim", "flowers"]), default=None,
              help="TFRecord output feature keys: tfds = image/label/file_name; slim = "
                   "image/encoded, image/class/label, ...; flowers = image/class/id (Kaggle). "
                   "[default: tfds]")
@click.option("--compression", type=click.Choice(["none", "gzip"]), default=None,
              help="TFRecord output compression. GZIP files get no index (offsets into a "
                   "compressed stream cannot be seeked). [default: none]")
@click.option("--image-key", default=None,
              help="TFRecord input: feature holding the image. [default: detected]")
@click.option("--label-key", default=None,
              help="TFRecord input: feature holding the integer label. [default: detected]")
@click.option("--filename-key", default=None,
              help="TFRecord input: feature holding the file name or id. [default: detected]")
@click.option("--batches", type=click.IntRange(1), default=None,
              help="pickle/npz output: number of train_data_batch files. [default: 10]")
@click.option("--seed", type=int, default=None,
              help="pickle/npz output: seed of the train shuffle. [default: 0]")
@click.option("--crop", is_flag=True,
              help="pickle/npz output: keep the aspect ratio with a centre crop instead of "
                   "squashing.")
@click.option("-j", "--jobs", "n_jobs", type=int, default=0,
              help="Parallel workers (0 = all cores).")
@executor_options
@click.option("--resume", is_flag=True,
              help="Finish an interrupted conversion into the same DST (finished shards are "
                   "kept). Refused if a setting or an input file changed; on a complete DST "
                   "made the same way, does nothing.")
@click.option("--overwrite", is_flag=True,
              help="Replace DST if imgtools wrote it (a folder holding other files is "
                   "refused). The old DST stays until the new one is complete.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar or summary.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def convert(args: tuple[str, ...], to: str | None, src_format: str | None, size: int | None,
            shard_records: int | None, shard_bytes: str | None, schema: str | None,
            compression: str | None, image_key: str | None, label_key: str | None,
            filename_key: str | None, batches: int | None, seed: int | None, crop: bool,
            n_jobs: int, executor: str | None,
            scheduler: str | None, resume: bool, overwrite: bool,
            quiet: bool, as_json: bool) -> None:
    """Convert a dataset to another format, losslessly.

    The input format is detected; image bytes, labels, class names, splits (train, val,
    unsup) and file names are carried over untouched unless --size asks for a resize.
    --to pickle or npz makes downsampled-ImageNet files (Imagenet32-style): --size N is then
    the square side (8-64), pixels as the published resizer makes them, train shuffled
    with --seed and split into --batches files with the mean image.
    Work runs in parallel by output shard; every file appears atomically, and --resume
    finishes an interrupted run with the same bytes an uninterrupted one gives.

    \b
    imgtools convert out/imagenette2-320 out/imagenette2-320-wds --to webdataset
    imgtools convert tfrecord-to-webdataset flowers/tfrecords-jpeg-224x224 flowers-wds
    imgtools convert out/imagenette2-320-wds out/imagenette2-320-parquet --to parquet
    imgtools convert folder-to-tfrecord out/imagewoof2-160 tfr --schema slim --compression gzip
    imgtools convert out/imagenette2-320 out/imagenette_32x32 --to pickle --size 32

    Exit codes: 0 done, 2 bad input (unknown format, corrupt or empty input, existing DST).
    """
    # lazy: `imgtools convert --help` and a bad argument answer without importing the pipeline
    # (numpy, Pillow, tqdm)
    from imgtools.convert import convert as run
    from imgtools.formats.common import parse_size

    if shard_bytes is not None and parse_size(shard_bytes) is None:
        raise UserError(f"--shard-bytes {shard_bytes} would put no image in any file",
                        fix="give a size such as 500MB, or leave --shard-bytes out for the "
                            "format's default")
    given_from, dst_fmt, src, dst = _direction(args, to)
    src_format = src_format or given_from
    if dst_fmt != "tfrecord" and (schema or compression):
        raise UserError("--schema and --compression apply to TFRecord output only",
                        fix="drop them, or use --to tfrecord")
    read_options = {k: v for k, v in (("image_key", image_key), ("label_key", label_key),
                                      ("filename_key", filename_key)) if v}
    writer_options: dict = {}
    if dst_fmt in ("pickle", "npz"):
        writer_options.update({k: v for k, v in (("batches", batches), ("seed", seed),
                                                 ("crop", crop)) if v})
    elif batches is not None or seed is not None or crop:
        raise UserError("--batches, --seed and --crop apply to pickle/npz output only",
                        fix="drop them, or use --to pickle (or npz) with --size N")
    if schema:
        writer_options["schema"] = schema
    if compression and compression != "none":
        writer_options["compression"] = compression
    if is_remote(executor, scheduler):  # the workers read and write them elsewhere
        src, dst = Path(src).absolute(), Path(dst).absolute()
    with cli_executor(executor, scheduler, n_jobs, read=[Path(src)], write=[Path(dst)]) as ex:
        summary = run(src, dst, dst_fmt, n_jobs=n_jobs, size=size, resume=resume,
                      overwrite=overwrite, quiet=quiet or as_json, src_format=src_format,
                      read_options=read_options, shard_records=shard_records,
                      shard_bytes=shard_bytes, executor=ex,
                      command="imgtools " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
                      **writer_options)
    if as_json:
        click.echo(json.dumps(summary, indent=2))
    elif summary.get("nothing_to_do"):
        click.echo(f"{dst}: {summary['message']}")
    elif not quiet:
        splits = ", ".join(f"{n} {s}" for s, n in summary["splits"].items())
        click.echo(f"{summary['from']} -> {summary['to']}: {summary['records']} images "
                   f"({splits}) in {summary['shards']} shards, {summary['seconds']:.1f} s "
                   f"({summary['records_per_s']:.0f} img/s, {summary['mb_per_s']} MB/s) -> "
                   f"{summary['dst']}")
