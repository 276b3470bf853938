"""The local executor: this machine's cores, in worker processes (or threads on request).

Why the standard library's pool rather than joblib's loky (what imgtools used before): a loky
worker is a new interpreter that imports joblib (and with it numpy, asyncio, cloudpickle) and
then the task's modules again, and loky adds a resource-tracker process that imports joblib
too. At ``-j 2`` that start-up cost 0.70 s of CPU per run, about 2 % of an Imagenette build and
the engine's largest fixed cost; two forked workers, which start with everything already
imported, cost 0.05 s (``scripts/bench_workers.py``; README, "Dependencies").

Forking is used only where it is safe: on Linux, with Python 3.11 or later (whose
``ProcessPoolExecutor`` forks all its workers before it starts its own thread), and while no
other thread runs in this process, counting the threads of C libraries (a thread holding a
lock at the fork would leave that lock held forever in the child; pyarrow, for one, starts
threads when imported, so a conversion from or to Parquet spawns). Otherwise workers are
spawned as fresh interpreters, as on macOS and Windows.

What a forked worker must not keep from its parent is dealt with at the fork: an output's
lock (closed in the child by :mod:`imgtools.locks`), the parent's signal handlers
(Ctrl-C and SIGTERM are the parent's to handle; it then ends the workers; both are held back
while workers start, so none reaches a worker before its own handlers are set), and the garbage
collector's view of the parent's objects (frozen, so the child's collections do not touch,
and so copy, every page it inherited).

Each map forks a pool of its own, so a forked worker never runs with a parent's state older
than its map: the pool is shut down when the map is exhausted. Spawned workers hold no such
state and cost about 0.5 s of CPU each to start, so they are kept for the next map with as
many workers (as loky did) and end when the process does. Either way, workers are terminated
when a map is abandoned (an error in a task, Ctrl-C, SIGTERM). A worker whose parent dies
without unwinding (``kill -9``) exits by itself within a second. Tasks are submitted lazily,
``2 * jobs`` in flight at most, and results come back in completion order. ``-j 1`` runs
everything in this process, with no pool at all.
"""

from __future__ import annotations

import concurrent.futures as futures
import contextlib
import gc
import os
import signal
import sys
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from imgtools.errors import UserError
from imgtools.executors.base import Executor

_FORK_IS_SAFE_HERE = sys.platform == "linux" and sys.version_info >= (3, 11)
_live_pools: weakref.WeakSet[futures.ProcessPoolExecutor] = weakref.WeakSet()
_spawned_pools: dict[int, futures.ProcessPoolExecutor] = {}  # jobs -> a pool kept for reuse


def resolve_jobs(n_jobs: int | None) -> int:
    """``-j 0`` or None means every core; negative counts back from it (-1 = every core)."""
    cores = os.cpu_count() or 1
    if not n_jobs:
        return cores
    if n_jobs < 0:
        return max(1, cores + 1 + n_jobs)
    return n_jobs


def start_method() -> str:
    """How new worker processes start: ``fork`` where that is safe (see the module docstring),
    else ``spawn``."""
    if _FORK_IS_SAFE_HERE and _threads_in_this_process() == 1:
        return "fork"
    return "spawn"


def _threads_in_this_process() -> int:
    """Every thread, those started by C libraries included (``threading`` sees only Python's):
    the kernel's count, field 20 of ``/proc/self/stat``."""
    try:
        with open("/proc/self/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        return int(fields[17])
    except (OSError, IndexError, ValueError):
        return threading.active_count()


class LocalExecutor(Executor):
    """This machine's cores. ``prefer="threads"`` suits work whose time goes to Pillow and
    numpy calls that release the GIL: one process, no worker start-up, no per-process memory."""

    name = "local"

    def __init__(self, n_jobs: int | None = None, scheduler: str | None = None):
        self.jobs = resolve_jobs(n_jobs)

    def map_unordered(self, fn: Callable[[Any], Any], items: Iterable[Any], *,
                      prefer: str | None = None, tasks: int | None = None
                      ) -> Iterator[tuple[Any, Any]]:
        jobs = self.jobs if tasks is None else min(self.jobs, max(1, tasks))
        if jobs == 1:
            return ((item, fn(item)) for item in items)
        return _pooled(fn, items, jobs, threads=prefer == "threads")


def _pooled(fn: Callable[[Any], Any], items: Iterable[Any], jobs: int, *, threads: bool
            ) -> Iterator[tuple[Any, Any]]:
    """``(item, fn(item))`` from a pool that ends with the iteration (a spawned one is kept)."""
    threads_before = _threads_in_this_process()
    try:
        pool = futures.ThreadPoolExecutor(jobs) if threads else _process_pool(jobs)
    except futures.BrokenExecutor as e:
        raise _worker_lost() from e
    kept = _spawned_pools.get(jobs) is pool
    finished = False
    try:
        yield from _completed(pool, fn, iter(items), window=2 * jobs)
        finished = True
    except futures.BrokenExecutor as e:
        raise _worker_lost() from e
    finally:
        if not finished:
            _abandon(pool)
        elif not kept:
            pool.shutdown(wait=True)
            _live_pools.discard(pool)
        if not kept and (finished or not threads):  # an abandoned thread's task runs on
            _wait_for_threads_to_end(threads_before)


def _wait_for_threads_to_end(count: int, timeout: float = 1.0) -> None:
    """Wait until the threads a finished pool started are gone from the kernel's count too.
    ``Thread.join`` returns just before a thread's last instructions run, and for some tens of
    microseconds the kernel still counts it: a map started meanwhile saw two threads and
    spawned its workers (0.5 s of CPU each), and the pool it then kept made every later map
    spawn too (measured: 21 and 26 of 30 back-to-back maps, in two runs)."""
    deadline = time.monotonic() + timeout
    while _threads_in_this_process() > count and time.monotonic() < deadline:
        time.sleep(0.0002)


def _worker_lost() -> UserError:
    return UserError(
        "a worker process ended without finishing its shard (killed by the system, "
        "perhaps for lack of memory, or by a signal)",
        fix="run the same command again with --resume (finished shards are kept); if it "
            "happens again, use fewer workers (-j) or check the system log (dmesg)")


def _process_pool(jobs: int) -> futures.ProcessPoolExecutor:
    import multiprocessing  # noqa: PLC0415 - only runs that use worker processes pay for it

    method = start_method()
    if method == "spawn" and jobs in _spawned_pools:
        return _spawned_pools[jobs]
    pool = futures.ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context(method),
                                       initializer=_start_worker, initargs=(os.getpid(),))
    if method == "fork":
        try:
            _fork_workers_now(pool)
        except BaseException:
            _abandon(pool)
            raise
    else:
        _spawned_pools[jobs] = pool
    _live_pools.add(pool)
    return pool


