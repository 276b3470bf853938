"""``croissant.json`` beside every built dataset, checked with ``mlcroissant`` (the reference
Croissant reader, in the clients' Python): it validates, and for the formats it can read
(JPEG folders, Parquet, a push-hub tree) its records come back with the right labels and
class names; for the others (TFRecord, WebDataset, pickle) the class table reads back."""

from __future__ import annotations

import csv
import json
import subprocess
from pathlib import Path

import pytest
from conftest import build_dataset, clients_python

from imgtools.records import DatasetInfo

_MLC_SCRIPT = """
import json, sys
import mlcroissant as mlc

def plain(value):
    if isinstance(value, bytes):
        return value.decode()
    if hasattr(value, "size") and hasattr(value, "mode"):  # a PIL image, decoded
        return list(value.size)
    return value.item() if hasattr(value, "item") else value

out = {}
for arg in sys.argv[1:]:
    path, *record_sets = arg.split(",")
    dataset = mlc.Dataset(jsonld=path)  # raises on any validation error
    out[path] = {rs: [{k.split("/", 1)[1]: plain(v) for k, v in row.items()}
                      for row in dataset.records(record_set=rs)] for rs in record_sets}
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def builds(kaggle_tree, tmp_path_factory) -> dict[str, tuple[Path, dict]]:
    out = {}
    for fmt in ("folder", "parquet", "webdataset", "tfrecord"):
        report = build_dataset("imagewang", kaggle_tree.src, tmp_path_factory.mktemp(fmt),
                               fmt=fmt)
        out[fmt] = (Path(report["outputs"][0]), report)
    report = build_dataset("imagenette", kaggle_tree.src, tmp_path_factory.mktemp("pickle"),
                           sizes=(8,), fmt="pickle", format_options={"batches": 2})
    out["pickle"] = (Path(report["outputs"][0]), report)
    return out


def _read(*requests: tuple[Path, list[str]]) -> dict[str, dict]:
    python = clients_python("mlcroissant")
    args = [",".join([str(path), *record_sets]) for path, record_sets in requests]
    run = subprocess.run([python, "-c", _MLC_SCRIPT, *args], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(run.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def read_back(builds, tmp_path_factory) -> dict[str, dict]:
    """Everything mlcroissant reads, in one process (it takes seconds to start)."""
    hub = _hub_tree(builds["webdataset"][0], tmp_path_factory.mktemp("hub"))
    requests = {"folder": ["classes", "images", "unsup"], "parquet": ["classes", "images"],
                "webdataset": ["classes"], "tfrecord": ["classes"], "pickle": ["classes"]}
    paths = {fmt: builds[fmt][0] / "croissant.json" for fmt in requests}
    got = _read(*((paths[f], rs) for f, rs in requests.items()), (hub, ["classes", "160px"]))
    return {**{fmt: got[str(path)] for fmt, path in paths.items()}, "hub": got[str(hub)]}


def _hub_tree(root: Path, tmp: Path) -> Path:
    """The croissant.json of a push-hub --local-dir tree of a build (push-hub writes it)."""
    from imgtools.hub import push_hub

    repo = tmp / "repo"
    push_hub(root, "alice/imagewang", local_dir=repo, n_jobs=1, quiet=True,
             staging_dir=tmp / "staging")
    return repo / "croissant.json"


def _expected(root: Path) -> tuple[dict[str, int], list[str]]:
    """file name -> label from the fastai CSV beside a build, and the class names."""
    info = DatasetInfo.load(root)
    with open(next(root.glob("noisy_*.csv")), newline="") as f:
        labels = {Path(r["path"]).name: info.wnids.index(Path(r["path"]).parent.name)
                  for r in csv.DictReader(f)}
    return labels, info.unique_class_names


def _check_classes(rows: list[dict], root: Path) -> None:
    info = DatasetInfo.load(root)
    assert [(r["label"], r["wnid"], r["name"]) for r in rows] == [
        (i, c.wnid, name) for i, (c, name) in enumerate(zip(info.classes,
                                                             info.unique_class_names))]


def test_folder_records_have_right_labels_and_names(builds, read_back):
    root, report = builds["folder"]
    got = read_back["folder"]
    _check_classes(got["classes"], root)
    labels, names = _expected(root)
    images = got["images"]
    assert {s: sum(r["split"] == s for r in images) for s in ("train", "val")} == \
        {s: report["totals"][s] for s in ("train", "val")}
    for row in images:
        assert row["label"] == labels[row["filename"]]
        assert row["class_name"] == names[row["label"]]
        assert max(row["image"]) >= 1  # decoded by mlcroissant
    assert len(got["unsup"]) == report["totals"]["unsup"]


def test_parquet_records_have_right_labels(builds, read_back):
    root, report = builds["parquet"]
    got = read_back["parquet"]
    _check_classes(got["classes"], root)
    labels, _names = _expected(root)
    by_split: dict[str, int] = {}
    for row in got["images"]:
        by_split[row["split"]] = by_split.get(row["split"], 0) + 1
        assert row["label"] == (labels[row["filename"]] if row["split"] != "unsup" else -1)
    assert by_split == report["totals"]


@pytest.mark.parametrize("fmt", ["webdataset", "tfrecord", "pickle"])
def test_described_formats_validate_and_carry_the_class_table(builds, read_back, fmt):
    root, _report = builds[fmt]
    _check_classes(read_back[fmt]["classes"], root)
    doc = json.loads((root / "croissant.json").read_text())
    files = doc["distribution"][0]
    assert "mlcroissant does not read records" in files["description"]
    assert all(any(root.glob(pattern)) for pattern in files["includes"])


def test_hub_layout_records(builds, read_back):
    root, report = builds["webdataset"]
    got = read_back["hub"]
    _check_classes(got["classes"], root)
    splits: dict[str, int] = {}
    for row in got["160px"]:
        splits[row["split"]] = splits.get(row["split"], 0) + 1
    assert splits == {"train": report["totals"]["train"], "validation": report["totals"]["val"],
                      "unsup": report["totals"]["unsup"]}
