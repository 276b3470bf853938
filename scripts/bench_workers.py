#!/usr/bin/env python
"""What a build's worker processes cost, and whether threads would do better.

Why (issue 11, item 6): a ``-j 2`` build spends more CPU than a ``-j 1`` build of the same
images by the start-up of its two workers. Forked workers (the local executor's default on
Linux) start with everything imported; spawned ones (a new interpreter each, as on macOS, and
what joblib's loky workers were) import it all again. Threads would spare any start-up, but
the Python around each image then waits for the GIL. This script measures each on the corpus
photos:

* worker start-up: CPU (user + sys, the build and every process it waited for) of a build of
  a few images at ``-j 1``, at ``-j 2`` (forked workers) and at ``-j 2`` with spawned workers,
  interleaved, median of ``--repeats``; the differences are what the two workers cost to start;
* processes against threads: wall time and CPU of ``build -j 2`` with worker processes (the
  default) and with threads, interleaved, median of ``--repeats``, each into a new folder
  under ``--outputs`` after an ``os.sync()``.

    python scripts/bench_workers.py --images 13394 --repeats 3 --outputs /mnt/fresh-ext4
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "scripts"))
from bench_overhead import build_cmd, make_tree, timed_run  # noqa: E402


def timed_build(tree: Path, out: Path, jobs: int, threads: bool = False, spawn: bool = False
                ) -> tuple[float, float]:
    """Wall seconds and CPU seconds of one ``imgtools build`` (its whole process tree)."""
    wall, cpu, _work = timed_run(build_cmd(tree, out, 320, jobs), threads, spawn=spawn)
    return wall, cpu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=2000)
    ap.add_argument("--small", type=int, default=40, help="images of the start-up builds")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--outputs", type=Path, help="where the builds write (default: temporary)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as t:
        work = Path(t)
        outputs = (args.outputs or work) / "bench-workers-outputs"
        n = 0

        def new_out() -> Path:
            nonlocal n
            n += 1
            return outputs / f"{n:03d}"

        small = make_tree(work, args.small)
        starts = {"-j 1": (1, False), "-j 2, forked": (2, False), "-j 2, spawned": (2, True)}
        cpus: dict[str, list[float]] = {label: [] for label in starts}
        for _ in range(args.repeats):
            for label, (jobs, spawn) in starts.items():
                cpus[label].append(timed_build(small, new_out(), jobs, spawn=spawn)[1])
        one = statistics.median(cpus["-j 1"])
        print(f"build of {args.small} images, CPU (median of {args.repeats}): -j 1 {one:.2f} s")
        for label in ("-j 2, forked", "-j 2, spawned"):
            cpu = statistics.median(cpus[label])
            print(f"  {label}: {cpu:.2f} s: the two workers cost {cpu - one:.2f} s to start")
        big = make_tree(work, args.images)
        runs: dict[str, list[tuple[float, float]]] = {"processes": [], "threads": []}
        for _ in range(args.repeats):
            for how in runs:
                runs[how].append(timed_build(big, new_out(), 2, how == "threads"))
        for how, values in runs.items():
            walls = [w for w, _c in values]
            cpus = [c for _w, c in values]
            print(f"build -j 2 of {args.images} images, {how}: wall "
                  f"{statistics.median(walls):.2f} s ({min(walls):.2f}-{max(walls):.2f}), "
                  f"CPU {statistics.median(cpus):.2f} s ({min(cpus):.2f}-{max(cpus):.2f})")
        shutil.rmtree(outputs, ignore_errors=True)


if __name__ == "__main__":
    main()
