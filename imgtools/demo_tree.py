"""Generate a small, deterministic, ImageNet-shaped tree of photo-like JPEGs.

Why this exists: nobody can ship ImageNet in a test suite, yet every bug that matters lives in the
shape of the real thing - three on-disk layouts (Kaggle, original tarballs + devkit, "valprep"),
val images numbered globally with their classes interleaved, class maps in three different files,
and the odd files real ImageNet holds (CMYK JPEGs, a PNG named ``.JPEG``, grayscale photos, sizes
from tens to thousands of pixels). This module reproduces that shape at toy scale so that tests
and ``imgtools demo`` exercise the same code paths a user's copy does.

Images are smooth colour fields with blurred shapes and sensor-like noise, encoded at varied
JPEG qualities: they decode, resize and compress like photos (a flat or pure-noise image would
make both speed and size numbers meaningless). Every pixel and byte comes from ``seed``: the same
arguments give byte-identical files (with the same Pillow/libjpeg build).

Planted quirks (``quirks=True``) are *extra* files in the train folders of the first classes,
named like real train images; ``train_per_class`` photos are always there besides them.
``TreeSummary.quirks`` says where each one went and ``BROKEN_QUIRKS`` / ``DECODABLE_QUIRKS`` say
which a correct build must report and skip versus convert and keep.

The class maps (Kaggle's CSVs, the devkit's ``meta.mat`` and val ground truth) are written by
:mod:`imgtools.demo_classmaps`.
"""

from __future__ import annotations

import io
import json
import os
import zlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from imgtools.atomic import atomic_write_bytes
from imgtools.demo_classmaps import (
    VAL_STREAM,
    load_clsloc,
    val_name,
    write_devkit_meta,
    write_kaggle_meta,
)
from imgtools.errors import UserError

LAYOUTS = ("kaggle", "devkit", "valprep")

IMAGENETTE_WNIDS = (
    "n01440764", "n02102040", "n02979186", "n03000684", "n03028079",
    "n03394916", "n03417042", "n03425413", "n03445777", "n03888257",
)
IMAGEWOOF_WNIDS = (
    "n02086240", "n02087394", "n02088364", "n02089973", "n02093754",
    "n02096294", "n02099601", "n02105641", "n02111889", "n02115641",
)

# Files a correct build must report and skip: no pixels can be had from them.
BROKEN_QUIRKS = ("truncated", "zero_byte", "not_image", "unreadable")
# Files that decode fine but need care (convert to RGB, honour or ignore EXIF, never upscale).
DECODABLE_QUIRKS = ("cmyk", "png_named_jpeg", "grayscale", "rgba_png", "palette_png",
                    "exif_rotated", "tiny")
QUIRK_KINDS = DECODABLE_QUIRKS + BROKEN_QUIRKS

DEFAULT_SIZE_RANGE = ((160, 120), (640, 480))
TINY_SIZE = (48, 36)  # real ImageNet has images tens of pixels wide
KAGGLE_DATA_DIR = Path("ILSVRC/Data/CLS-LOC")

_HTML_ERROR_PAGE = (
    b"<!DOCTYPE html>\n<html><head><title>404 Not Found</title></head>\n"
    b"<body><h1>Not Found</h1><p>The requested URL was not found on this server.</p></body>"
    b"</html>\n"
)
_NOISE_TILE = 768  # >= the largest default image side, so one crop covers an image


