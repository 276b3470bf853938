"""The full ImageNet-1k recipe: labels in sorted wnid order (as HF imagenet-1k and TFDS), the
published 1-based map_clsloc ids in the downsampled pickles, and ClassLabel names that
`datasets` accepts (ImageNet-1k has two "crane" and two "maillot" classes)."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from imgtools.build import BuildOptions, build
from imgtools.demo_tree import load_clsloc, make_imagenet_tree
from imgtools.plan import make_plan
from imgtools.recipes import load_recipe
from imgtools.sources import open_source

CLSLOC = load_clsloc()


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("in1k") / "imagenet"
    return make_imagenet_tree(root, layout="devkit", wnids=[s.wnid for s in CLSLOC],
                              train_per_class=1, val_per_class=1, quirks=False,
                              size_range=((40, 30), (64, 48)), small_fraction=0.0)


def test_imagenet_pickles_use_map_clsloc_ids(tree, tmp_path):
    plan = make_plan(load_recipe("imagenet"), open_source(tree.src), split_mode=None, seed=0)
    assert plan.split_mode == "source" and len(plan.items["train"]) == 1000
    build(plan, BuildOptions(out=tmp_path, sizes=[8], fmt="pickle", exact=True, quiet=True,
                             n_jobs=1, format_options={"batches": 10, "crop": False}))
    (root,) = [p for p in tmp_path.iterdir() if p.is_dir() and not p.name.startswith(".")]
    labels, rows = [], []
    for i in range(1, 11):
        with open(root / f"train_data_batch_{i}", "rb") as f:
            d = pickle.load(f)
        labels += d["labels"]
        rows.append(d["data"])
    assert sorted(labels) == list(range(1, 1001))
    # each train image of class <wnid> must carry that wnid's 1-based devkit id
    id_of = {s.wnid: s.ilsvrc_id for s in CLSLOC}
    with open(root / "val_data", "rb") as f:
        val = pickle.load(f)
    assert sorted(val["labels"]) == sorted(id_of.values())
    data = np.concatenate(rows)
    assert data.shape == (1000, 3 * 8 * 8) and data.dtype == np.uint8
    # the row labelled L is the picture of the class whose devkit id is L
    by_label = dict(zip(labels, data))
    for s in CLSLOC[::97]:
        (name,) = tree.train_files[s.wnid]
        im = Image.open(tree.train_dir() / s.wnid / name).convert("RGB")
        pixels = np.asarray(im.resize((8, 8), Image.BOX))
        assert np.array_equal(by_label[s.ilsvrc_id], pixels.transpose(2, 0, 1).reshape(-1))


def test_imagenet_parquet_loads_in_datasets(tree, tmp_path):
    datasets = pytest.importorskip("datasets")
    from imgtools.convert import convert

    plan = make_plan(load_recipe("imagenet"), open_source(tree.src), split_mode=None, seed=0)
    report = build(plan, BuildOptions(out=tmp_path, sizes=[32], quiet=True, n_jobs=1))
    convert(Path(report["outputs"][0]), tmp_path / "pq", "parquet", n_jobs=1, quiet=True)
    ds = datasets.load_dataset("parquet", data_files=str(tmp_path / "pq" / "train-*.parquet"),
                               split="train")
    names = ds.features["label"].names
    assert len(names) == len(set(names)) == 1000
    assert names[:2] == ["tench", "goldfish"]  # sorted wnid order, as HF's imagenet-1k
    assert "crane (n03126707)" in names and "crane (n02012849)" in names
    assert sorted(ds["label"]) == list(range(1000))
    assert ds[0]["image"].size[0] > 0
    # label i is the i-th class in sorted wnid order: check it against each file's wnid prefix
    import pyarrow.parquet as pq

    wnids = sorted(s.wnid for s in CLSLOC)
    table = pq.read_table(sorted((tmp_path / "pq").glob("train-*.parquet")))
    paths = [img["path"] for img in table.column("image").to_pylist()]
    for path, label in zip(paths, table.column("label").to_pylist()):
        assert Path(path).name.startswith(wnids[label] + "_")
