#!/usr/bin/env python
"""Do imgtools' hand-written codecs earn their place? Each against the library it replaces.

Why this exists: the project uses the field's libraries unless a hand-written codec is
measurably better. This script measures every hand-written codec against its library on real
photos (``/work/shared/corpus``), end to end (encoded, framed and written to a file, or read
back from one), in CPU time per image (``time.process_time``: user + system of this process,
best of ``--repeats`` passes, so other work on a shared machine barely moves it):

* TFRecord writer: the ``tf.train.Example`` encoding (imgtools' own encoder, as the writer used
  it until protobuf won this measurement, against protobuf's deterministic
  ``SerializeToString``), both framed with the length + masked CRC-32C framing and written to a
  file, at ImageNet-typical image sizes: the corpus photos of about 35 KB and about 110 KB.
* Tar writer: ``WebDatasetShardWriter`` (direct header bytes) against ``webdataset.TarWriter``
  and plain ``tarfile``, same members, same bytes.
* Tar reader: ``WebDatasetFormat.read_shard`` (direct header parsing, strict end checks)
  against ``tarfile`` iteration and webdataset's ``tar_file_expander`` + ``group_by_keys``.
* Pickle/npz batch writers of downsampled ImageNet: ``write_pickle_batch`` /
  ``write_npz_batch`` (rows streamed from the row files in 4 MB chunks) against ``pickle.dump``
  / ``np.savez`` of the same arrays held in memory. Their point is bounded memory, so the peak
  of traced allocations (``tracemalloc``; numpy reports its buffers to it) is printed too.

    python scripts/bench_codecs.py                        # about a minute on 2 busy cores
    python scripts/bench_codecs.py --repeats 9 --rows 20000 --json out.json
"""

from __future__ import annotations

import argparse
import io
import json
import os
import pickle
import sys
import tarfile
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from imgtools.formats import tfrecord as tfr  # noqa: E402
from imgtools.formats.base import InputShard  # noqa: E402
from imgtools.formats.gathered import write_all  # noqa: E402
from imgtools.formats.pickle_batches import PartRows  # noqa: E402
from imgtools.formats.pickle_codec import write_npz_batch, write_pickle_batch  # noqa: E402
from imgtools.formats.webdataset import FORMAT as WDS  # noqa: E402
from imgtools.formats.webdataset import WebDatasetShardWriter  # noqa: E402
from imgtools.records import ClassInfo, DatasetInfo, Record  # noqa: E402
from imgtools.transforms.square import downsample_file  # noqa: E402

CORPUS = Path(os.environ.get("IMGTOOLS_CORPUS", "/work/shared/corpus"))
SIZES_KB = (35, 110)
"""ImageNet-typical JPEG sizes: a train image is about 110 KB on average, many are near 35."""


def best_cpu_ms(fn: Callable[[], object], n_items: int, repeats: int) -> float:
    """Best-of-``repeats`` CPU time (user + system of this process) of ``fn``, per item, ms."""
    best = float("inf")
    for _ in range(repeats):
        start = time.process_time()
        fn()
        best = min(best, time.process_time() - start)
    return 1000 * best / n_items


def photos_near(corpus: Path, kb: int, tolerance: float = 0.25) -> list[bytes]:
    """Corpus photos within ``tolerance`` of ``kb`` kilobytes (real photos, bytes unchanged)."""
    lo, hi = kb * 1000 * (1 - tolerance), kb * 1000 * (1 + tolerance)
    out = [p.read_bytes() for p in sorted(corpus.iterdir())
           if p.suffix.lower() in (".jpeg", ".jpg") and lo <= p.stat().st_size <= hi]
    if not out:
        sys.exit(f"error: no photos of about {kb} KB in {corpus}")
    return out


def records_of(images: list[bytes], copies: int) -> list[Record]:
    """``copies`` passes over ``images`` as records of the kind a build writes."""
    return [Record(f"n01440764_{i}", "train", i % 10, images[i % len(images)],
                   f"n01440764_{i}.JPEG", "n01440764", "tench")
            for i in range(copies * len(images))]


# ------------------------------------------------------------------------------- TFRecord


