#!/usr/bin/env python
"""What ``bench_peers.py`` times inside each peer's own venv: one run of one contender.

Why a separate file: each peer (fastai, img2dataset, HF ``datasets``, the ``tfrecord`` package)
lives in its own venv made by ``bench_peers.py``, where imgtools is not installed. This file
imports only the standard library, Pillow and the peer's library, and calls each peer the way
its documentation and its users do. Every run reads a list of source paths (one a line) and
writes into an empty output folder; ``inspect`` reads any of the outputs back and reports what
is really there (image count, pixel sizes, encoded format), so the harness can refuse a
contender that did less work.

    python scripts/peer_runs.py pillow --list paths.txt --out OUT --size 320 --jobs 2
    python scripts/peer_runs.py inspect --kind parquet OUT
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import tarfile
from multiprocessing import Pool
from pathlib import Path

PARQUET_IMAGE_COLUMNS = ("image", "jpg", "png", "webp")
TAR_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")


# ----------------------------------------------------------------------- shared helpers


def read_list(path: Path) -> list[Path]:
    return [Path(line) for line in path.read_text().splitlines() if line]


def label_names(paths: list[Path]) -> list[str]:
    """Class names (the wnid folders), sorted: label i is names[i], as imgtools and
    torchvision's ImageFolder number them."""
    return sorted({p.parent.name for p in paths})


def slices(items: list, parts: int) -> list[list]:
    """``parts`` contiguous, nearly equal slices (one per worker, one output shard each)."""
    size, extra = divmod(len(items), parts)
    out, start = [], 0
    for i in range(parts):
        end = start + size + (1 if i < extra else 0)
        out.append(items[start:end])
        start = end
    return [s for s in out if s]


