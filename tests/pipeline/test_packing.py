"""Record-format builds write files of the format's own size, not one per work shard: the same
files whatever ``--shard-size`` and ``-j``, resumable byte-identically after an interruption
while packing, with SHA256SUMS of the packed files."""

from __future__ import annotations

import hashlib
import json
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from conftest import RUN_RECORD, build_dataset, run_cli

from imgtools.pipeline import packing
from imgtools.pipeline.engine import PASS_STATE


def _files(root: Path) -> dict[str, bytes]:
    """Every file of an output but the run record (build-info.json holds timings and the
    options; the manifest the fingerprint, with the shard size)."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.name not in RUN_RECORD}


def _build(tree, out: Path, fmt: str, **kw) -> Path:
    report = build_dataset("imagewang", tree.src, out, fmt=fmt, **kw)
    return Path(report["outputs"][0])


@pytest.mark.parametrize("fmt", ["tfrecord", "webdataset", "parquet"])
def test_default_target_gives_one_file_per_small_split(kaggle_tree, tmp_path, fmt):
    root = _build(kaggle_tree, tmp_path, fmt, shard_size=16)  # about 10 work shards in train
    data = [p for p in root.rglob("*") if p.is_file() and (
        p.suffix in (".tar", ".parquet") or ".tfrecord-" in p.name and p.suffix != ".index")]
    splits = sorted(p.name.split(".")[0].split("-")[0] for p in data)
    assert splits == ["train", "unsup", "val"], [p.name for p in data]
    assert not list(root.parent.glob(".imgtools-run-*"))  # parts gone with the run folder


def test_same_files_whatever_shard_size_and_jobs(kaggle_tree, tmp_path):
    opts = {"format_options": {"shard_bytes": "400KB"}}
    a = _build(kaggle_tree, tmp_path / "a", "tfrecord", shard_size=16, n_jobs=1, **opts)
    b = _build(kaggle_tree, tmp_path / "b", "tfrecord", shard_size=100, n_jobs=2, **opts)
    files = _files(a)
    assert files == _files(b)
    train = sorted(n for n in files if n.startswith("train.tfrecord-")
                   and not n.endswith(".index"))
    assert len(train) >= 3 and train[0].endswith(f"-of-{len(train):05d}")
    sizes = [len(files[n]) for n in train]
    assert all(s <= 400_000 for s in sizes[:-1]) and sum(sizes) > 2 * 400_000 * 0.8
    sums = dict(line.split("  ")[::-1] for line in files["SHA256SUMS"].decode().splitlines())
    assert set(sums) == {n for n in files if n.startswith(("train.", "val.", "unsup."))}
    assert all(hashlib.sha256(files[n]).hexdigest() == d for n, d in sums.items())


def test_webdataset_by_sample_count(kaggle_tree, tmp_path):
    root = _build(kaggle_tree, tmp_path, "webdataset", shard_size=16,
                  format_options={"shard_records": 50})
    counts = []
    for tar in sorted((root / "data").glob("train-*.tar")):
        with tarfile.open(tar) as t:
            counts.append(len({m.name.split(".")[0] for m in t.getmembers()}))
    info = json.loads((root / "build-info.json").read_text())
    assert counts[:-1] == [50] * (len(counts) - 1) and sum(counts) == info["totals"]["train"]
    assert info["options"]["shard_records"] == 50


def test_parquet_files_by_bytes_keep_100_row_groups(kaggle_tree, tmp_path):
    root = _build(kaggle_tree, tmp_path, "parquet", shard_size=16,
                  format_options={"shard_bytes": "1MB"})
    files = sorted(root.glob("train-*.parquet"))
    assert len(files) >= 2
    for f in files:
        meta = pq.ParquetFile(f).metadata
        rows = [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]
        assert all(r == 100 for r in rows[:-1]) and 0 < rows[-1] <= 100


def test_interrupted_packing_resumes_byte_identically(kaggle_tree, tmp_path, monkeypatch):
    opts = {"shard_size": 16, "n_jobs": 1, "format_options": {"shard_records": 40}}
    clean = _build(kaggle_tree, tmp_path / "clean", "webdataset", **opts)
    real = packing._pack_file
    calls = []

    def dies_on_third_file(task):
        calls.append(task.shard_id)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(task)

    monkeypatch.setattr(packing, "_pack_file", dies_on_third_file)
    with pytest.raises(KeyboardInterrupt):
        _build(kaggle_tree, tmp_path / "resumed", "webdataset", **opts)
    monkeypatch.setattr(packing, "_pack_file", real)
    out = tmp_path / "resumed"
    assert (out / ".imgtools-run-imagewang-160-webdataset").is_dir()
    resumed = _build(kaggle_tree, out, "webdataset", resume=True, **opts)
    assert _files(resumed) == _files(clean)


def test_kill_while_packing_then_resume_is_byte_identical(kaggle_tree, tmp_path):
    """A real ``kill -9`` while the parts are being packed (one image a file, so packing
    lasts long enough to be caught); ``--resume`` ends with the files of an uninterrupted
    run."""
    common = ["build", "imagewang", "--src", str(kaggle_tree.src), "--split", "random",
              "--size", "160", "--format", "webdataset", "-j", "1", "--shard-size", "32",
              "--shard-records", "1", "-q"]
    run_cli(*common, "--out", tmp_path / "clean")
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "imgtools.cli", *common, "--out", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    pack_state = out / ".imgtools-run-imagewang-160-webdataset" / "work" / PASS_STATE
    deadline = time.time() + 120
    while time.time() < deadline and len(list(pack_state.glob("*/*.json"))) < 20:
        time.sleep(0.002)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert len(list(pack_state.glob("*/*.json"))) >= 20, "not killed while packing"
    assert not (out / "imagewang-160-webdataset" / "build-info.json").exists()
    run_cli(*common, "--out", out, "--resume")
    assert _files(out / "imagewang-160-webdataset") == \
        _files(tmp_path / "clean" / "imagewang-160-webdataset")


def test_cli_file_size_options(kaggle_tree, tmp_path):
    run_cli("build", "imagenette", "--src", kaggle_tree.src, "--split", "random", "--size",
            "64", "--format", "tfrecord", "--shard-bytes", "100KB", "--out", tmp_path, "-q")
    files = [p for p in (tmp_path / "imagenette2-64-tfrecord").glob("train.tfrecord-*")
             if p.suffix != ".index"]
    assert len(files) >= 2 and all(p.stat().st_size <= 100_000 for p in sorted(files)[:-1])
    bad = run_cli("build", "imagenette", "--src", kaggle_tree.src, "--size", "64", "--split",
                  "random",
                  "--shard-bytes", "100KB", "--out", tmp_path / "f", check=False)
    assert bad.returncode == 2 and "--shard-bytes" in bad.stderr
    bad = run_cli("build", "imagenette", "--src", kaggle_tree.src, "--size", "8", "--split",
                  "random", "--format", "pickle", "--shard-records", "10", "--out",
                  tmp_path / "p", check=False)
    assert bad.returncode == 2 and "--shard-records" in bad.stderr
