#!/usr/bin/env python
"""Imagenette at 160 px from the image-net.org archives in place, from the extracted tree, and
``tar -x`` then build: wall time and bytes read.

Why: the point of reading the archives in place is to skip extracting 140 GB to use 10 of
1,000 classes; this measures what that saves on an archive shaped like the real one (a tar of
1,000 per-class tars, a flat val tar, the devkit .tar.gz), filled with the real photos of
/work/shared/corpus under ImageNet names (bytes unchanged, so decode costs are real).

Scale: ``--per-class`` photos in each of the 1,000 inner tars (``--nette-per-class`` in
Imagenette's ten), ``--val-per-class`` val images per class. Bytes read are the kernel's
count (``rchar``) for a one-process run of the whole command, so they include Python's own
files; ``tar -x`` reports its own total (``--totals``). Each time is the median of
``--repeat`` runs; builds use ``-j 2``.

    python scripts/bench_sources.py /var/tmp/bench-sources --per-class 2 --nette-per-class 40
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# ../shared/corpus beside the checkout (or beside the worktrees' folder)
CORPUS = next((p for p in (REPO.parent / "shared" / "corpus",
                           REPO.parent.parent / "shared" / "corpus") if p.is_dir()),
              REPO.parent / "shared" / "corpus")
sys.path.insert(0, str(REPO / "scripts"))

from make_corpus_tree import corpus_photos  # noqa: E402

from imgtools.demo_classmaps import load_clsloc, write_devkit_meta  # noqa: E402
from imgtools.demo_tree import IMAGENETTE_WNIDS  # noqa: E402

_IN_PROCESS = """
import sys
from imgtools.cli import main
def rchar():
    for line in open('/proc/self/io'):
        if line.startswith('rchar:'):
            return int(line.split()[1])
before = rchar()
try:
    main(sys.argv[1:])
except SystemExit as e:
    code = e.code
