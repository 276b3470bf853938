#!/usr/bin/env python
"""What the engine costs on top of the codec work: CPU time of a whole build vs its codecs.

Why this exists (issue 11, item 6): a build's work per image is decode + resize + encode; all
else (planning, the output protocol, hashing, writing, markers, IPC, Python per image) is
overhead, which may add at most 10 % CPU. Wall time on a shared machine is noise, so this
script compares CPU time (user + system):

* ``codec``: in this process, every source image of the tree read, decoded, resized and encoded
  exactly as a build worker does it (``imgtools.transforms.jpeg.render``), best of ``--repeats``
  passes (``time.process_time``);
* ``build -j N``: a whole ``imgtools build`` of the same images as a subprocess, CPU time of it
  and of every process it waited for (``resource.getrusage(RUSAGE_CHILDREN)`` around the
  subprocess; joblib's loky workers are reaped by the build before it exits, so they count),
  best of ``--repeats``. ``-j 1`` runs shards in the build's own process; ``-j 2`` adds IPC
  and worker start-up; ``-j 2 (threads)`` is the same build with ``run_shards`` patched to
  joblib's thread backend (``prefer="threads"``), to show what the process workers cost;
* ``shard worker alone``: the engine's shard worker (``imgtools.pipeline.engine.run_shard``)
  in this process on one work unit of every image: the codec plus what the engine does per
  image (reading, writing each file atomically, hashing, the summary), without a run's fixed
  costs;
* ``-j 1 (no sync before markers)``: the same build with the ``syncfs`` before each done
  marker patched out, and the stat per output file ``--resume`` makes to trust a marker;
* ``convert``: a passthrough ``imgtools convert`` of the built folder to each ``--to`` format,
  against this process reading every image's bytes and writing them to one file (record
  formats) or to one file each (folder).

Each imgtools run reports the CPU of its main process after its imports ("work"); the rest of
the total is start-up (interpreter, imports) and, with -j 2, the workers (their start-up,
imports and shards).

    python scripts/bench_overhead.py --images 400            # about 3 min on 2 busy cores
    python scripts/bench_overhead.py --images 400 --profile  # also cProfile one -j 1 build
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "scripts"))
from make_corpus_tree import make_corpus_tree, recipe_wnids  # noqa: E402

from imgtools.formats import get_format  # noqa: E402
from imgtools.pipeline import engine  # noqa: E402
from imgtools.pipeline.units import PlanUnit  # noqa: E402
from imgtools.plan import PlanItem  # noqa: E402
from imgtools.records import ClassInfo, DatasetInfo  # noqa: E402
from imgtools.runner import ShardTask  # noqa: E402
from imgtools.transforms.jpeg import RenderOptions, ResizeJPEG, read_bytes, render  # noqa: E402

CORPUS = Path(os.environ.get("IMGTOOLS_CORPUS", "/work/shared/corpus"))
RECIPE = "imagenette"


_RUN = """
import importlib, json, os, sys, time
import imgtools.cli
importlib.import_module("imgtools.commands." + sys.argv[1])
importlib.import_module("imgtools." + sys.argv[1])  # commands import it lazily
import imgtools.pipeline.engine as engine
if os.environ.get("BENCH_PREFER_THREADS"):  # what the thread executor would cost
    _run_shards = engine.run_shards
    engine.run_shards = lambda *a, **k: _run_shards(*a, **{**k, "prefer": "threads"})
if os.environ.get("BENCH_NO_SYNC"):  # what syncing before each marker costs (-j 1 only)
    import imgtools.runner
    imgtools.runner.sync_files = lambda paths: None
start = time.process_time()
try:
    imgtools.cli.main(sys.argv[1:])
except SystemExit as e:
    if e.code:
        raise
