"""Stop cleanly on Ctrl-C and on SIGTERM, the signal Slurm, Kubernetes and systemd send.

Python turns SIGINT into ``KeyboardInterrupt`` but dies silently on SIGTERM (status 143,
no message, ``finally`` blocks skipped) and leaves worker processes running. Here
SIGTERM raises :class:`Terminated`, a ``KeyboardInterrupt``, so both signals unwind the same
way: temporary files are removed by the ``finally`` blocks that made them, the run folder stays
for ``--resume``, and :func:`stop_workers` ends the worker processes before the exit.
"""

from __future__ import annotations

import contextlib
import signal
import sys

EXIT_INTERRUPTED = 130  # 128 + SIGINT, what shells report for Ctrl-C
EXIT_TERMINATED = 143  # 128 + SIGTERM
MESSAGE = "interrupted - run the same command again with --resume to finish it"


class Terminated(KeyboardInterrupt):
    """SIGTERM arrived; raised in the main thread where Ctrl-C raises KeyboardInterrupt."""

    exit_code = EXIT_TERMINATED


def _raise_terminated(signum, frame) -> None:
    raise Terminated()


def install() -> None:
    """Make SIGTERM unwind like Ctrl-C (the main thread only may set handlers)."""
    with contextlib.suppress(ValueError):  # not in the main thread: leave the default
        signal.signal(signal.SIGTERM, _raise_terminated)


def exit_code(interrupt: KeyboardInterrupt) -> int:
    return getattr(interrupt, "exit_code", EXIT_INTERRUPTED)


def stop_workers() -> None:
    """End the local executor's worker processes now, in case a map was left suspended rather
    than closed: a worker would otherwise finish its shard for nobody. (The executor is not
    imported here: a command that ran no workers has none to stop.)"""
    local = sys.modules.get("imgtools.executors.local")
    if local is not None:
        local.stop_workers()