def _fork_workers_now(pool: futures.ProcessPoolExecutor) -> None:
    """Fork the workers at once, with the garbage collector's generations frozen, so that a
    child's collections skip everything it inherited (touching it would copy its pages).
    A no-op task makes the pool start: with fork it starts every worker before its thread."""
    gc.freeze()
    try:
        with _signals_held_for(pool):
            started = pool.submit(int)
        started.result()
    finally:
        gc.unfreeze()


_PARENTS_SIGNALS = {signal.SIGINT, signal.SIGTERM}


@contextlib.contextmanager
def _signals_held_for(pool: futures.Executor) -> Iterator[None]:
    """Hold Ctrl-C and SIGTERM back while ``pool`` may start worker processes (it does in
    ``submit``). A new worker has its parent's handlers until :func:`_start_worker` replaces
    them, and a signal in between would run the parent's handler in the worker: a forked one
    raised ``Terminated`` in its initializer and printed a traceback when the parent ended it
    early (a task had failed at once). A process starts with its parent's signal mask, so with
    the signals blocked it starts with them pending, and :func:`_start_worker` lets them in
    only once its own handlers are set. The parent's delay is the time to start the workers."""
    if not isinstance(pool, futures.ProcessPoolExecutor) or not hasattr(signal, "pthread_sigmask"):
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, _PARENTS_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _completed(pool: futures.Executor, fn: Callable[[Any], Any], items: Iterator[Any],
               window: int) -> Iterator[tuple[Any, Any]]:
    running: dict[futures.Future, Any] = {}

    def top_up() -> None:
        for item in items:
            with _signals_held_for(pool):
                running[pool.submit(fn, item)] = item
            if len(running) >= window:
                return

    top_up()
    while running:
        done, _ = futures.wait(running, return_when=futures.FIRST_COMPLETED)
        for future in done:
            item = running.pop(future)
            yield item, future.result()
        top_up()


def _abandon(pool: futures.Executor) -> None:
    """Stop a pool whose results nobody will read: queued tasks are cancelled and worker
    processes terminated and reaped (their shards are left unfinished, which the output
    protocol allows: nothing is published before its marker). Threads cannot be stopped;
    each finishes its current task."""
    if isinstance(pool, futures.ProcessPoolExecutor):
        _terminate_workers(pool)
        for jobs in [j for j, kept in _spawned_pools.items() if kept is pool]:
            del _spawned_pools[jobs]
        # Its manager thread sees the workers gone and reaps them too: wait for it, so that no
        # worker is left unreaped when this returns (both threads wait for the same children).
        pool.shutdown(wait=True, cancel_futures=True)
    else:
        pool.shutdown(wait=False, cancel_futures=True)


def _terminate_workers(pool: futures.ProcessPoolExecutor) -> None:
    # ``ProcessPoolExecutor.terminate_workers`` exists from Python 3.14; before that the
    # processes are only reachable through ``_processes``.
    processes = list((getattr(pool, "_processes", None) or {}).values())
    for process in processes:
        if process.is_alive():
            process.terminate()
    for process in processes:
        process.join(5)
        if process.is_alive():
            process.kill()
            process.join()
    _live_pools.discard(pool)


def stop_workers() -> None:
    """Terminate the workers of every pool still running (the CLI calls this on Ctrl-C and
    SIGTERM, in case a map was left suspended rather than closed)."""
    for pool in list(_live_pools):
        _abandon(pool)


def _start_worker(parent_pid: int) -> None:
    """Runs first in every worker process: signals are the parent's to handle (it terminates
    the workers, with SIGTERM, which must then kill), and an orphaned worker exits."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if hasattr(signal, "pthread_sigmask"):  # started with them held: _signals_held_for
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _PARENTS_SIGNALS)
    threading.Thread(target=_exit_when_orphaned, args=(parent_pid,), daemon=True,
                     name="imgtools-parent-watch").start()


def _exit_when_orphaned(parent_pid: int) -> None:
    """A parent killed with ``kill -9`` cannot end its workers, and a worker waiting for its
    next task would wait forever, holding memory: it checks once a second that its parent is
    still the one that started it."""
    while os.getppid() == parent_pid:
        time.sleep(1.0)
    os._exit(1)


EXECUTOR = LocalExecutor