print(json.dumps({"main_cpu": time.process_time() - start}))
"""
"""``imgtools <args>`` with the command's imports done before the clock starts: what it
prints is the CPU of the engine's own work in the main process (planning, shards when -j 1,
metadata), so that start-up (interpreter and imports) is the rest of the total."""


def imgtools_cmd() -> list[str]:
    return [sys.executable, "-c", _RUN]


def children_cpu(cmd: list[str], threads: bool = False, sync: bool = True
                 ) -> tuple[float, float]:
    """User + system CPU seconds of ``cmd`` and of every process it waited for, and the CPU
    the command's main process reported for its work after imports."""
    env = {**os.environ, "BENCH_PREFER_THREADS": "1" if threads else "",
           "BENCH_NO_SYNC": "" if sync else "1"}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        sys.exit(f"error: {' '.join(cmd)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    main_cpu = json.loads(done.stdout.strip().splitlines()[-1])["main_cpu"]
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), main_cpu


def best_pair(fn: Callable[[], tuple[float, float]], repeats: int) -> tuple[float, float]:
    """The run with the least total CPU of ``repeats``."""
    return min((fn() for _ in range(repeats)), key=lambda pair: pair[0])


def best(fn: Callable[[], float], repeats: int) -> float:
    return min(fn() for _ in range(repeats))


def cpu_of(fn: Callable[[], object]) -> float:
    start = time.process_time()
    fn()
    return time.process_time() - start


def source_images(tree: Path) -> list[Path]:
    return sorted(tree.rglob("*.JPEG"))


def build_cpu(tree: Path, out: Path, size: int, jobs: int, extra: list[str],
              threads: bool = False, sync: bool = True) -> tuple[float, float]:
    shutil.rmtree(out, ignore_errors=True)
    return children_cpu([*imgtools_cmd(), "build", RECIPE, "--src", str(tree), "--split",
                         "random", "--out", str(out), "--size", str(size), "--quiet", "-j",
                         str(jobs), *extra], threads, sync)


def convert_cpu(src: Path, dst: Path, fmt: str, jobs: int) -> tuple[float, float]:
    shutil.rmtree(dst, ignore_errors=True)
    return children_cpu([*imgtools_cmd(), "convert", str(src), str(dst), "--to", fmt,
                         "--quiet", "-j", str(jobs)])


def copy_bytes(paths: list[Path], dst: Path, one_file: bool) -> None:
    """The floor of a passthrough conversion: read every image, write its bytes."""
    shutil.rmtree(dst, ignore_errors=True)
    dst.mkdir(parents=True)
    if one_file:
        with open(dst / "all.bin", "wb") as f:
            for p in paths:
                f.write(p.read_bytes())
        return
    for i, p in enumerate(paths):
        (dst / f"{i}.jpg").write_bytes(p.read_bytes())


def make_tree(work: Path, images: int) -> Path:
    tree = work / f"tree-{images}"
    make_corpus_tree(tree, CORPUS, images, recipe_wnids(RECIPE), "valprep")
    return tree


def measure(work: Path, images: int, size: int, repeats: int, jobs: list[int],
            formats: list[str]) -> dict:
    tree = make_tree(work, images)
    paths = source_images(tree)
    opts = RenderOptions((size,), "bilinear", 90, False)
    for p in paths:  # warm the page cache and the imports
        read_bytes(str(p))
    codec = best(lambda: cpu_of(lambda: [render(read_bytes(str(p)), opts) for p in paths]),
                 repeats)
    row: dict = {"images": len(paths), "codec_s": codec, "build_s": {}, "convert_s": {},
                 "copy_s": {}}
    row["shard_s"] = best(lambda: shard_cpu(paths, opts, work / "shard"), repeats)
    out = work / "out"
    row["build_s"]["1 (no sync before markers)"] = best_pair(
        lambda: build_cpu(tree, out, size, 1, [], sync=False), repeats)
    for j in jobs:
        row["build_s"][j] = best_pair(lambda j=j: build_cpu(tree, out, size, j, []), repeats)
        if j > 1:
            row["build_s"][f"{j} (threads)"] = best_pair(
                lambda j=j: build_cpu(tree, out, size, j, [], threads=True), repeats)
    built = out / f"imagenette2-{size}"
    build_cpu(tree, out, size, 1, [])
    built_images = sorted(built.rglob("*.JPEG"))
    # --resume trusts a marker after one stat per file it vouches for:
    row["marker_check_s"] = best(lambda: cpu_of(lambda: [os.path.getsize(p)
                                                         for p in built_images]), repeats)
    for fmt in formats:
        row["convert_s"][fmt] = best_pair(
            lambda f=fmt: convert_cpu(built, work / f"conv-{f}", f, 1), repeats)
        row["copy_s"][fmt] = best(lambda f=fmt: cpu_of(
            lambda: copy_bytes(built_images, work / "copy", f != "folder")), repeats)
    row["converted_images"] = len(built_images)
    return row


