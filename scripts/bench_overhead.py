#!/usr/bin/env python
"""What the engine costs on top of the codec work: CPU time of a whole build vs its codecs.

Why this exists (issue 11, item 6): a build's work per image is decode + resize + encode; all
else (planning, the output protocol, hashing, writing, markers, IPC, Python per image) is
overhead, which may add at most 10 % CPU. Wall time on a shared machine is noise, so this
script compares CPU time (user + system):

* ``codec``: in this process, every source image of the tree read, decoded, resized and encoded
  exactly as a build worker does it (``imgtools.transforms.jpeg.render``), once a round
  (``time.process_time``);
* ``codec on 2 cores``: the same codec work split over two processes running at once (every
  other image each), their CPU summed: what that work costs when both cores are busy, as they
  are in a ``-j 2`` build (the cores share caches and memory bandwidth, and a VM's two cores
  may be one physical core's two hyperthreads). A ``-j 2`` build is also reported against it:
  the engine's cost at ``-j 2`` without what busy cores cost any program;
* ``build -j N``: a whole ``imgtools build`` of the same images as a subprocess, CPU time of it
  and of every process it waited for (``resource.getrusage(RUSAGE_CHILDREN)`` around the
  subprocess; the worker processes are reaped by the build before it exits, so they count),
  once a round. ``-j 1`` runs shards in the build's own process; ``-j 2`` adds IPC
  and worker start-up; ``-j 2 (threads)`` is the same build with ``run_shards`` patched to
  the local executor's threads (``prefer="threads"``), to show what the process workers cost;
* ``shard worker alone``: the engine's shard worker (``imgtools.pipeline.engine.run_shard``)
  in this process on one work unit of every image: the codec plus what the engine does per
  image (reading, writing each file atomically, hashing, the summary), without a run's fixed
  costs;
* ``-j 1 (no sync before markers)``: the same build with the ``syncfs`` before each done
  marker patched out, and the stat per output file ``--resume`` makes to trust a marker;
* ``codec inside``: the codec work of each build measured inside it (CPU of every read and
  render of a source image, per thread, in every process: see ``_RUN``). The same work as
  ``codec``, at the same moment as the rest of the build: ``build / codec inside`` does not
  move with the machine's drift between runs (on the development VM the codec alone moved by
  up to 25 % from run to run, from the same code on the same images), and ``codec inside /
  codec`` shows that the codec costs the same inside a build as alone;
* ``convert``: a passthrough ``imgtools convert`` of the built folder to each ``--to`` format,
  against this process reading every image's bytes and writing them to one file (record
  formats) or to one file each (folder), and against the format's floor
  (:func:`format_floor`: read, frame, write, hash once, sync - what any conversion that
  writes this format with ``SHA256SUMS`` must do).

Each imgtools run reports the CPU of its main process after its imports ("work"; the imports
it makes later, such as the format registry's module of the output format, are kept apart as
the floor's codecs are imported before it is timed); the rest of the total is start-up
(interpreter, imports) and, with -j 2, the workers (their start-up, imports and shards).

Method, against this VM's noise (the codec alone varies by up to 20 % from pass to pass, and
deleting a previous output makes the next run's writes cost more system time): every run
writes a new folder, after an ``os.sync()``, and no output is deleted before the end; the
contenders run interleaved in rounds (codec, then each build), and each build is reported as
the median over rounds of its CPU divided by the same round's codec CPU. ``engine per image``
is measured without the codec at all: the shard worker with a transform that hands back the
codec's outputs computed beforehand, so what remains is exactly the engine's per-image work
(read, write each file atomically, hash, summary).

With ``--baseline CHECKOUT`` (another imgtools checkout, e.g. ``git worktree add ../base
HEAD~3``), every build and conversion of a round is also run with that checkout's code, just
before or just after this checkout's, in turn: a change is judged by the two runs of each
round, which share the VM's state, not by runs an hour apart.

    python scripts/bench_overhead.py --images 13394 --repeats 3   # Imagenette's size, ~15 min
    python scripts/bench_overhead.py --images 400 --profile        # also cProfile one -j 1 build
    python scripts/bench_overhead.py --images 13394 --back-memory  # VM memory backed (root)
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import resource
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "scripts"))
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # as imgtools.cli.main, before numpy loads
from make_corpus_tree import make_corpus_tree, recipe_wnids  # noqa: E402
from tfrecord import example_pb2  # noqa: E402 - the floor's codec, imported before it is timed

from imgtools.formats import get_format  # noqa: E402
from imgtools.formats.tar_codec import member_header  # noqa: E402 - the floor's codecs
from imgtools.formats.tfrecord_framing import frame_parts  # noqa: E402
from imgtools.pipeline import engine  # noqa: E402
from imgtools.pipeline.units import PlanUnit  # noqa: E402
from imgtools.plan import PlanItem  # noqa: E402
from imgtools.records import ClassInfo, DatasetInfo  # noqa: E402
from imgtools.runner import ShardTask  # noqa: E402
from imgtools.transforms.base import Transform  # noqa: E402
from imgtools.transforms.jpeg import RenderOptions, ResizeJPEG, read_bytes, render  # noqa: E402

CORPUS = Path(os.environ.get("IMGTOOLS_CORPUS", "/work/shared/corpus"))
RECIPE = "imagenette"


_RUN = """
import importlib, json, os, sys, time
import imgtools.cli
imgtools.cli.limit_blas_threads()  # what imgtools.cli.main does first
importlib.import_module("imgtools.commands." + sys.argv[1])
importlib.import_module("imgtools." + sys.argv[1])  # commands import it lazily
import imgtools.pipeline.engine as engine
if os.environ.get("BENCH_PREFER_THREADS"):  # what the thread executor would cost
    _run_shards = engine.run_shards
    engine.run_shards = lambda *a, **k: _run_shards(*a, **{**k, "prefer": "threads"})
