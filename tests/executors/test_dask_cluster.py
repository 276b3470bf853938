"""The Dask executor against a real cluster (``dask scheduler`` + ``dask worker`` processes on
127.0.0.1): the same bytes as a local run for folder and pickle builds and a conversion; a worker
killed mid-run; an unreachable or killed scheduler (exit 3) and ``--resume`` afterwards, on a
new cluster or locally; workers that do not share the storage (refused before any work)."""

from __future__ import annotations

import filecmp
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from imgtools.demo_tree import IMAGENETTE_WNIDS, make_imagenet_tree
from imgtools.pipeline.output import INPUTS_COPY, MANIFEST

WNIDS = list(IMAGENETTE_WNIDS[:4])
VOLATILE = {"command", "seconds", "images_per_second", "records_per_s", "mb_per_s", "path", "dst"}
"""build-info.json keys that differ between any two runs (command line, timing, where it is)."""


def imgtools(*args, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "imgtools.cli", *map(str, args)],
                          capture_output=True, text=True, env=env)


def ok(proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> tuple[Path, Path]:
    """A small ImageNet tree (4 classes, quirks included) and a recipe for its classes."""
    root = tmp_path_factory.mktemp("dask-tree")
    summary = make_imagenet_tree(root / "imagenet", wnids=WNIDS, train_per_class=12,
                                 val_per_class=4, seed=3)
    recipe = root / "tiny.toml"
    recipe.write_text('name = "tiny"\npool = ["train", "val"]\nclasses = ['
                      + ", ".join(f'"{w}"' for w in WNIDS) + "]\n")
    return summary.src, recipe


def build_args(tree, out: Path, fmt: str) -> list:
    src, recipe = tree
    size = ["--size", "8", "--format", "pickle", "--batches", "3"] if fmt == "pickle" else [
        "--size", "64"]
    return ["build", recipe, "--src", src, "--out", out, "--split", "source", "--shard-size",
            "2", "-q", *size]


def assert_same_tree(a: Path, b: Path) -> None:
    """Every file byte-identical, except build-info.json's command line and timing (and the
    manifest, which records build-info.json's size)."""
    files_a = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    files_b = sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    assert files_a == files_b
    assert files_a, "nothing was built"
    for rel in files_a:
        if rel.name in (MANIFEST, INPUTS_COPY):  # the run record: lists build-info's size
            continue
        if rel.name == "build-info.json":
            info_a, info_b = (json.loads((r / rel).read_text()) for r in (a, b))
            for info in (info_a, info_b):
                for key in VOLATILE:
                    info.pop(key, None)
            assert info_a == info_b, rel
        else:
            assert filecmp.cmp(a / rel, b / rel, shallow=False), rel


def executed(cluster) -> dict[str, int]:
    """Tasks each worker of ``cluster`` has run (from the workers themselves)."""
    from distributed import Client

    with Client(cluster.address, timeout=30, set_as_default=False) as client:
        return client.run(lambda dask_worker: dask_worker.state.executed_count)


@pytest.fixture(scope="module")
def local_builds(tree, tmp_path_factory) -> Path:
    """The reference: folder and pickle builds on this machine."""
    out = tmp_path_factory.mktemp("local")
    for fmt in ("folder", "pickle"):
        ok(imgtools(*build_args(tree, out, fmt), "--executor", "local", "-j", "2"))
    return out


@pytest.mark.parametrize("fmt", ["folder", "pickle"])
def test_build_on_the_cluster_is_byte_identical(fmt, tree, local_builds, cluster, tmp_path):
    before = sum(executed(cluster).values())
    out = tmp_path / "out"
    ok(imgtools(*build_args(tree, out, fmt), "--executor", "dask", "--scheduler",
                cluster.address))
    name = "tiny-64" if fmt == "folder" else "tiny_8x8"
    assert_same_tree(local_builds / name, out / name)
    assert sorted(p.name for p in out.iterdir()) == [name]  # no state, no probe left
    planned = json.loads((out / name / "build-info.json").read_text())["planned"]
    shards = sum(-(-n // 2) for n in planned.values())
    ran = executed(cluster)
    assert sum(ran.values()) - before >= shards  # every shard ran on the workers
    assert all(n > 0 for n in ran.values()), ran  # both workers took part


def test_convert_verify_and_stats_on_the_cluster(tree, local_builds, cluster, tmp_path,
                                                 monkeypatch):
    src = local_builds / "tiny-64"
    ok(imgtools("convert", src, tmp_path / "local-wds", "--to", "webdataset",
                "--shard-records", "5", "-q", "-j", "2"))
    env = dict(os.environ, IMGTOOLS_SCHEDULER=cluster.address)  # the variable alone: dask
    ok(imgtools("convert", src, tmp_path / "dask-wds", "--to", "webdataset",
                "--shard-records", "5", "-q", env=env))
    assert_same_tree(tmp_path / "local-wds", tmp_path / "dask-wds")
    for command in (["verify"], ["stats", "--split", "val"]):
        local = json.loads(ok(imgtools(*command, tmp_path / "dask-wds", "--json", "-j", "2")
                              ).stdout)
        remote = json.loads(ok(imgtools(*command, tmp_path / "dask-wds", "--json",
                                        "--scheduler", cluster.address)).stdout)
        assert remote == local
    assert local["images"] == 4 * len(WNIDS)


def wait_for_markers(out: Path, n: int, driver: subprocess.Popen, timeout=120.0) -> int:
    """Block until ``n`` shard markers are in the run folders of ``out`` (the run is under
    way); their count."""
    state = out
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done = sum(len(list(run.rglob("*-0*.json"))) for run in state.glob(".imgtools-run-*"))
        if done >= n:
            return done
        assert driver.poll() is None, driver.communicate()
        time.sleep(0.02)
    raise AssertionError("the run made no progress")


def start(args: list, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "imgtools.cli", *map(str, args)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def test_worker_killed_mid_run_still_completes_identically(tree, local_builds, make_cluster,
                                                           tmp_path):
    cluster = make_cluster(workers=2)
    out = tmp_path / "out"
    driver = start([*build_args(tree, out, "folder"), "--scheduler", cluster.address])
    done = wait_for_markers(out, 3, driver)
    assert done < len(WNIDS) * (12 + 4) // 2  # really mid-run
    cluster.kill_worker(0)
    _, stderr = driver.communicate(timeout=300)
    assert driver.returncode == 0, stderr
    assert_same_tree(local_builds / "tiny-64", out / "tiny-64")
    assert not list((out / "tiny-64").rglob(".tmp-*"))


def test_unreachable_scheduler_is_exit_3(tree, tmp_path, free_address):
    proc = imgtools(*build_args(tree, tmp_path / "out", "folder"), "--scheduler", free_address)
    assert proc.returncode == 3, proc.stderr
    assert f"cannot reach the Dask scheduler at {free_address}" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists()


def test_a_cluster_no_worker_ever_joins_is_exit_3(tree, make_cluster, tmp_path):
    """A scheduler whose workers never come (a batch queue that never starts them): exit 3
    once the wait is over, saying so, and nothing published."""
    cluster = make_cluster(workers=0)
    env = dict(os.environ, IMGTOOLS_WORKER_WAIT="3")
    out = tmp_path / "out"
    proc = imgtools(*build_args(tree, out, "folder"), "--scheduler", cluster.address, env=env)
    assert proc.returncode == 3, proc.stderr
    assert f"the Dask scheduler at {cluster.address} has no workers" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (out / "tiny-64").exists()


@pytest.mark.parametrize("fmt,resume_on", [("folder", "new cluster"), ("pickle", "local")])
def test_scheduler_killed_mid_run_is_exit_3_and_resume_finishes(fmt, resume_on, tree,
                                                               local_builds, make_cluster,
                                                               tmp_path):
    cluster = make_cluster(workers=2)
    out = tmp_path / "out"
    args = build_args(tree, out, fmt)
    driver = start([*args, "--scheduler", cluster.address])
    wait_for_markers(out, 3, driver)
    cluster.kill_scheduler()
    _, stderr = driver.communicate(timeout=120)
    assert driver.returncode == 3, stderr
    assert f"lost the connection to the Dask scheduler at {cluster.address}" in stderr
    assert "--resume" in stderr and "Traceback" not in stderr
    assert list(out.glob(".imgtools-run-*"))  # the finished shards are kept
    if resume_on == "local":
        ok(imgtools(*args, "--resume", "--executor", "local", "-j", "2"))
    else:
        ok(imgtools(*args, "--resume", "--scheduler", make_cluster(workers=2).address))
    name = "tiny-64" if fmt == "folder" else "tiny_8x8"
    assert_same_tree(local_builds / name, out / name)
    assert sorted(p.name for p in out.iterdir()) == [name]


def test_every_worker_gone_is_exit_3_and_resume_on_new_workers_finishes(tree, local_builds,
                                                                        make_cluster, tmp_path):
    cluster = make_cluster(workers=2)
    out = tmp_path / "out"
    args = build_args(tree, out, "folder")
    env = dict(os.environ, IMGTOOLS_WORKER_WAIT="3")  # how long a cluster may have no worker
    driver = start([*args, "--scheduler", cluster.address], env=env)
    wait_for_markers(out, 3, driver)
    cluster.kill_worker(0)
    cluster.kill_worker(1)
    _, stderr = driver.communicate(timeout=120)
    assert driver.returncode == 3, stderr
    assert f"every Dask worker of the scheduler at {cluster.address} is gone" in stderr
    assert "Traceback" not in stderr
    cluster.start_worker()
    ok(imgtools(*args, "--resume", "--scheduler", cluster.address))
    assert_same_tree(local_builds / "tiny-64", out / "tiny-64")


def test_workers_without_the_shared_storage_are_refused_before_any_work(tree, make_cluster,
                                                                        tmp_path):
    """The workers run in a mount namespace where an empty tmpfs hides the folder holding
    --src and --out: what a worker on a machine without the shared mount sees."""
    private = tmp_path / "private"
    src = private / "imagenet"
    shutil.copytree(tree[0], src)
    hide = ["unshare", "--map-root-user", "--mount", "sh", "-c",
            f'mount -t tmpfs none "{private}" && exec "$@"', "sh"]
    if subprocess.run([*hide, "true"], capture_output=True).returncode != 0:
        pytest.skip("unshare (user and mount namespaces) is not available here")
    cluster = make_cluster(workers=2, wrap=hide)
    out = private / "out"
    proc = imgtools(*build_args((src, tree[1]), out, "folder"), "--scheduler", cluster.address)
    assert proc.returncode == 2, proc.stderr
    assert "the Dask workers do not share this machine's files" in proc.stderr
    assert f"{src} is missing here" in proc.stderr
    assert f"cannot read and write in {out}" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not out.exists()  # nothing written, not even the empty --out
