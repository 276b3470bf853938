"""``--executor`` and ``--scheduler``: where build, convert, verify and stats run their shards.

``--executor local`` (the default) uses this machine's cores (``-j``); ``--executor dask`` runs
the shards on a Dask cluster whose scheduler is ``--scheduler`` or ``IMGTOOLS_SCHEDULER``.
Giving a scheduler alone implies ``dask``. The executor is opened (and, for a cluster, the
workers' view of the paths checked) before any work starts, and closed when the command ends.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import click

from imgtools.executors.base import EXECUTOR_NAMES, Executor, executor_class, open_executor

SCHEDULER_ENV = "IMGTOOLS_SCHEDULER"


def executor_options(fn: Callable) -> Callable:
    """Add ``--executor`` and ``--scheduler`` to a click command."""
    fn = click.option("--scheduler", metavar="ADDRESS", envvar=SCHEDULER_ENV, default=None,
                      help=f"Dask scheduler address (tcp://HOST:8786); also from "
                           f"{SCHEDULER_ENV}. Implies --executor dask.")(fn)
    return click.option("--executor", type=click.Choice(EXECUTOR_NAMES), default=None,
                        help="Where shards run: local = this machine's cores (-j); dask = the "
                             "workers of a Dask cluster (--scheduler), which must share the "
                             "input and output paths (docs/cluster.md). [default: local, or "
                             "dask when a scheduler is given]")(fn)


def chosen(executor: str | None, scheduler: str | None) -> str:
    return executor or ("dask" if scheduler else "local")


def is_remote(executor: str | None, scheduler: str | None) -> bool:
    """Whether tasks run elsewhere: paths handed to them must then be absolute."""
    return executor_class(chosen(executor, scheduler)).remote


@contextlib.contextmanager
def cli_executor(executor: str | None, scheduler: str | None, n_jobs: int | None, *,
                 read: Sequence[Path] = (), write: Sequence[Path] = ()
                 ) -> Iterator[Executor | None]:
    """The executor a command asked for (None for the default local one, which the pipelines
    make themselves), after checking the workers can read ``read`` and write ``write``."""
    name = chosen(executor, scheduler)
    if name == "local":
        yield None
        return
    with open_executor(name, n_jobs=n_jobs, scheduler=scheduler) as ex:
        ex.check_shared(read=read, write=write)
        yield ex
