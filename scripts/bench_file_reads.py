#!/usr/bin/env python
"""What reading one image file costs, by the ways a shard could read it.

Why this exists: a conversion reads every input image whole, so a system call more per image
is a cost on top of its floor. Python's ``open(path, "rb").read()`` (and ``Path.read_bytes``,
which is the same) asks whether the file is a terminal (``ioctl``), ``fstat``s it twice, seeks
(``lseek``) and reads twice (the second read finds the end); imgtools opens, ``fstat``s once
and reads ``size + 1`` bytes (:func:`imgtools.atomic.read_file`). This script measures the
ways on the same files, in alternating order, CPU (user + system) of this process per file,
every file in the page cache (a conversion's input is usually cached; what is measured is the
reading, not the disk):

* ``open().read()``: what the folder reader did;
* ``Path.read_bytes()``: what ``scripts/bench_overhead.py``'s floor did, with the ``Path``
  objects made beforehand;
* ``read_file``: ``os.open``, ``os.fstat``, one ``os.read``, ``os.close`` (imgtools now).

    python scripts/bench_file_reads.py --images /path/to/built/imagenette2-320 --rounds 9

``--images``: a folder of images (searched recursively for ``*.JPEG``), e.g. a build's output.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from imgtools.atomic import read_file  # noqa: E402 - after the path of this checkout


def builtin_open(paths: list[str], _as_paths: list[Path]) -> int:
    total = 0
    for path in paths:
        with open(path, "rb") as f:
            total += len(f.read())
    return total


def path_read_bytes(_paths: list[str], as_paths: list[Path]) -> int:
    return sum(len(p.read_bytes()) for p in as_paths)


def imgtools_read_file(paths: list[str], _as_paths: list[Path]) -> int:
    return sum(len(read_file(path)) for path in paths)


WAYS: dict[str, Callable[[list[str], list[Path]], int]] = {
    "open().read()": builtin_open,
    "Path.read_bytes()": path_read_bytes,
    "read_file": imgtools_read_file,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=Path, required=True)
    parser.add_argument("--rounds", type=int, default=9)
    args = parser.parse_args()
    as_paths = sorted(args.images.rglob("*.JPEG"))
    paths = [str(p) for p in as_paths]
    if not paths:
        sys.exit(f"no *.JPEG under {args.images}")
    sizes = {name: way(paths, as_paths) for name, way in WAYS.items()}  # warms the cache
    if len(set(sizes.values())) != 1:
        sys.exit(f"the ways read different amounts of data: {sizes}")
    per_file: dict[str, list[float]] = {name: [] for name in WAYS}
    for round_index in range(args.rounds):
        order = list(WAYS.items())
        for name, way in order[round_index % len(order):] + order[:round_index % len(order)]:
            start = time.process_time()
            way(paths, as_paths)
            per_file[name].append((time.process_time() - start) / len(paths) * 1e6)
    print(f"{len(paths)} files, {sizes['read_file'] / len(paths) / 1024:.1f} KiB on average, "
          f"{args.rounds} rounds; CPU per file, median (min-max):")
    for name, values in per_file.items():
        print(f"  {name:20s} {statistics.median(values):6.2f} us "
              f"({min(values):.2f}-{max(values):.2f})")


if __name__ == "__main__":
    main()
