"""A real Dask cluster on 127.0.0.1 for the executor tests: ``dask scheduler`` and ``dask
worker`` processes started from this venv's bin (the executables a user runs), one thread and
a small memory limit each, so two of them fit CI's 2 cores."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent
START_TIMEOUT = 90.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def dask_exe() -> str:
    pytest.importorskip("distributed", reason="pip install -e '.[test,dask]' for the cluster tests")
    exe = BIN / "dask"
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
        deadline = time.monotonic() + START_TIMEOUT
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
