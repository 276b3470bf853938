"""Decode, repair, resize and encode one image, for every requested size at once.

Real ImageNet holds CMYK JPEGs, a PNG named .JPEG, grayscale images and the odd broken file.
:func:`render` turns any of them into RGB JPEGs or explains, in a :class:`BadImage`, why it
could not; the caller counts and lists both (nothing is dropped silently).

Sizes follow the fastai tarballs: the shortest side becomes N, the other ``floor(long * N /
short)``, aspect ratio kept, never upscaled: an RGB JPEG already at or under N (or ``full``) is
copied byte for byte. The image is decoded once per run however many sizes are asked for.

Default filter: BILINEAR. Pillow's filters are antialiased when shrinking (their support widens
with the scale factor), so bilinear gives a clean, alias-free downscale; it is the default of
fastai's ``resize_image`` and of torchvision's ``Resize``, and costs about 30% less than bicubic
and half of Lanczos on ImageNet-size photos (scripts/bench_build.py). Default JPEG quality 90 with
4:2:0 chroma subsampling: the common choice for training data (visually lossless, small files).

Fast mode (default): a JPEG at least twice as large as the largest requested size is decoded
with libjpeg's DCT scaling (``Image.draft``, 1/2, 1/4 or 1/8) to the smallest scale that still
covers the target size. The DCT scaling is itself a good anti-aliased downscale; what remains is
a resize by less than 2x, done on the exact region the scaled decode covers (the ``box`` that
``draft`` returns: a scaled JPEG is rounded up to whole pixels) and with bicubic rather than a
softer requested filter (bilinear, hamming, box), as Pillow's ``thumbnail()`` does after its own
draft. Measured against an ideal resize (full decode, Lanczos), fast and exact outputs are
equally close (scripts/psnr_fast_vs_exact.py). Output dimensions never change. Fast mode's
bilinear, bicubic and Lanczos resizes run on SIMD code (:mod:`imgtools.resample`: Pillow's
convolution, vectorised; 2.5-5x faster, within 2 levels of Pillow's bilinear). ``--exact``
always decodes at full resolution and resizes with Pillow: bit for bit what a plain Pillow
loop gives.

EXIF orientation: pixels are never rotated (ImageNet loaders ignore the tag), and a resized
image keeps the Orientation tag of its source, so a copied and a resized output of the same
photo display the same way.
"""

from __future__ import annotations

import io
import os
import stat
import struct
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, UnidentifiedImageError

from imgtools import resample
from imgtools.errors import is_utf8_name
from imgtools.resample import FILTERS as FILTERS  # re-exported: the --filter choices
from imgtools.resample import Box

DEFAULT_FILTER = "bilinear"
DEFAULT_QUALITY = 90
DRAFT_MARGIN = 1
"""DCT-scale a JPEG only while it stays at least ``DRAFT_MARGIN`` times the target size."""
AFTER_DCT_FILTER = {"bilinear": "bicubic", "hamming": "bicubic", "box": "bicubic"}
"""The filter for the (less than 2x) resize left after a DCT-scaled decode: a soft filter at a
ratio near 1 mostly blurs, so those are replaced by bicubic; the others are kept."""
ORIENTATION_TAG = 0x0112

# ImageNet has a few huge images; refuse decompression bombs far beyond them, not them.
Image.MAX_IMAGE_PIXELS = 20_000 * 20_000
MAX_DECODE_PIXELS = 64_000_000
"""The most pixels one image is decoded to (192 MB as RGB). A bigger JPEG is decoded with DCT
scaling (1/2, 1/4, 1/8) to fit, also in --exact and pickle builds, so a 20000x20000 photo costs
one worker about 100 MB instead of 1.2 GB; any other image that big is skipped and listed.
Real ImageNet images are far smaller (tens of megapixels at most)."""


