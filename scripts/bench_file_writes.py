#!/usr/bin/env python
"""What one image file costs to create, by the ways a folder output could write it.

Why this exists: a folder output writes one file per image, so a directory operation more per
image is a cost the floor of a conversion (read, write, hash) does not pay. imgtools wrote
each image unnamed (``O_TMPFILE``) and linked it in (``linkat``), so that a kill never left a
part of an image under its name; since every run writes into a staging folder that becomes the
output by one rename, a part of an image is never seen by a reader, and the images are now
created directly (``open(O_CREAT | O_EXCL)``, :func:`imgtools.atomic.write_new`). This script
measures the three ways on the same bytes, in alternating order, CPU (user + system) of this
process per file, the page cache emptied and the written data synced before each way. The
VM's cost of new memory moves from run to run (docs/bench_engine.md), so each way is compared
with ``exclusive`` in the same round:

* ``exclusive``: ``open(O_CREAT | O_EXCL)``, ``write``, ``close`` (what imgtools does now);
* ``unnamed + link``: ``open(O_TMPFILE)``, ``write``, ``linkat`` from ``/proc/self/fd``,
  ``close`` (what it did; Linux only);
* ``temporary name + link``: ``open`` of a ``.tmp-`` name, ``write``, ``close``, ``link``,
  ``unlink`` (the fallback where there is no ``O_TMPFILE``).

    python scripts/bench_file_writes.py --images /path/to/built/imagenette2-320 \\
        --out /mnt/fresh-ext4/writes --rounds 9 [--drop-caches] [--back-memory]

``--images``: a folder of images (searched recursively for ``*.JPEG``), e.g. a build's output;
``--out``: a folder on the filesystem to measure (each way writes a new sub-folder).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path


def exclusive(folder: str, images: list[bytes]) -> None:
    for i, data in enumerate(images):
        fd = os.open(f"{folder}/{i}.JPEG", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        os.write(fd, data)
        os.close(fd)


def unnamed_and_link(folder: str, images: list[bytes]) -> None:
    anchor = os.open("/", os.O_RDONLY | os.O_DIRECTORY)
    try:
        for i, data in enumerate(images):
            fd = os.open(folder, os.O_TMPFILE | os.O_WRONLY, 0o666)
            os.write(fd, data)
            os.link(f"/proc/self/fd/{fd}", f"{folder}/{i}.JPEG", src_dir_fd=anchor,
                    follow_symlinks=True)
            os.close(fd)
    finally:
        os.close(anchor)


def temporary_name_and_link(folder: str, images: list[bytes]) -> None:
    for i, data in enumerate(images):
        tmp = f"{folder}/.tmp-{i}.JPEG"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        os.write(fd, data)
        os.close(fd)
        os.link(tmp, f"{folder}/{i}.JPEG")
        os.unlink(tmp)


WAYS: dict[str, Callable[[str, list[bytes]], None]] = {
    "exclusive": exclusive,
    "temporary name + link": temporary_name_and_link,
}
if sys.platform.startswith("linux") and hasattr(os, "O_TMPFILE"):
    WAYS["unnamed + link"] = unnamed_and_link


def settle(drop_caches: bool) -> None:
    os.sync()
    if drop_caches:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("1\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--drop-caches", action="store_true",
                    help="empty the page cache before each way (root)")
    ap.add_argument("--back-memory", action="store_true",
                    help="on a VM that hands free memory back to its host (root): turn that "
                         "off and touch the free memory first (bench_overhead.backed_memory)")
    args = ap.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_overhead import backed_memory

    with backed_memory(args.back_memory) as memory:
        print(f"memory: {memory}")
        measure(args)


def measure(args: argparse.Namespace) -> None:
    images = [p.read_bytes() for p in sorted(args.images.rglob("*.JPEG"))]
    if not images:
        sys.exit(f"error: no *.JPEG under {args.images}")
    spent: dict[str, list[float]] = {name: [] for name in WAYS}
    names = list(WAYS)
    for r in range(args.rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:  # each way first in turn
            folder = args.out / f"{r}-{name.replace(' ', '_').replace('+', 'and')}"
            folder.mkdir(parents=True)
            settle(args.drop_caches)
            start = time.process_time()
            WAYS[name](str(folder), images)
            spent[name].append(time.process_time() - start)
        print(f"  round {r + 1}: " + ", ".join(f"{n} {spent[n][-1]:.3f} s" for n in names),
              flush=True)
    mb = sum(map(len, images)) / 1e6
    print(f"{len(images)} files ({mb:.0f} MB) a way, {args.rounds} rounds, on {args.out}; "
          "CPU of this process, median (range), and its excess over 'exclusive' in the same "
          "round (median of the rounds' differences):")
    for name, seconds in spent.items():
        per = [1e6 * s / len(images) for s in seconds]
        more = [1e6 * (s - e) / len(images) for s, e in zip(seconds, spent["exclusive"])]
        print(f"  {name:24s} {statistics.median(seconds):.3f} s "
              f"({min(seconds):.3f}-{max(seconds):.3f}) = {statistics.median(per):.1f} us a file"
              + ("" if name == "exclusive" else
                 f"; {statistics.median(more):+.1f} us a file ({min(more):+.1f} to "
                 f"{max(more):+.1f})"))


if __name__ == "__main__":
    main()
