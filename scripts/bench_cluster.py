#!/usr/bin/env python
"""Local against a 2-worker Dask cluster on this machine: an ImageNet-1k-shaped tree built to
8 px pickles and to a 64 px JPEG folder.

Why: ``--executor dask`` must cost little over the local executor on one machine (its overhead
ratio is what a cluster run pays per task), and the driver's memory must stay flat while the
workers do the work. The tree has ImageNet-1k's shape (1,281 train and 50 val images per class,
1,331,000 files at 1000 classes), every file a hard link to one small real photo per class: a
photo of ``../shared/corpus`` (class k takes photo k mod 100) reduced once to ``PHOTO_SIDE``
px on its longer side, so the runs measure the per-image pipeline and the executors' overhead
rather than full-size JPEG decoding, with no disk spent on the 1.3 M files. ``--classes N``
takes the first N classes (devkit order) for a run at reduced scale; the tree is made once and
reused.

Measured per run: wall time, images/s, the driver's peak RSS (the ``imgtools`` process alone)
and the workers' peak RSS and peak private memory (the largest single worker process: the
local executor's processes for a local folder build, the ``dask worker`` processes for the
cluster; a local pickle build decodes in threads of the driver, so it has none), polled every
50 ms from /proc. Private memory (``Private_Clean`` + ``Private_Dirty`` of
``/proc/PID/smaps_rollup``) is what a worker adds to the machine: a forked local worker's RSS
also counts the pages it shares with the driver it was forked from, which exist once. Both
executors' outputs are compared byte for byte (the run record aside: build-info.json and the
manifest and input list that name it); outputs that differ are kept, and the differing files
listed.

    python scripts/bench_cluster.py --classes 50 --work /tmp/bench-cluster
"""

from __future__ import annotations

import argparse
import filecmp
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from imgtools.pipeline.output import INPUTS_COPY, MANIFEST

REPO = Path(__file__).resolve().parent.parent
# ../shared/corpus beside the repository (or beside the folder of worktrees holding it).
DEFAULT_CORPUS = next((p / "shared" / "corpus" for p in (REPO.parent, REPO.parent.parent)
                       if (p / "shared" / "corpus").is_dir()), REPO.parent / "shared" / "corpus")
TRAIN_PER_CLASS = 1281
VAL_PER_CLASS = 50
BIN = Path(sys.executable).parent
PHOTO_SIDE = 128
TARGETS = {"pickle-8": ["--size", "8", "--format", "pickle"], "folder-64": ["--size", "64"]}


# --------------------------------------------------------------------------- the tree


def clsloc_wnids() -> list[str]:
    from imgtools.demo_tree import load_clsloc

    return [s.wnid for s in load_clsloc()]


def make_tree(root: Path, corpus: Path, classes: int) -> tuple[Path, Path]:
    """``root/tree`` in the val-in-folders layout and a recipe of its classes; reused when a
    finished one is there (``.complete``)."""
    tree, recipe = root / "tree", root / f"imagenet-{classes}.toml"
    wnids = clsloc_wnids()[:classes]
    recipe.write_text(f'name = "imagenet{classes}"\noutput_name = "imagenet{classes}"\n'
                      'pool = ["train", "val"]\ndefault_split = "source"\nclasses = ['
                      + ", ".join(f'"{w}"' for w in wnids) + "]\n")
    if (tree / ".complete").is_file():
        return tree, recipe
    shutil.rmtree(tree, ignore_errors=True)
    photos = sorted(p for p in corpus.iterdir() if p.suffix.lower() in (".jpeg", ".jpg"))
    if not photos:
        sys.exit(f"error: {corpus}: no photos\n  what to do: pass --corpus ../shared/corpus")
    (tree / "photos").mkdir(parents=True)
    val_number = 0
    for k, wnid in enumerate(wnids):
        photo = tree / "photos" / f"{wnid}.JPEG"
        small_photo(photos[k % len(photos)], photo)
        train, val = tree / "train" / wnid, tree / "val" / wnid
        train.mkdir(parents=True)
        val.mkdir(parents=True)
        for i in range(TRAIN_PER_CLASS):
            os.link(photo, train / f"{wnid}_{i}.JPEG")
        for _ in range(VAL_PER_CLASS):
            val_number += 1
            os.link(photo, val / f"ILSVRC2012_val_{val_number:08d}.JPEG")
    shutil.move(tree / "photos", root / "photos")  # not a class folder of the tree
    (tree / ".complete").write_text("")
    return tree, recipe


