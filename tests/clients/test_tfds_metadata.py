"""``tfds.builder_from_directory`` loads our TFRecord outputs in place (the real
tensorflow-datasets, in the clients' Python): split sizes, class names, every record's label,
for the default ``tfds`` schema of a build and the ``slim`` and ``flowers`` schemas of a
conversion."""

from __future__ import annotations

import csv
import json
import subprocess
from pathlib import Path

import pytest
from conftest import build_dataset, clients_python

from imgtools.convert import convert
from imgtools.records import DatasetInfo

_TFDS_SCRIPT = """
import json, sys
import tensorflow_datasets as tfds


def load(root, schema):
    builder = tfds.builder_from_directory(root)
    label_path = {"tfds": ("label",), "slim": ("image", "class", "label"),
                  "flowers": ("class",)}[schema]
    feature = builder.info.features
    for key in label_path:
        feature = feature[key]
    out = {"names": feature.names, "splits": {s: i.num_examples for s, i in
                                              builder.info.splits.items()}, "rows": {}}
    for split in builder.info.splits:
        rows = []
        for ex in tfds.as_numpy(builder.as_dataset(split=split, shuffle_files=False)):
            label, name = ex, ex
            for key in label_path:
                label = label[key]
            if schema == "slim":
                name, image = ex["image"]["filename"], ex["image"]["encoded"]
            else:
                name, image = ex["file_name" if schema == "tfds" else "id"], ex["image"]
            assert image.ndim == 3 and image.shape[2] == 3, image.shape
            rows.append([name.decode(), int(label)])
        out["rows"][split] = rows
    if schema == "tfds":
        image, label = next(iter(tfds.as_numpy(builder.as_dataset(split="val",
                                                                  as_supervised=True))))
        out["supervised"] = [list(image.shape), int(label)]
    return out


print(json.dumps({root: load(root, schema) for root, schema in zip(sys.argv[1::2],
                                                                   sys.argv[2::2])}))
"""


@pytest.fixture(scope="module")
def tfrecord_build(kaggle_tree, tmp_path_factory) -> tuple[Path, dict]:
    report = build_dataset("imagewang", kaggle_tree.src, tmp_path_factory.mktemp("tfr"),
                           fmt="tfrecord", shard_size=64)
    return Path(report["outputs"][0]), report


@pytest.fixture(scope="module")
def loaded(tfrecord_build, tmp_path_factory) -> dict[str, dict]:
    """schema -> what TFDS read: the build (tfds schema) and conversions of it to the slim and
    flowers schemas, all read by one TFDS process (TensorFlow takes long to start)."""
    python = clients_python("tensorflow_datasets")
    root, _report = tfrecord_build
    roots = {"tfds": root}
    for schema in ("slim", "flowers"):
        roots[schema] = tmp_path_factory.mktemp(schema) / "out"
        convert(root, roots[schema], "tfrecord", quiet=True, n_jobs=1, schema=schema,
                shard_records=60)
    args = [str(a) for schema, path in roots.items() for a in (path, schema)]
    run = subprocess.run([python, "-c", _TFDS_SCRIPT, *args], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-3000:]
    by_root = json.loads(run.stdout.strip().splitlines()[-1])
    return {schema: by_root[str(path)] for schema, path in roots.items()}


def _expected_labels(root: Path) -> dict[str, int]:
    """file name -> label, from the fastai CSV beside the build (path train/<wnid>/<file>)."""
    wnids = DatasetInfo.load(root).wnids
    with open(next(root.glob("noisy_*.csv")), newline="") as f:
        return {Path(row["path"]).name: wnids.index(Path(row["path"]).parent.name)
                for row in csv.DictReader(f)}


def test_default_schema_build_loads_in_place(tfrecord_build, loaded):
    root, report = tfrecord_build
    got = loaded["tfds"]
    assert got["names"] == DatasetInfo.load(root).unique_class_names
    assert got["splits"] == report["totals"]  # train, val and unsup
    expected = _expected_labels(root)
    for split in ("train", "val"):
        assert len(got["rows"][split]) == report["totals"][split]
        assert all(expected[name] == label for name, label in got["rows"][split])
    assert {label for _name, label in got["rows"]["unsup"]} == {-1}
    shape, label = got["supervised"]
    assert len(shape) == 3 and 0 <= label < len(got["names"])


@pytest.mark.parametrize("schema", ["slim", "flowers"])
def test_other_schemas_load_in_place(tfrecord_build, loaded, schema):
    root, report = tfrecord_build
    got = loaded[schema]
    assert got["names"] == DatasetInfo.load(root).unique_class_names
    expected_splits = dict(report["totals"])
    if schema == "flowers":  # its unlabelled records have no `class`: not a TFDS split
        expected_splits.pop("unsup")
    assert got["splits"] == expected_splits
    expected = {Path(n).stem if schema == "flowers" else n: label
                for n, label in _expected_labels(root).items()}
    assert all(expected[name] == label for name, label in got["rows"]["train"])


def test_gzip_output_gets_no_tfds_metadata(tfrecord_build, tmp_path):
    root, _report = tfrecord_build
    convert(root, tmp_path / "gz", "tfrecord", quiet=True, n_jobs=1, compression="gzip")
    assert not (tmp_path / "gz" / "dataset_info.json").exists()
    assert (root / "dataset_info.json").is_file()
    assert (root / "label.labels.txt").read_text().splitlines() == \
        DatasetInfo.load(root).unique_class_names
