"""The SIMD resizer must be a faster Pillow, not a different picture.

Builds resize with ``fast_image_resize`` (through cykooz.resizer) unless ``--exact``. These tests
hold it to what the README claims: bilinear within 2 levels of Pillow on every pixel, every
filter as close to an ideal (Lanczos) resize as Pillow's own, ``box`` regions honoured, and
Pillow itself wherever the SIMD code is not used.
"""

from __future__ import annotations

import platform
import sys

import numpy as np
import pytest
from conftest import psnr
from PIL import Image

from imgtools.transforms import resample
from imgtools.transforms.jpeg import target_size


def _photo_like(w: int = 500, h: int = 375, seed: int = 0) -> Image.Image:
    """Smooth shading, hard edges and fine texture: what makes resizers differ."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.stack([x / w * 200, y / h * 180, (x + y) / (w + h) * 220], axis=-1)
    img += 40 * np.sin(x / 7.0)[..., None] * np.cos(y / 11.0)[..., None]
    img[(x - w / 2) ** 2 + (y - h / 2) ** 2 < (h / 4) ** 2] = (250, 20, 30)  # a disc: edges
    img[::9, :] = 0  # thin lines: aliasing bait
    img += rng.normal(0, 12, img.shape)
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8), "RGB")


def _ideal(im: Image.Image, dims: tuple[int, int]) -> np.ndarray:
    """Lanczos in floating point, channel by channel: no 8-bit rounding between the passes."""
    channels = [np.asarray(Image.fromarray(np.asarray(c, np.float32), "F").resize(
        dims, Image.Resampling.LANCZOS)) for c in im.split()]
    return np.stack(channels, axis=-1)


def _diff(a: Image.Image, b: Image.Image) -> int:
    return int(np.abs(np.asarray(a, np.int16) - np.asarray(b, np.int16)).max())


@pytest.fixture(scope="module")
def photo() -> Image.Image:
    return _photo_like()


# Where cykooz.resizer ships wheels, and pyproject.toml therefore depends on it.
HAS_WHEELS = (sys.platform == "linux" and platform.machine() == "x86_64") or \
    sys.platform == "darwin" or (sys.platform == "win32" and platform.machine() == "AMD64")


def test_the_simd_resizer_is_installed_where_it_has_wheels():
    # There it is a dependency: a build silently falling back to Pillow would be 40% slower.
    if HAS_WHEELS:
        assert resample.Resizer is not None
    simd = resample.Resizer is not None
    assert ("fast_image_resize" in resample.resizer_name(exact=False)) == simd
    assert resample.resizer_name(exact=True) == "Pillow"


@pytest.mark.parametrize("size", [320, 160, 32])
def test_bilinear_is_pillow_to_within_two_levels(photo, size):
    dims = target_size(*photo.size, size)
    simd = resample.resize(photo, dims, "bilinear")
    pillow = photo.resize(dims, Image.Resampling.BILINEAR)
    assert simd.size == pillow.size == dims and simd.mode == "RGB"
    assert _diff(simd, pillow) <= 2  # fixed-point rounding (scripts/bench_resize.py: 1-2)


def test_a_box_region_is_honoured(photo):
    # A DCT-scaled decode hands over a region smaller than the image (scripts round up).
    box = (0.0, 0.0, 499.5, 374.5)
    dims = (213, 160)
    simd = resample.resize(photo, dims, "bicubic", box=box)
    pillow = photo.resize(dims, Image.Resampling.BICUBIC, box=box)
    unboxed = photo.resize(dims, Image.Resampling.BICUBIC)
    assert psnr(simd, pillow) > 45
    assert psnr(simd, pillow) > psnr(simd, unboxed) + 3  # the box made the difference


@pytest.mark.parametrize("filter_name", ["bilinear", "bicubic", "lanczos"])
@pytest.mark.parametrize("size", [320, 160])
def test_every_simd_filter_is_as_good_as_pillows(photo, filter_name, size):
    dims = target_size(*photo.size, size)
    ideal = _ideal(photo, dims)
    pillow = photo.resize(dims, resample.FILTERS[filter_name])
    simd = resample.resize(photo, dims, filter_name)
    # Within 0.3 dB of Pillow, unless both are past 50 dB: far below JPEG q90's own error
    # (about 40 dB), where the SIMD code's 16-bit coefficients start to show.
    assert psnr(simd, ideal) >= min(psnr(pillow, ideal) - 0.3, 50)
    assert psnr(simd, pillow) > 40


@pytest.mark.parametrize("filter_name", ["nearest", "box", "hamming"])
def test_filters_without_simd_code_are_pillows(photo, filter_name):
    dims = target_size(*photo.size, 160)
    out = resample.resize(photo, dims, filter_name)
    assert out.tobytes() == photo.resize(dims, resample.FILTERS[filter_name]).tobytes()


def test_exact_is_pillow_bit_for_bit(photo):
    dims = target_size(*photo.size, 320)
    out = resample.resize(photo, dims, "bilinear", exact=True)
    assert out.tobytes() == photo.resize(dims, Image.Resampling.BILINEAR).tobytes()


def test_without_the_wheel_pillow_does_everything(photo, monkeypatch):
    monkeypatch.setattr(resample, "Resizer", None)
    monkeypatch.setattr(resample, "_SIMD_FILTERS", {})
    dims = target_size(*photo.size, 160)
    out = resample.resize(photo, dims, "bilinear")
    assert out.tobytes() == photo.resize(dims, Image.Resampling.BILINEAR).tobytes()
    assert "not installed" in resample.resizer_name(exact=False)
