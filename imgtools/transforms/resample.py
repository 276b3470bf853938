"""Resize RGB images: SIMD convolution by default, Pillow's own code for ``--exact``.

Why a second resizer: Pillow's convolution resize is scalar C. On ImageNet-size photos it costs
as much as the JPEG decode itself (1.09 ms per corpus photo to take it to 320 px, against
1.12 ms to decode it; scripts/bench_resize.py), so it caps how fast a build can go.
``cykooz.resizer`` binds the Rust crate ``fast_image_resize``, which implements the same
separable convolution with Pillow's filter definitions and supports, vectorised with AVX2,
SSE4.1 or NEON: 2.5-5x faster here, single-threaded (our parallelism is the executor's). Its
bilinear output is within 2 levels of Pillow's on every pixel (fixed-point rounding), and for
every filter it uses it is as close to an ideal resize as Pillow's is (tests/test_resample.py).

Where it is not used: ``--exact`` (bit for bit what a plain Pillow loop gives), the filters it
lacks (hamming) or breaks ties differently in (nearest, and box: near a ratio of 1 a box picks
single source pixels, and where Pillow takes one pixel it may take the next, shifting a whole
row or column; scripts/bench_resize.py shows it), and any platform where its wheel does not
import; those fall back to Pillow. :func:`resizer_name` says which one a build used, for its
report.
"""

from __future__ import annotations

import threading

from PIL import Image

FILTERS = {
    "nearest": Image.Resampling.NEAREST,
    "box": Image.Resampling.BOX,
    "bilinear": Image.Resampling.BILINEAR,
    "hamming": Image.Resampling.HAMMING,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
}

Box = tuple[float, float, float, float]

try:
    from cykooz_resizer import CropBox, FilterType, ResizeAlg, ResizeOptions, Resizer
except ImportError:  # no wheel for this platform: Pillow does every resize
    Resizer = None

if Resizer is not None:
    # Pillow's bicubic is Keys' cubic with a = -0.5, which is Catmull-Rom.
    _SIMD_FILTERS = {"bilinear": FilterType.bilinear, "bicubic": FilterType.catmull_rom,
                     "lanczos": FilterType.lanczos3}
else:
    _SIMD_FILTERS = {}

_local = threading.local()


def _resizer():
    """One resizer per thread: it keeps scratch buffers between calls."""
    r = getattr(_local, "resizer", None)
    if r is None:
        r = _local.resizer = Resizer()
    return r


def resizer_name(exact: bool) -> str:
    """What resizes a build's images, for build-info.json."""
    if exact:
        return "Pillow"
    if Resizer is None:
        return "Pillow (cykooz.resizer is not installed)"
    return "fast_image_resize (cykooz.resizer); Pillow for nearest, box and hamming"


def has_simd(filter_name: str) -> bool:
    return filter_name in _SIMD_FILTERS


def resize(rgb: Image.Image, dims: tuple[int, int], filter_name: str, box: Box | None = None,
           exact: bool = False) -> Image.Image:
    """``rgb`` (mode RGB) resized to ``dims`` over ``box`` (Pillow's ``(x0, y0, x1, y1)``,
    default: the whole image) with the named filter; Pillow's code when ``exact``."""
    if exact or rgb.mode != "RGB" or not has_simd(filter_name):
        return rgb.resize(dims, FILTERS[filter_name], box=box)
    dst = Image.new("RGB", dims, None)  # not filled: every pixel is written
    crop = None if box is None else CropBox(box[0], box[1], box[2] - box[0], box[3] - box[1])
    options = ResizeOptions(ResizeAlg.convolution(_SIMD_FILTERS[filter_name]), crop_box=crop)
    _resizer().resize_pil(rgb, dst, options)
    return dst
