"""Benchmark ``imgtools convert`` against the copying limit and against plain library loops.

Builds a folder dataset of ``--images`` real photos (the corpus replicated), then times, in
the same run and on the same files:

* ``tar cf`` of the folder: the cost of copying the bytes once (what folder -> WebDataset can
  at best approach);
* every conversion direction through ``imgtools.convert.convert``;
* the same direction as a straightforward single-process Python loop using each library's own
  reader and writer (``os.walk`` + ``open``, ``webdataset.WebDataset`` / ``TarWriter``,
  ``tfrecord.reader`` / ``TFRecordWriter``, ``pyarrow.parquet`` with default settings).

Prints a markdown table (records/s, MB/s of image bytes, ratio) and writes the numbers as JSON.
Timings are wall-clock, best of ``--repeat`` runs, page cache warmed by a first ``tar cf``.

    python scripts/bench_convert.py --corpus ../shared/corpus --images 20000 --out /tmp/bench
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_CORPUS = REPO.parent / "shared" / "corpus"
DIRECTIONS = [("folder", "webdataset"), ("folder", "tfrecord"), ("folder", "parquet"),
              ("webdataset", "tfrecord"), ("tfrecord", "parquet"), ("parquet", "webdataset"),
              ("webdataset", "folder")]


def unique_copy(jpeg: bytes, serial: int) -> bytes:
    """The photo with a JPEG comment segment (``FF FE``) naming its serial number inserted after
    the start-of-image marker: it decodes to the same pixels, but no two files are equal.

    Real datasets hold no duplicate files; a replicated corpus would, and Parquet's default
    dictionary encoding would then store each photo once per row group and write a few MB
    instead of the dataset's size, which is not what any real conversion costs.
    """
    comment = b"imgtools-bench %09d" % serial
    return jpeg[:2] + b"\xff\xfe" + (len(comment) + 2).to_bytes(2, "big") + comment + jpeg[2:]


def make_folder(corpus: Path, n_images: int, root: Path) -> int:
    """``n_images`` copies of the corpus photos as ``<root>/<split>/<wnid>/<file>.JPEG`` (one in
    five in val), each made unique (:func:`unique_copy`); returns the total image bytes."""
    from imgtools.records import ClassInfo, DatasetInfo

    photos = sorted(p for p in corpus.iterdir() if p.suffix.lower() in (".jpeg", ".jpg"))
    if not photos:
        sys.exit(f"no JPEG photos in {corpus}")
    data = [p.read_bytes() for p in photos]
    wnids = sorted({p.name.split("_")[0] for p in photos})
    total = 0
    for i in range(n_images):
        k = i % len(photos)
        wnid = photos[k].name.split("_")[0]
        split = "val" if i % 5 == 4 else "train"
        d = root / split / wnid
        d.mkdir(parents=True, exist_ok=True)
        photo = unique_copy(data[k], i)
        (d / f"{wnid}_{i:07d}.JPEG").write_bytes(photo)
        total += len(photo)
    DatasetInfo("bench", [ClassInfo(w, w) for w in wnids]).save(root)
    return total


def timed(fn: Callable[[], object], repeat: int, cleanup: Callable[[], None]) -> float:
    best = float("inf")
    for _ in range(repeat):
        cleanup()
        # Flush what earlier runs left dirty in the page cache, so no contender pays for
        # another's write-back (2 GB per direction is enough to throttle the next writer).
        os.sync()
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


# --------------------------------------------------------------- straightforward loops


def iter_folder(root: Path):
    """(split, label, filename, bytes) the plain way: walk, open, read."""
    wnids = sorted({d.name for s in ("train", "val") for d in (root / s).iterdir()})
    for split in ("train", "val"):
        for wnid in sorted(os.listdir(root / split)):
            for name in sorted(os.listdir(root / split / wnid)):
                with open(root / split / wnid / name, "rb") as f:
                    yield split, wnids.index(wnid), name, f.read()


def iter_wds(root: Path):
    import webdataset as wds

    for split in ("train", "val"):
        # imgtools writes its shards under data/ (SHARD_FOLDER), the loop at the top level
        urls = sorted(str(p) for p in root.rglob(f"{split}-*.tar"))
        for s in wds.WebDataset(urls, shardshuffle=False, empty_check=False):
            yield split, int(s["cls"]), json.loads(s["json"])["filename"], s["jpg"]


def iter_tfrecord(root: Path):
    from tfrecord.reader import tfrecord_loader

    desc = {"image": "byte", "label": "int", "file_name": "byte"}
    for split in ("train", "val"):
        for path in sorted(root.glob(f"{split}.tfrecord-*-of-?????")):
            for r in tfrecord_loader(str(path), None, desc):
                yield split, int(r["label"][0]), bytes(r["file_name"]).decode(), \
                    bytes(r["image"])


def iter_parquet(root: Path):
    import pyarrow.parquet as pq

    for split in ("train", "val"):
        for path in sorted(root.rglob(f"{split}-*.parquet")):
            for batch in pq.ParquetFile(path).iter_batches(batch_size=100):
                for row in batch.to_pylist():
                    yield split, row["label"], row["image"]["path"], row["image"]["bytes"]


def write_wds(rows, dst: Path) -> None:
    import webdataset as wds

    dst.mkdir(parents=True)
    sinks: dict[str, object] = {}
    for split, label, name, data in rows:
        if split not in sinks:
            for s in sinks.values():
                s.close()
            sinks = {split: wds.ShardWriter(str(dst / f"{split}-%06d.tar"), maxcount=10_000,
                                            maxsize=500e6, verbose=0)}
        sinks[split].write({"__key__": name.split(".")[0], "jpg": data, "cls": label,
                            "json": {"filename": name, "label": label}})
    for s in sinks.values():
        s.close()


def write_tfrecord(rows, dst: Path) -> None:
    from tfrecord.writer import TFRecordWriter

    dst.mkdir(parents=True)
    writers: dict[str, TFRecordWriter] = {}
    for split, label, name, data in rows:
        if split not in writers:
            writers[split] = TFRecordWriter(str(dst / f"{split}.tfrecord-00000-of-00001"))
        writers[split].write({"image": (data, "byte"), "label": (label, "int"),
                              "file_name": (name.encode(), "byte")})
    for w in writers.values():
        w.close()


def write_parquet(rows, dst: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    dst.mkdir(parents=True)
    buffers: dict[str, list] = {}
    writers: dict[str, pq.ParquetWriter] = {}

    def flush(split: str) -> None:
        table = pa.Table.from_pylist(buffers[split])
        if split not in writers:
            writers[split] = pq.ParquetWriter(dst / f"{split}-00000-of-00001.parquet",
                                              table.schema)
        writers[split].write_table(table)
        buffers[split] = []

    for split, label, name, data in rows:
        buffers.setdefault(split, []).append({"image": {"bytes": data, "path": name},
                                              "label": label})
        if len(buffers[split]) == 100:
            flush(split)
    for split in list(buffers):
        if buffers[split]:
            flush(split)
    for w in writers.values():
        w.close()


def write_folder(rows, dst: Path) -> None:
    for split, label, name, data in rows:
        d = dst / split / str(label)
        d.mkdir(parents=True, exist_ok=True)
        with open(d / name, "wb") as f:
            f.write(data)


READERS = {"folder": iter_folder, "webdataset": iter_wds, "tfrecord": iter_tfrecord,
           "parquet": iter_parquet}
WRITERS = {"folder": write_folder, "webdataset": write_wds, "tfrecord": write_tfrecord,
           "parquet": write_parquet}


# ----------------------------------------------------------------------------- main


def remaining(src_fmt: str, dst_fmt: str) -> list[tuple[str, str]]:
    """The directions timed after this one."""
    return DIRECTIONS[DIRECTIONS.index((src_fmt, dst_fmt)) + 1:]



def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--images", type=int, default=20_000)
    parser.add_argument("--out", type=Path, default=None,
                        help="work folder (deleted at the end unless --keep); it needs about "
                             "six times the image bytes. On a tmpfs (/dev/shm) the numbers "
                             "measure the software; on a disk, the disk")
    parser.add_argument("--jobs", type=int, default=0, help="imgtools workers (0 = all cores)")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--json", type=Path, default=None,
                        help="where to write the numbers [default: <out>/bench_convert.json]")
    args = parser.parse_args(argv)

    from imgtools.convert import convert

    out = args.out or Path(tempfile.mkdtemp(prefix="bench-convert-"))
    out.mkdir(parents=True, exist_ok=True)
    folder = out / "in-folder"
    if folder.exists():
        shutil.rmtree(folder)
    total_bytes = make_folder(args.corpus, args.images, folder)
    mb = total_bytes / 1e6
    n = args.images
    results: dict = {"images": n, "image_mb": round(mb, 1), "cores": os.cpu_count(),
                     "jobs": args.jobs, "directions": []}

    tar = out / "baseline.tar"
    tar_cf = lambda: subprocess.run(["tar", "cf", str(tar), "-C", str(folder), "."],  # noqa: E731
                                    check=True)
    tar_cf()  # warm the page cache
    t_tar = timed(tar_cf, args.repeat, lambda: tar.unlink(missing_ok=True))
    tar.unlink(missing_ok=True)
    results["tar_cf_s"] = round(t_tar, 3)

    inputs = {"folder": folder}
    rows = []
    for src_fmt, dst_fmt in DIRECTIONS:
        src = inputs.get(src_fmt)
        if src is None:
            continue
        ours_dst = out / f"{src_fmt}-to-{dst_fmt}"
        loop_dst = out / f"loop-{src_fmt}-to-{dst_fmt}"
        t_ours = timed(lambda s=src, d=ours_dst, f=dst_fmt: convert(
            s, d, f, n_jobs=args.jobs, quiet=True), args.repeat,
            lambda d=ours_dst: shutil.rmtree(d, ignore_errors=True))
        t_loop = timed(lambda s=src, d=loop_dst, a=src_fmt, b=dst_fmt: WRITERS[b](
            READERS[a](s), d), args.repeat, lambda d=loop_dst: shutil.rmtree(d, ignore_errors=True))
        shutil.rmtree(loop_dst, ignore_errors=True)
        if dst_fmt in inputs:
            shutil.rmtree(ours_dst, ignore_errors=True)
        else:
            inputs[dst_fmt] = ours_dst
        # Free what no later direction reads (the work folder may be a RAM-backed tmpfs).
        for fmt in list(inputs):
            if not any(a == fmt for a, _b in remaining(src_fmt, dst_fmt)):
                shutil.rmtree(inputs.pop(fmt), ignore_errors=True)
        entry = {"direction": f"{src_fmt} -> {dst_fmt}", "ours_s": round(t_ours, 3),
                 "loop_s": round(t_loop, 3), "ours_records_per_s": round(n / t_ours),
                 "ours_mb_per_s": round(mb / t_ours, 1), "loop_records_per_s": round(n / t_loop),
                 "speedup_vs_loop": round(t_loop / t_ours, 2)}
        if (src_fmt, dst_fmt) == ("folder", "webdataset"):
            entry["vs_tar_cf"] = round(t_ours / t_tar, 2)
        rows.append(entry)
        print(f"{entry['direction']}: {entry['ours_s']} s (loop {entry['loop_s']} s)",
              file=sys.stderr)
    results["directions"] = rows

    print(f"\n{n} images, {mb:.0f} MB of JPEG, {os.cpu_count()} cores; `tar cf` of the folder: "
          f"{t_tar:.2f} s ({n / t_tar:.0f} img/s, {mb / t_tar:.0f} MB/s)\n")
    print("| direction | imgtools img/s | imgtools MB/s | plain loop img/s | speed-up vs loop "
          "| time vs `tar cf` |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['direction']} | {r['ours_records_per_s']} | {r['ours_mb_per_s']} | "
              f"{r['loop_records_per_s']} | {r['speedup_vs_loop']}x | "
              f"{str(r['vs_tar_cf']) + 'x' if 'vs_tar_cf' in r else ''} |")
    json_path = args.json or out / "bench_convert.json"
    json_path.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nnumbers: {json_path}")
    if not args.keep:
        for child in out.iterdir():
            if child != json_path:
                shutil.rmtree(child) if child.is_dir() else child.unlink()
    return 0


if __name__ == "__main__":
    sys.exit(main())