print('RCHAR', rchar() - before, file=sys.stderr)
"""


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), 1_300_000_000, 0o644
    tar.addfile(info, io.BytesIO(data))


def make_archives(out: Path, corpus: Path, per_class: int, nette_per_class: int,
                  val_per_class: int) -> dict:
    """The trio, ImageNet-1k shaped: 1,000 inner tars, the val tar, the devkit."""
    photos = [p.read_bytes() for p in corpus_photos(corpus)]
    clsloc = load_clsloc()
    wnids = sorted(s.wnid for s in clsloc)
    out.mkdir(parents=True, exist_ok=True)
    k = 0
    counts = {}
    with tarfile.open(out / "ILSVRC2012_img_train.tar", "w", format=tarfile.GNU_FORMAT) as tar:
        for wnid in wnids:
            n = nette_per_class if wnid in IMAGENETTE_WNIDS else per_class
            buf = io.BytesIO()
            with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as inner:
                for i in range(n):
                    _add(inner, f"{wnid}_{i + 1}.JPEG", photos[k % len(photos)])
                    k += 1
            _add(tar, f"{wnid}.tar", buf.getvalue())
            counts[wnid] = n
    val_wnids = [w for _ in range(val_per_class) for w in wnids]
    with tarfile.open(out / "ILSVRC2012_img_val.tar", "w", format=tarfile.GNU_FORMAT) as tar:
        for i in range(len(val_wnids)):
            _add(tar, f"ILSVRC2012_val_{i + 1:08d}.JPEG", photos[k % len(photos)])
            k += 1
    meta = out / "devkit-src"
    write_devkit_meta(meta, val_wnids, counts, clsloc)
    with tarfile.open(out / "ILSVRC2012_devkit_t12.tar.gz", "w:gz") as tar:
        tar.add(meta / "ILSVRC2012_devkit_t12", "ILSVRC2012_devkit_t12")
    shutil.rmtree(meta)
    return {"train_images": sum(counts.values()), "val_images": len(val_wnids),
            "train_tar_bytes": (out / "ILSVRC2012_img_train.tar").stat().st_size,
            "val_tar_bytes": (out / "ILSVRC2012_img_val.tar").stat().st_size}


def build(src: Path, out: Path, jobs: int, cache: Path, count_bytes: bool) -> tuple[float, int]:
    """One ``imgtools build imagenette --size 160`` (random split); (seconds, bytes read)."""
    shutil.rmtree(out, ignore_errors=True)
    shutil.rmtree(cache, ignore_errors=True)  # a cold index: the header pass is counted
    args = ["build", "imagenette", "--src", str(src), "--size", "160", "--split", "random",
            "--out", str(out), "-j", str(jobs), "-q"]
    env = {**os.environ, "XDG_CACHE_HOME": str(cache)}
    cmd = [sys.executable, "-c", _IN_PROCESS, *args] if count_bytes else \
        [sys.executable, "-m", "imgtools.cli", *args]
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
    seconds = time.perf_counter() - start
    read = next((int(line.split()[1]) for line in proc.stderr.splitlines()
                 if line.startswith("RCHAR")), -1)
    return seconds, read


def extract(archives: Path, tree: Path) -> tuple[float, int]:
    """What users do first: tar -x the train tar, each inner tar, the val tar, the devkit."""
    shutil.rmtree(tree, ignore_errors=True)
    (tree / "train").mkdir(parents=True)
    (tree / "val").mkdir()
    start = time.perf_counter()
    total = 0

    def tar(*args: str) -> None:
        nonlocal total
        proc = subprocess.run(["tar", "--totals", *args], check=True, capture_output=True,
                              text=True)
        for line in proc.stderr.splitlines():
            if line.startswith("Total bytes read:"):
                total += int(line.split()[3])

    tar("-xf", str(archives / "ILSVRC2012_img_train.tar"), "-C", str(tree / "train"))
    for inner in sorted((tree / "train").glob("*.tar")):
        folder = inner.with_suffix("")
        folder.mkdir()
        tar("-xf", str(inner), "-C", str(folder))
        inner.unlink()
    tar("-xf", str(archives / "ILSVRC2012_img_val.tar"), "-C", str(tree / "val"))
    tar("-xzf", str(archives / "ILSVRC2012_devkit_t12.tar.gz"), "-C", str(tree))
    return time.perf_counter() - start, total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("work", type=Path)
    ap.add_argument("--per-class", type=int, default=2)
    ap.add_argument("--nette-per-class", type=int, default=40)
    ap.add_argument("--val-per-class", type=int, default=1)
    ap.add_argument("--corpus", type=Path, default=CORPUS)
    ap.add_argument("--repeat", type=int, default=3, help="timed runs (median)")
    args = ap.parse_args()
    archives, tree, out = args.work / "archives", args.work / "tree", args.work / "out"
    cache = args.work / "cache"
    scale = make_archives(archives, args.corpus, args.per_class, args.nette_per_class,
                          args.val_per_class)
    results = {"scale": scale, "cores": os.cpu_count(), "load_average_at_start": os.getloadavg()}
    x_seconds = statistics.median(extract(archives, tree)[0] for _ in range(args.repeat))
    x_bytes = extract(archives, tree)[1]
    # Alternate the two builds, so that a shared machine's load falls on both alike.
    times: dict[str, list[float]] = {"archives": [], "tree": []}
    for _ in range(args.repeat):
        times["archives"].append(build(archives, out, 2, cache, False)[0])
        times["tree"].append(build(tree, out, 2, cache, False)[0])
    results["archives"] = {"seconds": statistics.median(times["archives"]),
                           "runs": times["archives"],
                           "bytes_read": build(archives, out, 1, cache, True)[1]}
    t_seconds = statistics.median(times["tree"])
    t_bytes = build(tree, out, 1, cache, True)[1]
    results["tree"] = {"seconds": t_seconds, "runs": times["tree"], "bytes_read": t_bytes}
    results["tar_x_then_build"] = {"seconds": x_seconds + t_seconds,
                                   "tar_x_seconds": x_seconds,
                                   "bytes_read": x_bytes + t_bytes,
                                   "tar_x_bytes_read": x_bytes}
    results["load_average_at_end"] = os.getloadavg()
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
