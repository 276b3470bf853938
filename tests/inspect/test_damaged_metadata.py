"""Damaged metadata beside a dataset: info and convert stop with one clear error (exit 2),
verify reports it as damage found (exit 1), for every format; never a traceback."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from conftest import run_cli

SIDECARS = {"empty": "", "not JSON": "{classes", "no classes": "{}",
            "classes not a list": '{"classes": 5}', "class not an object": '{"classes": [1]}',
            "a list": "[]", "splits of text": '{"classes": [], "splits": {"train": "x"}}'}


@pytest.fixture(scope="module")
def datasets(small_tree, tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("damaged")
    run_cli("build", "imagenette", "--src", small_tree, "--out", out, "--split", "random",
            "--size", "64", "-j", "1", "-q")
    found = {"folder": out / "imagenette2-64"}
    for fmt in ("parquet", "tfrecord", "webdataset"):
        found[fmt] = out / fmt
        run_cli("convert", found["folder"], found[fmt], "--to", fmt, "-q", "-j", "1",
                "--shard-records", "12")
    return found


def _copy(src: Path, tmp_path: Path) -> Path:
    dst = tmp_path / src.name
    shutil.copytree(src, dst)
    return dst


def _verify(path: Path) -> tuple[int, dict]:
    proc = run_cli("verify", path, "--json", "-q", check=False)
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc.returncode, json.loads(proc.stdout)


@pytest.mark.parametrize(("fmt", "kind"), [("folder", k) for k in sorted(SIDECARS)]
                         + [("parquet", "not JSON"), ("parquet", "class not an object")])
def test_damaged_sidecar(datasets, tmp_path, fmt, kind):
    ds = _copy(datasets[fmt], tmp_path)
    (ds / "imgtools-dataset.json").write_text(SIDECARS[kind])
    for command in (["info", ds], ["convert", ds, tmp_path / "dst", "--to", "webdataset"]):
        proc = run_cli(*command, check=False)
        assert proc.returncode == 2, (command, proc.stderr)
        assert proc.stderr.startswith(f"error: {ds / 'imgtools-dataset.json'}: ")
        assert "what to do: restore imgtools-dataset.json" in proc.stderr
        assert "Traceback" not in proc.stderr
    assert not (tmp_path / "dst").exists()
    code, report = _verify(ds)
    assert code == 1 and not report["ok"]
    assert report["problems"][0]["path"] == str(ds / "imgtools-dataset.json")


@pytest.mark.parametrize("content", ['{"counts": [1]}', '{"checksums": "x"}',
                                     '{"counts": {"train": {"n01440764": "3"}}}', "[1]", "no"])
def test_damaged_build_info_is_damage_found(datasets, tmp_path, content):
    ds = _copy(datasets["folder"], tmp_path)
    (ds / "build-info.json").write_text(content)
    code, report = _verify(ds)
    assert code == 1
    assert [p["path"] for p in report["problems"]] == [str(ds / "build-info.json")]


def test_sha256sums_line_not_utf8_is_damage_found(datasets, tmp_path):
    ds = _copy(datasets["folder"], tmp_path)
    with open(ds / "SHA256SUMS", "ab") as f:
        f.write(b"\xff\xfe not a checksum line\n")
    code, report = _verify(ds)
    assert code == 1
    assert "is not `<sha256>  <path>`" in report["problems"][0]["what"]


def test_sha256sums_naming_a_non_utf8_file_is_reported_escaped(datasets, tmp_path):
    ds = _copy(datasets["folder"], tmp_path)
    sums = (ds / "SHA256SUMS").read_bytes()
    first = sums.split(b"  ", 1)[1].split(b"\n", 1)[0]
    (ds / "SHA256SUMS").write_bytes(sums.replace(first, first[:-5] + b"\xff.JPEG", 1))
    proc = run_cli("verify", ds, "-q", check=False)
    assert proc.returncode == 1
    assert "\\xff.JPEG: listed in the build checksums but missing" in proc.stdout


@pytest.mark.parametrize("fmt", ["parquet", "tfrecord", "webdataset"])
def test_a_truncated_shard_is_exit_1_for_every_format(datasets, tmp_path, fmt):
    ds = _copy(datasets[fmt], tmp_path)
    first = sorted(p for p in ds.rglob("*") if p.name.startswith("train") and p.is_file()
                   and not p.name.endswith((".index", ".json")))[0]
    with open(first, "r+b") as f:
        f.truncate(100)
    code, report = _verify(ds)
    assert code == 1
    assert str(first) in {p["path"] for p in report["problems"]}
