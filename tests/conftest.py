"""Shared fixtures: small generated ImageNet trees, one per layout (session-scoped: made once),
and real Dask clusters on 127.0.0.1 for tests/executors."""

from __future__ import annotations

import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from imgtools.demo_tree import IMAGENETTE_WNIDS, IMAGEWOOF_WNIDS, make_imagenet_tree

REPO = Path(__file__).resolve().parent.parent
SHARED_REFERENCE = REPO.parent / "shared" / "reference"
WNIDS = list(IMAGENETTE_WNIDS + IMAGEWOOF_WNIDS)


def psnr(a, b) -> float:
    """PSNR in dB between two images or arrays of 0-255 values (inf when identical)."""
    x = np.asarray(a, dtype=np.float64)
    y = np.asarray(b, dtype=np.float64)
    mse = float(np.mean((x - y) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)


@pytest.fixture(scope="session")
def trees(tmp_path_factory) -> dict:
    """The same images in all three layouts (same seed), Imagenette + Imagewoof classes."""
    out = {}
    for layout in ("kaggle", "devkit", "valprep"):
        root = tmp_path_factory.mktemp(f"tree-{layout}")
        out[layout] = make_imagenet_tree(root / "imagenet", layout=layout, wnids=WNIDS,
                                         train_per_class=10, val_per_class=4, seed=0)
    return out


@pytest.fixture(scope="session")
def kaggle_tree(trees):
    return trees["kaggle"]


def run_cli(*args: str, cwd: Path | None = None, env: dict | None = None,
            check: bool = True) -> subprocess.CompletedProcess:
    """Run ``imgtools`` as a user would (a real process: exit codes, stderr)."""
    proc = subprocess.run([sys.executable, "-m", "imgtools.cli", *map(str, args)], cwd=cwd,
                          env=env, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"imgtools {' '.join(map(str, args))} exited {proc.returncode}:\n"
                             f"{proc.stdout}\n{proc.stderr}")
    return proc


# --------------------------------------------------------------------------- a real Dask cluster
# For tests/executors: ``dask scheduler`` and ``dask worker`` processes started from this venv's
# bin (the executables a user runs) on 127.0.0.1, one thread and a small memory limit each, so
# two of them fit CI's 2 cores.

DASK_BIN = Path(sys.executable).parent
CLUSTER_START_TIMEOUT = 90.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def dask_exe() -> str:
    pytest.importorskip("distributed", reason="pip install -e '.[test,dask]' for the cluster tests")
    exe = DASK_BIN / "dask"
    if not exe.exists():
        found = shutil.which("dask")
        if not found:
            pytest.skip("the `dask` command is not installed (pip install 'imgtools[dask]')")
        return found
    return str(exe)


class Cluster:
    """One scheduler and ``workers`` workers; ``wrap`` prefixes the worker command (e.g. to
    run workers in a mount namespace of their own). Logs go to ``logs/``."""

    def __init__(self, root: Path, workers: int = 2, wrap: list[str] | None = None):
        self.root = root
        self.logs = root / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.address = f"tcp://127.0.0.1:{self.port}"
        self.wrap = wrap or []
        self.scheduler: subprocess.Popen | None = None
        self.workers: list[subprocess.Popen] = []
        self._start(workers)

    def _spawn(self, args: list[str], log: str) -> subprocess.Popen:
        out = open(self.logs / log, "w")  # noqa: SIM115 - closed with the process
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        return subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env,
                                cwd=self.logs, start_new_session=True)

    def _start(self, workers: int) -> None:
        self.scheduler = self._spawn([dask_exe(), "scheduler", "--host", "127.0.0.1", "--port",
                                      str(self.port), "--no-dashboard"], "scheduler.log")
        self._wait_for("scheduler.log", "Scheduler at")
        for i in range(workers):
            self.add_worker(i)
        for i in range(workers):
            self._wait_for(f"worker-{i}.log", "Registered to")

    def add_worker(self, i: int) -> None:
        # --no-nanny: the process a test kills is the worker itself, not a nanny that would
        # restart it; one thread and 600 MB, as on a small cluster node.
        self.workers.append(self._spawn(
            [*self.wrap, dask_exe(), "worker", self.address, "--nthreads", "1", "--no-nanny",
             "--memory-limit", "600MB", "--no-dashboard", "--name", f"w{i}"],
            f"worker-{i}.log"))

    def start_worker(self) -> None:
        """One more worker, registered when this returns."""
        i = len(self.workers)
        self.add_worker(i)
        self._wait_for(f"worker-{i}.log", "Registered to")

    def _wait_for(self, log: str, text: str) -> None:
        deadline = time.monotonic() + CLUSTER_START_TIMEOUT
        path = self.logs / log
        while time.monotonic() < deadline:
            if path.is_file() and text in path.read_text(errors="replace"):
                return
            time.sleep(0.2)
        raise AssertionError(f"{log} never said {text!r}:\n{path.read_text(errors='replace')}")

    def kill_worker(self, i: int) -> None:
        self.workers[i].send_signal(signal.SIGKILL)
        self.workers[i].wait()

    def kill_scheduler(self) -> None:
        assert self.scheduler is not None
        self.scheduler.send_signal(signal.SIGKILL)
        self.scheduler.wait()

    def stop(self) -> None:
        for proc in [*self.workers, self.scheduler]:
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in [*self.workers, self.scheduler]:
            if proc is None:
                continue
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.fixture
def make_cluster(tmp_path):
    """Start clusters on demand (``make_cluster(workers=2)``); all stopped at the end."""
    started: list[Cluster] = []

    def make(workers: int = 2, wrap: list[str] | None = None) -> Cluster:
        cluster = Cluster(tmp_path / f"cluster-{len(started)}", workers, wrap)
        started.append(cluster)
        return cluster

    yield make
    for cluster in started:
        cluster.stop()


@pytest.fixture
def free_address() -> str:
    """A scheduler address nobody listens on."""
    return f"tcp://127.0.0.1:{free_port()}"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A two-worker cluster shared by the tests of one module that do not kill it."""
    c = Cluster(tmp_path_factory.mktemp("cluster"), workers=2)
    yield c
    c.stop()
