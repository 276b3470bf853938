#!/usr/bin/env python
"""How many records a shard task should transform before it writes them.

Why this exists (issue 11, item 6): a build's work per image is the codec (decode, resize,
encode), and what the engine adds is measured against it. Decoding and encoding a photo pass
through megabytes of buffers and leave the processor's caches cold for what follows; writing
each image right after its own encode (create the file, write it, hash it) then
costs much more than the same writes done one after another. The engine's shard worker
therefore transforms :data:`imgtools.pipeline.engine.RECORDS_IN_FLIGHT` records, then writes
them. This script runs the real shard worker (``engine.run_shard``: the build's transform,
the folder format's writer, hashing, the summary) in this process on one work unit of corpus
photos, once for each number of records in flight, interleaved in rounds, every run into a
new folder after an ``os.sync()``, and reports CPU time (user + system) per image:

* ``shard``: the whole shard task;
* ``codec``: the reads and renders of the source images inside it (thread CPU around each);
* ``engine``: the rest - what the engine's own per-image work costs at that setting.

It also checks that every setting writes the same bytes (the shard's ``SHA256SUMS`` lines).

With ``--convert`` the shard passes the photos through untouched into one TFRecord shard, as a
conversion does (``codec`` is then the reads alone): whether holding records before writing
them pays when no codec runs. It does not (the engine therefore writes each record of a
transform that does not render as soon as it is read: ``Transform.renders``); this mode makes
the engine hold them anyway, to measure it.

    python scripts/bench_in_flight.py --images 3000 --rounds 5 --outputs /mnt/fresh-ext4
    python scripts/bench_in_flight.py --images 3000 --rounds 5 --convert --back-memory \
        --outputs /dev/shm

``--outputs``: where the runs write (a freshly made filesystem keeps earlier deletions from
making file creation dearer; see ``scripts/bench_overhead.py``). Nothing is deleted until the
end: with ``--convert`` every run keeps a shard of the full-size photos (3,000 of them, 30 runs:
about 10 GB), so on a tmpfs keep ``--images`` small.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "scripts"))
sys.path.insert(1, str(REPO))
from bench_overhead import backed_memory, folder_shard_spec  # noqa: E402 - the shard it runs
from make_corpus_tree import make_corpus_tree, recipe_wnids  # noqa: E402

import imgtools.sources.members as members  # noqa: E402 - after the path of this checkout
import imgtools.transforms.jpeg as jpeg  # noqa: E402
from imgtools.pipeline import engine  # noqa: E402
from imgtools.runner import ShardTask  # noqa: E402
from imgtools.transforms.passthrough import Passthrough  # noqa: E402

CORPUS = Path(os.environ.get("IMGTOOLS_CORPUS", "/work/shared/corpus"))
SETTINGS = (1, 2, 4, 8, 16, 32)


class CodecClock:
    """Thread CPU spent in the source reads and renders the shard worker calls."""

    def __init__(self) -> None:
        self.spent = 0.0

    def wrap(self, fn: Callable) -> Callable:
        def timed(*args):  # noqa: ANN002, ANN202 - the wrapped function's own
            start = time.thread_time()
            try:
                return fn(*args)
            finally:
                self.spent += time.thread_time() - start
        return timed


class HeldPassthrough(Passthrough):
    """The conversion's transform, declared as rendering so that the engine holds its records
    ``RECORDS_IN_FLIGHT`` at a time, as it does a build's: what ``--convert`` measures."""

    renders = True


def one_run(paths: list[Path], out: Path, size: int, in_flight: int, convert: bool = False
            ) -> tuple[float, float, str]:
    """CPU of one shard task with ``in_flight`` records transformed before they are written,
    the codec's part of it, and the shard's checksum lines (``convert``: a passthrough into
    one TFRecord shard, the reads as the codec)."""
    clock = CodecClock()
    real_render, real_read = jpeg.render, members.read_bytes  # what a build worker calls
    jpeg.render, members.read_bytes = clock.wrap(real_render), clock.wrap(real_read)
    engine.RECORDS_IN_FLIGHT = in_flight
    spec = (folder_shard_spec(paths, HeldPassthrough(), out, "tfrecord") if convert else
            folder_shard_spec(paths, jpeg.ResizeJPEG(jpeg.RenderOptions((size,), "bilinear",
                                                                        90, False)), out))
    os.sync()
    try:
        start = time.process_time()
        summary = engine.run_shard(ShardTask("train-00000", spec))
        total = time.process_time() - start
    finally:
        jpeg.render, members.read_bytes = real_render, real_read
    return total, clock.spent, "".join(summary["sha256sums"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=3000)
    ap.add_argument("--size", type=int, default=320)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--convert", action="store_true",
                    help="pass the photos through into a TFRecord shard (no codec)")
    ap.add_argument("--back-memory", action="store_true",
                    help="root, on a VM that hands free memory back to its host: see "
                         "scripts/bench_overhead.py (without it, new pages cost a host fault)")
    ap.add_argument("--outputs", type=Path, default=None,
                    help="where the runs write (default: a temporary folder)")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-in-flight-"))
    outputs = Path(tempfile.mkdtemp(prefix="bench-in-flight-out-", dir=args.outputs))
    try:
        with backed_memory(args.back_memory):
            tree = work / "tree"
            make_corpus_tree(tree, CORPUS, args.images, recipe_wnids("imagenette"), "valprep")
            paths = sorted(tree.rglob("*.JPEG"))
            for p in paths:  # in the page cache: no run pays for the first read
                p.read_bytes()
            results: dict[int, list[tuple[float, float]]] = {k: [] for k in SETTINGS}
            sums: dict[int, str] = {}
            for rnd in range(args.rounds):
                order = SETTINGS if rnd % 2 == 0 else SETTINGS[::-1]
                for k in order:
                    total, codec, lines = one_run(paths, outputs / f"r{rnd}-k{k}", args.size, k,
                                                  args.convert)
                    results[k].append((total, codec))
                    if sums.setdefault(k, lines) != lines or lines != sums[SETTINGS[0]]:
                        raise SystemExit(f"{k} records in flight wrote other bytes")
                    print(f"round {rnd + 1}, {k:2d} in flight: shard {total:.2f} s, "
                          f"codec {codec:.2f} s", file=sys.stderr, flush=True)
            report(results, len(paths))
    finally:
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(outputs, ignore_errors=True)


def report(results: dict[int, list[tuple[float, float]]], images: int) -> None:
    ms = 1000 / images
    base = statistics.median(t - c for t, c in results[SETTINGS[0]])
    whole = statistics.median(t for t, _ in results[SETTINGS[0]])
    print(f"{'in flight':>9} | {'shard ms/img':>12} | shard vs 1 | {'codec ms/img':>12} | "
          f"{'engine ms/img':>13} | engine vs 1 | engine / codec")
    for k, runs in results.items():
        total = statistics.median(t for t, _ in runs)
        codec = statistics.median(c for _, c in runs)
        own = [t - c for t, c in runs]
        print(f"{k:>9} | {total * ms:12.3f} | {total / whole:9.3f}x | {codec * ms:12.3f} | "
              f"{statistics.median(own) * ms:6.3f} ({min(own) * ms:.3f}-{max(own) * ms:.3f}) | "
              f"{statistics.median(own) / base:10.2f}x | "
              f"{statistics.median(t / c - 1 for t, c in runs):13.1%}")


if __name__ == "__main__":
    main()
