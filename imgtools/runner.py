"""Run shard tasks in parallel, resumably.

A shard is a self-contained task: a small picklable payload naming its inputs and its output
paths. Workers read and write files themselves and return only a small JSON-able summary, so
the same plan runs unchanged on any executor (:mod:`imgtools.executors`: this machine, or a
Dask cluster whose workers share the storage). After a shard's outputs are published
(atomically) and synced to disk (see :class:`_Markers`), its summary is stored as
``<state_dir>/<shard_id>.json``: that file is the shard's "done" marker, which is what
``--resume`` trusts after a kill -9. A summary lists the files it vouches for with their
sizes (:func:`with_files`); a marker whose files are missing or of another size is not
trusted. A shard without a trusted marker is simply run again from scratch; writers
overwrite deterministically, so a resumed run ends byte-identical to an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from imgtools.atomic import atomic_write_text, sync_files
from imgtools.executors.base import Executor
from imgtools.executors.local import LocalExecutor, resolve_jobs
from imgtools.progress import tqdm

__all__ = ["ShardTask", "load_done", "marker_files", "resolve_jobs", "run_shards", "with_files"]


@dataclass(frozen=True)
class ShardTask:
    """``shard_id`` is unique within a run and filesystem-safe (``train-00003``); ``weight`` is
    how many items it holds (for the progress bar); ``payload`` is whatever the worker needs."""

    shard_id: str
    payload: Any
    weight: int = 1


def _marker(state_dir: Path, shard_id: str) -> Path:
    return state_dir / f"{shard_id}.json"


def load_done(state_dir: Path, shard_id: str, *, check_files: bool = True) -> dict | None:
    """The summary of a shard a previous run finished, or None when it must run (again).
    ``check_files=False`` skips the stat of every file it vouches for: for a marker this run
    already trusted or wrote (a stat per image, again, when the summaries are read back)."""
    path = _marker(state_dir, shard_id)
    if not path.is_file():
        return None
    try:
        summary = json.loads(path.read_text())
    except (OSError, ValueError):  # unreadable marker: run the shard again
        return None
    if not isinstance(summary, dict) or (check_files and not _files_intact(summary)):
        return None
    return summary


def _files_intact(summary: dict) -> bool:
    """Whether every file a marker vouches for is still there with its size."""
    try:
        return all(os.path.getsize(path) == size for path, size in marker_files(summary))
    except (OSError, TypeError, ValueError):
        return False


def with_files(summary: dict, paths: Iterable[str | Path], *,
               sizes: list[int] | None = None, folders: Iterable[str] | None = None) -> dict:
    """``summary`` plus the files it vouches for, which let a marker be checked on resume
    (``sizes``: their sizes, when their writer knows them; else each is ``stat``'ed): the
    paths as one string, joined by NUL (which no path holds), and their sizes as a list. A
    folder output's marker lists every image; as a JSON list of ``[path, size]`` pairs each
    cost about 3 us to write and read back, as one string a fraction of that. ``folders``:
    the folders holding the files, when their writer knows them (the sync before the marker
    then need not find them from every path)."""
    paths = list(paths)
    if sizes is None:
        sizes = [os.path.getsize(p) for p in paths]
    elif len(sizes) != len(paths):
        raise ValueError(f"{len(sizes)} sizes for {len(paths)} files")
    out = {**summary, "file_paths": "\0".join(map(os.fspath, paths)), "file_sizes": sizes}
    if folders is not None:
        out["file_folders"] = sorted(folders)
    return out


def _synced_files(summaries: Iterable[dict]) -> None:
    """:func:`sync_files` of the files these summaries vouch for: by the folders their
    writers named (:func:`with_files`), or found from every path where one did not."""
    summaries = list(summaries)
    paths = (path for summary in summaries for path, _size in marker_files(summary))
    if any(not isinstance(s.get("file_folders"), list) for s in summaries):
        sync_files(paths)
        return
    sync_files(paths, {folder for s in summaries for folder in s["file_folders"]})


def marker_files(summary: dict) -> Iterator[tuple[str, int]]:
    """``(path, size)`` of every file a shard's summary vouches for (:func:`with_files`).
    A marker written before December 2026 lists them as ``"files": [[path, size], ...]``:
    read as well, so that such a run resumes. ``ValueError`` when the two lists disagree."""
    if "file_paths" not in summary:
        return ((path, size) for path, size in summary.get("files", []))
    text, sizes = summary["file_paths"], summary.get("file_sizes")
    if not isinstance(text, str):
        raise ValueError("a marker's paths are not a string")
    paths = text.split("\0") if text else []
    if not isinstance(sizes, list) or len(paths) != len(sizes):
        raise ValueError("a marker's paths and sizes do not match")
    return zip(paths, sizes)


def run_shards(
    tasks: Iterable[ShardTask],
    worker: Callable[[ShardTask], dict],
    *,
    state_dir: Path,
    n_jobs: int | None = None,
    resume: bool = False,
    desc: str = "shards",
    total_weight: int | None = None,
    quiet: bool = False,
    unit: str = "img",
    prefer: str | None = None,
    executor: Executor | None = None,
) -> Iterator[tuple[ShardTask, dict]]:
    """Run ``worker`` on every task not already done; yield ``(task, summary)`` as shards finish.

    Finished shards come back in completion order (not task order): callers that need a stable
    order sort by ``shard_id``. Memory stays flat: tasks are consumed lazily by the executor
    (a bounded window in flight) and only summaries travel back. ``executor`` is where tasks
    run (default: this machine with ``n_jobs`` workers); ``prefer="threads"`` is its hint for
    workers whose time goes to Pillow/numpy calls that release the GIL (see
    :class:`LocalExecutor`).
    """
    state_dir.mkdir(parents=True, exist_ok=True)
    executor = executor or LocalExecutor(n_jobs)
    bar = tqdm(total=total_weight, desc=desc, unit=unit, disable=quiet, dynamic_ncols=True,
               smoothing=0.05)

    def todo() -> Iterator[ShardTask]:
        for task in tasks:
            done = load_done(state_dir, task.shard_id) if resume else None
            if done is not None:
                bar.update(task.weight)
                finished.append((task, done))
                continue
            yield task

    finished: list[tuple[ShardTask, dict]] = []
    markers = _Markers(state_dir, synced_by_worker=executor.remote)
    fn = functools.partial(_run_synced, worker) if executor.remote else worker
    try:
        for task, summary in executor.map_unordered(fn, todo(), prefer=prefer):
            markers.add(task, summary)
            bar.update(task.weight)
            while finished:
                yield finished.pop()
            yield task, summary
        markers.flush()
        while finished:
            yield finished.pop()
    except BaseException:
        markers.flush_quietly()  # shards that finished before the error stay done
        raise
    finally:
        bar.close()


SYNC_INTERVAL = 2.0
"""Seconds between the syncs that make finished shards durable before their markers."""


class _Markers:
    """Done markers, written after the files they vouch for are durable.

    On this machine the files of every shard finished in the last :data:`SYNC_INTERVAL`
    seconds are synced at once (one ``syncfs`` rather than one per shard: measured by
    ``scripts/bench_overhead.py``), then their markers are written; a kill loses at most that
    many seconds of finished shards, which ``--resume`` redoes. On a cluster each worker syncs
    its own files before its summary comes back (:func:`_run_synced`): the driver's sync would
    not reach another machine's disk."""

    def __init__(self, state_dir: Path, synced_by_worker: bool):
        self.state_dir = state_dir
        self.synced_by_worker = synced_by_worker
        self.pending: list[tuple[ShardTask, dict]] = []
        self.last_sync = time.monotonic()

    def add(self, task: ShardTask, summary: dict) -> None:
        self.pending.append((task, summary))
        if self.synced_by_worker or time.monotonic() - self.last_sync >= SYNC_INTERVAL:
            self.flush()

    def flush(self) -> None:
        if not self.synced_by_worker:
            _synced_files(summary for _task, summary in self.pending)
        for task, summary in self.pending:
            atomic_write_text(_marker(self.state_dir, task.shard_id), json.dumps(summary))
        self.pending.clear()
        self.last_sync = time.monotonic()

    def flush_quietly(self) -> None:
        with contextlib.suppress(Exception):
            self.flush()


def _run_synced(worker: Callable[[ShardTask], dict], task: ShardTask) -> dict:
    """Run one task on a cluster's worker, and sync the files it vouches for there before its
    summary goes back to become a marker."""
    summary = worker(task)
    _synced_files([summary])
    return summary
