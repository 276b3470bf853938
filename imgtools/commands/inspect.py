"""``imgtools info | verify | stats | preview``: look inside any dataset imgtools reads."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from imgtools.commands.executor_options import cli_executor, executor_options, is_remote
from imgtools.errors import EXIT_PROBLEMS, shown_path

_path = click.argument("path", type=click.Path(path_type=Path))
_jobs = click.option("-j", "--jobs", "n_jobs", type=int, default=0,
                     help="Parallel workers (0 = all cores).")
_json = click.option("--json", "as_json", is_flag=True, help="Print a JSON report (for scripts).")
_quiet = click.option("-q", "--quiet", is_flag=True, help="No progress bar.")


def _emit(report: dict, as_json: bool, text: str) -> None:
    click.echo(json.dumps(report, indent=2) if as_json else text)


@click.command()
@_path
@_jobs
@_json
@_quiet
def info(path: Path, n_jobs: int, as_json: bool, quiet: bool) -> None:
    """Describe the dataset at PATH: format, splits, classes with counts per split, image size
    distribution (read from image headers) and bytes."""
    # lazy, as every import of imgtools.inspect here: `imgtools info --help` and a bad argument
    # answer without importing numpy and tqdm
    from imgtools.inspect.info import describe

    r = describe(path, n_jobs=n_jobs, quiet=quiet or as_json)
    splits = list(r["splits"])
    lines = [f"{r['path']}: {r['format']} dataset {r['name']!r}, {r['total']:,} images, "
             f"{r['num_classes']} classes (label order: {r['label_order']})",
             "splits: " + ", ".join(f"{s} {n:,}" for s, n in r["splits"].items())]
    if r["unlabelled"]:
        lines.append("unlabelled: " + ", ".join(f"{s} {n:,}" for s, n in r["unlabelled"].items()))
    lines.append(f"{'label':>5}  {'wnid':<10} {'name':<28}" + "".join(f"{s:>9}" for s in splits))
    for c in r["classes"]:
        lines.append(f"{c['label']:>5}  {c['wnid']:<10} {c['name'][:28]:<28}"
                     + "".join(f"{c['counts'].get(s, 0):>9,}" for s in splits))
    sz = r["image_sizes"]
    lines.append(f"image size: width {sz['width']['min']}-{sz['width']['max']} "
                 f"(mean {sz['width']['mean']}), height {sz['height']['min']}-"
                 f"{sz['height']['max']} (mean {sz['height']['mean']})"
                 + (f", {sz['unreadable']} unreadable" if sz["unreadable"] else ""))
    lines.append("shorter side: " + ", ".join(f"{k} {v:,}" for k, v in sz["shorter_side"].items()))
    lines.append("most common sizes: " + ", ".join(f"{w}x{h} ({n:,})"
                                                   for w, h, n in sz["most_common"]))
    lines.append(f"bytes: images {r['bytes']['images']:,}, on disk {r['bytes']['on_disk']:,}")
    _emit(r, as_json, "\n".join(lines))


@click.command()
@_path
@_jobs
@executor_options
@_json
@_quiet
def verify(path: Path, n_jobs: int, executor: str | None, scheduler: str | None, as_json: bool,
           quiet: bool) -> None:
    """Check the dataset at PATH: decode every image, check labels, container integrity
    (TFRecord CRCs, tar headers, Parquet page checksums), the counts in its metadata and the
    sha256 checksums recorded at build time. Exit code 0: all good; 1: problems (listed)."""
    from imgtools.inspect.verify import verify as run  # lazy: see info()

    if is_remote(executor, scheduler):
        path = path.absolute()  # the workers read it from another working folder
    with cli_executor(executor, scheduler, n_jobs, read=[path]) as ex:
        r = run(path, n_jobs=n_jobs, quiet=quiet or as_json, executor=ex)
    if r["ok"]:
        text = (f"OK: {r['records']:,} records, {r['decoded']:,} images decoded, "
                f"{r['checksums_checked']:,} checksums checked ({r['format']})")
    else:
        lines = [f"PROBLEMS: {r['problem_count']:,} in {r['path']} ({r['format']}, "
                 f"{r['records']:,} records, {r['decoded']:,} decoded)"]
        for p in r["problems"]:
            where = shown_path(p["path"]) + (f" [{p['key']}]" if p.get("key") else "") + (
                f" @{p['offset']}" if p.get("offset") is not None else "")
            lines.append(f"  {where}: {p['what']}")
        if r["problem_count"] > len(r["problems"]):
            lines.append(f"  ... and {r['problem_count'] - len(r['problems'])} more")
        lines.append("what to do: rebuild or re-convert the dataset from its source; "
                     "`imgtools convert` skips nothing silently and reports bad records")
        text = "\n".join(lines)
    if r.get("notes"):
        text += "\n" + "\n".join(f"note: {n}" for n in r["notes"])
    _emit(r, as_json, text)
    if not r["ok"]:
        sys.exit(EXIT_PROBLEMS)


@click.command()
@_path
@click.option("--split", default="train", show_default=True, help="Split to measure.")
@_jobs
@executor_options
@_json
@_quiet
def stats(path: Path, split: str, n_jobs: int, executor: str | None, scheduler: str | None,
          as_json: bool, quiet: bool) -> None:
    """Per-channel (R, G, B) mean and standard deviation of SPLIT over every pixel, streamed
    (exact integer sums: the same digits with any number of workers). Use them to normalise
    inputs: transforms.Normalize(mean, std)."""
    from imgtools.inspect.stats import channel_stats  # lazy: see info()

    if is_remote(executor, scheduler):
        path = path.absolute()  # the workers read it from another working folder
    with cli_executor(executor, scheduler, n_jobs, read=[path]) as ex:
        r = channel_stats(path, split=split, n_jobs=n_jobs, quiet=quiet or as_json,
                          executor=ex)
    text = (f"{r['split']}: {r['images']:,} images, {r['pixels']:,} pixels"
            + (f", {r['skipped']} undecodable skipped" if r["skipped"] else "")
            + f"\nmean (0-1) {r['mean']}\nstd  (0-1) {r['std']}"
            + f"\nmean (0-255) {r['mean_255']}\nstd  (0-255) {r['std_255']}")
    _emit(r, as_json, text)


@click.command()
@_path
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default=Path("."),
              show_default=True, help="Folder for preview.png and histogram.png.")
@click.option("--per-class", default=8, show_default=True, type=click.IntRange(1, 64),
              help="Sample images per class.")
@click.option("--max-classes", default=50, show_default=True, type=click.IntRange(1),
              help="Classes shown in the contact sheet (the first ones in label order).")
@click.option("--thumb", "side", default=96, show_default=True, type=click.IntRange(16, 512),
              help="Thumbnail side in pixels.")
@_jobs
@_json
@_quiet
def preview(path: Path, out_dir: Path, per_class: int, max_classes: int, side: int, n_jobs: int,
            as_json: bool, quiet: bool) -> None:
    """Write a contact sheet (preview.png: the first images of each class) and a per-class
    histogram (histogram.png: images per class and split) of the dataset at PATH."""
    from imgtools.inspect.preview import preview as run  # lazy: see info()

    r = run(path, out_dir, per_class=per_class, max_classes=max_classes, side=side,
            n_jobs=n_jobs, quiet=quiet or as_json)
    _emit(r, as_json, f"wrote {r['preview']} and {r['histogram']}")
