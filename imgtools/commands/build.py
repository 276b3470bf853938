"""``imgtools build``: carve a dataset out of ImageNet (a tree, the archives or a copy)."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

import click

from imgtools.commands.executor_options import cli_executor, executor_options, is_remote
from imgtools.errors import EXIT_PROBLEMS, UserError, shown_path
from imgtools.formats import BUILD_FORMATS
from imgtools.transforms.jpeg import DEFAULT_FILTER, DEFAULT_QUALITY, FILTERS

FORMATS = BUILD_FORMATS


def parse_size(value: str) -> int | None:
    if value.lower() == "full":
        return None
    try:
        n = int(value)
    except ValueError:
        n = 0
    if n < 1:
        raise click.BadParameter(f"{value!r}: give 'full' or a positive number of pixels")
    return n


@click.command(context_settings={"show_default": True})
@click.argument("dataset")
@click.option("--src", required=True, type=click.Path(path_type=Path),
              help="Where ImageNet is: an extracted tree (the top folder, ILSVRC/ or CLS-LOC/; "
                   "Kaggle, tarball+devkit and val-in-folders layouts), the folder of the "
                   "image-net.org archives (read in place), the Kaggle zip, or an HF / TFDS / "
                   "WebDataset copy. Detected; see docs/sources.md.")
@click.option("--out", default="out", type=click.Path(path_type=Path),
              help="Parent folder of the outputs (imagenette2-320/ and so on are made in it).")
@click.option("--size", "sizes", multiple=True, metavar="full|N",
              help="Shortest side in pixels (aspect kept), or 'full'; for pickle/npz the N x N "
                   "side (8-64). Repeat for several sizes: each image is decoded once. "
                   "[default: 320; 32 for pickle/npz]")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="folder",
              help="Output format: folder = JPEG folders like the fastai tarballs; pickle/npz = "
                   "downsampled-ImageNet batches.")
@click.option("--split", "split_mode", type=click.Choice(["official", "random", "source"]),
              help="official: fastai's published membership; random: seeded, stratified per "
                   "class; source: ImageNet's own train/val. [default: the recipe's]")
@click.option("--valid-pct", type=click.FloatRange(0, 1), default=None,
              help="Share of each class in val for --split random. [default: the recipe's, 0.3]")
@click.option("--seed", type=int, default=0, help="Seed for every random choice.")
@click.option("--split-csv", "split_csvs", multiple=True, type=click.Path(path_type=Path),
              help="A local copy of the official list (noisy_imagenette.csv, ...); give it twice "
                   "for imagewang. Without it the list is downloaded once and cached.")
@click.option("--allow-missing", is_flag=True,
              help="Build even if images of the official list are missing from the tree "
                   "(they are listed in build-info.json).")
@click.option("--filter", "resample", type=click.Choice(sorted(FILTERS)), default=DEFAULT_FILTER,
              help="Resampling filter (antialiased when shrinking). With --fast, the short "
                   "resize left after a DCT-scaled JPEG decode uses bicubic instead of bilinear, "
                   "hamming or box. Ignored by pickle/npz, which use BOX like the published "
                   "downsampled ImageNet.")
@click.option("--quality", type=click.IntRange(1, 100), default=DEFAULT_QUALITY,
              help="JPEG quality of re-encoded images.")
@click.option("--exact/--fast", "exact", default=None,
              help="--fast resizes with SIMD code (Pillow's convolution, 2.5-5x faster) and "
                   "decodes JPEGs with DCT scaling down to the target size, resizing the rest "
                   "of the way with bicubic (default for JPEG outputs; as close to an ideal "
                   "resize as --exact); --exact decodes at full resolution and resizes with "
                   "Pillow and --filter, bit for bit a plain Pillow loop (default for "
                   "pickle/npz).")
@click.option("--batches", type=click.IntRange(1), default=10,
              help="pickle/npz: number of train_data_batch files.")
@click.option("--crop", is_flag=True,
              help="pickle/npz: keep the aspect ratio with a center crop instead of squashing.")
@click.option("-j", "--jobs", "n_jobs", type=int, default=0,
              help="Parallel workers (0 = all cores).")
@executor_options
@click.option("--shard-size", type=click.IntRange(1), default=256,
              help="Images per work shard (unit of parallel work and resume). Record formats "
                   "pack the work shards into files of --shard-bytes/--shard-records.")
@click.option("--shard-bytes", metavar="SIZE", default=None,
              help="tfrecord/webdataset/parquet: close an output file at this many bytes of "
                   "records (500MB, 1.5GB). [default: 200MB TFRecord, 500MB Parquet and "
                   "WebDataset]")
@click.option("--shard-records", type=click.IntRange(1), default=None,
              help="tfrecord/webdataset/parquet: close an output file at this many images. "
                   "[default: 10000 for WebDataset, no limit for the others]")
@click.option("--resume", is_flag=True,
              help="Finish an interrupted build (same command). Refused if a setting or an "
                   "input file changed; on a complete output made the same way, does nothing.")
@click.option("--overwrite", is_flag=True,
              help="Replace an existing output (only one imgtools wrote: a folder holding other "
                   "files is refused). The old output stays until the new one is complete.")
@click.option("--strict", is_flag=True, help="Exit with code 1 if any image was skipped.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar or summary.")
@click.option("--json", "as_json", is_flag=True, help="Print the build report as JSON.")
def build(dataset: str, src: Path, out: Path, sizes: tuple[str, ...], fmt: str,
          split_mode: str | None, valid_pct: float | None, seed: int,
          split_csvs: tuple[Path, ...], allow_missing: bool, resample: str, quality: int,
          exact: bool | None, batches: int, crop: bool, n_jobs: int, executor: str | None,
          scheduler: str | None, shard_size: int, shard_bytes: str | None,
          shard_records: int | None, resume: bool, overwrite: bool, strict: bool, quiet: bool,
          as_json: bool) -> None:
    """Build DATASET (imagenette, imagewoof, imagewang, imagenet, or a recipe .toml file)
    from the ImageNet tree at --src.

    \b
    imgtools build imagenette --src /data/ILSVRC --size 320 --out out/
    imgtools build imagewang  --src /data/ILSVRC --size 160 --size 320
    imgtools build my-subset.toml --src /data/imagenet --size full --split random
    imgtools build imagenet --src /data/ILSVRC --size 32 --format pickle

    Output folders are named like the fastai tarballs (imagenette2-320/train/<wnid>/...), with
    the fastai CSV, build-info.json (counts, skipped and repaired files) and SHA256SUMS.
    """
    # lazy: `imgtools build --help` and a bad argument answer without importing the pipeline
    # (tqdm, crc32c, the executor)
    from imgtools.build import BuildOptions
    from imgtools.build import build as run_build
    from imgtools.plan import make_plan
    from imgtools.recipes import load_recipe
    from imgtools.sources import open_source

    if resume and overwrite:
        raise UserError("--resume and --overwrite exclude each other",
                        fix="--resume continues a build; --overwrite starts it again")
    downsampled = fmt in ("pickle", "npz")
    parsed = [parse_size(s) for s in sizes] or [32 if downsampled else 320]
    parsed = list(dict.fromkeys(parsed))
    file_options = file_size_options(fmt, shard_bytes, shard_records)  # refused for folder/pickle
    format_options = {"batches": batches, "crop": crop} if downsampled else file_options
    recipe = load_recipe(dataset)
    if is_remote(executor, scheduler):
        out = out.absolute()  # the workers write it, from another working folder
    with cli_executor(executor, scheduler, n_jobs, read=[src], write=[out]) as ex:
        source = open_source(src)
        plan = make_plan(recipe, source, split_mode=split_mode, seed=seed, valid_pct=valid_pct,
                         split_csvs=list(split_csvs), allow_missing=allow_missing)
        opts = BuildOptions(out=out, sizes=parsed, fmt=fmt, filter=resample, quality=quality,
                            exact=downsampled if exact is None else exact, n_jobs=n_jobs,
                            shard_size=shard_size, resume=resume, overwrite=overwrite,
                            quiet=quiet, executor=ex,
                            format_options=format_options)
        command = "imgtools " + " ".join(shlex.quote(a) for a in sys.argv[1:])
        if not quiet and not as_json:
            click.echo(f"source: {source.describe()}", err=True)
            click.echo(f"plan: {plan.recipe.name}, split {plan.split_mode}, "
                       + ", ".join(f"{s} {len(v)}" for s, v in plan.items.items()), err=True)
        report = run_build(plan, opts, command=command)
    if as_json:
        click.echo(json.dumps(report, indent=2))
    elif not quiet:
        print_summary(report)
    if strict and report.get("skipped"):
        sys.exit(EXIT_PROBLEMS)


def file_size_options(fmt: str, shard_bytes: str | None, shard_records: int | None) -> dict:
    """``--shard-bytes``/``--shard-records`` as build options (checked now, before any work);
    only the record formats pack their output into files."""
    # Lazy, as every import of the pipeline in this module: `imgtools --help` stays fast.
    from imgtools.formats import get_format
    from imgtools.formats.common import parse_size
    from imgtools.pipeline.packing import SIZE_OPTIONS

    if fmt == "npz" or not set(SIZE_OPTIONS) <= get_format(fmt).pass_options:
        if shard_bytes or shard_records:
            raise UserError(f"--shard-bytes/--shard-records size record files; --format {fmt} "
                            "writes none", fix="drop them, or use --format tfrecord, "
                                               "webdataset or parquet")
        return {}
    options: dict = {}
    if shard_bytes:
        parse_size(shard_bytes)
        options["shard_bytes"] = shard_bytes
    if shard_records:
        options["shard_records"] = shard_records
    return options


def print_summary(report: dict) -> None:
    if report.get("nothing_to_do"):
        for path in report.get("outputs", []):
            click.echo(f"{path}: {report['message']}")
        return
    totals = report["totals"]
    click.echo("")
    click.echo(f"built {report['recipe']} in {report['seconds']:.1f} s "
               f"({report['images_per_second']} images/s)")
    for split, n in totals.items():
        click.echo(f"  {split:6s} {n:7d} images")
    if report.get("repaired"):
        click.echo(f"  repaired {len(report['repaired'])} (converted to RGB JPEG):")
        for r in report["repaired"][:10]:
            click.echo(f"    {shown_path(r['path'])}: {r['what']}")
    if report.get("skipped"):
        click.echo(f"  skipped {len(report['skipped'])} unusable files:")
        for s in report["skipped"][:10]:
            click.echo(f"    {shown_path(s['path'])}: {s['reason']}")
        if len(report["skipped"]) > 10:
            click.echo("    ... (all listed in build-info.json)")
    for path in report.get("outputs", []):
        click.echo(f"  -> {path}")
