"""``imgtools preview``: a contact sheet (the first images of each class) and a per-class
histogram (images per class and split) of a dataset, as PNG files; push-hub puts both on the
dataset card."""

from __future__ import annotations

import io
from pathlib import Path

from imgtools.atomic import atomic_open
from imgtools.inspect.dataset import Dataset, open_dataset
from imgtools.inspect.info import describe
from imgtools.records import DatasetInfo


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def _thumbnail(data: bytes, side: int):
    from PIL import Image, ImageOps

    try:
        with Image.open(io.BytesIO(data)) as img:
            return ImageOps.fit(img.convert("RGB"), (side, side), Image.Resampling.BICUBIC)
    except Exception:  # noqa: BLE001 - an undecodable sample is shown as a grey tile
        return Image.new("RGB", (side, side), (128, 128, 128))


def collect_samples(ds: Dataset, per_class: int, max_classes: int, side: int) -> dict[int, list]:
    """The first ``per_class`` thumbnails of the first ``max_classes`` classes, in stored
    order (deterministic); reading stops as soon as every row is full."""
    wanted = min(max_classes, len(ds.info.classes))
    samples: dict[int, list] = {i: [] for i in range(wanted)}
    missing = wanted * per_class
    for shard in ds.shards:
        if shard.split == "unsup":
            continue
        for record in ds.fmt.read_shard(shard, ds.info):
            if record.label is None or record.label not in samples:
                continue
            row = samples[record.label]
            if len(row) < per_class:
                row.append(_thumbnail(record.image, side))
                missing -= 1
                if missing == 0:
                    return samples
    return samples


def contact_sheet(samples: dict[int, list], info: DatasetInfo, per_class: int, side: int):
    from PIL import Image, ImageDraw

    label_w, pad = 190, 4
    rows = sorted(samples)
    sheet = Image.new("RGB", (label_w + per_class * (side + pad) + pad,
                              max(1, len(rows)) * (side + pad) + pad), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    font = _font(13)
    for r, label in enumerate(rows):
        y = pad + r * (side + pad)
        c = info.classes[label]
        draw.text((pad, y + side // 2 - 14), f"{label}: {c.name}"[:26], fill=(0, 0, 0), font=font)
        draw.text((pad, y + side // 2 + 2), c.wnid, fill=(90, 90, 90), font=font)
        for k, thumb in enumerate(samples[label]):
            sheet.paste(thumb, (label_w + pad + k * (side + pad), y))
    return sheet


def class_histogram(counts: dict[str, list[int]], info: DatasetInfo, max_classes: int = 100):
    """Horizontal bars: images per class, one bar per split (train dark, others light)."""
    from PIL import Image, ImageDraw

    palette = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (148, 103, 189)]
    splits = list(counts)
    n = min(len(info.classes), max_classes)
    bar_h, label_w, width, pad = 12, 200, 420, 6
    height = pad * 3 + 16 + n * (bar_h * len(splits) + 4)
    img = Image.new("RGB", (label_w + width + 90, max(height, 40)), (255, 255, 255))
    draw = ImageDraw.Draw(img)
    font = _font(11)
    top = max((max(v[:n], default=0) for v in counts.values()), default=0) or 1
    for k, split in enumerate(splits):
        x = label_w + k * 110
        draw.rectangle([x, pad, x + 10, pad + 10], fill=palette[k % len(palette)])
        draw.text((x + 14, pad - 1), split, fill=(0, 0, 0), font=font)
    y = pad * 2 + 16
    for i in range(n):
        draw.text((pad, y), f"{info.classes[i].name}"[:30], fill=(0, 0, 0), font=font)
        for k, split in enumerate(splits):
            value = counts[split][i] if i < len(counts[split]) else 0
            length = round(width * value / top)
            yy = y + k * bar_h
            draw.rectangle([label_w, yy, label_w + length, yy + bar_h - 2],
                           fill=palette[k % len(palette)])
            draw.text((label_w + length + 4, yy), str(value), fill=(0, 0, 0), font=font)
        y += bar_h * len(splits) + 4
    return img


def class_counts(path: str | Path, *, n_jobs: int | None = None, quiet: bool = True
                 ) -> dict[str, list[int]]:
    """Images per class per split (labelled splits only), from a scan of the dataset."""
    report = describe(path, n_jobs=n_jobs, quiet=quiet)
    splits = [s for s in report["splits"] if s != "unsup"]
    return {s: [c["counts"].get(s, 0) for c in report["classes"]] for s in splits}


def preview(path: str | Path, out_dir: str | Path, *, per_class: int = 8,
            max_classes: int = 50, side: int = 96, counts: dict[str, list[int]] | None = None,
            n_jobs: int | None = None, quiet: bool = True, prefix: str = "") -> dict:
    """Write ``<prefix>preview.png`` (samples per class) and ``<prefix>histogram.png``."""

    ds = open_dataset(path)
    out_dir = Path(out_dir)
    samples = collect_samples(ds, per_class, max_classes, side)
    sheet = contact_sheet(samples, ds.info, per_class, side)
    counts = counts if counts is not None else class_counts(path, n_jobs=n_jobs, quiet=quiet)
    hist = class_histogram(counts, ds.info)
    written = {}
    for kind, image in (("preview", sheet), ("histogram", hist)):
        target = out_dir / f"{prefix}{kind}.png"
        with atomic_open(target, "wb") as f:
            image.save(f, "PNG", optimize=False)
        written[kind] = str(target)
    return {"path": str(ds.path), "classes_shown": len(samples), "per_class": per_class,
            **written}