class BadImage(Exception):
    """The file cannot become an image; ``reason`` says why, for the build report."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class RenderOptions:
    sizes: tuple[int | None, ...]  # None = full size
    filter: str = DEFAULT_FILTER
    quality: int = DEFAULT_QUALITY
    exact: bool = False


def read_bytes(path: str) -> bytes:
    """The bytes of a source file, or :class:`BadImage` saying why it cannot be used: its name
    is not UTF-8 (every output stores names as UTF-8 text: CSV, JSON, Parquet, tar), it is not
    a regular file (a FIFO would block the build forever, a folder holds no image), or it
    cannot be read (permissions, a dangling or looping symlink), or it is empty."""
    if not is_utf8_name(path):
        raise BadImage("file name is not valid UTF-8 (shown with \\x escapes); the outputs "
                       "store names as UTF-8 text: rename the file")
    try:
        # O_NONBLOCK: opening a FIFO for reading must not wait for a writer.
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
        with open(fd, "rb") as f:
            kind = _file_kind(os.fstat(fd).st_mode)
            if kind:
                raise BadImage(f"not a regular file ({kind})")
            data = f.read()
    except PermissionError as e:
        raise BadImage(f"unreadable: permission denied ({e.strerror})") from e
    except OSError as e:
        raise BadImage(f"unreadable: {e.strerror or e}") from e
    if not data:
        raise BadImage("empty (zero-byte) file")
    return data


def _file_kind(mode: int) -> str | None:
    """What a non-regular file is, for a reason a user understands; None for a regular file."""
    if stat.S_ISREG(mode):
        return None
    for test, kind in ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO"),
                       (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device")):
        if test(mode):
            return kind
    return "not a plain file"


def open_image(data: bytes) -> Image.Image:
    """Open (parse the header of) an image. Pillow reads a JPEG's header segments here, so a
    file cut off inside them fails now, with an OSError or worse, not at decode time."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            return Image.open(io.BytesIO(data))
    except UnidentifiedImageError as e:
        raise BadImage(f"not an image ({_sniff(data)})") from e
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise BadImage(f"too large to decode safely: {e}") from e
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, struct.error) as e:
        raise BadImage(f"corrupt or truncated image header: {e}") from e


def _sniff(data: bytes) -> str:
    head = data[:64].lstrip().lower()
    if head.startswith((b"<!doctype html", b"<html")):
        return "an HTML page"
    if head[:5] == b"<?xml":
        return "an XML document"
    try:
        data[:256].decode("utf-8")
        return "a text file"
    except UnicodeDecodeError:
        return "unknown binary data"


def repair_note(im: Image.Image) -> str | None:
    """Why an image cannot be copied as is: anything but an RGB (or YCbCr) JPEG."""
    fmt = im.format or "unknown"
    if fmt not in ("JPEG", "MPO"):  # MPO: a camera JPEG with extra frames; readers show the first
        # Not "named .JPEG": the same note goes to a photo.png, and the path shows the name.
        return f"{fmt} image, not a JPEG: re-encoded as RGB JPEG"
    if im.mode != "RGB":
        kind = {"L": "grayscale", "CMYK": "CMYK", "P": "palette", "LA": "grayscale+alpha",
                "RGBA": "RGBA", "I;16": "16-bit grayscale"}.get(im.mode, im.mode)
        return f"{kind} JPEG converted to RGB"
    return None


def target_size(width: int, height: int, size: int) -> tuple[int, int]:
    """Shortest side to ``size``, the other side floored as fastai's resize does."""
    if width <= height:
        return size, height * size // width
    return width * size // height, size


HIGH_DEPTH_GRAY = {"I;16": 65535, "I;16L": 65535, "I;16B": 65535, "I;16N": 65535}
"""Grey modes wider than 8 bits, with their full-scale value. Pillow's ``convert("RGB")``
clips them at 255 instead of scaling, which turns a 16-bit photo nearly white."""


