"""Input and usage that once broke a build (found in review). Each must end in a report line or
a clear error: never a traceback, a corrupt output or two runs mixing their files."""

from __future__ import annotations

import csv
import io
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import WNIDS, do_build, tree_digest
from PIL import Image

import imgtools.transforms.jpeg as jpeg_module
from imgtools.errors import UserError
from imgtools.locks import exclusive
from imgtools.transforms.jpeg import BadImage, RenderOptions, render

ORIENTATION = 0x0112


def _photo(size=(300, 200), seed=0) -> Image.Image:
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (size[1] // 10, size[0] // 10, 3), dtype=np.uint8)
    return Image.fromarray(small).resize(size, Image.Resampling.BICUBIC)


def _jpeg(image: Image.Image, orientation: int | None = None) -> bytes:
    buf = io.BytesIO()
    if orientation is None:
        image.save(buf, "JPEG", quality=90)
    else:
        exif = Image.Exif()
        exif[ORIENTATION] = orientation
        image.save(buf, "JPEG", quality=90, exif=exif)
    return buf.getvalue()


def _tree_copy(kaggle_tree, tmp_path: Path) -> tuple[Path, Path]:
    """A private copy of the session tree (tests here add files to it) and its first train
    class folder."""
    src = tmp_path / "src"
    shutil.copytree(kaggle_tree.src, src)
    return src, next(src.rglob(f"train/{WNIDS[0]}"))


# ---------------------------------------------------------------- images


def test_a_jpeg_cut_inside_its_header_is_a_bad_image():
    """Pillow parses a JPEG's header segments when opening it and raises OSError (not
    UnidentifiedImageError) when they are cut short: that used to kill the build."""
    data = _jpeg(_photo(), orientation=6)  # EXIF makes the header longer
    for n in range(1, 900, 7):
        try:
            render(data[:n], RenderOptions((160,)))
        except BadImage as e:
            assert "corrupt" in e.reason or "not an image" in e.reason or "empty" in e.reason


def test_a_truncated_header_is_skipped_and_listed_by_the_build(kaggle_tree, tmp_path):
    src, folder = _tree_copy(kaggle_tree, tmp_path)
    cut = folder / f"{WNIDS[0]}_99999.JPEG"
    cut.write_bytes(_jpeg(_photo())[:300])
    report = do_build("imagenette", src, tmp_path / "out")
    reasons = {s["path"]: s["reason"] for s in report["skipped"]}
    assert "header" in reasons[str(cut)]


def test_an_out_of_range_exif_orientation_is_ignored():
    """EXIF allows 1-8; a LONG 70000 (Pillow cannot write it back as a SHORT) used to crash."""
    data = _jpeg(_photo(), orientation=6)
    short_6 = b"\x01\x12\x00\x03\x00\x00\x00\x01\x00\x06\x00\x00"  # Pillow writes "MM" EXIF
    assert data.count(short_6) == 1
    data = data.replace(short_6, b"\x01\x12\x00\x04\x00\x00\x00\x01"
                        + (70000).to_bytes(4, "big"))
    assert Image.open(io.BytesIO(data)).getexif().get(ORIENTATION) == 70000
    outputs, note = render(data, RenderOptions((160,)))
    assert note is None
    assert Image.open(io.BytesIO(outputs[0])).getexif().get(ORIENTATION) in (None, 1)


def test_a_repaired_copy_is_upright_like_a_resized_one():
    """README: a copied and a resized output of the same photo display the same way (since
    issue 12: upright pixels and no Orientation tag in both, so every reader agrees)."""
    data = _jpeg(_photo().convert("CMYK"), orientation=6)
    outputs, note = render(data, RenderOptions((None, 160, 1000)))
    assert note and "CMYK" in note and "Orientation 6" in note
    opened = [Image.open(io.BytesIO(o)) for o in outputs]
    assert [im.getexif().get(ORIENTATION) for im in opened] == [None, None, None]
    assert [im.size for im in opened] == [(200, 300), (160, 240), (200, 300)]


def test_16_bit_grey_is_scaled_to_8_bits_not_clipped():
    ramp = np.tile(np.linspace(0, 65535, 256).astype(np.uint16), (64, 1))
    buf = io.BytesIO()
    Image.fromarray(ramp).save(buf, "PNG")  # opens as a 16-bit mode
    outputs, note = render(buf.getvalue(), RenderOptions((None,)))
    assert note
    out = np.asarray(Image.open(io.BytesIO(outputs[0])).convert("L"), dtype=np.float64)
    expected = np.tile(np.linspace(0, 255, 256), (64, 1))
    assert np.abs(out - expected).mean() < 3  # JPEG noise; clipping gave a mean error of ~120


# ---------------------------------------------------------------- plans and names


def test_a_single_class_recipe_builds(kaggle_tree, tmp_path):
    recipe = tmp_path / "one.toml"
    recipe.write_text(f'name = "one"\nclasses = ["{WNIDS[0]}"]\n')
    report = do_build(str(recipe), kaggle_tree.src, tmp_path / "out")
    out = Path(report["outputs"][0])
    with open(out / "noisy_one.csv") as f:
        rows = list(csv.DictReader(f))
    assert rows and all(r[c] == WNIDS[0] for r in rows for c in r if c.startswith("noisy"))


def test_a_non_jpeg_name_is_the_same_in_files_csv_and_checksums(kaggle_tree, tmp_path):
    src, folder = _tree_copy(kaggle_tree, tmp_path)
    _photo(seed=1).save(folder / "extra_photo.png")
    (folder / "copied.jpg.bak.png").write_bytes(_jpeg(_photo(seed=2)))  # JPEG bytes, .png name
    report = do_build("imagenette", src, tmp_path / "out", sizes=(None,))
    out = Path(report["outputs"][0])
    names = {p.name for p in out.rglob("*.JPEG")}
    assert {"extra_photo.png.JPEG", "copied.jpg.bak.png.JPEG"} <= names
    with open(out / "noisy_imagenette.csv") as f:
        csv_names = {Path(r["path"]).name for r in csv.DictReader(f)}
    sums = {line.split("  ", 1)[1].strip().rsplit("/", 1)[-1]
            for line in (out / "SHA256SUMS").read_text().splitlines()}
    assert names == csv_names == sums


# ---------------------------------------------------------------- resume and concurrent runs


class _Killed(BaseException):
    """Stands in for a kill: raised from inside a shard, it leaves the state behind."""


def _interrupted_build(monkeypatch, src: Path, out: Path, after: int, **kw) -> None:
    calls = {"n": 0}
    real = jpeg_module.render

    def dying_render(data, opts):
        calls["n"] += 1
        if calls["n"] > after:
            raise _Killed
        return real(data, opts)

    monkeypatch.setattr(jpeg_module, "render", dying_render)
    with pytest.raises(_Killed):
        do_build("imagenette", src, out, n_jobs=1, shard_size=4, **kw)
    monkeypatch.setattr(jpeg_module, "render", real)


def test_resume_refuses_a_plan_that_moves_images(kaggle_tree, tmp_path, monkeypatch):
    """A random split keeps every image, so the image count cannot tell 25% from 50% in val."""
    _interrupted_build(monkeypatch, kaggle_tree.src, tmp_path, after=10, valid_pct=0.25)
    with pytest.raises(UserError, match="plan"):
        do_build("imagenette", kaggle_tree.src, tmp_path, valid_pct=0.5, resume=True, n_jobs=1,
                 shard_size=4)
    do_build("imagenette", kaggle_tree.src, tmp_path, valid_pct=0.25, resume=True, n_jobs=1,
             shard_size=4)


def test_other_sizes_into_the_same_out_keep_an_interrupted_build_resumable(
        kaggle_tree, tmp_path, monkeypatch):
    ref = do_build("imagenette", kaggle_tree.src, tmp_path / "ref", sizes=(160,))
    _interrupted_build(monkeypatch, kaggle_tree.src, tmp_path / "run", after=10)
    do_build("imagenette", kaggle_tree.src, tmp_path / "run", sizes=(320,))
    resumed = do_build("imagenette", kaggle_tree.src, tmp_path / "run", sizes=(160,),
                       resume=True, n_jobs=1, shard_size=4)
    assert tree_digest(Path(resumed["outputs"][0])) == tree_digest(Path(ref["outputs"][0]))


def test_a_second_build_of_the_same_output_is_refused_while_the_first_runs(
        kaggle_tree, tmp_path):
    with exclusive([tmp_path / "imagenette2-160"]):
        with pytest.raises(UserError, match="another imgtools process") as err:
            do_build("imagenette", kaggle_tree.src, tmp_path)
        assert err.value.fix
        do_build("imagenette", kaggle_tree.src, tmp_path, sizes=(320,))  # another output: fine
    do_build("imagenette", kaggle_tree.src, tmp_path)  # the lock went with the first run
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_out_that_is_a_file_is_a_clear_error(kaggle_tree, tmp_path):
    (tmp_path / "out").write_text("not a folder")
    with pytest.raises(UserError, match="not a folder"):
        do_build("imagenette", kaggle_tree.src, tmp_path / "out")


def test_imagewang_reports_each_missing_imagewoof_file_once(trees, tmp_path):
    """Imagewang takes Imagewoof twice (10% to train, the rest to unsup)."""
    from conftest import IMAGEWOOF, official_rows, write_official_csv

    from imgtools.recipes import load_recipe

    nette = [c.wnid for c in load_recipe("imagenette").classes]
    nette_csv, woof_csv = tmp_path / "noisy_imagenette.csv", tmp_path / "noisy_imagewoof.csv"
    write_official_csv(nette_csv, official_rows(trees["kaggle"], nette))
    gone = ("train", IMAGEWOOF[0], f"{IMAGEWOOF[0]}_99999.JPEG")
    write_official_csv(woof_csv, official_rows(trees["kaggle"], IMAGEWOOF) + [gone])
    report = do_build("imagewang", trees["kaggle"].src, tmp_path / "o", split="official",
                      split_csvs=[nette_csv, woof_csv], allow_missing=True)
    assert report["missing_from_tree"] == ["/".join(gone)]
    assert [s["recipe"] for s in report["options"]["split_sources"]] == ["imagenette",
                                                                          "imagewoof"]


def test_a_dangling_symlink_is_listed_as_skipped(kaggle_tree, tmp_path):
    src, folder = _tree_copy(kaggle_tree, tmp_path)
    link = folder / f"{WNIDS[0]}_55555.JPEG"
    link.symlink_to(tmp_path / "nowhere.JPEG")
    report = do_build("imagenette", src, tmp_path / "out")
    reasons = {s["path"]: s["reason"] for s in report["skipped"]}
    assert "unreadable" in reasons[str(link)]


@pytest.mark.parametrize("mode", ["L", "RGB"])
def test_a_transparent_colour_is_flattened_onto_white(mode):
    """PNG tRNS: one colour of an L or RGB image is transparent, as alpha is in RGBA."""
    im = Image.new(mode, (40, 30), 0 if mode == "L" else (0, 0, 0))
    buf = io.BytesIO()
    im.save(buf, "PNG", transparency=0 if mode == "L" else (0, 0, 0))
    outputs, note = render(buf.getvalue(), RenderOptions((None,)))
    assert note
    assert np.asarray(Image.open(io.BytesIO(outputs[0]))).min() > 240


def test_an_mpo_camera_jpeg_is_copied_not_re_encoded():
    from PIL import MpoImagePlugin  # noqa: F401 - registers the MPO writer

    frames = [_photo(seed=1), _photo(seed=2)]
    buf = io.BytesIO()
    frames[0].save(buf, "MPO", save_all=True, append_images=frames[1:])
    data = buf.getvalue()
    assert Image.open(io.BytesIO(data)).format == "MPO"
    outputs, note = render(data, RenderOptions((None, 160)))
    assert note is None and outputs[0] == data
