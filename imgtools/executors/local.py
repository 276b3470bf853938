"""The local executor: this machine's cores, through joblib (processes, or threads on request).

This is what imgtools always did: tasks are consumed lazily by joblib's dispatcher
(``pre_dispatch="2*n_jobs"``), so only a couple of tasks per worker are in flight, and results
come back in completion order. ``-j 1`` runs everything in this process, without joblib.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from joblib import Parallel, delayed

from imgtools.executors.base import Executor


def resolve_jobs(n_jobs: int | None) -> int:
    """``-j 0`` or None means every core; negative counts back from it as joblib does."""
    cores = os.cpu_count() or 1
    if not n_jobs:
        return cores
    if n_jobs < 0:
        return max(1, cores + 1 + n_jobs)
    return n_jobs


class LocalExecutor(Executor):
    """joblib on this machine. ``prefer="threads"`` suits work whose time goes to Pillow and
    numpy calls that release the GIL: one process, no worker start-up, no per-process memory.
    It is joblib's soft hint, so a backend chosen with ``joblib.parallel_config`` still wins."""

    name = "local"

    def __init__(self, n_jobs: int | None = None, scheduler: str | None = None):
        self.jobs = resolve_jobs(n_jobs)

    def map_unordered(self, fn: Callable[[Any], Any], items: Iterable[Any], *,
                      prefer: str | None = None, tasks: int | None = None
                      ) -> Iterator[tuple[Any, Any]]:
        jobs = self.jobs if tasks is None else min(self.jobs, max(1, tasks))
        if jobs == 1:
            return ((item, fn(item)) for item in items)
        return Parallel(n_jobs=jobs, return_as="generator_unordered", pre_dispatch="2*n_jobs",
                        prefer=prefer)(delayed(_with_item)(fn, item) for item in items)


def _with_item(fn: Callable[[Any], Any], item: Any) -> tuple[Any, Any]:
    return item, fn(item)


EXECUTOR = LocalExecutor