if os.environ.get("BENCH_SPAWN"):  # workers started as new interpreters, not forked
    import imgtools.executors.local
    imgtools.executors.local.start_method = lambda: "spawn"
if os.environ.get("BENCH_NO_SYNC"):  # what syncing before each marker costs (-j 1 only)
    import imgtools.runner
    imgtools.runner.sync_files = lambda paths: None
if os.environ.get("BENCH_CODEC_LOG"):  # the codec's CPU inside this build, per thread
    import functools, struct, threading
    import imgtools.sources.members as members, imgtools.transforms.jpeg as jpeg
    spent = {}
    def timed(fn, what, flush=False):
        @functools.wraps(fn)  # same name: a worker unpickles the task's function by it
        def step(*args):
            start = time.thread_time()
            try:
                return fn(*args)
            finally:
                key = (what, os.getpid(), threading.get_ident())
                spent[key] = spent.get(key, 0.0) + time.thread_time() - start
                if flush:  # a shard task's end: this thread's totals to disk, once a shard
                    for (w, pid, tid), total in spent.items():
                        if (pid, tid) == key[1:]:
                            with open(f"{os.environ['BENCH_CODEC_LOG']}/{w}-{pid}-{tid}",
                                      "wb") as f:
                                f.write(struct.pack("d", total))
        return step
    members.read_bytes = timed(members.read_bytes, "codec")  # a worker's read of a source
    jpeg.render = timed(jpeg.render, "codec")  # decode, resize, encode
    engine.run_shard = timed(engine.run_shard, "shard", flush=True)  # codec included
# Imports made after the clock starts (the format registry imports a format's module when it
# is first used, a writer its codec library at its first record) are start-up all the same:
# their CPU is kept apart, outside the work and its phases, as the floor's codecs are imported
# before it is timed. The outermost import of a chain is timed (an import's imports inside it).
import importlib._bootstrap as _bootstrap
imports = [0.0]
_find_and_load, _importing = _bootstrap._find_and_load, [0]
def _timed_find_and_load(*args):
    if _importing[0]:
        return _find_and_load(*args)
    _importing[0] += 1
    began = time.process_time()
    try:
        return _find_and_load(*args)
    finally:
        imports[0] += time.process_time() - began
        _importing[0] -= 1
_bootstrap._find_and_load = _timed_find_and_load
phases = {}
if os.environ.get("BENCH_PHASES"):  # where a -j 1 conversion's main-process CPU goes
    import functools
    import imgtools.convert as convert_, imgtools.pipeline.output as output_
    def phase(owner, name, label):
        fn = getattr(owner, name, None)
        if fn is None:  # another checkout's code, without that function
            return
        @functools.wraps(fn)
        def step(*args, **kw):
            start, imported = time.process_time(), imports[0]
            try:
                return fn(*args, **kw)
            finally:
                phases[label] = (phases.get(label, 0.0) + time.process_time() - start
                                 - (imports[0] - imported))
        setattr(owner, name, step)
    phase(convert_, "detect_format", "detect")
    phase(convert_, "plan_conversion", "plan")
    phase(convert_, "plan_while_listing", "plan+identity")  # a JPEG folder: one listing for both
    phase(output_, "write_inputs", "identity")
    phase(output_, "_write_inputs", "identity")  # its name before December 2026
    phase(engine, "run_shard", "shards")
    phase(engine, "_second_pass_and_checksums", "checksums")
    phase(output_.OutputRun, "publish", "publish")
imports[0] = 0.0
start = time.process_time()
try:
    imgtools.cli.main(sys.argv[1:])
except SystemExit as e:
    if e.code:
        raise
print(json.dumps({"main_cpu": time.process_time() - start - imports[0], "phases": phases,
                  "imports_in_work": imports[0]}))
