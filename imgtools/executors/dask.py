"""The Dask executor: shard tasks run as tasks of a ``distributed`` cluster.

The driver (the ``imgtools`` process) connects to a running scheduler (``--scheduler`` or
``IMGTOOLS_SCHEDULER``), submits tasks in a bounded window (twice the cluster's threads), and
receives only each shard's small summary; the workers read the source and write the output
themselves, on storage every machine mounts at the same path. Before any work starts it checks
that every worker runs the same Python, imgtools, Pillow, numpy and cykooz.resizer as the driver
(byte-identical output needs the same decoders, resizer and encoders), through Dask's own
version report, so the check works whatever imgtools a worker has, or none; then that every
worker sees the shared paths. Workers joining later check both before their first task.

A task whose worker dies is run again by the scheduler on another worker; shard writers
publish atomically and deterministically, so the retry writes the same bytes. A task that kills
every worker that takes it (an image that takes a worker over its memory limit) fails after the
scheduler's ``allowed-failures`` with Dask's KilledWorker; that, and losing the scheduler (or
every worker, repeatedly), is a :class:`~imgtools.errors.RemoteError` (exit 3) naming the cause;
the done markers of the shards that finished stay, so ``--resume`` (on a new cluster, or
locally) finishes the same output.

Needs the optional ``distributed`` package: ``pip install 'imgtools[dask]'``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import socket
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from imgtools.errors import RemoteError, UserError
from imgtools.executors.base import Executor

CONNECT_TIMEOUT = 10.0
"""Seconds to reach the scheduler before giving up (exit 3)."""
WORKER_WAIT_ENV = "IMGTOOLS_WORKER_WAIT"
DEFAULT_WORKER_WAIT = 120.0
"""Seconds to wait for a worker (``IMGTOOLS_WORKER_WAIT`` overrides it), at the start and
whenever the cluster has none left: a batch system (Slurm, dask-jobqueue) may start workers
after the scheduler, or replace jobs that reached their walltime. Past it, the run stops
(exit 3) instead of waiting forever."""
RESULT_WAIT = 1.0
"""Seconds between two looks at the cluster while waiting for a result."""
POLL = 0.05
"""Seconds between two looks at one task that finished but whose result was lost."""
TASKS_PER_THREAD = 2
"""Tasks in flight per worker thread: one running, one queued, so no thread idles while the
driver hands out the next task; more would only hold more task descriptions in memory."""
WINDOW_REFRESH = 2.0
"""Seconds between two looks at how many threads the cluster has (it may grow or shrink)."""
PROBE_PREFIX = ".imgtools-probe-"
SHARED_DOCS = "see docs/cluster.md, 'What must be shared'"
VERSIONED = ("imgtools", "pillow", "numpy", "cykooz.resizer")
"""Distributions whose versions decide the output's bytes (decoders and encoders, resizers), with
Python's major.minor: every worker must run the driver's, or a task re-run elsewhere could write
other bytes."""

_checked_paths: set[str] = set()
"""Paths this worker process has already seen (workers that joined after the first check)."""
_checked_versions: dict[str, str | None] = {}
"""The driver versions this worker process has already matched."""


class DaskExecutor(Executor):
    name = "dask"
    remote = True
    retries_tasks = True

    def __init__(self, n_jobs: int | None = None, scheduler: str | None = None):
        if not scheduler:
            raise UserError("--executor dask needs the address of a Dask scheduler",
                            fix="pass --scheduler tcp://HOST:8786 or set IMGTOOLS_SCHEDULER "
                                "(start one with `dask scheduler`; see docs/cluster.md)")
        try:
            from distributed import Client
        except ImportError as e:
            raise UserError("--executor dask needs the `distributed` package",
                            fix="pip install 'imgtools[dask]'") from e
        self.address = scheduler
        self._roots: tuple[str, ...] = ()
        self._versions = versions_here()
        _quiet_client_logs()
        try:
            self.client = Client(scheduler, timeout=CONNECT_TIMEOUT, set_as_default=False)
        except (OSError, TimeoutError) as e:
            raise RemoteError(f"cannot reach the Dask scheduler at {scheduler} "
                              f"(no answer within {CONNECT_TIMEOUT:.0f} s)",
                              fix="check the address (--scheduler / IMGTOOLS_SCHEDULER) and "
                                  "that `dask scheduler` is running and reachable") from e
        self._window = 0
        self._window_at = 0.0
        self._no_workers_since: float | None = None
        self.worker_wait = float(os.environ.get(WORKER_WAIT_ENV) or DEFAULT_WORKER_WAIT)

    # ----------------------------------------------------------------- running tasks

    def map_unordered(self, fn: Callable[[Any], Any], items: Iterable[Any], *,
                      prefer: str | None = None, tasks: int | None = None
                      ) -> Iterator[tuple[Any, Any]]:
        pending: dict[Any, Any] = {}  # future -> item
        finished: queue.SimpleQueue = queue.SimpleQueue()  # filled by the client's thread
        source = iter(items)
        label = getattr(fn, "__name__", None) or getattr(getattr(fn, "func", None), "__name__",
                                                         "task")
        try:
            self._top_up(fn, source, pending, finished, label)
            while pending:
                try:
                    future = finished.get(timeout=RESULT_WAIT)
                except queue.Empty:
                    self._window_size()  # also notices a cluster left without workers
                    continue
                if future not in pending:
                    continue
                item = pending.pop(future)
                result = self._result(future, item)
                future.release()
                self._top_up(fn, source, pending, finished, label)
                yield item, result
        finally:
            if pending and self.client.status == "running":
                with contextlib.suppress(Exception):
                    self.client.cancel(list(pending))

    def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        future = self.client.submit(_run_on_worker, fn, self._roots, self._versions, args,
                                    pure=False,
                                    key=f"{getattr(fn, '__name__', 'call')}-{uuid.uuid4().hex}")
        try:
            return self._result(future, fn.__name__)
        finally:
            future.release()

    def _top_up(self, fn: Callable, source: Iterator, pending: dict,
                finished: queue.SimpleQueue, label: str) -> None:
        """Submit tasks until the window is full or the items run out."""
        window = self._window_size()
        while len(pending) < window:
            item = next(source, _END)
            if item is _END:
                return
            name = getattr(item, "shard_id", None) or uuid.uuid4().hex
            future = self.client.submit(_run_on_worker, fn, self._roots, self._versions,
                                        (item,), pure=False,
                                        key=f"{label}-{name}-{uuid.uuid4().hex[:8]}")
            pending[future] = item
            future.add_done_callback(finished.put)

    def _window_size(self) -> int:
        now = time.monotonic()
        if now - self._window_at > WINDOW_REFRESH:
            try:
                threads = sum(self.client.nthreads().values())
            except Exception as e:  # noqa: BLE001 - any failure here is the scheduler's
                raise self._lost(e) from e
            self._window = max(2, TASKS_PER_THREAD * threads)
            self._window_at = now
            self._check_workers_left(threads, now)
        return self._window

    def _check_workers_left(self, threads: int, now: float) -> None:
        if threads:
            self._no_workers_since = None
            return
        if self._no_workers_since is None:
            self._no_workers_since = now
        elif now - self._no_workers_since > self.worker_wait:
            raise RemoteError(f"every Dask worker of the scheduler at {self.address} is gone "
                              f"(none for {self.worker_wait:.0f} s)",
                              fix="start workers again (or scale your dask-jobqueue cluster), "
                                  "then run the same command with --resume: shards that "
                                  "finished are kept; --executor local finishes it here")

    def _result(self, future: Any, item: Any) -> Any:
        """The task's result. A finished result held by a worker that then died is computed
        again, so waiting for it also watches that the cluster still has workers."""
        from distributed import KilledWorker

        while True:
            if not future.done():  # polled: a timed-out result() leaves asyncio noise behind
                self._window_size()  # raises once the cluster has been without workers
                time.sleep(POLL)
                continue
            try:
                return future.result(timeout=RESULT_WAIT)
            except KilledWorker as e:
                raise _killed(e, getattr(item, "shard_id", item)) from e
            except TimeoutError as e:
                if self.client.status != "running":
                    raise self._lost(e) from e
                self._window_size()  # raises once the cluster has been without workers
            except Exception as e:
                if self._is_connection_loss(e):
                    raise self._lost(e) from e
                raise

    def _is_connection_loss(self, exc: BaseException) -> bool:
        from distributed.client import FutureCancelledError
        from distributed.comm.core import CommClosedError

        if isinstance(exc, (FutureCancelledError, CommClosedError)):
            return True
        return self.client.status != "running" and isinstance(exc, (OSError, TimeoutError))

    def _lost(self, exc: BaseException) -> RemoteError:
        return RemoteError(f"lost the connection to the Dask scheduler at {self.address}",
                           fix="check that the scheduler is still running (or restart it and "
                               "its workers), then run the same command with --resume: shards "
                               "that finished are kept, on this cluster, a new one or locally")

    # ----------------------------------------------------------------- shared storage

    def check_shared(self, *, read: Sequence[Path] = (), write: Sequence[Path] = ()) -> None:
        """Every worker must see ``read`` as this machine does and be able to write in
        ``write`` (see the module docstring); the first problems are listed, with the worker."""
        read = [Path(p).absolute() for p in read]
        write = [Path(p).absolute() for p in write]
        self._wait_for_workers()
        self.check_versions()
        created = [p for p in write if not p.exists()]
        token = uuid.uuid4().hex
        probes = []
        try:
            for folder in write:
                folder.mkdir(parents=True, exist_ok=True)
                probe = folder / f"{PROBE_PREFIX}{token}"
                probe.write_text(token)
                probes.append(probe)
            expected = {str(p): _describe(str(p)) for p in read}
            try:
                reports = self.client.run(_probe_worker, expected, [str(p) for p in write],
                                          token)
            except (ImportError, AttributeError) as e:
                raise UserError(f"the Dask workers cannot run imgtools ({e})",
                                fix="install the same imgtools on the workers as here "
                                    "(pip install 'imgtools[dask]' in their environment)"
                                ) from e
            except Exception as e:
                if self._is_connection_loss(e) or self.client.status != "running":
                    raise self._lost(e) from e
                raise
        finally:
            for probe in probes:
                with contextlib.suppress(OSError):
                    probe.unlink()
        problems = [f"worker {w}: {p}" for w, report in sorted(reports.items()) for p in report]
        if problems:
            for folder in reversed(created):  # leave no empty --out behind
                with contextlib.suppress(OSError):
                    folder.rmdir()
            shown = "\n    ".join(problems[:10])
            more = f"\n    ... and {len(problems) - 10} more" if len(problems) > 10 else ""
            raise UserError(f"the Dask workers do not share this machine's files:\n    "
                            f"{shown}{more}",
                            fix="put --src and --out on storage every worker mounts at the "
                                f"same path (NFS, Lustre, GPFS, ...), {SHARED_DOCS}")
        self._roots = tuple(str(p) for p in [*read, *write])

    def check_versions(self) -> None:
        """Every worker runs the driver's :data:`VERSIONED` packages and Python. Asked through
        Dask's version report (no imgtools code runs on the workers for it), so a worker with
        an older imgtools, or none, is named as such instead of failing oddly."""
        try:
            report = self.client.get_versions(packages=list(VERSIONED))
        except Exception as e:  # noqa: BLE001 - the scheduler is the only party here
            raise self._lost(e) from e
        problems = [f"worker {worker}: {problem}"
                    for worker, info in sorted(report["workers"].items())
                    for problem in version_mismatches(self._versions,
                                                      _major_minor(info["packages"]))]
        if problems:
            shown = "\n    ".join(problems[:10])
            more = f"\n    ... and {len(problems) - 10} more" if len(problems) > 10 else ""
            wanted = ", ".join(f"{name} {v}" for name, v in self._versions.items() if v)
            raise UserError(f"the Dask workers run other versions than this machine (the "
                            f"output's bytes depend on them):\n    {shown}{more}",
                            fix=f"run every worker in the driver's environment ({wanted}), "
                                f"{SHARED_DOCS}")

    def _wait_for_workers(self) -> None:
        try:
            self.client.wait_for_workers(1, timeout=self.worker_wait)
        except TimeoutError as e:
            if self.client.status != "running":
                raise self._lost(e) from e
            raise RemoteError(f"the Dask scheduler at {self.address} has no workers "
                              f"(none joined within {self.worker_wait:.0f} s)",
                              fix="start workers: `dask worker ADDRESS` on each machine, or "
                                  "scale your dask-jobqueue cluster") from e
        except Exception as e:
            raise self._lost(e) from e

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.client.close(timeout=5)


_END = object()


def _quiet_client_logs() -> None:
    """The client logs its connection troubles with tracebacks; the user gets one clear
    message (a RemoteError) instead. dask's config gives some loggers their own level, so
    each is set, not only the parent. asyncio's "Task exception was never retrieved" about the
    client's own tasks, when the cluster goes away, is the same noise (imgtools uses no
    asyncio of its own)."""
    for name in ["distributed", "asyncio", *logging.root.manager.loggerDict]:
        if name in ("distributed", "asyncio") or name.startswith("distributed."):
            logging.getLogger(name).setLevel(logging.CRITICAL)


# --------------------------------------------------------------------------- on the workers


def _killed(error: Exception, task: Any) -> RemoteError:
    """The message for Dask's KilledWorker: the task killed each worker that ran it."""
    attempts = getattr(error, "allowed_failures", None)
    last = getattr(getattr(error, "last_worker", None), "address", None)
    count = f"{attempts + 1} workers" if isinstance(attempts, int) else "every attempt"
    return RemoteError(
        f"the Dask task {task} killed each worker that ran it ({count}"
        + (f", the last {last}" if last else "")
        + ": the scheduler's allowed-failures + 1); the run stopped and nothing is published",
        fix="look at the workers' logs (over their memory limit? killed by the batch system?), "
            "give them more memory (dask worker --memory-limit) or use a smaller --shard-size, "
            "then run the same command with --resume: finished shards are kept")


