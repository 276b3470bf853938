"""How errors reach the user: one line what/where/what-to-do, a JSON object under --json, and
a full disk that names the file and leaves no temporary file behind."""

from __future__ import annotations

import json
import resource
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import run_cli, staging_of


@pytest.fixture(scope="module")
def folder(small_tree, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("built")
    run_cli("build", "imagenette", "--src", small_tree, "--out", out, "--split", "random",
            "--size", "64", "-j", "1", "-q")
    return out / "imagenette2-64"


@pytest.mark.parametrize("args", [["info", "{missing}"], ["verify", "{missing}"],
                                  ["convert", "{missing}", "{dst}", "--to", "parquet"],
                                  ["build", "imagenette", "--src", "{missing}"]])
def test_json_prints_an_error_object(tmp_path, args):
    missing, dst = tmp_path / "no-such-dataset", tmp_path / "dst"
    argv = [a.format(missing=missing, dst=dst) for a in args]
    proc = run_cli(*argv, "--json", check=False)
    assert proc.returncode == 2
    error = json.loads(proc.stdout)["error"]
    assert error["path"].endswith("no-such-dataset")
    assert error["what"] and error["fix"] and error["exit_code"] == 2
    assert "Traceback" not in proc.stderr


def test_json_usage_error_is_an_object_too(tmp_path):
    proc = run_cli("build", "imagenette", "--json", check=False)  # --src is missing
    assert proc.returncode == 2
    assert "--src" in json.loads(proc.stdout)["error"]["what"]


def _limit_file_size(limit: int):
    """In the child: a write past ``limit`` bytes fails with EFBIG, as a full disk fails one
    with ENOSPC (both are an OSError without a file name from ``write``)."""
    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


@pytest.mark.parametrize("to", ["webdataset", "tfrecord", "parquet"])
def test_full_disk_names_the_file_and_leaves_no_temporary(folder, tmp_path, to):
    dst = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "imgtools.cli", "convert", str(folder),
                           str(dst), "--to", to, "-j", "1", "-q", "--json"],
                          capture_output=True, text=True, preexec_fn=_limit_file_size(60_000))
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    error = json.loads(proc.stdout)["error"]
    # the file being written, in the run folder the output is staged in until it is complete
    assert error["path"].startswith(str(staging_of(dst))) and "train" in error["path"], error
    assert "--resume" in error["fix"]
    assert "error: ?" not in proc.stderr and str(staging_of(dst)) in proc.stderr
    left = [p.name for p in tmp_path.rglob("*") if p.name.startswith(".tmp-")]
    assert left == []


def test_full_disk_during_a_build_names_the_file(small_tree, tmp_path):
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "imgtools.cli", "build", "imagenette",
                           "--src", str(small_tree), "--out", str(out), "--split", "random",
                           "--size", "64", "-j", "1", "-q", "--format", "webdataset"],
                          capture_output=True, text=True, preexec_fn=_limit_file_size(20_000))
    assert proc.returncode == 2, proc.stderr
    assert f"error: {out / '.imgtools-run-imagenette2-64-webdataset'}/" in proc.stderr
    assert "/train-" in proc.stderr
    assert [p for p in out.rglob(".tmp-*")] == []
    shutil.rmtree(out)
