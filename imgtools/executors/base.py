"""The executor interface and the registry of executors by name.

An executor runs self-contained shard tasks somewhere (this machine's processes or threads, a
Dask cluster, ...) and hands back their small summaries. The pipelines (build, convert,
downsample, verify, stats) only talk to this interface, so another way of distributing work is
one new module defining ``EXECUTOR`` (a subclass of :class:`Executor`) plus one line in
``_EXECUTOR_MODULES``. Executor modules are imported only when chosen: an optional dependency
(``distributed``) is needed only by the run that uses it.
"""

from __future__ import annotations

import functools
import importlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar

from imgtools.errors import UserError

# name -> module path; each module defines ``EXECUTOR`` (a subclass of Executor).
_EXECUTOR_MODULES = {
    "local": "imgtools.executors.local",
    "dask": "imgtools.executors.dask",
}
EXECUTOR_NAMES = tuple(_EXECUTOR_MODULES)


class Executor(ABC):
    """Runs ``fn(item)`` for many items and yields the results as they finish.

    Contract for callers: ``fn`` is a module-level function (picklable by reference) or a
    ``functools.partial`` of one; items and results are picklable and small (a shard's
    description in, a summary out); the work reads and writes files itself. ``items`` is
    consumed lazily and only a bounded window of them is in flight, so the caller's memory
    does not grow with the number of tasks.
    """

    name: ClassVar[str]
    remote: ClassVar[bool] = False
    """True when tasks run on other machines: paths must then be absolute and shared."""
    retries_tasks: ClassVar[bool] = False
    """True when a task whose worker died is run again (a cluster's scheduler does): the dead
    attempt's temporary files are then left among the run's output, for the run to remove."""

    @abstractmethod
    def map_unordered(self, fn: Callable[[Any], Any], items: Iterable[Any], *,
                      prefer: str | None = None, tasks: int | None = None
                      ) -> Iterator[tuple[Any, Any]]:
        """``(item, fn(item))`` in completion order. ``prefer="threads"`` hints that ``fn``
        spends its time in GIL-releasing C code (a local executor may then use threads);
        ``tasks`` is how many items there are, when known (no more workers than that)."""

    def map(self, fn: Callable[[Any], Any], items: Iterable[Any], *,
            prefer: str | None = None, tasks: int | None = None) -> Iterator[Any]:
        """``fn(item)`` in the order of ``items`` (results that finish early wait in a
        buffer, so prefer :meth:`map_unordered` when order does not matter)."""
        waiting: dict[int, Any] = {}
        next_index = 0
        indexed = functools.partial(_second, fn)
        for (index, _item), result in self.map_unordered(indexed, enumerate(items),
                                                         prefer=prefer, tasks=tasks):
            waiting[index] = result
            while next_index in waiting:
                yield waiting.pop(next_index)
                next_index += 1

    def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(*args)`` run once where the data is (a worker, for a cluster): for
        finalizing passes that read much and return little."""
        return fn(*args)

    def check_shared(self, *, read: Sequence[Path] = (),  # noqa: B027 - optional hook
                     write: Sequence[Path] = ()) -> None:
        """Raise a clear error, before any work starts, when the workers cannot read every
        path in ``read`` or write in every folder of ``write`` (created if missing). Nothing
        to check when the workers share this process's filesystem."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release workers and connections."""

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _second(fn: Callable[[Any], Any], pair: tuple[int, Any]) -> Any:
    return fn(pair[1])


def executor_class(name: str) -> type[Executor]:
    """The executor registered as ``name``; a clear error for unknown names."""
    if name not in _EXECUTOR_MODULES:
        raise UserError(f"unknown executor {name!r}",
                        fix=f"use one of: {', '.join(EXECUTOR_NAMES)}")
    return importlib.import_module(_EXECUTOR_MODULES[name]).EXECUTOR


def open_executor(name: str = "local", *, n_jobs: int | None = None,
                  scheduler: str | None = None) -> Executor:
    """Start (or connect to) the executor ``name``. ``n_jobs`` is the local parallelism
    (0/None = every core); ``scheduler`` the cluster's address, for executors that have one."""
    return executor_class(name)(n_jobs=n_jobs, scheduler=scheduler)
