"""``--fast`` must keep the quality of ``--exact``: a DCT-scaled decode followed by a resize of
the region the scaled decode really covers (``Image.draft``'s box) and a bicubic second stage."""

from __future__ import annotations

import io

import numpy as np
import pytest
from conftest import psnr
from PIL import Image

from imgtools.demo_tree import _Painter
from imgtools.transforms.jpeg import FILTERS, RenderOptions, decode, render, target_size


def _photo_jpeg(size: tuple[int, int], seed: int) -> bytes:
    painter = _Painter(seed, (size, size), 0.0)
    photo = painter.photo(painter.rng(1), size, np.array([140, 120, 90], np.float32))
    buf = io.BytesIO()
    photo.save(buf, "JPEG", quality=95)
    return buf.getvalue()


def _decoded(data: bytes) -> Image.Image:
    return Image.open(io.BytesIO(data)).convert("RGB")


@pytest.mark.parametrize("size,seed", [((503, 377), 1), ((377, 503), 2), ((1001, 667), 3)])
def test_fast_is_as_close_to_an_ideal_resize_as_exact(size, seed):
    data = _photo_jpeg(size, seed)
    dims = target_size(*size, 160)
    (fast,), _ = render(data, RenderOptions(sizes=(160,)))
    (exact,), _ = render(data, RenderOptions(sizes=(160,), exact=True))
    fast, exact = _decoded(fast), _decoded(exact)
    assert fast.size == exact.size == dims

    drafted, box, _note, _original = decode(data, draft_to=dims)
    assert box is not None and drafted.size[0] < size[0]  # the fast path really DCT-scaled
    ideal = _decoded(data).resize(dims, Image.Resampling.LANCZOS)
    naive = drafted.resize(dims, FILTERS["bilinear"])  # box ignored: what --fast once did
    assert psnr(fast, ideal) >= psnr(exact, ideal) - 1.0
    assert psnr(fast, ideal) > psnr(naive, ideal) + 1.0
    assert psnr(fast, exact) > 30