def user_resize(path: Path, size: int, quality: int) -> bytes:
    """What a user of a writer library writes: open, RGB, shortest side to ``size`` with
    bilinear (never upscaling), JPEG at ``quality``. Same rule as imgtools' ``target_size``."""
    from PIL import Image

    with Image.open(path) as im:
        rgb = im.convert("RGB")
    w, h = rgb.size
    if min(w, h) > size:
        target = (size, h * size // w) if w <= h else (w * size // h, size)
        rgb = rgb.resize(target, Image.Resampling.BILINEAR)
    buf = io.BytesIO()
    rgb.save(buf, "JPEG", quality=quality)
    return buf.getvalue()


# ----------------------------------------------------------------------- contenders


def _pillow_one(task: tuple[str, str, int, str, int]) -> int:
    # bench_build.plain_resize is the loop already proven byte-identical to `build --exact`;
    # this contender runs in imgtools' own venv, where it can be imported.
    from bench_build import plain_resize

    src, out, size, filter_name, quality = task
    data = plain_resize(Path(src), size, filter_name, quality)
    Path(out, Path(src).name).write_bytes(data)
    return 1


def run_pillow(args: argparse.Namespace) -> int:
    """A plain Pillow loop, in ``--jobs`` processes (1: the single-process loop)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    tasks = [(str(p), str(args.out), args.size, args.filter, args.quality)
             for p in read_list(args.list)]
    if args.jobs == 1:
        return sum(map(_pillow_one, tasks))
    with Pool(args.jobs) as pool:
        return sum(pool.imap_unordered(_pillow_one, tasks, chunksize=16))


def _decode_one(path: str) -> int:
    from PIL import Image

    with Image.open(path) as im:
        im.load()
    return 1


def run_decode(args: argparse.Namespace) -> int:
    """Every source JPEG fully decoded once (no resize, no encode, no write): the floor."""
    paths = [str(p) for p in read_list(args.list)]
    if args.jobs == 1:
        return sum(map(_decode_one, paths))
    with Pool(args.jobs) as pool:
        return sum(pool.imap_unordered(_decode_one, paths, chunksize=16))


def _tfrecord_shard(task: tuple[list[str], list[str], str, int, int]) -> int:
    from tfrecord.writer import TFRecordWriter

    paths, names, out_file, size, quality = task
    writer = TFRecordWriter(out_file)
    for p in map(Path, paths):
        writer.write({"image": (user_resize(p, size, quality), "byte"),
                      "label": (names.index(p.parent.name), "int"),
                      "file_name": (p.name.encode(), "byte")})
    writer.close()
    return len(paths)


def run_tfrecord(args: argparse.Namespace) -> int:
    """The ``tfrecord`` package's writer loop: one shard per process, each resizing with
    Pillow and writing ``image``/``label``/``file_name`` records, as its README shows."""
    paths = read_list(args.list)
    names = label_names(paths)
    parts = slices([str(p) for p in paths], args.jobs)
    tasks = [(part, names, str(args.out / f"train-{i:05d}-of-{len(parts):05d}.tfrecord"),
              args.size, args.quality) for i, part in enumerate(parts)]
    with Pool(len(tasks)) as pool:
        return sum(pool.map(_tfrecord_shard, tasks))


def run_fastai(args: argparse.Namespace) -> int:
    """fastai's ``resize_images`` over the whole tree, as its docs and course notebooks
    call it. Its ``max_size`` bounds the LONGEST side (``resize_to`` uses ``max(w, h)``); it has
    no shortest-side mode, so its outputs have fewer pixels than everyone else's."""
    from fastai.vision.utils import resize_images

    resize_images(args.src, max_workers=args.jobs, max_size=args.size, recurse=True,
                  dest=args.out, quality=args.quality)
    return -1


def run_img2dataset(args: argparse.Namespace) -> int:
    """img2dataset on a ``file://`` URL list, as its README's local-files example: shortest
    side to ``--size`` (``keep_ratio``), never upscaling, ``--jobs`` processes, its default
    threads per process, WebDataset or Parquet shards."""
    from img2dataset import download

    paths = read_list(args.list)
    url_list = args.out.parent / f"{args.out.name}-urls.txt"
    url_list.write_text("".join(f"file://{p}\n" for p in paths))
    # img2dataset hands whole shards to its processes; its default 10,000 per shard would
    # leave all but one process idle on a small benchmark tree, so aim at 4 shards a process.
    per_shard = min(10_000, max(1, -(-len(paths) // (4 * args.jobs))))
    download(url_list=str(url_list), output_folder=str(args.out), input_format="txt",
             output_format=args.format, image_size=args.size, resize_mode="keep_ratio",
             resize_only_if_bigger=True, encode_quality=args.quality,
             processes_count=args.jobs, number_sample_per_shard=per_shard,
             distributor="multiprocessing", enable_wandb=False, timeout=60, retries=0)
    return -1


def _hf_resize(batch: dict, size: int, quality: int, as_jpeg: bool) -> dict:
    from PIL import Image

    images = []
    for im in batch["image"]:
        rgb = im.convert("RGB")
        w, h = rgb.size
        if min(w, h) > size:
            target = (size, h * size // w) if w <= h else (w * size // h, size)
            rgb = rgb.resize(target, Image.Resampling.BILINEAR)
        if as_jpeg:
            buf = io.BytesIO()
            rgb.save(buf, "JPEG", quality=quality)
            images.append({"bytes": buf.getvalue(), "path": None})
        else:
            images.append(rgb)
    return {"image": images}


def run_hf(args: argparse.Namespace) -> int:
    """HF ``datasets``' Parquet path: ``load_dataset("imagefolder")``, ``map`` a resize over
    ``--jobs`` processes, ``to_parquet`` per split. ``--hf-jpeg`` returns JPEG bytes from the
    map; without it the map returns PIL images and ``datasets`` encodes them itself (as PNG:
    a resized image has no format of its own), which is what most user code does."""
    from datasets import load_dataset

    ds = load_dataset("imagefolder", data_dir=str(args.src))
    total = 0
    for split, part in ds.items():
        resized = part.map(_hf_resize, batched=True, batch_size=64, num_proc=args.jobs,
                           fn_kwargs={"size": args.size, "quality": args.quality,
                                      "as_jpeg": args.hf_jpeg})
        resized.to_parquet(str(args.out / f"{split}.parquet"))
        total += len(resized)
    return total


# ----------------------------------------------------------------------- inspect


def _sizes_of(blobs) -> dict:
    """Pixel sizes and formats of encoded images, read from their headers."""
    from PIL import Image

    shorts, longs, formats = [], [], {}
    for data in blobs:
        with Image.open(io.BytesIO(data)) as im:
            w, h = im.size
            formats[im.format] = formats.get(im.format, 0) + 1
        shorts.append(min(w, h))
        longs.append(max(w, h))
    return {"images": len(shorts), "shorts": shorts, "longs": longs, "formats": formats}


def _folder_blobs(root: Path):
    for p in sorted(root.rglob("*")):
        if p.is_file() and p.suffix.lower() in (".jpeg", ".jpg", ".png") \
                and not p.name.startswith("."):
            yield p.read_bytes()


def _tar_blobs(root: Path):
    for tar_path in sorted(root.rglob("*.tar")):
        with tarfile.open(tar_path) as tar:
            for member in tar:
                if member.isfile() and member.name.lower().endswith(TAR_IMAGE_SUFFIXES):
                    yield tar.extractfile(member).read()


def _parquet_blobs(root: Path):
    import pyarrow.parquet as pq

    for path in sorted(root.rglob("*.parquet")):
        table = pq.read_table(path)
        column = next(c for c in PARQUET_IMAGE_COLUMNS if c in table.column_names)
        for value in table.column(column).to_pylist():
            data = value["bytes"] if isinstance(value, dict) else value
            if data is not None:
                yield data


def _tfrecord_blobs(root: Path):
    from tfrecord.reader import tfrecord_loader

    for path in sorted(p for p in root.rglob("*.tfrecord*") if p.suffix != ".index"):
        for record in tfrecord_loader(str(path), None, {"image": "byte"}):
            yield bytes(record["image"])


INSPECTORS = {"folder": _folder_blobs, "tar": _tar_blobs, "parquet": _parquet_blobs,
              "tfrecord": _tfrecord_blobs}


def run_inspect(args: argparse.Namespace) -> int:
    print(json.dumps(_sizes_of(INSPECTORS[args.kind](args.out))))
    return 0


RUNS = {"pillow": run_pillow, "decode": run_decode, "tfrecord": run_tfrecord,
        "fastai": run_fastai, "img2dataset": run_img2dataset, "hf": run_hf}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", choices=[*RUNS, "inspect"])
    parser.add_argument("out", type=Path, nargs="?", help="inspect: the output to read")
    parser.add_argument("--kind", choices=sorted(INSPECTORS), help="inspect: output kind")
    parser.add_argument("--list", type=Path, help="source paths, one a line")
    parser.add_argument("--src", type=Path, help="the source tree (fastai, HF)")
    parser.add_argument("--out", dest="out_dir", type=Path, help="empty output folder")
    parser.add_argument("--size", type=int, default=320)
    parser.add_argument("--quality", type=int, default=90)
    parser.add_argument("--filter", default="bilinear")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--format", default="webdataset", help="img2dataset output format")
    parser.add_argument("--hf-jpeg", action="store_true")
    args = parser.parse_intermixed_args(argv)
    if args.run == "inspect":
        return run_inspect(args)
    args.out = args.out_dir
    args.out.mkdir(parents=True, exist_ok=True)
    done = RUNS[args.run](args)
    print(json.dumps({"run": args.run, "reported": done}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