def _varint(n: int) -> bytes:
    """Protobuf's base-128 varint; a negative int64 is encoded as its 64-bit two's complement."""
    if n < 0:
        n += 1 << 64
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _delimited(field: int, pieces: list[bytes]) -> list[bytes]:
    """A length-delimited protobuf field (``field`` number, wire type 2) holding ``pieces``."""
    return [bytes([field << 3 | 2]) + _varint(sum(len(p) for p in pieces)), *pieces]


_BIG = 4096
"""Values at least this long stay separate pieces (written from the caller's buffer); shorter
ones are joined with the framing around them."""


def encode_example(datum: dict[str, tuple[object, str]]) -> list[bytes]:
    """imgtools' former hand-written encoder, kept here for this measurement: the bytes of a
    ``tf.train.Example`` holding ``datum``, as protobuf's deterministic
    serialization writes them (map entries sorted by key), in pieces in which each long value
    (the image) is the caller's own ``bytes`` object.

    Why not protobuf itself: building the message copies the image into protobuf's arena and
    serializing copies it again, about a third of the CPU time of a passthrough conversion;
    this encoder copies nothing. It covers only what ``example_features`` makes (one bytes or
    one int64 value per feature), and a test checks it byte for byte against protobuf's
    deterministic serialization on every schema.
    """
    entries: list[bytes] = []
    for key in sorted(datum):
        value, kind = datum[key]
        if kind == "byte":
            feature = _delimited(1, _delimited(1, [value]))  # Feature.bytes_list.value
        elif kind == "int":
            feature = _delimited(3, _delimited(1, [_varint(value)]))  # int64_list, packed
        else:  # pragma: no cover - example_features only makes the two kinds above
            raise ValueError(kind)
        # Features.feature: a map entry {key = 1, value = 2}
        entries += _delimited(1, [*_delimited(1, [key.encode()]), *_delimited(2, feature)])
    return _coalesce(_delimited(1, entries))  # Example.features


def _coalesce(pieces: list[bytes]) -> list[bytes]:
    """Join runs of short pieces (framing, labels, names); leave long ones as they are."""
    out: list[bytes] = []
    run: list[bytes] = []
    for piece in pieces:
        if len(piece) >= _BIG:
            if run:
                out.append(b"".join(run))
                run = []
            out.append(piece)
        else:
            run.append(piece)
    if run:
        out.append(b"".join(run))
    return out


def write_handwritten(records: list[Record], path: Path) -> None:
    """The encoder imgtools had: pieces that reference the image, CRC over pieces, writev."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        for r in records:
            parts = tfr.frame_parts(encode_example(tfr.example_features(r, "tfds")))
            write_all(fd, parts, sum(map(len, parts)))
    finally:
        os.close(fd)


def write_protobuf(records: list[Record], path: Path) -> None:
    """protobuf (upb) builds the message and serializes it deterministically; framed and
    written with one writev per record."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        for r in records:
            payload = tfr.serialize_example(tfr.example_features(r, "tfds"))
            parts = tfr.frame_parts([payload])
            write_all(fd, parts, sum(map(len, parts)))
    finally:
        os.close(fd)


def bench_tfrecord(tmp: Path, repeats: int, copies: int) -> list[dict]:
    rows = []
    for kb in SIZES_KB:
        records = records_of(photos_near(CORPUS, kb), copies)
        a, b = tmp / "hand.tfrecord", tmp / "pb.tfrecord"
        write_handwritten(records, a)
        write_protobuf(records, b)
        assert a.read_bytes() == b.read_bytes(), "the two encoders disagree"
        mean_kb = sum(len(r.image) for r in records) / len(records) / 1000
        hand = best_cpu_ms(lambda r=records, p=a: write_handwritten(r, p), len(records), repeats)
        pb = best_cpu_ms(lambda r=records, p=b: write_protobuf(r, p), len(records), repeats)
        rows.append({"codec": f"tfrecord write, {mean_kb:.0f} KB photos",
                     "hand_ms": hand, "library": "protobuf SerializeToString(deterministic)",
                     "library_ms": pb, "n": len(records)})
    return rows


# ------------------------------------------------------------------------------- tar


INFO = DatasetInfo(name="bench", classes=[ClassInfo(f"n{i:08d}", f"c{i}") for i in range(10)])


