"""Fields of a sample's .json with the wrong type (tars written by webdataset's own TarWriter):
a file name that is a list was stored as "['a']", a label that is text made the image
unlabelled; both now stop the conversion before writing, naming the sample."""

from __future__ import annotations

import io

import numpy as np
import pytest
from conftest import run_cli
from PIL import Image


def _jpeg() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((8, 8, 3), 99, np.uint8)).save(buf, "JPEG")
    return buf.getvalue()


def _tar(folder, meta: dict) -> None:
    import webdataset as wds

    folder.mkdir()
    with wds.TarWriter(str(folder / "train-000000.tar")) as sink:
        sink.write({"__key__": "good", "jpg": _jpeg(), "json": {"filename": "good.jpg"}})
        sink.write({"__key__": "odd", "jpg": _jpeg(), "json": meta})


@pytest.mark.parametrize(("meta", "said"), [({"filename": ["a.jpg"]}, "filename is list"),
                                            ({"label": "3"}, "label is str"),
                                            ({"label": 2.0}, "label is float")])
def test_wrong_types_stop_before_writing(tmp_path, meta, said):
    _tar(tmp_path / "src", meta)
    proc = run_cli("convert", tmp_path / "src", tmp_path / "dst", "--to", "folder",
                   check=False)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert f"sample 'odd': .json {said}" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "dst").exists()


def test_well_typed_names_are_kept(tmp_path):
    _tar(tmp_path / "src", {"filename": "odd.jpg", "label": None})
    run_cli("convert", tmp_path / "src", tmp_path / "dst", "--to", "folder", "-q")
    names = sorted(p.name for p in (tmp_path / "dst").rglob("*.jpg"))
    assert names == ["good.jpg", "odd.jpg"]
