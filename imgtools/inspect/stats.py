"""``imgtools stats``: per-channel (R, G, B) mean and standard deviation of a split over every
pixel, streamed, from exact integer sums (the same digits with any number of workers)."""

from __future__ import annotations

import io
import math
from pathlib import Path

from imgtools.errors import UserError
from imgtools.executors.base import Executor
from imgtools.formats import get_format
from imgtools.formats.base import InputShard
from imgtools.inspect.dataset import map_shards, open_dataset
from imgtools.records import DatasetInfo


def _stats_shard(fmt_name: str, shard: InputShard, info: DatasetInfo, split: str) -> dict:
    import numpy as np
    from PIL import Image


    total = np.zeros(3, dtype=np.uint64)
    squares = np.zeros(3, dtype=np.uint64)
    images = pixels = skipped = 0
    if shard.split not in (None, split):
        return {"sum": [0, 0, 0], "sq": [0, 0, 0], "images": 0, "pixels": 0, "skipped": 0}
    for record in get_format(fmt_name).read_shard(shard, info):
        if record.split != split:
            continue
        try:
            with Image.open(io.BytesIO(record.image)) as img:
                arr = np.asarray(img.convert("RGB")).reshape(-1, 3)
        except Exception:  # noqa: BLE001 - counted and reported; `verify` says which
            skipped += 1
            continue
        total += arr.sum(axis=0, dtype=np.uint64)
        wide = arr.astype(np.uint32)
        squares += (wide * wide).sum(axis=0, dtype=np.uint64)
        images += 1
        pixels += arr.shape[0]
    return {"sum": [int(v) for v in total], "sq": [int(v) for v in squares], "images": images,
            "pixels": pixels, "skipped": skipped}


def channel_stats(path: str | Path, *, split: str = "train", n_jobs: int | None = None,
                  quiet: bool = True, executor: Executor | None = None) -> dict:
    """Per-channel mean and std (0-1 scale) over every pixel of ``split``, streamed."""
    ds = open_dataset(path)
    shards = [s for s in ds.shards if s.split in (None, split)]
    sums, squares = [0, 0, 0], [0, 0, 0]
    images = pixels = skipped = 0
    for part in map_shards(_stats_shard, shards, (ds.fmt.name, ds.info, split), n_jobs=n_jobs,
                           desc=f"stats {split}", quiet=quiet, executor=executor):
        sums = [a + b for a, b in zip(sums, part["sum"], strict=True)]
        squares = [a + b for a, b in zip(squares, part["sq"], strict=True)]
        images += part["images"]
        pixels += part["pixels"]
        skipped += part["skipped"]
    if not pixels:
        present = sorted({s.split for s in ds.shards if s.split})
        if images == 0 and split not in present and present:
            raise UserError(f"the dataset has no split {split!r}", path=ds.path,
                            fix=f"choose one it has: --split {' | '.join(present)}")
        raise UserError(f"no decodable image in split {split!r}", path=ds.path,
                        fix="choose a split the dataset has (--split val), or run "
                            "`imgtools verify`")
    mean = [s / pixels / 255 for s in sums]
    std = [math.sqrt(max(q / pixels / 255**2 - m * m, 0.0)) for q, m in
           zip(squares, mean, strict=True)]
    return {"path": str(ds.path), "split": split, "images": images, "pixels": pixels,
            "skipped": skipped, "mean": [round(m, 6) for m in mean],
            "std": [round(s, 6) for s in std],
            "mean_255": [round(m * 255, 3) for m in mean],
            "std_255": [round(s * 255, 3) for s in std]}