def to_rgb(im: Image.Image) -> Image.Image:
    if im.mode == "RGB" and "transparency" not in im.info:
        return im
    if im.mode in HIGH_DEPTH_GRAY or im.mode in ("I", "F"):
        return _scaled_gray(im).convert("RGB")
    if im.mode in ("RGBA", "LA", "PA") or "transparency" in im.info:  # alpha or a tRNS colour
        # Flatten transparency onto white rather than letting it turn black.
        rgba = im.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return im.convert("RGB")


def _scaled_gray(im: Image.Image) -> Image.Image:
    """An 8-bit ("L") image from a 16-bit, 32-bit integer or float grey one, scaled rather than
    clipped: 16-bit modes from 0-65535; ``I`` likewise when its values fit in 16 bits (what a
    16-bit file usually opens as), ``F`` from 0-1 when its values fit there; otherwise from the
    image's own range."""
    pixels = np.nan_to_num(np.asarray(im, dtype=np.float64))
    low, high = float(pixels.min()), float(pixels.max())
    if im.mode in HIGH_DEPTH_GRAY:
        low, high = 0.0, float(HIGH_DEPTH_GRAY[im.mode])
    elif im.mode == "I" and low >= 0 and high <= 65535:
        low, high = 0.0, 65535.0
    elif im.mode == "F" and low >= 0 and high <= 1:
        low, high = 0.0, 1.0
    span = high - low or 1.0
    scaled = np.clip((pixels - low) * (255.0 / span), 0, 255)
    return Image.fromarray(np.round(scaled).astype(np.uint8), "L")


def encode_jpeg(im: Image.Image, quality: int, orientation: int = 1) -> bytes:
    buf = io.BytesIO()
    if orientation != 1:
        exif = Image.Exif()
        exif[ORIENTATION_TAG] = orientation
        im.save(buf, "JPEG", quality=quality, exif=exif)
    else:
        im.save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def _orientation(im: Image.Image) -> int:
    """The EXIF Orientation (1-8) to carry over to resized outputs; 1 when absent, broken or
    out of range (EXIF allows only 1-8, and no other value can be written back)."""
    try:
        value = int(im.getexif().get(ORIENTATION_TAG, 1))
    except (ValueError, TypeError, OSError, SyntaxError, struct.error):  # broken EXIF block
        return 1
    return value if 1 <= value <= 8 else 1


def decode(data: bytes, draft_to: tuple[int, int] | None = None
           ) -> tuple[Image.Image, Box | None, str | None, tuple[int, int]]:
    """Fully decode ``data`` (optionally DCT-scaled to at least ``draft_to``) to RGB.

    Returns the RGB image, the region of it that holds the original picture (None unless
    DCT-scaled, see :func:`load_rgb`), the repair note (None for a clean RGB JPEG) and the
    original size.
    """
    im = open_image(data)
    note, original = repair_note(im), im.size
    rgb, box = load_rgb(im, draft_to)
    return rgb, box, note, original


def draft(im: Image.Image, mode: str, size: tuple[int, int]) -> Box | None:
    """Ask libjpeg to DCT-scale ``im``'s coming decode to at least ``size`` (``Image.draft``).
    Returns the region of the scaled image that holds the original picture (a scaled JPEG is
    rounded up to whole pixels), or None when nothing was scaled (not a JPEG, or too small)."""
    original = im.size
    drafted = im.draft(mode, size)
    if drafted is not None and im.size != original:
        return drafted[1]
    return None


