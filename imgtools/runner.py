"""Run shard tasks in parallel, resumably.

A shard is a self-contained task: a small picklable payload naming its inputs and its output
paths. Workers read and write files themselves and return only a small JSON-able summary, so
the same plan runs unchanged on joblib's Dask or Ray backends. After a shard's outputs are
published (atomically) and synced to disk, its summary is stored as
``<state_dir>/<shard_id>.json``: that file is the shard's "done" marker, which is what
``--resume`` trusts after a kill -9. A summary lists the files it vouches for with their sizes
(``"files": [[path, size], ...]``); a marker whose files are missing or of another size is not
trusted. A shard without a trusted marker is simply run again from scratch; writers overwrite
deterministically, so a resumed run ends byte-identical to an uninterrupted one.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from joblib import Parallel, delayed
from tqdm import tqdm

from imgtools.atomic import atomic_write_text, sync_files


@dataclass(frozen=True)
class ShardTask:
    """``shard_id`` is unique within a run and filesystem-safe (``train-00003``); ``weight`` is
    how many items it holds (for the progress bar); ``payload`` is whatever the worker needs."""

    shard_id: str
    payload: Any
    weight: int = 1


def resolve_jobs(n_jobs: int | None) -> int:
    """``-j 0`` or None means every core; negative counts back from it as joblib does."""
    cores = os.cpu_count() or 1
    if not n_jobs:
        return cores
    if n_jobs < 0:
        return max(1, cores + 1 + n_jobs)
    return n_jobs


def _marker(state_dir: Path, shard_id: str) -> Path:
    return state_dir / f"{shard_id}.json"


def load_done(state_dir: Path, shard_id: str) -> dict | None:
    """The summary of a shard a previous run finished, or None when it must run (again)."""
    path = _marker(state_dir, shard_id)
    if not path.is_file():
        return None
    try:
        summary = json.loads(path.read_text())
    except (OSError, ValueError):  # unreadable marker: run the shard again
        return None
    if not isinstance(summary, dict) or not _files_intact(summary.get("files", [])):
        return None
    return summary


def _files_intact(files: list) -> bool:
    """Whether every ``[path, size]`` a marker vouches for is still there with that size."""
    try:
        return all(os.path.getsize(path) == size for path, size in files)
    except (OSError, TypeError, ValueError):
        return False


def with_files(summary: dict, paths: Iterable[str | Path]) -> dict:
    """``summary`` plus the ``files`` entry that lets a marker be checked on resume."""
    return {**summary, "files": [[str(p), os.path.getsize(p)] for p in paths]}


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
) -> Iterator[tuple[ShardTask, dict]]:
    """Run ``worker`` on every task not already done; yield ``(task, summary)`` as shards finish.

    Finished shards come back in completion order (not task order): callers that need a stable
    order sort by ``shard_id``. Memory stays flat: tasks are consumed lazily by joblib's
    dispatcher and only summaries travel back. ``prefer="threads"`` suits workers whose time
    goes to Pillow/numpy calls that release the GIL: one process, no worker start-up, no
    per-process memory. It is joblib's soft hint, so a backend chosen with
    ``joblib.parallel_config`` (Dask, Ray) still wins.
    """
    state_dir.mkdir(parents=True, exist_ok=True)
    jobs = resolve_jobs(n_jobs)
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
    try:
        if jobs == 1:
            results: Iterable = (_run_one(worker, t) for t in todo())
        else:
            results = Parallel(n_jobs=jobs, return_as="generator_unordered",
                               pre_dispatch="2*n_jobs", prefer=prefer)(
                delayed(_run_one)(worker, t) for t in todo())
        for task, summary in results:
            atomic_write_text(_marker(state_dir, task.shard_id), json.dumps(summary))
            bar.update(task.weight)
            while finished:
                yield finished.pop()
            yield task, summary
        while finished:
            yield finished.pop()
    finally:
        bar.close()


def _run_one(worker: Callable[[ShardTask], dict], task: ShardTask) -> tuple[ShardTask, dict]:
    """Run one task in the worker, and sync the files it vouches for before its summary goes
    back to become a marker (in the worker, so the syncs of parallel shards overlap)."""
    summary = worker(task)
    sync_files(path for path, _size in summary.get("files", []))
    return task, summary
