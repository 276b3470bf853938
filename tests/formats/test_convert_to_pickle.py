"""``imgtools convert --to pickle|npz --size N``: the pickle format is an ordinary output of a
conversion, with the same rows, shuffle, mean and batches as ``build --format pickle``.

The reference pixels are the published resizer's (PatrykChrabaszcz/Imagenet32_Scripts,
``image_resizer_imagent.py``: open, ``convert("RGB")`` when not RGB, BOX resize to N x N, then
``image2numpy``'s R, G, B planes), re-typed here; files are read with plain ``pickle.load`` and
``np.load`` as the published loaders do, not with our reader."""

from __future__ import annotations

import io
import pickle
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from conftest import FOLDER_WNIDS, make_folder, run_cli, tree_digest
from PIL import Image

from imgtools.convert import convert
from imgtools.errors import UserError


def published_row(data: bytes, size: int) -> bytes:
    im = Image.open(io.BytesIO(data))
    if im.mode != "RGB":
        im = im.convert(mode="RGB")
    img = np.asarray(im.resize((size, size), Image.BOX))
    return np.concatenate([img[:, :, c].flatten() for c in range(3)]).astype(np.uint8).tobytes()


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return make_folder(tmp_path_factory.mktemp("src") / "ds", per_class=6)


def _source(folder: Path, split: str) -> Counter:
    """(1-based label, published row) of every image of ``split`` in the folder dataset."""
    return Counter((FOLDER_WNIDS.index(p.parent.name) + 1, published_row(p.read_bytes(), 16))
                   for p in sorted((folder / split).rglob("*.JPEG")))


def _unpickle(path: Path) -> dict:
    with open(path, "rb") as f:
        return pickle.load(f)


def test_folder_to_pickle_gives_the_published_rows_labels_and_mean(folder, tmp_path):
    out = tmp_path / "pk"
    report = convert(folder, out, "pickle", size=16, batches=2, seed=3, quiet=True, n_jobs=1)
    assert report["to"] == "pickle" and report["labels"].startswith("1-based")
    batches = [_unpickle(out / f"train_data_batch_{i}") for i in (1, 2)]
    data = np.concatenate([b["data"] for b in batches])
    labels = [y for b in batches for y in b["labels"]]
    assert Counter(zip(labels, map(bytes, data))) == _source(folder, "train")
    mean = np.mean(data, axis=0)
    for b in batches:
        assert b["mean"].tobytes() == mean.tobytes()  # bit for bit, in every train file
    val = _unpickle(out / "val_data")
    assert Counter(zip(val["labels"], map(bytes, val["data"]))) == _source(folder, "val")
    meta = _unpickle(out / "batches.meta")
    assert meta["wnids"] == list(FOLDER_WNIDS) and meta["num_vis"] == 3 * 16 * 16
    if (folder / "unsup").is_dir():
        unsup = _unpickle(out / "unsup_data")
        assert "labels" not in unsup and len(unsup["data"]) == len(list(
            (folder / "unsup").rglob("*.JPEG")))


def test_npz_from_the_command_line_holds_the_same_arrays_and_jobs_do_not_matter(folder,
                                                                                tmp_path):
    convert(folder, tmp_path / "pk", "pickle", size=16, batches=2, seed=3, quiet=True,
            n_jobs=1)
    run_cli("convert", folder, tmp_path / "npz", "--to", "npz", "--size", "16", "--batches",
            "2", "--seed", "3", "-j", "2", "-q")
    for name in ("train_data_batch_1", "train_data_batch_2", "val_data"):
        d = _unpickle(tmp_path / "pk" / name)
        with np.load(tmp_path / "npz" / f"{name}.npz", allow_pickle=False) as z:
            np.testing.assert_array_equal(z["data"], d["data"])
            assert z["labels"].tolist() == d["labels"]
    run_cli("convert", folder, tmp_path / "pk2", "--to", "pickle", "--size", "16",
            "--batches", "2", "--seed", "3", "-j", "2", "-q")
    assert tree_digest(tmp_path / "pk2") == tree_digest(tmp_path / "pk")


@pytest.mark.parametrize("args, words", [
    (["--to", "pickle"], "needs --size"),
    (["--to", "npz", "--size", "100"], "out of range"),
    (["--to", "pickle", "--size", "8", "--batches", "1000"], "more than the"),
    (["--to", "pickle", "--size", "8", "--shard-records", "5"], "--batches files"),
    (["--to", "parquet", "--seed", "1"], "pickle/npz output only"),
])
def test_bad_arguments_are_refused_before_anything_is_written(folder, tmp_path, args, words):
    proc = run_cli("convert", folder, tmp_path / "out", *args, check=False)
    assert proc.returncode == 2 and words in proc.stderr, proc.stderr
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".imgtools-run-*"))


def test_a_split_that_has_no_place_in_the_layout_is_refused(folder, tmp_path):
    other = tmp_path / "other"
    make_folder(other, per_class=2)
    (other / "val").rename(other / "test")
    with pytest.raises(UserError, match="split 'test' has no file"):
        convert(other, tmp_path / "out", "pickle", size=8, quiet=True, n_jobs=1)
    assert not (tmp_path / "out").exists()
