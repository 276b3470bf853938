"""The Dask executor when the cluster cannot run the work, against real ``dask scheduler`` and
``dask worker`` processes on 127.0.0.1: a source image whose decoding takes a worker over its
memory limit every time (its nanny kills it; after the scheduler's allowed attempts the task
fails with Dask's KilledWorker), and workers running another imgtools than the driver (refused
before any work starts, or at their first task when they join later)."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import run_cli, tree_digest
from PIL import Image

from imgtools.demo_tree import IMAGENETTE_WNIDS, make_imagenet_tree

WNIDS = list(IMAGENETTE_WNIDS[:3])
HUGE_SIDE = 8000
"""A legal image (64 M pixels: imgtools decodes up to 64 M whole) whose decoding needs about
200 MB more than a worker of WORKER_MEMORY has."""
WORKER_MEMORY = "350MB"
"""Enough for the workers' normal tasks (about 100 MB each), not for the huge image."""


@pytest.fixture(scope="module")
def tree_with_huge_image(tmp_path_factory) -> tuple[Path, Path, Path]:
    """A small ImageNet tree (valprep layout) with one huge image among the train images, the
    way ImageNet holds a PNG under a .JPEG name (n02105855_2933.JPEG), and a recipe; the
    source, the recipe and the huge image."""
    root = tmp_path_factory.mktemp("huge-tree")
    summary = make_imagenet_tree(root / "imagenet", layout="valprep", wnids=WNIDS,
                                 train_per_class=4, val_per_class=2, quirks=False, seed=5)
    huge = summary.src / "train" / WNIDS[0] / f"{WNIDS[0]}_99999.JPEG"
    # A flat grey PNG: a few hundred KB on disk, 64 M pixels decoded.
    Image.new("L", (HUGE_SIDE, HUGE_SIDE), 128).save(huge, format="PNG")
    recipe = root / "huge.toml"
    recipe.write_text('name = "huge"\npool = ["train", "val"]\nclasses = ['
                      + ", ".join(f'"{w}"' for w in WNIDS) + "]\n")
    return summary.src, recipe, huge


def build_args(src: Path, recipe: Path, out: Path) -> list:
    # One shard per split: the huge image's shard is train-00000.
    return ["build", recipe, "--src", src, "--out", out, "--split", "source", "--size", "64",
            "--shard-size", "100", "-q"]


def test_a_task_that_kills_its_workers_every_time_is_exit_3_naming_it_and_resume_finishes(
        tree_with_huge_image, make_cluster, tmp_path):
    """Each worker that takes the huge image's shard goes over its memory limit and is killed
    by its nanny; after the scheduler's allowed attempts (here 1 retry) the run stops with
    exit 3 naming the shard, nothing published; --resume on workers with more memory
    finishes the same output as a local build."""
    src, recipe, huge = tree_with_huge_image
    reference = tmp_path / "local"
    run_cli(*build_args(src, recipe, reference), "--executor", "local", "-j", "2")
    small = make_cluster(workers=2, nanny=True, memory=WORKER_MEMORY, scheduler_env={
        "DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES": "1"})
    out = tmp_path / "out"
    args = build_args(src, recipe, out)
    proc = run_cli(*args, "--scheduler", small.address, check=False)
    assert proc.returncode == 3, proc.stderr
    assert ("the Dask task train-00000 killed each worker that ran it (2 workers"
            in proc.stderr)
    assert "--resume" in proc.stderr and "Traceback" not in proc.stderr
    assert not (out / "huge-64").exists()  # nothing published
    assert list(out.glob(".imgtools-run-*"))  # the run folder, for --resume
    killed = sum("exceeded 95% memory budget" in log.read_text(errors="replace")
                 for log in small.logs.glob("worker-*.log"))
    assert killed >= 1  # the nannies killed workers for their memory, as on a real cluster
    roomy = make_cluster(workers=2, nanny=True, memory="2GB")
    run_cli(*args, "--resume", "--scheduler", roomy.address)
    assert tree_digest(out / "huge-64") == tree_digest(reference / "huge-64")
    assert sorted(p.name for p in out.iterdir()) == ["huge-64"]


def installed_elsewhere(target: Path, version: str) -> Path:
    """A copy of this imgtools installed under ``target`` as version ``version`` (its
    package and its dist-info, what ``pip install --target`` leaves): a worker whose
    PYTHONPATH starts there runs that imgtools, as a node with an older install would."""
    import imgtools

    shutil.copytree(Path(imgtools.__file__).parent, target / "imgtools",
                    ignore=shutil.ignore_patterns("__pycache__"))
    info = target / f"imgtools-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: imgtools\nVersion: {version}\n")
    return target


def test_workers_with_another_imgtools_are_refused_before_any_work(tree_with_huge_image,
                                                                   make_cluster, tmp_path):
    from imgtools import __version__

    src, recipe, huge = tree_with_huge_image
    old = installed_elsewhere(tmp_path / "old-env", "0.0.9")
    cluster = make_cluster(workers=2, worker_env={"PYTHONPATH": str(old)})
    out = tmp_path / "out"
    proc = run_cli(*build_args(src, recipe, out), "--scheduler", cluster.address, check=False)
    assert proc.returncode == 2, proc.stderr
    assert "the Dask workers run other versions than this machine" in proc.stderr
    assert proc.stderr.count(f"imgtools 0.0.9 on this worker, {__version__} on the driver") == 2
    assert "pillow" not in proc.stderr.split("what to do")[0].lower()  # only what differs
    assert "Traceback" not in proc.stderr
    assert not out.exists()  # refused before anything was written


def first_marker(out: Path, driver: subprocess.Popen, timeout: float = 120.0) -> None:
    """Block until a shard's done marker is in a run folder of ``out`` (work has started)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(run.rglob("*-0*.json") for run in out.glob(".imgtools-run-*")):
            return
        assert driver.poll() is None, driver.communicate()
        time.sleep(0.01)
    raise AssertionError("the run made no progress")


def test_a_worker_with_another_imgtools_joining_mid_run_fails_its_first_task(
        tree_with_huge_image, make_cluster, tmp_path):
    """The check before work sees the workers of that moment; one that joins later (an
    autoscaling cluster) from another environment fails its first task with the mismatch
    (exit 2), rather than writing other bytes."""
    src, recipe, huge = tree_with_huge_image
    cluster = make_cluster(workers=1)
    out = tmp_path / "out"
    args = [*build_args(src, recipe, out), "--shard-size", "1"]  # the last one counts
    driver = subprocess.Popen([sys.executable, "-m", "imgtools.cli", *map(str, args),
                               "--scheduler", cluster.address],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first_marker(out, driver)
    cluster.workers[0].send_signal(signal.SIGSTOP)  # the good worker takes no more tasks
    old = installed_elsewhere(tmp_path / "old-env", "0.0.9")
    cluster.start_worker(env={"PYTHONPATH": str(old)})
    cluster.kill_worker(0)  # its tasks go to the newcomer
    _, stderr = driver.communicate(timeout=300)
    assert driver.returncode == 2, stderr
    assert "runs other versions than the driver: imgtools 0.0.9 on this worker" in stderr
    assert "Traceback" not in stderr
    assert not (out / "huge-64").exists()