def bounded_draft(im: Image.Image, request: tuple[int, int] | None
                  ) -> tuple[int, int] | None:
    """The DCT-scaled decode size to ask for so that ``im`` decodes to at most
    :data:`MAX_DECODE_PIXELS`: ``request`` when it already does (or the image is small enough
    to decode whole), else the largest 1/2, 1/4 or 1/8 scale that fits. An image over the limit
    that DCT scaling cannot shrink (not a JPEG, or too big even at 1/8) raises
    :class:`BadImage`."""
    w, h = im.size
    if w * h <= MAX_DECODE_PIXELS:
        return request
    if im.format == "JPEG":
        for k in (2, 4, 8):
            bound = (-(-w // k), -(-h // k))
            if bound[0] * bound[1] <= MAX_DECODE_PIXELS:
                if request is None or request[0] * request[1] > bound[0] * bound[1]:
                    return bound
                return request
    raise BadImage(f"too large to decode within the memory limit: {w}x{h} is "
                   f"{w * h / 1e6:.0f} Mpx, over {MAX_DECODE_PIXELS / 1e6:.0f} Mpx (only JPEGs "
                   "up to 8 times over it are decoded at a reduced scale)")


def load_rgb(im: Image.Image, draft_to: tuple[int, int] | None = None
             ) -> tuple[Image.Image, Box | None]:
    """Decode an opened image to RGB. A truncated or corrupt file raises :class:`BadImage`
    rather than yielding grey padding (the whole stream is read even when DCT-scaled).

    With ``draft_to``, a JPEG may be DCT-scaled; the second value is then the region of the
    scaled image that the original covers (scaled sizes are rounded up to whole pixels, so the
    last row and column are partly outside it), else None."""
    box = None
    draft_to = bounded_draft(im, draft_to)
    try:
        if draft_to is not None and im.format == "JPEG":
            box = draft(im, im.mode, draft_to)
        im.load()
    except (OSError, SyntaxError, ValueError) as e:
        raise BadImage(f"corrupt or truncated image data: {e}") from e
    return to_rgb(im), box


def resize_decoded(rgb: Image.Image, box: Box | None, dims: tuple[int, int],
                   filter_name: str, exact: bool = False) -> Image.Image:
    """Resize a decoded image to ``dims``: with the requested filter from a full decode; after
    a DCT-scaled decode, over its ``box`` and with :data:`AFTER_DCT_FILTER`. Pillow's own
    resize when ``exact``, else the SIMD one (:mod:`imgtools.resample`)."""
    if box is None:
        return resample.resize(rgb, dims, filter_name, exact=exact)
    return resample.resize(rgb, dims, AFTER_DCT_FILTER.get(filter_name, filter_name), box=box,
                           exact=exact)


def render(data: bytes, opts: RenderOptions) -> tuple[list[bytes], str | None]:
    """Encoded output for each of ``opts.sizes`` and the repair note (None if untouched).

    The file is opened and decoded once for all sizes. Sizes at or above the image's shortest
    side are copies: the original bytes for a clean RGB JPEG, else the repaired full image.
    """
    im = open_image(data)
    w, h = im.size
    if w < 1 or h < 1:
        raise BadImage(f"degenerate image size {w}x{h}")
    note = repair_note(im)
    shrunk = [s for s in opts.sizes if s is not None and min(w, h) > s]
    full_reencode = note is not None and len(shrunk) < len(opts.sizes)
    if full_reencode and w * h > MAX_DECODE_PIXELS:
        raise BadImage(f"too large to convert at full size within the memory limit: {w}x{h} "
                       f"is {w * h / 1e6:.0f} Mpx, over {MAX_DECODE_PIXELS / 1e6:.0f} Mpx")
    draft_to = None
    if shrunk and not opts.exact and not full_reencode:
        draft_to = target_size(w, h, DRAFT_MARGIN * max(shrunk))
    orientation = _orientation(im)
    rgb, box = load_rgb(im, draft_to)
    outputs: list[bytes] = []
    for size in opts.sizes:
        if size is None or min(w, h) <= size:
            # Never upscale: keep the original bytes when they already are an RGB JPEG.
            outputs.append(data if note is None else
                           encode_jpeg(rgb, opts.quality, orientation))
            continue
        resized = resize_decoded(rgb, box, target_size(w, h, size), opts.filter, opts.exact)
        outputs.append(encode_jpeg(resized, opts.quality, orientation))
    return outputs, note