"""
"""``imgtools <args>`` with the command's imports done before the clock starts, and the CPU of
imports made after it (a format's module, a codec library) kept apart: what it prints is the
CPU of the engine's own work in the main process (planning, shards when -j 1, metadata), so
that start-up (interpreter and imports) is the rest of the total. With
``BENCH_CODEC_LOG`` (a folder) every process and thread of the build that reads or renders a
source image keeps the CPU it spent doing so (``time.thread_time`` around the two calls) in a
file of its own, written at the end of each shard task (not at exit: a worker may be ended
without running exit hooks; not after each call, which cost the measured shards two writes an
image): the codec work measured inside the build, at the same moment as the build, so that the
machine's drift between runs is not in ``build / codec inside``."""


def imgtools_cmd() -> list[str]:
    return [sys.executable, "-c", _RUN]


def timed_run(cmd: list[str], threads: bool = False, sync: bool = True, spawn: bool = False,
              codec_log: Path | None = None, checkout: Path | None = None,
              phases: dict | None = None) -> tuple[float, float, float]:
    """Wall seconds of ``cmd``, user + system CPU seconds of it and of every process it waited
    for, and the CPU the command's main process reported for its work after imports.
    ``threads``, ``sync``, ``spawn`` and ``codec_log`` choose the variants described in
    ``_RUN``; ``checkout``: another imgtools checkout whose code runs instead of this one's;
    ``phases``: filled with the CPU of each phase of a conversion's main process (``_RUN``)."""
    env = {**os.environ, "BENCH_PREFER_THREADS": "1" if threads else "",
           "BENCH_NO_SYNC": "" if sync else "1", "BENCH_SPAWN": "1" if spawn else "",
           "BENCH_CODEC_LOG": str(codec_log or ""),
           "BENCH_PHASES": "1" if phases is not None else ""}
    if checkout is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(checkout),
                                                          env.get("PYTHONPATH")]))
    settle()  # the previous run's writes are not this run's cost
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    # In the checkout's folder: ``python -c`` puts the working folder first on sys.path, before
    # PYTHONPATH, so from any other checkout's folder that checkout's code would run.
    done = subprocess.run(cmd, capture_output=True, text=True, env=env,
                          cwd=checkout or REPO)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        sys.exit(f"error: {' '.join(cmd)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    main_cpu = result["main_cpu"]
    if phases is not None:
        phases.update(result.get("phases", {}), rest=main_cpu - sum(result.get("phases", {})
                                                                     .values()),
                      imports=result.get("imports_in_work", 0.0))
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, main_cpu


def children_cpu(cmd: list[str], threads: bool = False, sync: bool = True,
                 checkout: Path | None = None, phases: dict | None = None
                 ) -> tuple[float, float]:
    """:func:`timed_run` without the wall time: CPU of the whole run, CPU of its work."""
    _wall, cpu, main_cpu = timed_run(cmd, threads, sync, checkout=checkout, phases=phases)
    return cpu, main_cpu


def cpu_inside(log: Path, what: str) -> float:
    """The CPU a run with ``BENCH_CODEC_LOG=log`` spent in ``what`` (``codec``: reading and
    rendering source images; ``shard``: shard tasks, codec included), summed over its
    processes and threads (each file holds one thread's running total)."""
    return sum(struct.unpack("d", p.read_bytes())[0] for p in log.glob(f"{what}-*"))


_WARM: list[Path] = []  # files every measured run reads: in the page cache before each run
_DROP_CACHES = False


def settle() -> None:
    """Before every measured run: earlier runs' writes flushed (``os.sync``); with
    ``--drop-caches`` also the page cache emptied and the files runs read put back in it, so
    each run starts from the same memory, whatever earlier runs left dirty or cached (outputs
    accumulate, on a loop file twice: in the filesystem's cache and the backing file's)."""
    os.sync()
    if _DROP_CACHES:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("1\n")
        for p in _WARM:
            p.read_bytes()


_REPORTING = Path("/sys/module/page_reporting/parameters")


def _reported_kib() -> int | None:
    """KiB of free memory this VM's kernel has handed back to the hypervisor so far (free page
    reporting), or None where there is no such thing."""
    try:
        return int((_REPORTING / "reported_kib").read_text())
    except (OSError, ValueError):
        return None


def _largest_page_order() -> int:
    header = next(line for line in Path("/proc/pagetypeinfo").read_text().splitlines()
                  if line.startswith("Free pages count per migrate type at order"))
    return int(header.split()[-1])


@contextlib.contextmanager
def backed_memory(enabled: bool) -> Iterator[str]:
    """With ``enabled`` (root, a VM whose balloon has free page reporting): the measured runs
    see memory the hypervisor backs, as on a physical machine or a VM without reporting.

    Why: such a VM hands free memory back to the host, and the next page the guest takes
    from its free lists is faulted in again by the host, at the cost of the guest process
    that touches it. On the development VM that is 11 us a 4 KB page (measured: touching 13 GB
    took 36 s of system time), so every new page of the page cache costs several times what
    the copy into it does, by an amount that depends on how long ago the page was freed - the
    drift of this benchmark's figures between runs. Reporting is turned off (its order set
    above the largest, so no free block qualifies), the free memory is touched once by a child
    process, and the setting is restored at the end."""
    if not enabled:
        yield "as the machine gives it"
        return
    order = _REPORTING / "page_reporting_order"
    if not order.exists():
        sys.exit(f"--back-memory: no {order}: this kernel hands no free memory back to a "
                 "hypervisor; measure without it")
    before = order.read_text().strip()
    off = _largest_page_order() + 1
    order.write_text(f"{off}\n")
    try:
        free_kib = int(next(line for line in Path("/proc/meminfo").read_text().splitlines()
                            if line.startswith("MemFree:")).split()[1])
        chunks = max(0, (free_kib // 1024 - 1024) // 256)  # all but 1 GB, in 256 MB chunks
        subprocess.run([sys.executable, "-c", "import numpy as np, sys\n"
                        "kept = [np.ones(256 << 20, np.uint8) for _ in range(int(sys.argv[1]))]",
                        str(chunks)], check=True)
        yield (f"backed: free page reporting off (page_reporting_order {before} -> {off}), "
               f"{chunks * 256 / 1024:.1f} GB of free memory touched first")
    finally:
        order.write_text(f"{before}\n")


def cpu_of(fn: Callable[[], object]) -> float:
    start = time.process_time()
    fn()
    return time.process_time() - start


def _render_all(paths: list[str], opts: RenderOptions) -> float:
    """CPU of the codec work on ``paths`` in this process: the ``codec`` measure."""
    start = time.process_time()
    for p in paths:
        render(read_bytes(p), opts)
    return time.process_time() - start


def codec_cpu_on_cores(paths: list[Path], opts: RenderOptions, cores: int) -> float:
    """CPU of the codec work split over ``cores`` processes at once (see the docstring)."""
    import multiprocessing

    names = [str(p) for p in paths]
    with multiprocessing.get_context("fork").Pool(cores) as pool:
        return sum(pool.starmap(_render_all, [(names[i::cores], opts) for i in range(cores)]))


def source_images(tree: Path) -> list[Path]:
    return sorted(tree.rglob("*.JPEG"))


class Outputs:
    """A new output folder for every run, none deleted before the end (:meth:`clear`): on
    ext4, files created soon after many were deleted cost several times the system CPU
    (``perf``: the inode allocator's ``recently_deleted`` scan), which is the benchmark's
    churn, not the build's cost. ``--outputs`` puts them on a filesystem of one's choice
    (a fresh ext4, a tmpfs)."""

    def __init__(self, root: Path):
        self.root = root / "bench-overhead-outputs"
        self.n = 0

    def new(self, name: str) -> Path:
        self.n += 1
        return self.root / f"{self.n:03d}-{name}"

    def clear(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)
        os.sync()


def build_cmd(tree: Path, out: Path, size: int, jobs: int) -> list[str]:
    return [*imgtools_cmd(), "build", RECIPE, "--src", str(tree), "--split", "random", "--out",
            str(out), "--size", str(size), "--quiet", "-j", str(jobs)]


def build_cpu(tree: Path, out: Path, size: int, jobs: int, threads: bool = False,
              sync: bool = True, checkout: Path | None = None
              ) -> tuple[float, float, float, float]:
    """CPU of the whole build, of its main process's work, of the codec work inside it, and of
    its shard tasks, codec included (:func:`cpu_inside`)."""
    log = out.with_name(out.name + "-codec-log")
    log.mkdir(parents=True)
    _wall, cpu, main_cpu = timed_run(build_cmd(tree, out, size, jobs), threads, sync,
                                     codec_log=log, checkout=checkout)
    return cpu, main_cpu, cpu_inside(log, "codec"), cpu_inside(log, "shard")


def convert_cpu(src: Path, dst: Path, fmt: str, jobs: int, checkout: Path | None = None,
                phases: dict | None = None) -> tuple[float, float]:
    return children_cpu([*imgtools_cmd(), "convert", str(src), str(dst), "--to", fmt,
                         "--quiet", "-j", str(jobs)], checkout=checkout, phases=phases)


def least_read(path: Path) -> bytes:
    """A file's bytes with the fewest system calls known (``scripts/bench_file_reads.py``):
    ``open``, ``fstat``, one ``read``, ``close`` (``Path.read_bytes`` makes four more, 4 us
    an image on the development VM). The floors read this way, as the engine's readers do
    (:func:`imgtools.atomic.read_file`), so that neither is cheaper by how it reads; written
    out here rather than imported, so that the yardstick does not move with the engine's code
    (a slower ``read_file`` must show against it)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        data = os.read(fd, size + 1)
        if len(data) != size:  # a short read, or the file grew: on to the end
            while more := os.read(fd, 1 << 16):
                data += more
        return data
    finally:
        os.close(fd)


def copy_bytes(paths: list[Path], dst: Path, one_file: bool) -> None:
    """The floor of a passthrough conversion: read every image, write its bytes."""
    dst.mkdir(parents=True)
    if one_file:
        with open(dst / "all.bin", "wb") as f:
            for p in paths:
                f.write(least_read(p))
        return
    for i, p in enumerate(paths):
        (dst / f"{i}.jpg").write_bytes(least_read(p))


def format_floor(paths: list[Path], dst: Path, fmt: str) -> None:
    """The least a passthrough conversion to ``fmt`` must do, in one tight loop with the fastest
    codecs known (``scripts/bench_codecs.py``): read every image (:func:`least_read`), frame it
    as ``fmt`` stores it (a ``tf.train.Example`` of image, label and file name serialized by
    protobuf and framed with two CRC-32C; three tar members - image, ``.cls``, ``.json`` - with
    the headers ``webdataset.TarWriter`` writes; a file each in its class folder for a folder),
    write it (a record's pieces with one ``writev``, not copied into one buffer first), and hash
    it once for ``SHA256SUMS``, then make it durable (``os.sync``: the engine syncs before its
    markers, and a write's flush to disk is otherwise charged to the kernel's flusher, not to
    the program). What a ``convert`` spends beyond this is the engine's: planning, the output
    protocol (fingerprint, markers, staging), records, metadata, Python per image."""
    dst.mkdir(parents=True)
    label = {w: i for i, w in enumerate(sorted({p.parent.name for p in paths}))}
    if fmt == "folder":  # each image in its split's class folder, as a folder dataset has it
        made: dict[Path, str] = {}
        for p in paths:
            folder = made.get(p.parent)
            if folder is None:
                folder = os.path.join(dst, p.parent.parent.name, p.parent.name) + os.sep
                os.makedirs(folder)
                made[p.parent] = folder
            data = least_read(p)
            fd = os.open(folder + p.name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            try:
                if os.write(fd, data) != len(data):
                    raise OSError("short write")
            finally:
                os.close(fd)
            hashlib.sha256(data).digest()
        os.sync()
        return
    with open(dst / "all.bin", "wb", buffering=0) as f:
        fd = f.fileno()
        for p in paths:
            data = least_read(p)
            if fmt == "tfrecord":
                example = example_pb2.Example()
                features = example.features.feature
                features["image"].bytes_list.value.append(data)
                features["label"].int64_list.value.append(label[p.parent.name])
                features["file_name"].bytes_list.value.append(p.name.encode())
                pieces = frame_parts([example.SerializeToString(deterministic=True)])
            else:
                meta = json.dumps({"label": label[p.parent.name], "filename": p.name,
                                   "wnid": p.parent.name}, sort_keys=True).encode()
                pieces = [piece for ext, d in (("cls", str(label[p.parent.name]).encode()),
                                               ("jpg", data), ("json", meta))
                          for piece in (member_header(f"{p.stem}.{ext}", len(d)), d,
                                        bytes(-len(d) % 512))]
            # One writev of the pieces, no copy into one buffer (what the engine's writers
            # do, so the floor is not slower than them by a copy of every image).
            if os.writev(fd, pieces) != sum(map(len, pieces)):
                raise OSError("short write")
            digest = hashlib.sha256()
            for piece in pieces:
                digest.update(piece)
    os.sync()


def make_tree(work: Path, images: int) -> Path:
    tree = work / f"tree-{images}"
    make_corpus_tree(tree, CORPUS, images, recipe_wnids(RECIPE), "valprep")
    for p in source_images(tree):  # warm the page cache: no run pays for the first read
        p.read_bytes()
    return tree


BUILDS = {  # label -> (jobs, threads, sync before markers)
    "-j 1": (1, False, True),
    "-j 1, no sync before markers": (1, False, False),
    "-j 2": (2, False, True),
    "-j 2, threads": (2, True, True),
}


def measure(work: Path, images: int, size: int, repeats: int, formats: list[str],
            outputs_root: Path, builds: list[str], baseline: Path | None = None) -> dict:
    tree = make_tree(work, images)
    paths = source_images(tree)
    opts = RenderOptions((size,), "bilinear", 90, False)
    outputs = Outputs(outputs_root)
    cached = {str(p): render(read_bytes(str(p)), opts) for p in paths}  # also warms the cache
    row: dict = {"images": len(paths), "rounds": []}
    _WARM[:] = paths
    for _ in range(repeats if builds else 0):
        settle()
        rnd: dict = {"codec_s": _render_all([str(p) for p in paths], opts),
                     "codec_2_cores_s": codec_cpu_on_cores(paths, opts, 2)}
        rnd["engine_s"] = shard_cpu(paths, opts, outputs.new("engine"), cached)
        rnd["shard_s"] = shard_cpu(paths, opts, outputs.new("shard"))
        rnd["build"] = {}
        for label, how in BUILDS.items():
            if label in builds:
                for checkout in _in_turn(baseline, len(row["rounds"])):
                    key = label if checkout is None else f"{label}, baseline"
                    rnd["build"][key] = build_cpu(tree, outputs.new("build"), size, *how,
                                                  checkout=checkout)
        row["rounds"].append(rnd)
    built = outputs.new("built")
    build_cpu(tree, built, size, 1)
    built = built / f"imagenette2-{size}"
    built_images = sorted(built.rglob("*.JPEG"))
    _WARM[:] = built_images
    # --resume trusts a marker after one stat per file it vouches for:
    row["marker_check_s"] = min(cpu_of(lambda: [os.path.getsize(p) for p in built_images])
                                for _ in range(repeats))
    row["converted_images"] = len(built_images)
    row["hash_s"] = hash_cpu(built_images, repeats)
    row["convert"], row["convert_phases"] = {}, {}
    for fmt in formats:
        runs = []
        for i in range(repeats):
            phases: dict = {}
            measured = {str(c): convert_cpu(built, outputs.new(f"conv-{fmt}"), fmt, 1, c,
                                            phases if c is None else None)
                        for c in _in_turn(baseline, i)}
            row["convert_phases"].setdefault(fmt, []).append(phases)
            conv = measured[str(None)]
            copy = outputs.new("copy")
            settle()
            runs.append((*conv, cpu_of(lambda c=copy, f=fmt: copy_bytes(built_images, c,
                                                                          f != "folder"))))
            floor = outputs.new("floor")
            settle()
            runs[-1] += (cpu_of(lambda d=floor, f=fmt: format_floor(built_images, d, f)),)
            if baseline:
                runs[-1] += measured[str(baseline)]
        row["convert"][fmt] = runs
    outputs.clear()
    return row


def _in_turn(baseline: Path | None, round_index: int) -> list[Path | None]:
    """This checkout (None) and the baseline, if any, in the order of this round: first one
    then the other in turn (the later run of a round may find memory and disk in another
    state)."""
    if baseline is None:
        return [None]
    return [None, baseline] if round_index % 2 == 0 else [baseline, None]


def hash_cpu(paths: list[Path], repeats: int) -> float:
    """What SHA256SUMS forces on any output: every byte hashed once (best of ``repeats``).
    The bytes are read before timing and dropped on return."""
    data = [p.read_bytes() for p in paths]
    return min(cpu_of(lambda: [hashlib.sha256(d).digest() for d in data])
               for _ in range(repeats))


class _CachedCodec(ResizeJPEG):
    """The build's transform with its outputs computed beforehand: the shard worker then does
    exactly its own per-image work, and the codec's noise is not in the measurement."""

    def __init__(self, opts: RenderOptions, outputs: dict[str, tuple]):
        super().__init__(opts)
        object.__setattr__(self, "by_source", outputs)

    def apply(self, record):  # noqa: ANN001 - Record
        rendered, note = self.by_source[record.key]
        return [record.with_image(rendered[0])], note  # as ResizeJPEG.apply makes it


def shard_cpu(paths: list[Path], opts: RenderOptions, out: Path,
              cached: dict[str, tuple] | None = None) -> float:
    """CPU of the engine's shard worker alone, in this process, on one work unit holding every
    image (in its class folder, as in a build): read, transform, write each file atomically,
    hash it, summarise. Against the codec
    this is the engine's cost per image, without the fixed costs of a run (start-up, planning,
    metadata, publishing) that a bigger build spreads thinner. With ``cached`` (source path ->
    the codec's outputs) the transform hands back those outputs: the engine's work alone."""
    transform = ResizeJPEG(opts)
    if cached is not None:  # the record's key is its out name's stem: map it to the source
        transform = _CachedCodec(opts, {f"{i:06d}": cached[str(p)]
                                        for i, p in enumerate(paths)})
    spec = folder_shard_spec(paths, transform, out)
    settle()
    return cpu_of(lambda: engine.run_shard(ShardTask("train-00000", spec)))


def folder_shard_spec(paths: list[Path], transform: Transform, out: Path,
                      fmt: str = "folder") -> engine.ShardSpec:
    """One work unit of every image in ``paths``, as a build makes it: each image in its
    class folder of the folder format (``NNNNNN.JPEG``; or one shard of ``fmt``), hashed for
    ``SHA256SUMS``."""
    wnids = sorted({p.parent.name for p in paths})  # the tree's classes, as a build has them
    info = DatasetInfo("bench", [ClassInfo(w, w) for w in wnids])
    label = {w: i for i, w in enumerate(wnids)}
    items = [PlanItem(str(p), "train", label[p.parent.name], p.parent.name, f"{i:06d}.JPEG")
             for i, p in enumerate(paths)]
    return engine.ShardSpec(PlanUnit(items, "train", 0, 1), transform, get_format(fmt),
                            (str(out),), info, {}, strict=False, hash_files=True)


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


def _spread(values: list[float], fmt: str = "{:.3f}") -> str:
    """Median, and the range when there is more than one value."""
    med = fmt.format(statistics.median(values))
    if len(values) < 2:
        return med
    return f"{med} ({fmt.format(min(values))}-{fmt.format(max(values))})"


def filesystem_of(path: Path) -> str:
    """The type of the filesystem holding ``path`` (the longest mount point above it)."""
    best, kind = "", "?"
    real = str(path.resolve())
    with open("/proc/mounts") as mounts:
        for line in mounts:
            _dev, mount, fstype, *_ = line.split()
            if (real == mount or real.startswith(mount.rstrip("/") + "/")) and \
                    len(mount) > len(best):
                best, kind = mount, fstype
    return f"{kind} ({best})"


_BUILD_PARTS = (  # a build's CPU beyond its codec work, from (total, main, codec, shards)
    ("the shard tasks' own work (write, hash, records, summary)", lambda b: b[3] - b[2]),
    ("the main process outside shard tasks (planning, output protocol, metadata, IPC)",
     lambda b: b[1] - b[3] if b[1] > b[3] else b[1]),
    ("start-up and worker processes beyond their shard tasks",
     lambda b: b[0] - b[1] - (0 if b[1] > b[3] else b[3])),
)
"""With -j 1 the shard tasks run in the main process (its work includes them); with -j 2 in
the workers, whose CPU is the total less the main process's."""


def _has_inside(rounds: list[dict], label: str) -> bool:
    """Whether every round measured the codec inside this build (runs made before the
    script did so hold two figures per build, not three)."""
    return all(len(r["build"][label]) > 2 for r in rounds)


def summarise(row: dict) -> dict[str, float]:
    """The medians over rounds, by name (what ``bench_before_after.py`` compares)."""
    rounds = row["rounds"]
    med = statistics.median
    out = {"codec_s": med(r["codec_s"] for r in rounds),
           "engine_ms_per_image": med(1000 * r["engine_s"] / row["images"] for r in rounds),
           "engine_share_of_codec": med(r["engine_s"] / r["codec_s"] for r in rounds),
           "shard_over_codec": med(r["shard_s"] / r["codec_s"] for r in rounds)} if rounds else {}
    for label in rounds[0]["build"] if rounds else ():
        out[f"build {label} over codec"] = med(r["build"][label][0] / r["codec_s"]
                                               for r in rounds)
        if _has_inside(rounds, label):
            out[f"build {label} over the codec inside it"] = med(
                r["build"][label][0] / r["build"][label][2] for r in rounds)
            out[f"build {label}: codec inside over codec alone"] = med(
                r["build"][label][2] / r["codec_s"] for r in rounds)
    if rounds and all("codec_2_cores_s" in r for r in rounds):
        out["codec on 2 cores over codec"] = med(r["codec_2_cores_s"] / r["codec_s"]
                                                 for r in rounds)
        for label in (lb for lb in rounds[0]["build"] if lb.startswith("-j 2")):
            out[f"build {label} over codec on 2 cores"] = med(
                r["build"][label][0] / r["codec_2_cores_s"] for r in rounds)
    for fmt, runs in row["convert"].items():  # (total, work, copy[, floor[, baseline's]])
        out[f"convert {fmt} work_s"] = med(r[1] for r in runs)
        out[f"convert {fmt} copy_s"] = med(r[2] for r in runs)
        if all(len(r) > 3 for r in runs):
            out[f"convert {fmt} floor_s"] = med(r[3] for r in runs)
            out[f"convert {fmt} total over floor"] = med(r[0] / r[3] for r in runs)
            out[f"convert {fmt} work over floor"] = med(r[1] / r[3] for r in runs)
        if all(len(r) > 5 for r in runs):
            out[f"convert {fmt} baseline work over floor"] = med(r[5] / r[3] for r in runs)
            out[f"convert {fmt} work over baseline work"] = med(r[1] / r[5] for r in runs)
    out["hash_ms_per_image"] = 1000 * row["hash_s"] / row["converted_images"]
    out["marker_check_us_per_image"] = 1e6 * row["marker_check_s"] / row["converted_images"]
    return out


def combined(rows: list[dict]) -> dict:
    """One row with every run's rounds (and convert runs); the once-per-run floors (hash,
    marker check) are the best of the runs, as within a run."""
    if len({r["images"] for r in rows}) != 1:
        sys.exit("error: --combine takes runs of the same number of images")
    row = {"images": rows[0]["images"], "rounds": [x for r in rows for x in r["rounds"]],
           "marker_check_s": min(r["marker_check_s"] for r in rows),
           "converted_images": rows[0]["converted_images"],
           "hash_s": min(r["hash_s"] for r in rows),
           "convert": {fmt: [x for r in rows for x in r["convert"][fmt]]
                       for fmt in rows[0]["convert"]},
           "convert_phases": {fmt: [x for r in rows for x in r.get("convert_phases", {})
                                    .get(fmt, [])] for fmt in rows[0]["convert"]},
           "outputs_on": " + ".join(sorted({r.get("outputs_on", "?") for r in rows})),
           "memory": " + ".join(sorted({r.get("memory", "?") for r in rows})),
           "combined_runs": len(rows)}
    row["summary"] = summarise(row)
    return row


def report(row: dict) -> None:
    if "commit" in row:
        print(f"this checkout: {row['commit']}")
    if row["rounds"]:
        report_builds(row)
    else:
        print(f"CPU (user+sys), {row['images']} images, no build rounds (--builds none), "
              f"outputs on {row.get('outputs_on', '?')}")
    report_conversions(row)


def report_builds(row: dict) -> None:
    n, rounds = row["images"], row["rounds"]
    codec = [r["codec_s"] for r in rounds]
    print(f"CPU (user+sys), {n} images, {len(rounds)} interleaved rounds, outputs on "
          f"{row.get('outputs_on', '?')}; median (range) over rounds of each run divided by "
          "the same round's codec CPU")
    if "memory" in row:
        handed = row.get("memory_handed_back_during_run_mib")
        print(f"  memory: {row['memory']}" + ("" if handed is None else
              f"; {handed} MiB handed back to the hypervisor during the run"))
    print(f"  codec work alone (read, decode, resize, encode): {_spread(codec, '{:.2f}')} s = "
          f"{_spread([1000 * c / n for c in codec])} ms/img")
    two = all("codec_2_cores_s" in r for r in rounds)
    if two:
        print(f"  the same on 2 cores at once: "
              f"{_spread([r['codec_2_cores_s'] for r in rounds], '{:.2f}')} s = "
              f"{_spread([r['codec_2_cores_s'] / r['codec_s'] for r in rounds])}x the codec "
              "in one process")
    engine_ms = [1000 * r["engine_s"] / n for r in rounds]
    print(f"  the engine per image, codec outputs given (read, write atomically, hash, "
          f"summary): {_spread(engine_ms)} ms/img = "
          f"{_spread([100 * r['engine_s'] / r['codec_s'] for r in rounds], '{:.1f}')} % of "
          "the codec")
    print(f"  the shard worker alone (codec + engine, in process): "
          f"{_spread([r['shard_s'] / r['codec_s'] for r in rounds])}x codec")
    for label in rounds[0]["build"]:
        ratios = [r["build"][label][0] / r["codec_s"] for r in rounds]
        work = [r["build"][label][1] / r["codec_s"] for r in rounds]
        rest = [r["build"][label][0] - r["build"][label][1] for r in rounds]
        workers = label.startswith("-j 2") and "threads" not in label
        print(f"  build {label}: {_spread(ratios)}x codec; main process's work "
              f"{_spread(work)}x; start-up{' and workers' if workers else ''} "
              f"{_spread(rest, '{:.2f}')} s")
        if two and label.startswith("-j 2"):
            print(f"    = {_spread([r['build'][label][0] / r['codec_2_cores_s'] for r in rounds])}"
                  "x the codec on 2 cores at once")
        if _has_inside(rounds, label):
            inside = [r["build"][label][2] for r in rounds]
            print(f"    = {_spread([r['build'][label][0] / c for r, c in zip(rounds, inside)])}"
                  "x the codec work inside the build (read + render, timed in its workers), "
                  f"which was {_spread([c / r['codec_s'] for r, c in zip(rounds, inside)])}x "
                  "the codec alone")
        if all(len(r["build"][label]) > 3 for r in rounds):
            print("      of which, per cent of that codec work: " + "; ".join(
                f"{name} {_spread([100 * part(r['build'][label]) / r['build'][label][2] for r in rounds], '{:.1f}')}"  # noqa: E501
                for name, part in _BUILD_PARTS))


def report_conversions(row: dict) -> None:
    print(f"  checking every marker on --resume (a stat per output file): "
          f"{1e6 * row['marker_check_s'] / row['converted_images']:.1f} us per image")
    k = row["converted_images"]
    print(f"  hashing every output byte once (what SHA256SUMS forces): {row['hash_s']:.3f} s = "
          f"{1000 * row['hash_s'] / k:.3f} ms/img")
    for fmt, runs in row["convert"].items():  # (total, work, copy[, format floor]) a run
        extra = [1000 * (r[1] - r[2]) / k for r in runs]
        print(f"  convert -j 1 -> {fmt}: {_spread([r[0] for r in runs], '{:.2f}')} s, "
              f"work {_spread([r[1] for r in runs])} s vs copying the bytes "
              f"{_spread([r[2] for r in runs])} s, {_spread(extra)} ms/img more; "
              f"start-up {_spread([r[0] - r[1] for r in runs], '{:.2f}')} s")
        if all(len(r) > 3 for r in runs):
            whole = _spread([r[0] / r[3] for r in runs])
            print(f"    the format's floor (read, frame, write, hash once): "
                  f"{_spread([r[3] for r in runs])} s; convert {whole}x it in all, its work "
                  f"after imports {_spread([r[1] / r[3] for r in runs])}x")
        phases = row.get("convert_phases", {}).get(fmt)
        if phases:
            print("    its work by phase, s: " + "; ".join(
                f"{name} {_spread([p.get(name, 0.0) for p in phases])}"
                for name in phases[0]))
        if all(len(r) > 5 for r in runs):
            print(f"    baseline ({row.get('baseline', '?')}), same rounds: work "
                  f"{_spread([r[5] for r in runs])} s = {_spread([r[5] / r[3] for r in runs])}x "
                  f"the floor; this checkout's work "
                  f"{_spread([r[1] / r[5] for r in runs])}x the baseline's")


def _describe_checkout(path: Path) -> str:
    """``path`` and its commit (``+`` when it has uncommitted changes)."""
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(path), *args], capture_output=True,
                              text=True).stdout.strip()
    return f"{path} at {git('rev-parse', '--short', 'HEAD') or '?'}" + (
        "+" if git("status", "--porcelain", "--untracked-files=no") else "")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=400)
    ap.add_argument("--size", type=int, default=320)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--to", nargs="*", default=["tfrecord", "webdataset", "folder"])
    ap.add_argument("--builds", nargs="+", choices=[*BUILDS, "none"], default=list(BUILDS),
                    metavar="LABEL", help="which builds a round runs (default: all of "
                    f"{', '.join(repr(b) for b in BUILDS)}); fewer builds, more rounds; "
                    "'none': no build rounds, the conversions only")
    ap.add_argument("--profile", action="store_true", help="cProfile a -j 1 build too")
    ap.add_argument("--outputs", type=Path, help="where the runs write (default: the temporary "
                    "work folder); every run's output stays until the end")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--drop-caches", action="store_true",
                    help="empty the page cache before every measured run (root) and read the "
                         "sources back in: runs then start from the same memory")
    ap.add_argument("--back-memory", action="store_true",
                    help="on a VM that hands free memory back to its host (root): turn that "
                         "off and touch the free memory first, so that new pages cost what "
                         "they cost on a physical machine (see backed_memory)")
    ap.add_argument("--baseline", type=Path, metavar="CHECKOUT",
                    help="another imgtools checkout (e.g. a git worktree of the last commit): "
                         "its builds and conversions run in the same rounds, before or after "
                         "this one's in turn, so the two are compared on the same memory and "
                         "disk state (builds reported as '<label>, baseline')")
    ap.add_argument("--combine", type=Path, nargs="+", metavar="JSON",
                    help="report the rounds of earlier runs' --json files together (runs on "
                         "fresh filesystems, when one holds too few rounds), measuring nothing")
    args = ap.parse_args()
    global _DROP_CACHES
    _DROP_CACHES = args.drop_caches
    if args.combine:
        row = combined([json.loads(p.read_text()) for p in args.combine])
        report(row)
        if args.json:
            args.json.write_text(json.dumps(row, indent=1) + "\n")
        return
    with tempfile.TemporaryDirectory() as t, backed_memory(args.back_memory) as memory:
        work = Path(t)
        reported = _reported_kib()
        row = measure(work, args.images, args.size, args.repeats, args.to,
                      (args.outputs or work).resolve(),
                      [b for b in args.builds if b != "none"],
                      args.baseline and args.baseline.resolve())
        if args.baseline:
            row["baseline"] = _describe_checkout(args.baseline)
        row["commit"] = _describe_checkout(REPO)
        row["outputs_on"] = filesystem_of(args.outputs or work)
        row["memory"] = memory
        if reported is not None:
            row["memory_handed_back_during_run_mib"] = (_reported_kib() - reported) // 1024
        row["summary"] = summarise(row)
        report(row)
        if args.profile:
            profile_build(work, args.images, args.size)
    if args.json:
        args.json.write_text(json.dumps(row, indent=1) + "\n")


if __name__ == "__main__":
    main()