@dataclass
class TreeSummary:
    """What was generated, so tests can assert on it without re-walking the tree.

    ``train_files`` lists every file in each ``train/<wnid>`` folder, quirk files included;
    ``quirks`` maps a quirk kind to its path relative to ``root``; ``quirks_not_planted`` maps a
    kind that could not be planted here to the reason (``unreadable`` when running as root).
    """

    root: Path
    layout: str
    src: Path
    wnids: list[str]
    train_files: dict[str, list[str]]
    val_files: dict[str, list[str]]
    quirks: dict[str, str] = field(default_factory=dict)
    quirks_not_planted: dict[str, str] = field(default_factory=dict)
    test_files: list[str] = field(default_factory=list)

    @property
    def n_train_files(self) -> int:
        return sum(len(v) for v in self.train_files.values())

    @property
    def n_val(self) -> int:
        return sum(len(v) for v in self.val_files.values())

    @property
    def broken_paths(self) -> dict[str, Path]:
        """Absolute paths of planted files that cannot be decoded, by kind."""
        return {k: self.root / p for k, p in self.quirks.items() if k in BROKEN_QUIRKS}

    @property
    def n_train_decodable(self) -> int:
        """Train files a correct build keeps: all files minus the broken quirks."""
        return self.n_train_files - len(self.broken_paths)

    def train_dir(self) -> Path:
        base = self.root / KAGGLE_DATA_DIR if self.layout == "kaggle" else self.root
        return base / "train"

    def val_dir(self) -> Path:
        base = self.root / KAGGLE_DATA_DIR if self.layout == "kaggle" else self.root
        return base / "val"

    def val_label_of(self) -> dict[str, str]:
        """Val file name -> wnid (the ground truth, whatever file the layout keeps it in)."""
        return {name: wnid for wnid, names in self.val_files.items() for name in names}

    def to_json(self) -> dict:
        obj = asdict(self)
        obj.update(root=str(self.root), src=str(self.src), n_train_files=self.n_train_files,
                   n_train_decodable=self.n_train_decodable, n_val=self.n_val)
        return obj


def make_imagenet_tree(
    root: str | Path,
    layout: str = "kaggle",
    wnids: Sequence[str] | None = None,
    train_per_class: int = 20,
    val_per_class: int = 8,
    quirks: bool = True,
    seed: int = 0,
    size_range: tuple[tuple[int, int], tuple[int, int]] = DEFAULT_SIZE_RANGE,
    small_fraction: float = 0.15,
    test_images: int = 3,
) -> TreeSummary:
    """Write an ImageNet-shaped tree under ``root`` (which must be empty or absent).

    ``layout``: ``kaggle`` (ILSVRC/Data/CLS-LOC + LOC_*.{txt,csv}), ``devkit`` (train/, flat
    val/, ILSVRC2012_devkit_t12/data/{meta.mat, ILSVRC2012_validation_ground_truth.txt}) or
    ``valprep`` (train/ and val/<wnid>/). ``wnids`` defaults to Imagenette's ten classes.
    ``size_range`` is ((min_w, min_h), (max_w, max_h)) for landscape images (portrait ones swap
    it); ``small_fraction`` of the photos get a short side below 160 px so "never upscale" is
    exercised. ``test_images`` unlabelled images go to the Kaggle layout's ``test/`` folder.
    """
    root = Path(root)
    if layout not in LAYOUTS:
        raise UserError(f"unknown ImageNet layout {layout!r}",
                        fix=f"use one of: {', '.join(LAYOUTS)}")
    if root.exists() and any(root.iterdir()):
        raise UserError("the folder for the demo tree is not empty", path=root,
                        fix="pass a new or empty folder; the generator never overwrites files")
    clsloc = load_clsloc()
    by_wnid = {s.wnid: s for s in clsloc}
    wnids = list(IMAGENETTE_WNIDS if wnids is None else wnids)
    unknown = [w for w in wnids if w not in by_wnid]
    if unknown or not wnids or len(set(wnids)) != len(wnids):
        raise UserError(f"wnids must be distinct ImageNet-1k classes; unknown: {unknown[:5]}",
                        fix="pick wnids from manifests/imagenet1k_map_clsloc.txt")

    painter = _Painter(seed, size_range, small_fraction)
    base = root / KAGGLE_DATA_DIR if layout == "kaggle" else root
    train_files = _write_train(base / "train", wnids, train_per_class, painter)
    val_order = _val_order(wnids, val_per_class, seed)
    val_files = _write_val(base / "val", val_order, painter, per_class_dirs=layout == "valprep")
    summary = TreeSummary(root=root, layout=layout, src=root, wnids=wnids,
                          train_files=train_files, val_files=val_files)
    if quirks:
        _plant_quirks(summary, base / "train", painter)
    if layout == "kaggle":
        summary.test_files = _write_test(base / "test", test_images, painter)
        write_kaggle_meta(root, [w for w, _ in val_order], seed, clsloc)
    elif layout == "devkit":
        counts = {w: len(names) for w, names in summary.train_files.items()}
        write_devkit_meta(root, [w for w, _ in val_order], counts, clsloc)
    for names in summary.train_files.values():
        names.sort()
    return summary