def tar_fields(r: Record) -> dict[str, bytes]:
    meta = {"label": r.label, "class_name": r.class_name, "wnid": r.wnid, "split": r.split,
            "filename": r.filename}
    return {"cls": str(r.label).encode(), "jpg": r.image,
            "json": json.dumps(meta, sort_keys=True, ensure_ascii=False).encode()}


def write_tar_hand(records: list[Record], path: Path) -> None:
    w = WebDatasetShardWriter(path)
    for r in records:
        w.write(r)
    w.close()


def write_tar_webdataset(records: list[Record], path: Path) -> None:
    import webdataset as wds

    with open(path, "wb") as f, wds.TarWriter(f, encoder=False, mtime=0) as w:
        for r in records:
            w.write({"__key__": r.key, **tar_fields(r)})


def write_tar_tarfile(records: list[Record], path: Path) -> None:
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
        for r in records:
            for field, data in sorted(tar_fields(r).items()):
                info = tarfile.TarInfo(f"{r.key}.{field}")
                info.size, info.mtime, info.mode = len(data), 0, 0o444
                info.uname = info.gname = "bigdata"
                tar.addfile(info, io.BytesIO(data))


def read_tar_hand(path: Path) -> int:
    shard = InputShard(str(path), "train", {})
    return sum(len(r.image) for r in WDS.read_shard(shard, INFO))


def read_tar_tarfile(path: Path) -> int:
    total = 0
    with tarfile.open(path, "r:") as tar:
        for m in tar:
            if m.name.endswith(".jpg"):
                total += len(tar.extractfile(m).read())  # type: ignore[union-attr]
    return total


def read_tar_webdataset(path: Path) -> int:
    from webdataset.tariterators import group_by_keys, tar_file_expander

    with open(path, "rb") as f:
        samples = group_by_keys(tar_file_expander([{"stream": f, "url": str(path)}]))
        return sum(len(s["jpg"]) for s in samples)


def bench_tar(tmp: Path, repeats: int, copies: int) -> list[dict]:
    records = records_of(photos_near(CORPUS, 110), copies)
    paths = {name: tmp / f"{name}.tar" for name in ("hand", "wds", "tarfile")}
    write_tar_hand(records, paths["hand"])
    write_tar_webdataset(records, paths["wds"])
    write_tar_tarfile(records, paths["tarfile"])
    assert paths["hand"].read_bytes() == paths["wds"].read_bytes(), "tar writers disagree"
    n = len(records)
    write = {"hand": best_cpu_ms(lambda: write_tar_hand(records, paths["hand"]), n, repeats),
             "wds": best_cpu_ms(lambda: write_tar_webdataset(records, paths["wds"]), n, repeats),
             "tarfile": best_cpu_ms(lambda: write_tar_tarfile(records, paths["tarfile"]), n,
                                    repeats)}
    total = read_tar_hand(paths["hand"])
    assert read_tar_tarfile(paths["hand"]) == total == read_tar_webdataset(paths["hand"])
    read = {"hand": best_cpu_ms(lambda: read_tar_hand(paths["hand"]), n, repeats),
            "wds": best_cpu_ms(lambda: read_tar_webdataset(paths["hand"]), n, repeats),
            "tarfile": best_cpu_ms(lambda: read_tar_tarfile(paths["hand"]), n, repeats)}
    return [{"codec": "tar write (WebDatasetShardWriter)", "hand_ms": write["hand"],
             "library": "webdataset.TarWriter", "library_ms": write["wds"], "n": n},
            {"codec": "tar write (WebDatasetShardWriter)", "hand_ms": write["hand"],
             "library": "tarfile.addfile", "library_ms": write["tarfile"], "n": n},
            {"codec": "tar read (WebDatasetFormat.read_shard)", "hand_ms": read["hand"],
             "library": "webdataset tar_file_expander+group_by_keys",
             "library_ms": read["wds"], "n": n},
            {"codec": "tar read (WebDatasetFormat.read_shard)", "hand_ms": read["hand"],
             "library": "tarfile iteration + extractfile", "library_ms": read["tarfile"],
             "n": n}]


# ------------------------------------------------------------------------------- pickle/npz


