"""A Parquet label column that is not integers (class names as text, written by ``datasets``)
used to convert with exit 0 and every label gone; now it stops before writing, and the fix the
message gives (``class_encode_column``) keeps every label."""

from __future__ import annotations

import io
import json

import numpy as np
from conftest import run_cli
from PIL import Image


def _jpeg(value: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((8, 8, 3), value, np.uint8)).save(buf, "JPEG")
    return buf.getvalue()


def _hf_parquet(tmp_path, encode: bool):
    import datasets

    ds = datasets.Dataset.from_dict({
        "image": [{"bytes": _jpeg(v), "path": f"{v}.jpg"} for v in (10, 90, 170)],
        "label": ["cat", "dog", "cat"],
    }).cast_column("image", datasets.Image())
    if encode:
        ds = ds.class_encode_column("label")
    folder = tmp_path / ("encoded" if encode else "text")
    folder.mkdir()
    ds.to_parquet(str(folder / "train-00000-of-00001.parquet"))
    return folder


def test_text_labels_stop_before_writing(tmp_path):
    src = _hf_parquet(tmp_path, encode=False)
    proc = run_cli("convert", src, tmp_path / "dst", "--to", "folder", check=False)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "label column 'label' holds string" in proc.stderr
    assert "class_encode_column" in proc.stderr
    assert not (tmp_path / "dst").exists()


def test_the_fix_keeps_every_label(tmp_path):
    src = _hf_parquet(tmp_path, encode=True)
    run_cli("convert", src, tmp_path / "dst", "--to", "folder", "-q")
    info = json.loads(run_cli("info", tmp_path / "dst", "--json", "-q").stdout)
    assert info["unlabelled"] == {}
    assert {c["name"]: c["counts"]["train"] for c in info["classes"]} == {"cat": 2, "dog": 1}
