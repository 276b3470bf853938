"""Smaller promises: a stray .tar in a JPEG folder does not make it a WebDataset; an empty split
is listed in the sidecar with 0; a PNG's repair note does not claim it was named .JPEG; JPEG
folders are the same bytes whatever --shard-size (record formats are cut by it)."""

from __future__ import annotations

import io
import json
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest
from conftest import RUN_RECORD, run_cli
from PIL import Image

import imgtools.formats.base as base
from imgtools.formats import detect_format
from imgtools.records import DATASET_META
from imgtools.transforms.jpeg import RenderOptions, render


@pytest.fixture(scope="module")
def built(small_tree, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("sidecar")
    run_cli("build", "imagenette", "--src", small_tree, "--out", out, "--split", "random",
            "--valid-pct", "0", "--size", "64", "-q", "-j", "1")
    return out / "imagenette2-64"


def _stray_tar(folder: Path) -> None:
    cls = folder / "train" / "n01440764"
    with tarfile.open(cls / "backup.tar", "w") as tar:
        tar.add(next(cls.glob("*.JPEG")), arcname="x.JPEG")


def test_stray_tar_in_an_imgtools_folder(built, tmp_path):
    ds = tmp_path / "ds"
    shutil.copytree(built, ds)
    _stray_tar(ds)
    assert json.loads(run_cli("info", ds, "--json", "-q").stdout)["format"] == "folder"


def test_an_imgtools_output_is_detected_without_listing_it_once_per_format(built, monkeypatch):
    """Its sidecar names the format, which the files confirm: the other formats' detectors
    (each a walk of the whole folder, a million files in a big one) are not asked."""
    walks = []
    real = base.files_named
    monkeypatch.setattr(base, "files_named",
                        lambda path, ok: walks.append(path) or real(path, ok))
    assert detect_format(built).name == "folder"
    assert walks == []
    (built / DATASET_META).rename(built / "moved.json")
    try:
        assert detect_format(built).name == "folder"  # no sidecar: every format is asked
    finally:
        (built / "moved.json").rename(built / DATASET_META)
    assert walks  # the other formats were asked, each walking the folder


def test_stray_tar_in_a_foreign_folder_asks(built, tmp_path):
    ds = tmp_path / "ds"
    shutil.copytree(built, ds)
    (ds / "imgtools-dataset.json").unlink()
    _stray_tar(ds)
    proc = run_cli("info", ds, check=False)
    assert proc.returncode == 2 and "several formats (folder and webdataset)" in proc.stderr
    run_cli("convert", "--from", "folder", ds, tmp_path / "pq", "--to", "parquet", "-q")


def test_empty_split_is_listed_with_zero(built, tmp_path):
    assert json.loads((built / "imgtools-dataset.json").read_text())["splits"] == {
        "train": 50, "val": 0}
    src = tmp_path / "src"
    shutil.copytree(built / "train", src / "train")
    (src / "val" / "n01440764").mkdir(parents=True)  # a split folder with no image
    run_cli("convert", src, tmp_path / "wds", "--to", "webdataset", "-q")
    sidecar = json.loads((tmp_path / "wds" / "imgtools-dataset.json").read_text())
    assert sidecar["splits"] == {"train": 50, "val": 0}
    assert run_cli("verify", tmp_path / "wds", "-q").returncode == 0


def test_png_repair_note_names_no_extension():
    buf = io.BytesIO()
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(buf, "PNG")
    _outputs, note = render(buf.getvalue(), RenderOptions((32,)))
    assert note == "PNG image, not a JPEG: re-encoded as RGB JPEG"


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.name not in RUN_RECORD}


def test_folder_bytes_do_not_depend_on_shard_size(small_tree, tmp_path):
    for shard_size in ("3", "256"):
        run_cli("build", "imagenette", "--src", small_tree, "--out", tmp_path / shard_size,
                "--split", "random", "--size", "64", "--shard-size", shard_size, "-q")
    assert _files(tmp_path / "3" / "imagenette2-64") == _files(tmp_path / "256" /
                                                                "imagenette2-64")