def row_file(tmp: Path, n_rows: int, size: int) -> tuple[Path, int]:
    """A row file of ``n_rows`` planar rows of the corpus photos at ``size`` px (as the
    downsampled build keeps them between its two passes)."""
    photos = sorted(p for p in CORPUS.iterdir() if p.suffix.lower() in (".jpeg", ".jpg"))
    rows = [downsample_file(p, [size])[0][size] for p in photos[:50]]
    width = rows[0].size
    path = tmp / "rows.u8"
    with open(path, "wb") as f:
        for i in range(n_rows):
            f.write(rows[i % len(rows)].tobytes())
    return path, width


def traced(fn: Callable[[], object]) -> int:
    """Peak bytes allocated (Python and numpy) while ``fn`` runs."""
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def bench_batches(tmp: Path, repeats: int, n_rows: int, size: int) -> list[dict]:
    path, width = row_file(tmp, n_rows, size)
    source = PartRows([str(path)], [0, n_rows], width, np.arange(n_rows, dtype=np.int64))
    labels = np.arange(n_rows, dtype=np.int64) % 1000
    mean = np.zeros(width, dtype=np.float64)
    out = tmp / "batch"

    def ours(writer) -> Callable[[], None]:
        def run() -> None:
            with open(out, "wb") as f:
                writer(f, source, labels, mean)
        return run

    def pickle_dump() -> None:  # what a user would write: load rows, one dict, pickle.dump
        data = np.fromfile(path, dtype=np.uint8).reshape(n_rows, width)[source.order]
        with open(out, "wb") as f:
            pickle.dump({"data": data, "labels": labels.tolist(), "mean": mean}, f, protocol=3)

    def savez() -> None:
        data = np.fromfile(path, dtype=np.uint8).reshape(n_rows, width)[source.order]
        with open(out, "wb") as f:
            np.savez(f, data=data, labels=labels, mean=mean)

    rows = []
    for name, hand, lib_name, lib in (
            ("pickle batch (write_pickle_batch)", ours(write_pickle_batch),
             "pickle.dump of the arrays", pickle_dump),
            ("npz batch (write_npz_batch)", ours(write_npz_batch), "np.savez of the arrays",
             savez)):
        rows.append({"codec": name, "hand_ms": best_cpu_ms(hand, n_rows, repeats),
                     "library": lib_name, "library_ms": best_cpu_ms(lib, n_rows, repeats),
                     "n": n_rows, "hand_peak_mb": traced(hand) / 1e6,
                     "library_peak_mb": traced(lib) / 1e6})
    return rows


# ------------------------------------------------------------------------------- main


def print_table(rows: list[dict]) -> None:
    print(f"{'codec':42} {'hand ms':>8}  {'library':44} {'lib ms':>8} {'hand/lib':>8}  "
          f"{'peak MB hand/lib':>16}")
    for r in rows:
        peak = (f"{r['hand_peak_mb']:.1f}/{r['library_peak_mb']:.1f}"
                if "hand_peak_mb" in r else "")
        print(f"{r['codec']:42} {r['hand_ms']:8.4f}  {r['library']:44} {r['library_ms']:8.4f} "
              f"{r['hand_ms'] / r['library_ms']:8.2f}  {peak:>16}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=7, help="passes; the best counts")
    ap.add_argument("--copies", type=int, default=10,
                    help="passes over the chosen photos per timed run (more records per run)")
    ap.add_argument("--rows", type=int, default=5000,
                    help="rows of a pickle/npz batch (a published batch has about 128,000)")
    ap.add_argument("--size", type=int, default=64, help="downsampled row size in pixels")
    ap.add_argument("--json", type=Path, help="also write the rows here")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(dir=os.environ.get("TMPDIR")) as t:
        tmp = Path(t)
        rows = [*bench_tfrecord(tmp, args.repeats, args.copies),
                *bench_tar(tmp, args.repeats, args.copies),
                *bench_batches(tmp, args.repeats, args.rows, args.size)]
    print(f"CPU ms per image (process time, best of {args.repeats}); protobuf "
          f"{_protobuf_impl()}")
    print_table(rows)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")


def _protobuf_impl() -> str:
    import google.protobuf
    from google.protobuf.internal import api_implementation

    return f"{google.protobuf.__version__} ({api_implementation.Type()})"


if __name__ == "__main__":
    main()
