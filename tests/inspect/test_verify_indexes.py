"""verify checks the reader indexes too: a TFRecord ``.index`` must hold its shard's framing
(the ``tfrecord`` reader seeks by it) and a ``<split>.wids.json`` the real shard list and sample
counts (``wids`` maps sample numbers to shards by it). Damage in either is exit 1."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from conftest import run_cli


@pytest.fixture(scope="module")
def converted(small_tree, tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("indexes")
    run_cli("build", "imagenette", "--src", small_tree, "--out", out, "--split", "random",
            "--size", "64", "-j", "1", "-q")
    found = {}
    for fmt in ("tfrecord", "webdataset"):
        found[fmt] = out / fmt
        run_cli("convert", out / "imagenette2-64", found[fmt], "--to", fmt, "-q", "-j", "1",
                "--shard-records", "12")
    return found


def _problems(path: Path) -> list[dict]:
    proc = run_cli("verify", path, "--json", "-q", check=False)
    report = json.loads(proc.stdout)
    assert proc.returncode == (0 if report["ok"] else 1), proc.stderr
    return report["problems"]


def test_clean_indexes_pass(converted):
    assert _problems(converted["tfrecord"]) == []
    assert _problems(converted["webdataset"]) == []


def test_tfrecord_index_of_another_shard(converted, tmp_path):
    ds = tmp_path / "ds"
    shutil.copytree(converted["tfrecord"], ds)
    indexes = sorted(ds.glob("train*.index"))
    shutil.copy(indexes[1], indexes[0])
    # the index's own check, and its SHA256SUMS line: both name only that file
    assert {p["path"] for p in _problems(ds)} == {str(indexes[0])}


def test_tfrecord_index_not_numbers(converted, tmp_path):
    ds = tmp_path / "ds"
    shutil.copytree(converted["tfrecord"], ds)
    index = sorted(ds.glob("val*.index"))[0]
    index.write_text("zero nine\n")
    assert "not `offset length`" in _problems(ds)[0]["what"]


@pytest.mark.parametrize("damage", ["not json", "nsamples", "filesize", "missing shard"])
def test_wids_index_damage(converted, tmp_path, damage):
    ds = tmp_path / "ds"
    shutil.copytree(converted["webdataset"], ds)
    index = ds / "train.wids.json"
    obj = json.loads(index.read_text())
    if damage == "not json":
        index.write_text("garbage")
    else:
        entry = obj["shardlist"][0]
        if damage == "missing shard":
            obj["shardlist"].pop()
        else:
            entry[damage] += 5
        index.write_text(json.dumps(obj))
    problems = _problems(ds)
    assert problems and {p["path"] for p in problems} == {str(index)}
