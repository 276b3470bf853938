"""Hugging Face ``datasets`` loads our WebDataset outputs in place: ``load_dataset("webdataset",
data_dir=...)`` (every split, Imagewang's unsup included), ``load_dataset(folder)`` (the card's
features: ``cls`` is a ClassLabel with our class names), and a ``push-hub --local-dir`` tree of
a WebDataset build."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import build_dataset

from imgtools.records import DatasetInfo


@pytest.fixture(scope="module")
def wds_build(kaggle_tree, tmp_path_factory) -> tuple[Path, dict]:
    report = build_dataset("imagewang", kaggle_tree.src, tmp_path_factory.mktemp("wds"),
                           fmt="webdataset", shard_size=16)
    return Path(report["outputs"][0]), report


def test_data_dir_loads_every_split(wds_build, tmp_path):
    import datasets

    root, report = wds_build
    ds = datasets.load_dataset("webdataset", data_dir=str(root), cache_dir=str(tmp_path))
    assert {s: ds[s].num_rows for s in ds} == report["totals"]  # train, val and unsup
    names = DatasetInfo.load(root).class_names
    for split in ("train", "val"):
        for row in ds[split].select_columns(["cls", "json"]):
            assert row["cls"] == row["json"]["label"]
            assert row["json"]["class_name"] == names[row["cls"]]
    assert set(ds["unsup"]["cls"]) == {None}


def test_folder_load_gives_class_label_with_names(wds_build, tmp_path):
    import datasets

    root, report = wds_build
    ds = datasets.load_dataset(str(root), cache_dir=str(tmp_path))
    assert {s: ds[s].num_rows for s in ds} == report["totals"]
    info = DatasetInfo.load(root)
    for split in ds:
        feature = ds[split].features["cls"]
        assert isinstance(feature, datasets.ClassLabel)
        assert feature.names == info.unique_class_names
        assert isinstance(ds[split].features["jpg"], datasets.Image)
    counts: dict[str, int] = {}
    for row in ds["train"].select_columns(["cls", "json"]):
        assert ds["train"].features["cls"].int2str(row["cls"]) == row["json"]["class_name"]
        counts[info.wnids[row["cls"]]] = counts.get(info.wnids[row["cls"]], 0) + 1
    assert counts == report["counts"]["train"]
    assert set(ds["unsup"]["cls"]) == {None}
    image = ds["val"][0]["jpg"]
    image.load()
    assert min(image.size) <= 160


def test_card_yaml_and_wids_index_agree_with_the_shards(wds_build):
    import yaml

    root, report = wds_build
    meta = yaml.safe_load((root / "README.md").read_text().split("---\n")[1])
    splits = {s["name"]: s["num_examples"] for s in meta["dataset_info"]["splits"]}
    assert splits == report["totals"]
    for split, n in report["totals"].items():
        index = json.loads((root / f"{split}.wids.json").read_text())
        assert sum(s["nsamples"] for s in index["shardlist"]) == n
        assert all((root / s["url"]).is_file() for s in index["shardlist"])


def test_push_hub_local_dir_of_a_webdataset_build(wds_build, tmp_path):
    import datasets

    from imgtools.hub import push_hub

    root, report = wds_build
    push_hub(root, "alice/imagewang", local_dir=tmp_path / "repo", n_jobs=1, quiet=True,
             staging_dir=tmp_path / "staging")
    ds = datasets.load_dataset(str(tmp_path / "repo"), cache_dir=str(tmp_path / "cache"))
    assert ds["train"].num_rows == report["totals"]["train"]
    assert ds["unsup"].num_rows == report["totals"]["unsup"]
    assert ds["train"].features["label"].names == DatasetInfo.load(root).unique_class_names
