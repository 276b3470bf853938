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
bilinear, bicubic and Lanczos resizes run on SIMD code (:mod:`.resample`: Pillow's
convolution, vectorised; 2.5-5x faster, within 2 levels of Pillow's bilinear). ``--exact``
always decodes at full resolution and resizes with Pillow: bit for bit what a plain Pillow loop
gives.

Orientation and colour: every output is upright sRGB with neither an EXIF Orientation tag nor an
ICC profile, so every reader returns the same dimensions and the same colours. Readers disagree
on both: HF ``datasets`` applies the Orientation tag on decode (``exif_transpose``) while PIL,
torchvision and ``tf.io.decode_jpeg`` do not, and none of them applies an ICC profile. So an
image is shown as its tag says (the tag's rotation or flip applied to the pixels, after the
resize, where it costs least) and a colour profile other than sRGB is converted to sRGB
(LittleCMS through ``PIL.ImageCms``; also after the resize for RGB profiles, the usual kind, as
it costs about two JPEG decodes per pixel; grey and CMYK profiles on the decoded image). About
1 in 10 ImageNet photos carries such a profile (11 of the workplace corpus's 100: camera,
Adobe RGB, ColorMatch, Apple profiles); sRGB-tagged ones (21) are left alone. A source that
needs either is not copied byte for byte even when no resize is needed: it is re-encoded and
listed as repaired, like a CMYK JPEG. Neither check decodes anything: the tag and the profile
are in the header Pillow has already parsed, and whether a profile is sRGB is decided once per
distinct profile.
"""

from __future__ import annotations

import functools
import io
import os
import stat
import struct
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image, ImageCms, UnidentifiedImageError

from imgtools.atomic import read_whole
from imgtools.errors import is_utf8_name
from imgtools.records import Record
from imgtools.transforms import resample
from imgtools.transforms.base import Transform
from imgtools.transforms.resample import FILTERS as FILTERS  # re-exported: the --filter choices
from imgtools.transforms.resample import Box

DEFAULT_FILTER = "bilinear"
DEFAULT_QUALITY = 90
DRAFT_MARGIN = 1
"""DCT-scale a JPEG only while it stays at least ``DRAFT_MARGIN`` times the target size."""
AFTER_DCT_FILTER = {"bilinear": "bicubic", "hamming": "bicubic", "box": "bicubic"}
"""The filter for the (less than 2x) resize left after a DCT-scaled decode: a soft filter at a
ratio near 1 mostly blurs, so those are replaced by bicubic; the others are kept."""
ORIENTATION_TAG = 0x0112
UPRIGHT = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
           4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE,
           6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
           8: Image.Transpose.ROTATE_90}
"""What shows an image as its EXIF Orientation (2-8) says, as ``ImageOps.exif_transpose``."""
PIXEL_POLICY = ("upright sRGB JPEGs: EXIF orientation applied to the pixels (no Orientation tag) "
                "and ICC profiles other than sRGB converted to sRGB (no profile embedded), so "
                "every reader returns the same dimensions and colours; a source that is already "
                "an upright sRGB RGB JPEG and needs no resize is copied byte for byte")
"""The policy in one sentence, for build-info.json (and so the dataset card)."""
SRGB = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))
PROFILE_MODES = {"RGB ": "RGB", "GRAY": "L", "CMYK": "CMYK"}
"""ICC colour space -> the Pillow mode a transform from it takes."""
RGB_UNDERNEATH = ("P", "PA", "RGBA", "RGBX")
"""Modes whose colours are RGB values: an RGB profile applies once :func:`to_rgb` has run."""

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
        try:
            st = os.fstat(fd)
            kind = _file_kind(st.st_mode)
            if kind:
                raise BadImage(f"not a regular file ({kind})")
            data = read_whole(fd, st.st_size)
        finally:
            os.close(fd)
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


def encode_jpeg(im: Image.Image, quality: int) -> bytes:
    """A baseline JPEG with no EXIF and no ICC profile: the pixels are upright sRGB already."""
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def _orientation(im: Image.Image) -> int:
    """The EXIF Orientation (1-8) to apply to the pixels; 1 when absent, broken or out of
    range (EXIF allows only 1-8; a reader that honours the tag ignores any other value)."""
    try:
        value = int(im.getexif().get(ORIENTATION_TAG, 1))
    except (ValueError, TypeError, OSError, SyntaxError, struct.error):  # broken EXIF block
        return 1
    return value if 1 <= value <= 8 else 1


def upright(im: Image.Image, orientation: int) -> Image.Image:
    """``im`` as its EXIF Orientation says it is shown (a no-op for 1)."""
    method = UPRIGHT.get(orientation)
    return im if method is None else im.transpose(method)


@dataclass(frozen=True)
class ColourFix:
    """How to turn a decoded image with an embedded ICC profile into sRGB."""

    transform: ImageCms.ImageCmsTransform
    in_mode: str  # the mode the transform takes ("RGB", "L", "CMYK")
    note: str


def srgb_fix(im: Image.Image) -> ColourFix | None:
    """The conversion to sRGB an opened image needs, or None: no profile, a profile that is
    sRGB already, or one LittleCMS cannot use (readers ignore profiles, so such an image is
    kept as stored, as every reader shows it)."""
    icc = im.info.get("icc_profile")
    if not icc or not isinstance(icc, bytes):
        return None
    return _fix_for_profile(icc, im.mode)


@functools.lru_cache(maxsize=64)
def _fix_for_profile(icc: bytes, mode: str) -> ColourFix | None:
    """Cached per distinct profile: photos from one camera or editor share theirs, so the
    probe below runs once per profile per worker, not per image."""
    try:
        profile = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        in_mode = PROFILE_MODES.get(profile.profile.xcolor_space)
        if in_mode != mode and not (in_mode == "RGB" and mode in RGB_UNDERNEATH):
            return None  # a profile for another colour space than the pixels': unusable
        transform = ImageCms.buildTransform(profile, SRGB, in_mode, "RGB")
        if in_mode == "RGB" and _is_identity(transform):
            return None  # an sRGB profile (one of its many encodings): nothing to convert
        name = (ImageCms.getProfileDescription(profile) or "unnamed").strip()
    except (ImageCms.PyCMSError, OSError, ValueError, TypeError):
        return None
    return ColourFix(transform, in_mode, f"ICC profile {name!r} converted to sRGB")


def _is_identity(transform: ImageCms.ImageCmsTransform) -> bool:
    """Whether an RGB -> sRGB transform leaves every colour of a 16-level grid within one
    level: then the profile is sRGB under another name."""
    levels = np.linspace(0, 255, 16).round().astype(np.uint8)
    grid = np.stack(np.meshgrid(levels, levels, levels), -1).reshape(16, 256, 3)
    probe = Image.fromarray(grid, "RGB")
    out = np.asarray(ImageCms.applyTransform(probe, transform), dtype=np.int16)
    return int(np.abs(out - grid.astype(np.int16)).max()) <= 1


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


def load_rgb(im: Image.Image, draft_to: tuple[int, int] | None = None,
             colour: ColourFix | None = None) -> tuple[Image.Image, Box | None]:
    """Decode an opened image to RGB (to sRGB through ``colour`` when given). A truncated or
    corrupt file raises :class:`BadImage` rather than yielding grey padding (the whole stream
    is read even when DCT-scaled).

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
    if colour is None or colour.in_mode == "RGB":
        return to_rgb(im), box  # an RGB profile is applied to each output (:func:`finish`)
    # A grey or CMYK profile needs the pixels before they become RGB.
    return ImageCms.applyTransform(im, colour.transform), box


def finish(im: Image.Image, colour: ColourFix | None, orientation: int) -> Image.Image:
    """The last steps of every re-encoded output: an RGB profile's conversion to sRGB, on the
    output's own pixels (after the resize: a fraction of the decoded image's, and an ICC
    transform costs about twice a JPEG decode per pixel), then the Orientation applied."""
    if colour is not None and colour.in_mode == "RGB":
        im = ImageCms.applyTransform(im, colour.transform)
    return upright(im, orientation)


def resize_decoded(rgb: Image.Image, box: Box | None, dims: tuple[int, int],
                   filter_name: str, exact: bool = False) -> Image.Image:
    """Resize a decoded image to ``dims``: with the requested filter from a full decode; after
    a DCT-scaled decode, over its ``box`` and with :data:`AFTER_DCT_FILTER`. Pillow's own
    resize when ``exact``, else the SIMD one (:mod:`imgtools.transforms.resample`)."""
    if box is None:
        return resample.resize(rgb, dims, filter_name, exact=exact)
    return resample.resize(rgb, dims, AFTER_DCT_FILTER.get(filter_name, filter_name), box=box,
                           exact=exact)


def render(data: bytes, opts: RenderOptions) -> tuple[list[bytes], str | None]:
    """Encoded output for each of ``opts.sizes`` and the repair note (None if untouched).

    The file is opened and decoded once for all sizes. Sizes at or above the image's shortest
    side are copies: the original bytes for an RGB JPEG that is upright and sRGB as stored,
    else the repaired full image. Every output is upright sRGB (module docstring).
    """
    im = open_image(data)
    w, h = im.size
    if w < 1 or h < 1:
        raise BadImage(f"degenerate image size {w}x{h}")
    orientation = _orientation(im)
    colour = srgb_fix(im)
    notes = [n for n in (repair_note(im), colour and colour.note,
                         orientation != 1 and f"EXIF Orientation {orientation} applied to the "
                                              "pixels") if n]
    shrunk = [s for s in opts.sizes if s is not None and min(w, h) > s]
    full_reencode = bool(notes) and len(shrunk) < len(opts.sizes)
    if full_reencode and w * h > MAX_DECODE_PIXELS:
        raise BadImage(f"too large to convert at full size within the memory limit: {w}x{h} "
                       f"is {w * h / 1e6:.0f} Mpx, over {MAX_DECODE_PIXELS / 1e6:.0f} Mpx")
    draft_to = None
    if shrunk and not opts.exact and not full_reencode:
        draft_to = target_size(w, h, DRAFT_MARGIN * max(shrunk))
    rgb, box = load_rgb(im, draft_to, colour)
    outputs: list[bytes] = []
    full: bytes | None = None
    for size in opts.sizes:
        if size is None or min(w, h) <= size:
            # Never upscale: keep the original bytes when nothing about them needs changing.
            if full is None:
                full = encode_jpeg(finish(rgb, colour, orientation), opts.quality) \
                    if notes else data
            outputs.append(full)
            continue
        # Resized, then converted and turned upright: the same size as the other way round
        # (the rule is symmetric), pixels within rounding, and both cost less on fewer pixels.
        resized = resize_decoded(rgb, box, target_size(w, h, size), opts.filter, opts.exact)
        outputs.append(encode_jpeg(finish(resized, colour, orientation), opts.quality))
    return outputs, "; ".join(notes) or None


_NON_JPEG_SUFFIXES = {"png", "webp", "bmp", "gif", "tif", "tiff", "ppm"}


@dataclass(frozen=True)
class ResizeJPEG(Transform):
    """:func:`render` as a transform: one JPEG record per size of ``options``. A record whose
    bytes are re-encoded from another format keeps its stem with a ``.jpg`` extension
    (``cifar-0001.png`` in, ``cifar-0001.jpg`` out); an untouched one keeps its name."""

    options: RenderOptions
    produces = "jpeg"
    pixels = PIXEL_POLICY

    @property
    def outputs(self) -> int:
        return len(self.options.sizes)

    def apply(self, record: Record) -> tuple[list[Record], str | None]:
        outputs, note = render(record.image, self.options)
        return [record if data is record.image else
                record.with_image(data, _jpeg_filename(record.filename))
                for data in outputs], note

    def settings(self) -> dict[str, Any]:
        o = self.options
        return {"transform": "resize-jpeg", "sizes": ["full" if s is None else s
                                                      for s in o.sizes],
                "filter": o.filter, "quality": o.quality, "exact": o.exact,
                "resizer": resample.resizer_name(o.exact)}


def _jpeg_filename(filename: str) -> str:
    stem, dot, ext = filename.rpartition(".")
    return f"{stem}.jpg" if dot and ext.lower() in _NON_JPEG_SUFFIXES else filename