def versions_here() -> dict[str, str | None]:
    """This process's :data:`VERSIONED` packages (None: not installed) and Python, as Dask's
    version report gives them."""
    from distributed.versions import get_package_info

    return _major_minor(get_package_info(VERSIONED))


def _major_minor(packages: dict[str, str | None]) -> dict[str, str | None]:
    """Dask's report with Python cut to major.minor, and only the packages compared."""
    python = packages.get("python") or ""
    return {"python": ".".join(python.split(".")[:2]),
            **{name: packages.get(name) for name in VERSIONED}}


def version_mismatches(driver: dict[str, str | None], worker: dict[str, str | None]
                       ) -> list[str]:
    """What differs, as "imgtools 0.0.9 on this worker, 0.1.0 on the driver"."""
    return [f"{name} {worker.get(name) or 'not installed'} on this worker, "
            f"{driver[name] or 'not installed'} on the driver"
            for name in driver if worker.get(name) != driver[name]]


def _run_on_worker(fn: Callable[..., Any], roots: tuple[str, ...],
                   versions: dict[str, str | None], args: tuple) -> Any:
    """A task as a worker runs it: first (once per worker process) check that the shared paths
    are there and the versions are the driver's, so a worker that joined later without the
    shared storage, or from another environment, fails clearly."""
    if versions != _checked_versions:
        mismatches = version_mismatches(versions, versions_here())
        if mismatches:
            raise UserError(f"Dask worker {socket.gethostname()} (pid {os.getpid()}) runs "
                            f"other versions than the driver: {'; '.join(mismatches)}",
                            fix=f"run every worker in the driver's environment, {SHARED_DOCS}")
        _checked_versions.clear()
        _checked_versions.update(versions)
    for root in roots:
        if root not in _checked_paths:
            if not os.path.exists(root):
                raise UserError(f"Dask worker {socket.gethostname()} (pid {os.getpid()}) cannot "
                                f"see this path", path=root,
                                fix=f"mount the shared storage on every worker, {SHARED_DOCS}")
            _checked_paths.add(root)
    return fn(*args)


