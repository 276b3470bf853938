"""``--schema flowers`` keeps file names: ``id`` stays the competition's extension-less id (the
Kaggle parsing spec still reads every record, checked with TensorFlow), and a ``file_name``
feature carries the real name back."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import run_cli

KAGGLE_PARSE = r'''
import sys, tensorflow as tf
spec = {"image": tf.io.FixedLenFeature([], tf.string),
        "class": tf.io.FixedLenFeature([], tf.int64),
        "id": tf.io.FixedLenFeature([], tf.string)}
n = 0
for raw in tf.data.TFRecordDataset(sys.argv[1:]):
    ex = tf.io.parse_single_example(raw, spec)
    tf.io.decode_jpeg(ex["image"], channels=3)
    n += 1
print(n)
'''


@pytest.fixture(scope="module")
def flowers(small_tree, tmp_path_factory) -> tuple[Path, Path]:
    out = tmp_path_factory.mktemp("flowers")
    run_cli("build", "imagenette", "--src", small_tree, "--out", out, "--split", "random",
            "--size", "64", "-q", "-j", "1")
    folder = out / "imagenette2-64"
    run_cli("convert", folder, out / "tfr", "--to", "tfrecord", "--schema", "flowers", "-q")
    return folder, out / "tfr"


def _names(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*.JPEG"))


def test_names_come_back_with_their_extensions(flowers, tmp_path):
    folder, tfr = flowers
    run_cli("convert", tfr, tmp_path / "back", "--to", "folder", "-q")
    assert _names(tmp_path / "back") == _names(folder)


def test_kaggle_parsing_spec_reads_every_record(flowers):
    python = os.environ.get("IMGTOOLS_CLIENTS_PYTHON", sys.executable)
    if subprocess.run([python, "-c", "import tensorflow"], capture_output=True).returncode:
        pytest.skip("tensorflow is not installed (set IMGTOOLS_CLIENTS_PYTHON)")
    _folder, tfr = flowers
    files = sorted(str(p) for p in tfr.glob("train.tfrecord-*") if p.suffix != ".index")
    proc = subprocess.run([python, "-c", KAGGLE_PARSE, *files], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split()[-1] == "30"
