"""A downsampled batch read without its batches.meta: ImageNet-1k's names only when the labels
show it is ImageNet-1k (a published batch holds all 1000 classes), never for a subset's file."""

from __future__ import annotations

import json
import pickle
import shutil

import numpy as np
from conftest import run_cli


def test_a_subset_batch_alone_gets_numbered_classes(small_tree, tmp_path):
    out = tmp_path / "out"
    run_cli("build", "imagenette", "--src", small_tree, "--out", out, "--split", "source",
            "--size", "8", "--format", "pickle", "--batches", "2", "-q", "-j", "1")
    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copy(next(out.glob("*/train_data_batch_1")), alone)
    info = json.loads(run_cli("info", alone, "--json", "-q").stdout)
    assert info["num_classes"] == 10
    assert [c["wnid"] for c in info["classes"]][:2] == ["000", "001"]
    assert "not ImageNet-1k" in info["label_order"]
    run_cli("convert", alone, tmp_path / "folder", "--to", "folder", "-q")
    assert "n01440764" not in {p.name for p in (tmp_path / "folder" / "train").iterdir()}


def test_a_published_style_batch_is_imagenet_1k(tmp_path):
    labels = list(range(1, 1001))
    batch = {"data": np.zeros((1000, 3 * 8 * 8), np.uint8), "labels": labels,
             "mean": np.zeros(3 * 8 * 8)}
    folder = tmp_path / "Imagenet8_train"
    folder.mkdir()
    with open(folder / "train_data_batch_1", "wb") as f:
        pickle.dump(batch, f)
    info = json.loads(run_cli("info", folder, "--json", "-q").stdout)
    assert info["num_classes"] == 1000
    assert info["classes"][0]["wnid"] == "n02119789"  # map_clsloc id 1: kit fox
    assert info["label_order"] == "map_clsloc (devkit order)"
