"""The orientation and colour policy in :func:`imgtools.transforms.jpeg.render`, case by case (the
readers' side is tests/clients/test_orientation_colour.py): every output upright and sRGB, no
tag and no profile; profiles that cannot be used are ignored, never fatal."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageCms

from imgtools.transforms.jpeg import RenderOptions, render

ORIENTATION = 0x0112


def _jpeg(image: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=95, **kw)
    return buf.getvalue()


def _marked(size=(60, 40)) -> Image.Image:
    """Black with a white top-left corner, so any rotation or flip shows."""
    im = Image.new("RGB", size, (0, 0, 0))
    im.paste((255, 255, 255), (0, 0, size[0] // 3, size[1] // 3))
    return im


@pytest.mark.parametrize("orientation", range(1, 9))
def test_each_orientation_is_applied_as_exif_transpose_shows_it(orientation):
    from PIL import ImageOps

    exif = Image.Exif()
    exif[ORIENTATION] = orientation
    data = _jpeg(_marked(), exif=exif)
    shown = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(data))), dtype=np.int16)
    outputs, note = render(data, RenderOptions((None, 1000)))
    for out in outputs:
        im = Image.open(io.BytesIO(out))
        assert im.getexif().get(ORIENTATION, 1) == 1  # no tag (or an explicit 1, copied)
        assert np.abs(np.asarray(im, dtype=np.int16) - shown).mean() < 4
    assert (note is None) == (orientation == 1)
    if orientation == 1:
        assert outputs == [data, data]  # upright already: copied


def test_a_broken_profile_is_ignored_and_the_image_copied():
    data = _jpeg(_marked(), icc_profile=b"not an ICC profile at all" * 8)
    assert Image.open(io.BytesIO(data)).info.get("icc_profile")
    outputs, note = render(data, RenderOptions((None,)))
    assert note is None and outputs == [data]


def test_a_profile_of_another_colour_space_is_ignored():
    lab = ImageCms.ImageCmsProfile(ImageCms.createProfile("LAB"))  # not for grey pixels
    data = _jpeg(Image.new("L", (30, 20), 128), icc_profile=lab.tobytes())
    outputs, note = render(data, RenderOptions((None,)))
    assert "grayscale" in note and "ICC" not in note  # repaired to RGB, profile ignored
    assert Image.open(io.BytesIO(outputs[0])).mode == "RGB"