def _describe(path: str) -> str:
    """What a path looks like from here: kind and, for a folder, its first entries. Equal on
    two machines when they mount the same storage at the same place."""
    if not os.path.exists(path):
        return "missing"
    if os.path.isfile(path):
        return f"file of {os.path.getsize(path)} bytes"
    try:
        names = sorted(os.listdir(path))
    except OSError as e:
        return f"unreadable ({e.strerror})"
    return f"folder of {len(names)} entries: {', '.join(names[:5])}"


def _probe_worker(expected: dict[str, str], write: list[str], token: str) -> list[str]:
    """Run on every worker by ``check_shared``: the problems this worker has with the shared
    paths."""
    problems = []
    for path, seen in expected.items():
        mine = _describe(path)
        if mine != seen:
            problems.append(f"{path} is {mine} here, {seen} on the driver")
    for folder in write:
        probe = os.path.join(folder, f"{PROBE_PREFIX}{token}")
        try:
            with open(probe) as f:
                if f.read() != token:
                    raise OSError("a different probe file")
            mine = f"{probe}-{socket.gethostname()}-{os.getpid()}"
            with open(mine, "w") as f:
                f.write(token)
            os.unlink(mine)
        except OSError as e:
            problems.append(f"cannot read and write in {folder} as the driver does "
                            f"({e.strerror or e})")
    if not problems:
        _checked_paths.update([*expected, *write])
    return problems


EXECUTOR = DaskExecutor