# --------------------------------------------------------------------------- pixels


class _Painter:
    """Makes photo-like images from per-image seeds (independent of generation order)."""

    def __init__(self, seed: int, size_range, small_fraction: float):
        self.seed = seed
        (self.min_w, self.min_h), (self.max_w, self.max_h) = size_range
        if not (0 < self.min_w <= self.max_w and 0 < self.min_h <= self.max_h):
            raise UserError(f"bad size_range {size_range!r}",
                            fix="give ((min_w, min_h), (max_w, max_h)) with min <= max")
        self.small_fraction = small_fraction
        tile_rng = np.random.default_rng([seed, 0xC0FFEE])
        side = max(_NOISE_TILE, self.max_w, self.max_h)
        # Shared tiles, cropped at random offsets, give every image sensor-like grain and
        # mid-frequency texture (foliage, fur, fabric) at no per-image generation cost.
        self.grain = tile_rng.normal(0.0, 1.0, (side, side, 3)).astype(np.float32)
        self.texture = _smooth_noise(tile_rng, side, factor=3)

    def rng(self, *key: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, *key])

    def size(self, rng: np.random.Generator) -> tuple[int, int]:
        """A landscape or portrait size in range; a few with a short side below 160 px."""
        w = int(rng.integers(self.min_w, self.max_w + 1))
        h = int(rng.integers(self.min_h, self.max_h + 1))
        h = min(h, w) if rng.random() < 0.85 else h  # mostly landscape or square, like ImageNet
        if rng.random() < self.small_fraction:
            scale = float(rng.uniform(0.35, 0.9)) * 159 / min(w, h)
            w, h = max(8, round(w * scale)), max(8, round(h * scale))
        if rng.random() < 0.25:
            w, h = h, w  # portrait
        return w, h

    def photo(self, rng: np.random.Generator, size: tuple[int, int],
              tint: np.ndarray) -> Image.Image:
        """Smooth colour field + soft-edged shapes (drawn at half size) + texture + grain."""
        w, h = size
        sw, sh = max(4, w // 2), max(4, h // 2)
        grid = rng.integers(0, 256, (3, 4, 3)).astype(np.float32) * 0.6 + tint * 0.4
        small = Image.fromarray(grid.astype(np.uint8)).resize((sw, sh), Image.Resampling.BICUBIC)
        draw = ImageDraw.Draw(small)
        for _ in range(int(rng.integers(2, 6))):
            x0, x1 = sorted(rng.integers(-sw // 4, sw + sw // 4, 2).tolist())
            y0, y1 = sorted(rng.integers(-sh // 4, sh + sh // 4, 2).tolist())
            colour = tuple(int(c) for c in rng.integers(0, 256, 3))
            shape = rng.integers(0, 3)
            if shape == 0:
                draw.ellipse((x0, y0, x1 + 1, y1 + 1), fill=colour)
            elif shape == 1:
                draw.rectangle((x0, y0, x1, y1), fill=colour)
            else:
                pts = [(int(rng.integers(0, sw)), int(rng.integers(0, sh))) for _ in range(3)]
                draw.polygon(pts, fill=colour)
        big = small.resize((w, h), Image.Resampling.BICUBIC)
        grain, texture = float(rng.uniform(2.0, 8.0)), float(rng.uniform(10.0, 40.0))
        oy = int(rng.integers(0, self.grain.shape[0] - h + 1))
        ox = int(rng.integers(0, self.grain.shape[1] - w + 1))
        pixels = np.asarray(big, dtype=np.float32)
        pixels += grain * self.grain[oy:oy + h, ox:ox + w]
        pixels += texture * self.texture[oy:oy + h, ox:ox + w]
        return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))

    def jpeg(self, rng: np.random.Generator, image: Image.Image, **save_args) -> bytes:
        """Encode at a quality drawn from what ImageNet's sources used (roughly 75-96)."""
        buf = io.BytesIO()
        quality = int(rng.choice([75, 85, 90, 92, 96]))
        image.save(buf, "JPEG", quality=quality, **save_args)
        return buf.getvalue()

    def class_photo(self, wnid: str, index: int,
                    split_key: int) -> tuple[Image.Image, np.random.Generator]:
        """The ``index``-th photo of class ``wnid`` in a split, the same whatever else is asked."""
        rng = self.rng(_wnid_number(wnid), split_key, index)
        tint = _class_tint(wnid)
        return self.photo(rng, self.size(rng), tint), rng


def _smooth_noise(rng: np.random.Generator, side: int, factor: int) -> np.ndarray:
    """Unit-variance noise with features about ``factor`` pixels wide, shape (side, side, 3)."""
    small = rng.normal(0.0, 1.0, (3, side // factor + 1, side // factor + 1)).astype(np.float32)
    planes = [np.asarray(Image.fromarray(c).resize(
        (side, side), Image.Resampling.BICUBIC, box=(0, 0, side / factor, side / factor)))
        for c in small]
    luma = rng.normal(0.0, 1.0, (side // factor + 1, side // factor + 1)).astype(np.float32)
    luma_plane = np.asarray(Image.fromarray(luma).resize(
        (side, side), Image.Resampling.BICUBIC, box=(0, 0, side / factor, side / factor)))
    stack = 0.4 * np.stack(planes, axis=-1) + luma_plane[..., None]
    return stack / stack.std()


def _wnid_number(wnid: str) -> int:
    return int(wnid[1:])


def _class_tint(wnid: str) -> np.ndarray:
    """A colour cast per class so a quick model (or eye) can tell demo classes apart."""
    rng = np.random.default_rng(_wnid_number(wnid))
    return rng.integers(0, 256, 3).astype(np.float32)


# --------------------------------------------------------------------------- splits

_TRAIN, _VAL, _TEST, _QUIRK = 1, VAL_STREAM, 3, 4


def _train_name(wnid: str, number: int) -> str:
    return f"{wnid}_{number}.JPEG"


def _train_numbers(wnid: str, count: int, seed: int) -> list[int]:
    """Sparse, unordered-looking file numbers like real ones (n01440764_10026.JPEG)."""
    rng = np.random.default_rng([seed, _wnid_number(wnid), _TRAIN, 0xBEEF])
    return sorted(rng.choice(np.arange(1, 20000), size=count, replace=False).tolist())


def _write_train(train_dir: Path, wnids: list[str], per_class: int,
                 painter: _Painter) -> dict[str, list[str]]:
    files: dict[str, list[str]] = {}
    for wnid in wnids:
        names = []
        for i, number in enumerate(_train_numbers(wnid, per_class, painter.seed)):
            image, rng = painter.class_photo(wnid, i, _TRAIN)
            name = _train_name(wnid, number)
            atomic_write_bytes(train_dir / wnid / name, painter.jpeg(rng, image))
            names.append(name)
        (train_dir / wnid).mkdir(parents=True, exist_ok=True)
        files[wnid] = names
    return files


def _val_order(wnids: list[str], per_class: int, seed: int) -> list[tuple[str, int]]:
    """(wnid, index-within-class) in val file order: classes interleaved, shuffled with seed."""
    pairs = [(w, i) for w in wnids for i in range(per_class)]
    order = np.random.default_rng([seed, _VAL, 0x5EED]).permutation(len(pairs))
    return [pairs[k] for k in order]



def _write_val(val_dir: Path, order: list[tuple[str, int]], painter: _Painter,
               per_class_dirs: bool) -> dict[str, list[str]]:
    files: dict[str, list[str]] = {w: [] for w, _ in order}
    for number, (wnid, i) in enumerate(order, start=1):
        image, rng = painter.class_photo(wnid, i, _VAL)
        name = val_name(number)
        target = val_dir / wnid / name if per_class_dirs else val_dir / name
        atomic_write_bytes(target, painter.jpeg(rng, image))
        files[wnid].append(name)
    return files


def _write_test(test_dir: Path, count: int, painter: _Painter) -> list[str]:
    names = []
    for number in range(1, count + 1):
        rng = painter.rng(_TEST, number)
        image = painter.photo(rng, painter.size(rng), np.full(3, 128, np.float32))
        name = f"ILSVRC2012_test_{number:08d}.JPEG"
        atomic_write_bytes(test_dir / name, painter.jpeg(rng, image))
        names.append(name)
    test_dir.mkdir(parents=True, exist_ok=True)
    return names


# --------------------------------------------------------------------------- quirks


def _plant_quirks(summary: TreeSummary, train_dir: Path, painter: _Painter) -> None:
    """Write one file per quirk kind into the first classes' train folders (round robin).

    Names continue the class's numbering above the photos' range (real names are sparse too).
    """
    hosts = summary.wnids[: min(3, len(summary.wnids))]
    for k, kind in enumerate(QUIRK_KINDS):
        wnid = hosts[k % len(hosts)]
        name = _train_name(wnid, 20000 + k * 7 + 3)
        path = train_dir / wnid / name
        rng = painter.rng(_QUIRK, k)
        data = _quirk_bytes(kind, rng, painter, wnid)
        atomic_write_bytes(path, data)
        if kind == "unreadable":
            reason = _make_unreadable(path)
            if reason:
                path.unlink()
                summary.quirks_not_planted[kind] = reason
                continue
        summary.train_files[wnid].append(name)
        summary.quirks[kind] = path.relative_to(summary.root).as_posix()


def _quirk_bytes(kind: str, rng: np.random.Generator, painter: _Painter, wnid: str) -> bytes:
    tint = _class_tint(wnid)
    if kind == "zero_byte":
        return b""
    if kind == "not_image":
        return _HTML_ERROR_PAGE
    size = TINY_SIZE if kind == "tiny" else (400, 300)
    photo = painter.photo(rng, size, tint)
    if kind == "cmyk":
        return painter.jpeg(rng, photo.convert("CMYK"))
    if kind == "grayscale":
        return painter.jpeg(rng, photo.convert("L"))
    if kind in ("png_named_jpeg", "rgba_png", "palette_png"):
        image = {"png_named_jpeg": photo,
                 "rgba_png": _with_alpha(photo),
                 "palette_png": photo.quantize(64)}[kind]
        buf = io.BytesIO()
        image.save(buf, "PNG")
        return buf.getvalue()
    if kind == "exif_rotated":
        # Stored landscape with Orientation=6 ("rotate 90 CW to display"), as phones write it.
        exif = Image.Exif()
        exif[0x0112] = 6
        return painter.jpeg(rng, photo, exif=exif.tobytes())
    if kind == "truncated":
        data = painter.jpeg(rng, photo)
        return data[: len(data) // 2]
    if kind in ("tiny", "unreadable"):
        return painter.jpeg(rng, photo)
    raise ValueError(f"no recipe for quirk {kind!r}")


def _with_alpha(photo: Image.Image) -> Image.Image:
    rgba = photo.convert("RGBA")
    w, h = rgba.size
    alpha = np.tile(np.linspace(0, 255, w, dtype=np.float32), (h, 1)).astype(np.uint8)
    rgba.putalpha(Image.fromarray(alpha))
    return rgba


def _make_unreadable(path: Path) -> str | None:
    """chmod 000; return why it did not work (root reads anything), or None if it did."""
    os.chmod(path, 0)
    try:
        with open(path, "rb"):
            pass
    except PermissionError:
        return None
    os.chmod(path, 0o644)
    return "chmod 000 does not stop this user (root?) from reading the file"


def tree_checksum(root: str | Path) -> str:
    """A CRC over every file's relative path and bytes: equal trees give equal checksums."""
    root = Path(root)
    crc = 0
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        crc = zlib.crc32(path.relative_to(root).as_posix().encode(), crc)
        try:
            crc = zlib.crc32(path.read_bytes(), crc)
        except PermissionError:
            crc = zlib.crc32(b"<unreadable>", crc)
    return f"{crc:08x}"


def summary_json(summary: TreeSummary) -> str:
    return json.dumps(summary.to_json(), indent=2, sort_keys=True)
