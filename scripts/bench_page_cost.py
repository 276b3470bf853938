#!/usr/bin/env python
"""What writing an image's bytes costs this machine's kernel, apart from any program's work.

Why this exists: ``scripts/bench_overhead.py`` found a build's writes costing from 0.04 to
0.19 ms of CPU per 40 KB image on the development VM, and the codec alone drifting by up to
25 % between runs of the same code. Both follow the cost of *new memory pages*: a write into
pages the page cache already holds is cheap, a write that needs new pages costs what the
kernel (and, in a VM whose balloon device reports free pages to the host, the hypervisor)
takes to hand them out. This script separates the two in one process, CPU time (user +
system) per 40 KB written, best of ``--repeats``:

* ``overwrite``: the same 40 KB written again and again at one offset of one file (pages
  already in the page cache: the copy alone);
* ``append``: 40 KB after 40 KB to one file (new pages every time, no file creation);
* ``new file``: one new file of 40 KB each (``open(O_CREAT|O_EXCL)``, write, close);
* ``create only``: the new file without its bytes (what the directory operation costs);
* each of the last three again right after the page cache is emptied (``--drop-caches``, root):
  the kernel then has just-freed pages at hand.

    python scripts/bench_page_cost.py --dir /mnt/fresh-ext4 --drop-caches
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

SIZE = 40_000  # about a 320 px JPEG of Imagenette


def drop_caches() -> None:
    os.sync()
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("1\n")


def per_write_ms(folder: Path, count: int, write: Callable[[Path, int, bytes], None]) -> float:
    data = os.urandom(SIZE)
    start = time.process_time()
    for i in range(count):
        write(folder, i, data)
    return 1000 * (time.process_time() - start) / count


_FDS: dict[Path, int] = {}  # one open file per measurement's folder


def _fd(path: Path) -> int:
    if path not in _FDS:
        _FDS[path] = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
    return _FDS[path]


def overwrite(folder: Path, i: int, data: bytes) -> None:
    os.pwrite(_fd(folder / "same"), data, 0)


def append(folder: Path, i: int, data: bytes) -> None:
    os.pwrite(_fd(folder / "all"), data, i * SIZE)


def new_file(folder: Path, i: int, data: bytes) -> None:
    fd = os.open(folder / f"{i}.jpg", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def create_only(folder: Path, i: int, data: bytes) -> None:
    os.close(os.open(folder / f"{i}.jpg", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))


WAYS = {"overwrite": overwrite, "append": append, "new file": new_file,
        "create only": create_only}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()),
                    help="where to write (a fresh filesystem is best)")
    ap.add_argument("--count", type=int, default=5000, help="writes per measurement")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--drop-caches", action="store_true",
                    help="also measure right after emptying the page cache (root)")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="page-cost-", dir=args.dir))
    results: dict[str, list[float]] = {}
    try:
        for r in range(args.repeats):
            for name, way in WAYS.items():
                runs = [(name, False)] + ([(name, True)] if args.drop_caches and
                                          name != "overwrite" else [])
                for label, fresh in runs:
                    folder = work / f"{r}-{label.replace(' ', '-')}-{int(fresh)}"
                    folder.mkdir()
                    os.sync()
                    if fresh:
                        drop_caches()
                    key = f"{label}{' (caches just dropped)' if fresh else ''}"
                    results.setdefault(key, []).append(per_write_ms(folder, args.count, way))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"CPU per {SIZE // 1000} KB written, {args.count} writes, best (and worst) of "
          f"{args.repeats}, in {args.dir}:")
    for key, values in results.items():
        print(f"  {key:40s} {min(values):.4f} ms ({max(values):.4f})")


if __name__ == "__main__":
    main()