def shard_cpu(paths: list[Path], opts: RenderOptions, out: Path) -> float:
    """CPU of the engine's shard worker alone, in this process, on one work unit holding every
    image: read, transform, write each file atomically, hash it, summarise. Against the codec
    this is the engine's cost per image, without the fixed costs of a run (start-up, planning,
    metadata, publishing) that a bigger build spreads thinner."""
    shutil.rmtree(out, ignore_errors=True)
    info = DatasetInfo("bench", [ClassInfo("n01440764", "tench")])
    items = [PlanItem(str(p), "train", 0, "n01440764", f"{i:06d}.JPEG")
             for i, p in enumerate(paths)]
    spec = engine.ShardSpec(PlanUnit(items, "train", 0, 1), ResizeJPEG(opts),
                            get_format("folder"), (str(out),), info, {}, strict=False,
                            hash_files=True)
    cpu = cpu_of(lambda: engine.run_shard(ShardTask("train-00000", spec)))
    shutil.rmtree(out, ignore_errors=True)
    return cpu


def profile_build(work: Path, images: int, size: int) -> None:
    tree = work / f"tree-{images}"
    out = work / "prof-out"
    shutil.rmtree(out, ignore_errors=True)
    stats = work / "build.prof"
    subprocess.run([sys.executable, "-m", "cProfile", "-o", str(stats), "-m", "imgtools.cli",
                    "build", RECIPE, "--src", str(tree), "--split", "random", "--out", str(out),
                    "--size", str(size), "--quiet", "-j", "1"], check=True)
    import pstats

    pstats.Stats(str(stats)).sort_stats("tottime").print_stats(25)


def report(row: dict) -> None:
    n, codec = row["images"], row["codec_s"]
    print(f"CPU seconds (user+sys, best of runs), {n} images; 'work' is the main process's CPU "
          "after its imports, 'start-up' the rest (interpreter, imports, -j N workers)")
    print(f"  codec work alone (decode+resize+encode): {codec:.2f} s "
          f"({1000 * codec / n:.2f} ms/img)")
    shard = row["shard_s"]
    print(f"  the shard worker alone (read, transform, write, hash, summary; in process): "
          f"{shard:.2f} s = {shard / codec:.3f}x codec, {1000 * (shard - codec) / n:.3f} "
          "ms/img more")
    for j, (total, main_cpu) in row["build_s"].items():
        workers = isinstance(j, int) and j > 1
        print(f"  build -j {j}: {total:.2f} s = {total / codec:.3f}x codec; main process's "
              f"work {main_cpu:.2f} s ({main_cpu / codec:.3f}x codec); start-up"
              f"{' and workers' if workers else ''} {total - main_cpu:.2f} s")
    print(f"  checking every marker on --resume (a stat per output file): "
          f"{1e6 * row['marker_check_s'] / row['converted_images']:.1f} us per image")
    for fmt, (total, main_cpu) in row["convert_s"].items():
        copy = row["copy_s"][fmt]
        print(f"  convert -j 1 -> {fmt}: {total:.2f} s, work {main_cpu:.3f} s vs copying the "
              f"bytes {copy:.3f} s ({main_cpu / copy:.1f}x); start-up {total - main_cpu:.2f} s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=400)
    ap.add_argument("--size", type=int, default=320)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--jobs", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--to", nargs="*", default=["tfrecord", "webdataset", "folder"])
    ap.add_argument("--profile", action="store_true", help="cProfile a -j 1 build too")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as t:
        work = Path(t)
        row = measure(work, args.images, args.size, args.repeats, args.jobs, args.to)
        report(row)
        if args.profile:
            profile_build(work, args.images, args.size)
    if args.json:
        args.json.write_text(json.dumps(row, indent=1) + "\n")


if __name__ == "__main__":
    main()
