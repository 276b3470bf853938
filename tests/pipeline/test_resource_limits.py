"""Limits that protect memory and disk: one image decodes to at most MAX_DECODE_PIXELS
(huge JPEGs at a DCT-reduced scale, other huge images skipped with the reason), --batches at
most the train images, pickle sizes 8-64 as --help says."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import run_cli
from PIL import Image

from imgtools.transforms import jpeg as transform
from imgtools.transforms.jpeg import BadImage, RenderOptions, load_rgb, open_image, render
from imgtools.transforms.square import downsample_file


def _photo(w: int, h: int, fmt: str) -> bytes:
    rng = np.random.default_rng(0)
    small = rng.integers(0, 255, (h // 50, w // 50, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(small).resize((w, h), Image.Resampling.BILINEAR).save(buf, fmt)
    return buf.getvalue()


@pytest.fixture()
def small_limit(monkeypatch):
    """A 1 Mpx budget, so a 2400x1600 photo plays the 20000x20000 one."""
    monkeypatch.setattr(transform, "MAX_DECODE_PIXELS", 1_000_000)


def test_a_jpeg_over_the_limit_decodes_at_a_reduced_scale(small_limit):
    im = open_image(_photo(2400, 1600, "JPEG"))
    rgb, box = load_rgb(im)  # --exact decodes whole: not over the budget
    assert rgb.width * rgb.height <= 1_000_000 and box is not None
    (out,), _note = render(_photo(2400, 1600, "JPEG"), RenderOptions((160,), exact=True))
    assert Image.open(io.BytesIO(out)).size == (240, 160)


def test_a_png_over_the_limit_is_skipped_with_the_reason(small_limit):
    with pytest.raises(BadImage, match="too large to decode within the memory limit"):
        render(_photo(2400, 1600, "PNG"), RenderOptions((160,), exact=True))


def test_pickle_decode_is_bounded_too(small_limit, tmp_path, monkeypatch):
    path = tmp_path / "big.JPEG"
    path.write_bytes(_photo(2400, 1600, "JPEG"))
    seen = []
    real_load = Image.Image.load

    def load(self):
        result = real_load(self)
        seen.append(self.size)
        return result

    monkeypatch.setattr(Image.Image, "load", load)
    rows, _note = downsample_file(path, [32])
    assert rows[32].shape == (3 * 32 * 32,)
    assert seen and all(w * h <= 1_000_000 for w, h in seen)


def test_too_many_batches_stop_before_writing(small_tree, tmp_path):
    out = tmp_path / "out"
    for batches in ("31", "1000000000"):  # the tree has 30 train images
        proc = run_cli("build", "imagenette", "--src", small_tree, "--out", out, "--split",
                       "source", "--size", "8", "--format", "pickle", "--batches", batches,
                       check=False)
        assert proc.returncode == 2
        assert f"--batches {batches} is more than the 30 train images" in proc.stderr
        assert not out.exists() or not any(p for p in out.rglob("*") if p.is_file())


def test_skipped_images_leaving_fewer_train_images_than_batches(small_tree, tmp_path):
    tree = tmp_path / "tree"
    shutil.copytree(small_tree, tree)
    broken = sorted((tree / "train").rglob("*.JPEG"))[:2]
    for path in broken:
        path.write_bytes(b"not an image")
    proc = run_cli("build", "imagenette", "--src", tree, "--out", tmp_path / "out", "--split",
                   "source", "--size", "8", "--format", "pickle", "--batches", "29", "-j", "1",
                   check=False)
    assert proc.returncode == 2
    assert "--batches 29 is more than the 28 train images" in proc.stderr
    assert not list((tmp_path / "out").glob("*/train_data_batch_*"))


@pytest.mark.parametrize("size", ["7", "65"])
def test_pickle_sizes_outside_8_to_64_are_refused(small_tree, tmp_path, size):
    proc = run_cli("build", "imagenette", "--src", small_tree, "--out", tmp_path, "--size",
                   size, "--format", "pickle", "--split", "source", check=False)
    assert proc.returncode == 2 and f"size {size} is out of range" in proc.stderr


def test_shard_bytes_zero_is_refused(small_tree, tmp_path):
    run_cli("build", "imagenette", "--src", small_tree, "--out", tmp_path, "--size", "64",
            "--split", "random", "-q", "-j", "1")
    for value in ("0", "0.1", "0MB"):
        proc = run_cli("convert", tmp_path / "imagenette2-64", tmp_path / "dst", "--to",
                       "parquet", "--shard-bytes", value, check=False)
        assert proc.returncode == 2 and "--shard-bytes" in proc.stderr
    assert not (tmp_path / "dst").exists()


def test_the_limit_is_documented(tmp_path: Path):
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    assert f"{transform.MAX_DECODE_PIXELS // 1_000_000} Mpx" in readme