def small_photo(source: Path, target: Path) -> None:
    """``source`` reduced to PHOTO_SIDE px on its longer side, as a quality-90 RGB JPEG."""
    from PIL import Image

    with Image.open(source) as im:
        im = im.convert("RGB")
        im.thumbnail((PHOTO_SIDE, PHOTO_SIDE), Image.Resampling.LANCZOS)
        im.save(target, quality=90)


# --------------------------------------------------------------------------- the cluster


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(log: Path, text: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if log.is_file() and text in log.read_text(errors="replace"):
            return
        time.sleep(0.2)
    sys.exit(f"error: {log} never said {text!r}")


def start_cluster(logs: Path, workers: int, memory: str) -> tuple[str, list[subprocess.Popen]]:
    """``dask scheduler`` and ``workers`` single-threaded ``dask worker`` processes (no nanny,
    so the measured process is the worker itself)."""
    logs.mkdir(parents=True, exist_ok=True)
    address = f"tcp://127.0.0.1:{free_port()}"
    dask = str(BIN / "dask")

    def spawn(args: list[str], name: str) -> subprocess.Popen:
        return subprocess.Popen(args, stdout=open(logs / name, "w"),  # noqa: SIM115
                                stderr=subprocess.STDOUT, cwd=logs)

    procs = [spawn([dask, "scheduler", "--host", "127.0.0.1", "--port", address.rsplit(":")[-1],
                    "--no-dashboard"], "scheduler.log")]
    wait_for(logs / "scheduler.log", "Scheduler at")
    for i in range(workers):
        procs.append(spawn([dask, "worker", address, "--nthreads", "1", "--no-nanny",
                            "--memory-limit", memory, "--no-dashboard"], f"worker-{i}.log"))
    for i in range(workers):
        wait_for(logs / f"worker-{i}.log", "Registered to")
    return address, procs


def stop(procs: list[subprocess.Popen]) -> None:
    for p in reversed(procs):
        p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            p.kill()


# --------------------------------------------------------------------------- measuring


def rss(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def private(pid: int) -> int:
    """Bytes only this process maps (freed if it exits), unlike RSS, which also counts pages
    shared with others (a forked worker shares its parent's)."""
    total = 0
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith(("Private_Clean:", "Private_Dirty:")):
                    total += int(line.split()[1]) * 1024
    except OSError:
        pass
    return total


def children(pid: int) -> list[int]:
    kids, todo = [], [pid]
    while todo:
        p = todo.pop()
        try:
            with open(f"/proc/{p}/task/{p}/children") as f:
                found = [int(c) for c in f.read().split()]
        except OSError:
            found = []
        kids += found
        todo += found
    return kids


def load_average() -> float:
    """The machine's 1-minute load average (other users' work included)."""
    with open("/proc/loadavg") as f:
        return float(f.read().split()[0])


def measure(argv: list[str], workers: list[int], log: Path) -> dict:
    """Run the driver; wall time, its peak RSS, the peak RSS of the largest worker process
    (``workers``' pids, or the driver's child processes when there are none) and the range of
    the load average while it ran. Its stderr goes to ``log`` (a pipe nobody reads during an
    hour-long run could fill and stall it)."""
    started = time.perf_counter()
    with open(log, "w") as err:
        driver = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=err)
    driver_peak = worker_peak = worker_private_peak = 0
    loads: list[float] = []
    polls = 0
    while driver.poll() is None:
        driver_peak = max(driver_peak, rss(driver.pid))
        pids = workers or children(driver.pid)
        worker_peak = max([worker_peak, *(rss(p) for p in pids)])
        worker_private_peak = max([worker_private_peak, *(private(p) for p in pids)])
        if polls % 200 == 0:  # every 10 s
            loads.append(load_average())
        polls += 1
        time.sleep(0.05)
    seconds = time.perf_counter() - started
    if driver.returncode != 0:
        sys.exit(f"error: {' '.join(argv)} exited {driver.returncode}:\n{log.read_text()}")
    loads.append(load_average())
    return {"seconds": round(seconds, 1), "driver_peak_mb": round(driver_peak / 2**20),
            "worker_peak_mb": round(worker_peak / 2**20) if worker_peak else None,
            "worker_private_peak_mb": (round(worker_private_peak / 2**20)
                                       if worker_private_peak else None),
            "load_min": min(loads), "load_max": max(loads),
            "load_mean": round(sum(loads) / len(loads), 1)}


RUN_RECORD = {"build-info.json", MANIFEST, INPUTS_COPY}
"""The run's record, not its data: build-info.json (the command line, timings) and the
manifest and input list of the output protocol (which list build-info.json's size)."""


def differing_files(a: Path, b: Path) -> list[str]:
    """The data files that differ between two outputs (missing on one side included), the run
    record aside."""
    def data_files(root: Path) -> set[Path]:
        return {p.relative_to(root) for p in root.rglob("*")
                if p.is_file() and p.name not in RUN_RECORD}

    files_a, files_b = data_files(a), data_files(b)
    differ = sorted(str(p) for p in files_a ^ files_b)
    differ += sorted(str(rel) for rel in files_a & files_b
                     if not filecmp.cmp(a / rel, b / rel, shallow=False))
    return differ


# --------------------------------------------------------------------------- main


def save(rows: list[dict], path: Path) -> None:
    """The results so far, replaced atomically."""
    partial = path.with_suffix(".partial")
    partial.write_text(json.dumps(rows, indent=2) + "\n")
    partial.replace(path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--classes", type=int, default=1000, help="first N ImageNet-1k classes")
    ap.add_argument("--work", type=Path, default=Path("/tmp/bench-cluster"))
    ap.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--memory", default="2GB", help="--memory-limit of each dask worker")
    ap.add_argument("--shard-size", type=int, default=256)
    ap.add_argument("--targets", nargs="+", default=list(TARGETS), choices=list(TARGETS))
    ap.add_argument("--executors", nargs="+", default=["local", "dask"],
                    choices=["local", "dask"],
                    help="in this order (dask first: its numbers survive a run cut short)")
    ap.add_argument("--json", type=Path,
                    help="write the results here after each run (default: WORK/results.json), "
                         "so the runs that finished survive an interrupted benchmark")
    args = ap.parse_args()
    args.json = args.json or args.work / "results.json"

    args.work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    tree, recipe = make_tree(args.work, args.corpus, args.classes)
    images = args.classes * (TRAIN_PER_CLASS + VAL_PER_CLASS)
    print(f"tree: {images:,} files, {args.classes} classes ({time.perf_counter() - started:.0f} s)",
          flush=True)
    address, procs = start_cluster(args.work / "logs", args.workers, args.memory)
    rows = []
    try:
        for target in args.targets:
            outs = {}
            for executor in args.executors:
                out = args.work / f"out-{target}-{executor}"
                shutil.rmtree(out, ignore_errors=True)
                where = (["--executor", "local", "-j", str(args.workers)] if executor == "local"
                         else ["--executor", "dask", "--scheduler", address])
                argv = [str(BIN / "imgtools"), "build", str(recipe), "--src", str(tree),
                        "--out", str(out), "--shard-size", str(args.shard_size), "-q",
                        *TARGETS[target], *where]
                result = measure(argv, [p.pid for p in procs[1:]] if executor == "dask" else [],
                                 args.work / "logs" / f"driver-{target}-{executor}.log")
                result.update(target=target, executor=executor, images=images,
                              images_per_s=round(images / result["seconds"]))
                rows.append(result)
                outs[executor] = out
                print(json.dumps(result), flush=True)
                save(rows, args.json)
            if len(outs) == 2:
                local, dask = (next(r for r in rows[-2:] if r["executor"] == e)
                               for e in ("local", "dask"))
                dask["overhead"] = round(dask["seconds"] / local["seconds"], 2)
                differ = differing_files(outs["local"], outs["dask"])
                dask["identical"] = not differ
                dask["differing_files"] = differ[:20]
                save(rows, args.json)
                if differ:  # kept, to see why
                    continue
            for out in outs.values():
                shutil.rmtree(out, ignore_errors=True)
    finally:
        stop(procs)
    print(f"\n{images:,} images ({args.classes} classes x {TRAIN_PER_CLASS}+{VAL_PER_CLASS}), "
          f"{os.cpu_count()} cores, {args.workers} workers x 1 thread\n")
    print("| output | executor | wall s | images/s | driver peak RSS MB | worker peak RSS MB "
          "| worker peak private MB | load average | dask/local | identical |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['target']} | {r['executor']} | {r['seconds']} | {r['images_per_s']:,} | "
              f"{r['driver_peak_mb']} | {r['worker_peak_mb'] or '-'} | "
              f"{r['worker_private_peak_mb'] or '-'} | "
              f"{r['load_min']}–{r['load_max']} | {r.get('overhead', '')} | "
              f"{r.get('identical', '')} |")


if __name__ == "__main__":
    main()
