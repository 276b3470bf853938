"""``imgtools info``: format, splits, classes with counts per split, image size distribution
(read from image headers) and bytes of a dataset."""

from __future__ import annotations

import io
from collections import Counter
from pathlib import Path

from imgtools.formats import get_format
from imgtools.formats.base import InputShard
from imgtools.inspect.dataset import Dataset, map_shards, open_dataset, split_order
from imgtools.records import DatasetInfo

MAX_DISTINCT_SIZES = 2000
SHORT_SIDE_EDGES = (32, 64, 128, 160, 224, 256, 320, 400, 500, 640, 1000, 2000)


def _image_size(data: bytes) -> tuple[int, int] | None:
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as img:
            return img.size
    except Exception:  # noqa: BLE001 - any undecodable header is just "unknown size" for info
        return None


def _info_shard(fmt_name: str, shard: InputShard, info: DatasetInfo) -> dict:

    counts: Counter = Counter()
    sizes: Counter = Counter()
    short_hist = [0] * (len(SHORT_SIDE_EDGES) + 1)
    dims = {"min_w": None, "max_w": 0, "min_h": None, "max_h": 0, "sum_w": 0, "sum_h": 0, "n": 0}
    image_bytes = unreadable = 0
    for record in get_format(fmt_name).read_shard(shard, info):
        counts[(record.split, -1 if record.label is None else record.label)] += 1
        image_bytes += len(record.image)
        size = _image_size(record.image)
        if size is None:
            unreadable += 1
            continue
        w, h = size
        if (w, h) in sizes or len(sizes) < MAX_DISTINCT_SIZES:
            sizes[(w, h)] += 1
        short_hist[sum(1 for e in SHORT_SIDE_EDGES if min(w, h) >= e)] += 1
        dims["min_w"] = w if dims["min_w"] is None else min(dims["min_w"], w)
        dims["min_h"] = h if dims["min_h"] is None else min(dims["min_h"], h)
        dims["max_w"], dims["max_h"] = max(dims["max_w"], w), max(dims["max_h"], h)
        dims["sum_w"] += w
        dims["sum_h"] += h
        dims["n"] += 1
    return {"counts": counts, "sizes": sizes, "short_hist": short_hist, "dims": dims,
            "image_bytes": image_bytes, "unreadable": unreadable}


def _disk_bytes(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def describe(path: str | Path, *, n_jobs: int | None = None, quiet: bool = True) -> dict:
    """Format, splits, classes with counts, image size distribution and bytes of a dataset."""
    ds = open_dataset(path)
    counts: Counter = Counter()
    sizes: Counter = Counter()
    short_hist = [0] * (len(SHORT_SIDE_EDGES) + 1)
    dims = {"min_w": None, "max_w": 0, "min_h": None, "max_h": 0, "sum_w": 0, "sum_h": 0, "n": 0}
    image_bytes = unreadable = 0
    for part in map_shards(_info_shard, ds.shards, (ds.fmt.name, ds.info), n_jobs=n_jobs,
                           desc="info", quiet=quiet):
        counts.update(part["counts"])
        for key, n in part["sizes"].items():
            if key in sizes or len(sizes) < MAX_DISTINCT_SIZES:
                sizes[key] += n
        short_hist = [a + b for a, b in zip(short_hist, part["short_hist"], strict=True)]
        d = part["dims"]
        for k, pick in (("min_w", min), ("min_h", min)):
            if d[k] is not None:
                dims[k] = d[k] if dims[k] is None else pick(dims[k], d[k])
        for k in ("max_w", "max_h"):
            dims[k] = max(dims[k], d[k])
        for k in ("sum_w", "sum_h", "n"):
            dims[k] += d[k]
        image_bytes += part["image_bytes"]
        unreadable += part["unreadable"]
    return _info_report(ds, counts, sizes, short_hist, dims, image_bytes, unreadable)


def _info_report(ds: Dataset, counts: Counter, sizes: Counter, short_hist: list[int],
                 dims: dict, image_bytes: int, unreadable: int) -> dict:
    splits = split_order(s for s, _ in counts)
    per_split = {s: sum(n for (sp, _), n in counts.items() if sp == s) for s in splits}
    classes = [{"label": i, "wnid": c.wnid, "name": c.name,
                "counts": {s: counts.get((s, i), 0) for s in splits}}
               for i, c in enumerate(ds.info.classes)]
    unlabelled = {s: counts.get((s, -1), 0) for s in splits if counts.get((s, -1), 0)}
    n = dims["n"]
    labels = [f"<{SHORT_SIDE_EDGES[0]}"] + [f">={e}" for e in SHORT_SIDE_EDGES]
    return {
        "path": str(ds.path), "format": ds.fmt.name, "name": ds.info.name,
        "label_order": ds.info.label_order, "num_classes": len(ds.info.classes),
        "splits": per_split, "total": sum(per_split.values()), "unlabelled": unlabelled,
        "classes": classes,
        "image_sizes": {
            "decoded_headers": n, "unreadable": unreadable,
            "width": {"min": dims["min_w"], "max": dims["max_w"],
                      "mean": round(dims["sum_w"] / n, 1) if n else None},
            "height": {"min": dims["min_h"], "max": dims["max_h"],
                       "mean": round(dims["sum_h"] / n, 1) if n else None},
            "shorter_side": {lab: c for lab, c in zip(labels, short_hist, strict=True) if c},
            "most_common": [[w, h, c] for (w, h), c in sizes.most_common(5)],
        },
        "bytes": {"images": image_bytes, "on_disk": _disk_bytes(ds.path)},
    }
