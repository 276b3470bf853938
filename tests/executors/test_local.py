"""The local executor's worker processes: how they start, that a task's error and a dead
worker reach the caller as they should, and that no worker outlives the run, even when its
parent is killed with kill -9. Each case runs in a subprocess of its own, so that the test
process's threads and state do not decide how workers start."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

LINUX_311 = sys.platform == "linux" and sys.version_info >= (3, 11)


def run_python(code: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code), *args],
                          capture_output=True, text=True, timeout=timeout)


def alive(pid: int) -> bool:
    """Running (a zombie waiting for its reaper counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


@pytest.mark.skipif(not LINUX_311, reason="workers are forked on Linux with Python 3.11+")
def test_workers_are_forked_unless_another_thread_runs():
    done = run_python("""
        import threading
        from imgtools.executors.local import LocalExecutor, start_method

        SET_AFTER_IMPORT = []

        def inherited(_):  # a forked worker has the parent's state as it was at the fork
            return len(SET_AFTER_IMPORT)

        SET_AFTER_IMPORT.append(1)
        before = start_method()
        forked = {r for _i, r in LocalExecutor(2).map_unordered(inherited, range(4))}
        stop = threading.Event()
        threading.Thread(target=stop.wait, daemon=True).start()
        during = start_method()
        pairs = sorted(LocalExecutor(2).map_unordered(abs, [-2, -1, -3]))
        stop.set()
        print(before, during, forked, pairs)
    """)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split(maxsplit=3)[:3] == ["fork", "spawn", "{1}"]
    assert done.stdout.strip().endswith("[(-3, 3), (-2, 2), (-1, 1)]")


@pytest.mark.skipif(not LINUX_311, reason="workers are forked on Linux with Python 3.11+")
def test_maps_one_after_another_all_fork():
    """A finished pool's threads linger in the kernel's count for a moment after ``join``: a map
    started then would spawn (and keep a spawned pool, so every later map spawned too)."""
    done = run_python("""
        from imgtools.errors import UserError
        from imgtools.executors.local import LocalExecutor, start_method

        def fail(i):
            raise UserError("bad")

        methods = []
        for i in range(40):
            methods.append(start_method())
            try:
                list(LocalExecutor(2).map_unordered(fail if i % 8 == 7 else abs, range(10)))
            except UserError:
                pass
        print(" ".join(methods))
    """)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["fork"] * 40


def test_a_task_error_reaches_the_caller_with_its_type_and_no_worker_stays():
    done = run_python("""
        import multiprocessing, os
        from imgtools.errors import UserError
        from imgtools.executors.local import LocalExecutor

        def check(i):
            if i == 3:
                raise UserError("shard 3 is bad", path="x.jpg", fix="fix it")
            return os.getpid()

        try:
            list(LocalExecutor(2).map_unordered(check, range(8)))
        except UserError as e:
            print(type(e).__name__, e.what, e.path)
        print(len(multiprocessing.active_children()))
    """)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:2] == ["UserError shard 3 is bad x.jpg", "0"]


def test_a_killed_worker_is_a_clear_error_not_a_hang():
    done = run_python("""
        import os, signal
        from imgtools.errors import UserError
        from imgtools.executors.local import LocalExecutor

        def die(i):
            if i == 2:
                os.kill(os.getpid(), signal.SIGKILL)
            return i

        try:
            list(LocalExecutor(2).map_unordered(die, range(6)))
        except UserError as e:
            print(e.message())
    """, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "a worker process ended without finishing its shard" in done.stdout
    assert "--resume" in done.stdout


@pytest.mark.skipif(not LINUX_311, reason="workers are forked on Linux with Python 3.11+")
def test_a_signal_before_a_worker_has_its_own_handlers_kills_it_quietly():
    """The parent ends its workers with SIGTERM, and may do so while one is still starting (a
    first task failed at once): a forked worker then still had the parent's handler, raised
    ``Terminated`` in its initializer and printed a traceback (seen in CI). Here every worker
    gets SIGTERM right after the fork: it must die of it without a word, and the caller gets
    the clear error of a lost worker."""
    done = run_python("""
        import os, signal
        from imgtools.errors import UserError
        from imgtools.executors.local import LocalExecutor
        from imgtools.pipeline import interrupt

        interrupt.install()
        os.register_at_fork(after_in_child=lambda: os.kill(os.getpid(), signal.SIGTERM))
        try:
            print(sorted(r for _i, r in LocalExecutor(2).map_unordered(abs, [-1, -2, -3])))
        except UserError as e:
            print(e.message())
    """, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert "a worker process ended without finishing its shard" in done.stdout


def test_workers_exit_when_their_parent_is_killed(tmp_path):
    """kill -9 leaves the parent no chance to end its workers: they notice by themselves."""
    proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent("""
        import os, sys, time
        from imgtools.executors.local import LocalExecutor

        def nap(folder):
            open(os.path.join(folder, str(os.getpid())), "w").close()
            time.sleep(120)

        list(LocalExecutor(2).map_unordered(nap, [sys.argv[1]] * 2))
    """), str(tmp_path)])
    try:
        deadline = time.time() + 60
        while time.time() < deadline and len(list(tmp_path.iterdir())) < 2:
            time.sleep(0.05)
        workers = [int(p.name) for p in tmp_path.iterdir()]
        assert len(workers) == 2, "the workers never started"
        assert all(alive(pid) for pid in workers)
    finally:
        proc.kill()
        proc.wait()
    deadline = time.time() + 10
    while time.time() < deadline and any(alive(pid) for pid in workers):
        time.sleep(0.1)
    left = [pid for pid in workers if alive(pid)]
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    assert not left, "workers outlived their killed parent"


@pytest.mark.skipif(not LINUX_311, reason="workers are forked on Linux with Python 3.11+")
def test_the_command_line_keeps_numpy_from_starting_threads_so_workers_fork():
    """numpy's OpenBLAS starts a thread per core as it loads; the CLI asks for one first."""
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
    done = subprocess.run([sys.executable, "-c", textwrap.dedent("""
        import imgtools.cli
        imgtools.cli.limit_blas_threads()
        import numpy, PIL.Image
        import imgtools.build, imgtools.convert, imgtools.pipeline.engine
        from imgtools.executors.local import start_method
        print(start_method())
    """)], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "fork"


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc/self")
def test_spawned_workers_are_kept_for_the_next_map_and_ended_on_an_error():
    """A spawned worker costs a new interpreter: the next map reuses it (forked ones are not
    kept, so they never run with an old copy of the parent). An abandoned map ends them."""
    done = run_python("""
        import multiprocessing, os, threading
        from imgtools.executors.local import LocalExecutor, start_method

        stop = threading.Event()
        threading.Thread(target=stop.wait, daemon=True).start()  # rules out forking
        assert start_method() == "spawn"

        def run_map():
            list(LocalExecutor(2).map_unordered(os.readlink, ["/proc/self"] * 8))
            return {p.pid for p in multiprocessing.active_children()}

        first, second = run_map(), run_map()
        try:
            list(LocalExecutor(2).map_unordered(os.readlink, ["/proc/self", "/no/such"]))
        except FileNotFoundError:
            pass
        after_error = multiprocessing.active_children()
        print(bool(first) and first == second, len(after_error), not run_map() & first)
    """)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["True", "0", "True"]
