"""`imgtools build --format`: every record format written directly by the build, read back by
the real clients, holding the same images as the folder build."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import do_build


@pytest.fixture(scope="module")
def folder_build(kaggle_tree, tmp_path_factory) -> Path:
    report = do_build("imagewang", kaggle_tree.src, tmp_path_factory.mktemp("folder"),
                      sizes=(160,))
    return Path(report["outputs"][0])


def folder_images(root: Path) -> dict[str, bytes]:
    """file name -> bytes (unsup names are already label-free and unique)."""
    return {p.name: p.read_bytes() for p in root.rglob("*.JPEG")}


def test_webdataset_build_reads_in_webdataset(kaggle_tree, folder_build, tmp_path):
    import webdataset as wds

    report = do_build("imagewang", kaggle_tree.src, tmp_path, sizes=(160,), fmt="webdataset")
    root = Path(report["outputs"][0])
    assert root.name == "imagewang-160-webdataset"
    expected = folder_images(folder_build)
    seen = {}
    unlabelled = 0
    for split in ("train", "val", "unsup"):
        shards = sorted(str(p) for p in root.glob(f"data/{split}-*.tar"))
        assert shards, split
        for sample in wds.WebDataset(shards, shardshuffle=False):
            meta = json.loads(sample["json"])
            assert "." not in sample["__key__"]
            seen[meta["filename"]] = sample["jpg"]
            if split == "unsup":
                assert "cls" not in sample and meta.get("wnid") is None
                unlabelled += 1
            else:
                assert int(sample["cls"]) == meta["label"]
    assert seen == expected
    assert unlabelled == report["totals"]["unsup"]


def test_tfrecord_build_reads_in_tfrecord_package(kaggle_tree, folder_build, tmp_path):
    from tfrecord.reader import tfrecord_loader

    report = do_build("imagewang", kaggle_tree.src, tmp_path, sizes=(160,), fmt="tfrecord")
    root = Path(report["outputs"][0])
    expected = folder_images(folder_build)
    seen = {}
    for path in sorted(root.glob("*.tfrecord-*-of-*")):
        if path.suffix == ".index":
            continue
        for ex in tfrecord_loader(str(path), str(path) + ".index"):
            seen[bytes(ex["file_name"]).decode()] = bytes(ex["image"])
    assert seen == expected


def test_parquet_build_loads_in_datasets(kaggle_tree, folder_build, tmp_path):
    datasets = pytest.importorskip("datasets")
    report = do_build("imagewang", kaggle_tree.src, tmp_path, sizes=(160,), fmt="parquet")
    root = Path(report["outputs"][0])
    ds = datasets.load_dataset("parquet", data_files={
        s: str(root / f"{s}-*.parquet") for s in ("train", "val")})
    names = ds["train"].features["label"].names
    # sorted wnid order (README "Labels"): n01440764 tench, then n02086240 Shih-Tzu (Imagewoof)
    assert names[:2] == ["tench", "Shih-Tzu"] and len(names) == 20
    assert ds["train"].num_rows == report["totals"]["train"]
    assert ds["val"].num_rows == report["totals"]["val"]
    assert ds["val"][0]["image"].mode == "RGB"
