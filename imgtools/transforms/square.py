"""Square, box-downsampled, channel-planar rows: the pixels of downsampled ImageNet.

Pixels match the published ``image_resizer_imagent.py`` (Chrabaszcz et al. 2017, github
PatrykChrabaszcz/Imagenet32_Scripts) exactly by default: ``Image.open``, then
``convert("RGB")`` when the mode is not RGB, then ``resize((s, s), Image.BOX)`` from the full
decode; no EXIF rotation, no colour management, aspect ratio not kept. Rows are channel-planar
(all R, then all G, then all B), as ``image2numpy_imagenet_train.py`` stores them. ``crop``
takes the centre square instead of squashing; ``fast`` decodes JPEGs DCT-scaled (at least
:data:`FAST_DRAFT_MARGIN` times the largest size) before the box resize.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from imgtools.records import Record
from imgtools.sources import open_locator
from imgtools.transforms.base import Transform
from imgtools.transforms.jpeg import BadImage, bounded_draft, draft, open_image

FAST_DRAFT_MARGIN = 2
"""Draft (DCT-scaled decode) keeps at least this margin over the largest target size."""


def open_rgb(data: bytes, draft_size: int | None = None
             ) -> tuple[Image.Image, str | None, tuple[float, float, float, float] | None]:
    """Decode the encoded image ``data`` to an RGB image the way the published resizer does; returns
    ``(image, note, box)`` where ``note`` names a conversion (``"CMYK->RGB"``) or is None, and
    ``box`` is the region of a DCT-scaled decode that holds the original picture (None when
    the image was not scaled).

    Deliberately *not* the build's RGB repair (which flattens transparency on white): the
    published script ignores EXIF rotation and ICC profiles and converts any non-RGB mode with
    Pillow's plain ``convert("RGB")``; anything else would change pixels. Unusable files raise
    the build's :class:`BadImage`, with the same reasons as every other report.
    ``draft_size`` enables JPEG DCT scaling (--fast).
    """
    im = open_image(data)
    request = bounded_draft(im, (draft_size, draft_size) if draft_size else None)
    try:
        box = draft(im, "RGB", request) if request else None
        im.load()
    except (OSError, SyntaxError, ValueError) as e:
        raise BadImage(f"corrupt or truncated image data: {e}") from e
    note = None
    if im.mode != "RGB":
        note = f"{im.format or '?'} {im.mode}->RGB"
        im = im.convert("RGB")
    elif im.format not in ("JPEG", "MPO"):
        note = f"{im.format} RGB"
    return im, note, box


def center_square(width: int, height: int) -> tuple[int, int, int, int]:
    """The largest centred square, as a resize ``box`` (so cropping costs no copy)."""
    side = min(width, height)
    left = (width - side) // 2
    top = (height - side) // 2
    return left, top, left + side, top + side


def resize_square(im: Image.Image, size: int, crop: bool,
                  scaled: tuple[float, float, float, float] | None = None) -> Image.Image:
    """BOX-resize to ``size`` x ``size``: the whole image (published), or its centre square.

    ``scaled`` is the region a DCT-scaled decode covers (``--fast``): the whole picture is then
    resized from exactly that region (a scaled decode is rounded up to whole pixels), or the
    centre square of it (the full-resolution square to within half an original pixel)."""
    if scaled is None:
        box = center_square(*im.size) if crop else None
        return im.resize((size, size), Image.Resampling.BOX, box=box)
    width, height = scaled[2], scaled[3]
    if crop:
        side = min(width, height)
        left, top = (width - side) / 2, (height - side) / 2
        box = (left, top, left + side, top + side)
    else:
        box = scaled
    return im.resize((size, size), Image.Resampling.BOX, box=box)


def planar_row(im: Image.Image) -> np.ndarray:
    """An RGB image as one CIFAR row: all R values, then all G, then all B (row-major)."""
    return np.asarray(im, dtype=np.uint8).transpose(2, 0, 1).reshape(-1)


def square_rows(data: bytes, sizes: Sequence[int], *, crop: bool = False,
                fast: bool = False) -> tuple[dict[int, np.ndarray], str | None]:
    """Rows for every size in ``sizes`` from a single decode of ``data``."""
    draft_size = FAST_DRAFT_MARGIN * max(sizes) if fast else None
    im, note, scaled = open_rgb(data, draft_size)
    return {s: planar_row(resize_square(im, s, crop, scaled)) for s in sizes}, note


def downsample_file(path: str | Path, sizes: Sequence[int], *, crop: bool = False,
                    fast: bool = False) -> tuple[dict[int, np.ndarray], str | None]:
    """Rows for every size in ``sizes`` from a single decode of the file (or locator)
    ``path``."""
    return square_rows(open_locator(str(path)), sizes, crop=crop, fast=fast)


@dataclass(frozen=True)
class SquareRows(Transform):
    """One record per size: its image becomes the raw row (``3 * s * s`` bytes)."""

    sizes: tuple[int, ...]
    crop: bool = False
    fast: bool = False
    produces = "planar-rows"
    pixels = ("channel-planar uint8 rows (all R, then all G, then all B) as in the published "
              "Imagenet32 files: Pillow's convert('RGB') of the stored pixels, BOX-resized to "
              "N x N (aspect not kept unless crop), no EXIF rotation, no colour management")
    prefer = "threads"  # Pillow's decode and box resize release the GIL

    @property
    def outputs(self) -> int:
        return len(self.sizes)

    def apply(self, record: Record) -> tuple[list[Record], str | None]:
        rows, note = square_rows(record.image, self.sizes, crop=self.crop, fast=self.fast)
        return [record.with_image(rows[s].tobytes()) for s in self.sizes], note

    def settings(self) -> dict[str, Any]:
        return {"transform": "square-rows", "sizes": list(self.sizes), "crop": self.crop,
                "fast": self.fast, "resizer": "Pillow BOX" + (" after a DCT-scaled decode"
                                                                if self.fast else "")}
