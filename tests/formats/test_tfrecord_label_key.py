"""Foreign TFRecords (written with the ``tfrecord`` package's own writer) whose label feature
is not where the schema says: ``--image-key`` alone used to read every record as unlabelled."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from conftest import run_cli
from PIL import Image


def _write(path, n: int = 6) -> None:
    from tfrecord import TFRecordWriter

    writer = TFRecordWriter(str(path))
    for i in range(n):
        buf = io.BytesIO()
        Image.fromarray(np.full((8, 8, 3), 20 * i, np.uint8)).save(buf, "JPEG")
        writer.write({"img": (buf.getvalue(), "byte"), "lbl": (i % 3, "int"),
                      "width": (8, "int"), "name": (f"x{i}.jpg".encode(), "byte")})
    writer.close()


@pytest.fixture()
def foreign(tmp_path):
    folder = tmp_path / "src"
    folder.mkdir()
    _write(folder / "train.tfrecord")
    return folder


def test_image_key_without_label_key_stops(foreign, tmp_path):
    proc = run_cli("convert", foreign, tmp_path / "dst", "--to", "folder", "--image-key",
                   "img", check=False)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "no label feature 'label', but integer features lbl:" in proc.stderr  # not width
    assert "--label-key lbl" in proc.stderr
    assert not (tmp_path / "dst").exists()


def test_naming_the_label_keeps_it(foreign, tmp_path):
    run_cli("convert", foreign, tmp_path / "dst", "--to", "folder", "--image-key", "img",
            "--label-key", "lbl", "--filename-key", "name", "-q")
    info = json.loads(run_cli("info", tmp_path / "dst", "--json", "-q").stdout)
    assert info["unlabelled"] == {} and info["num_classes"] == 3


def test_label_key_none_reads_them_unlabelled_on_purpose(foreign, tmp_path):
    proc = run_cli("convert", foreign, tmp_path / "dst", "--to", "webdataset", "--image-key",
                   "img", "--label-key", "none", check=False)
    assert proc.returncode == 0, proc.stderr
