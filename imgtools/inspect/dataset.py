"""What every inspection command shares: a dataset opened through the format registry, and a
worker run on each of its input shards in parallel, returning small summaries."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from imgtools.errors import UserError
from imgtools.executors.base import Executor
from imgtools.executors.local import LocalExecutor
from imgtools.formats import detect_format
from imgtools.formats.base import Format, InputShard
from imgtools.records import SPLITS, DatasetInfo


@dataclass
class Dataset:
    path: Path
    fmt: Format
    info: DatasetInfo
    shards: list[InputShard]


def open_dataset(path: str | Path) -> Dataset:
    path = Path(path)
    fmt = detect_format(path)
    shards = fmt.input_shards(path)
    if not shards:
        raise UserError(f"no {fmt.name} files found", path=path,
                        fix="check the path; the dataset seems empty")
    return Dataset(path, fmt, fmt.read_info(path), shards)


def map_shards(worker: Callable, shards: list[InputShard], args: tuple, *,
               n_jobs: int | None, desc: str, quiet: bool,
               executor: Executor | None = None) -> Iterator[dict]:
    """``worker(fmt_name, shard, *args)`` on every shard in parallel (on ``executor``;
    default: this machine with ``n_jobs`` workers); summaries as they come."""
    # lazy: `imgtools info` opens a dataset here but maps no shards, and draws no bar
    from imgtools.progress import tqdm

    executor = executor or LocalExecutor(n_jobs)
    call = functools.partial(_call_shard, worker, args)
    results = (summary for _shard, summary in
               executor.map_unordered(call, shards, tasks=len(shards)))
    yield from tqdm(results, total=len(shards), desc=desc, unit="shard", disable=quiet)


def _call_shard(worker: Callable, args: tuple, shard: InputShard) -> dict:
    return worker(*args[:1], shard, *args[1:])


def split_order(splits: Iterable[str]) -> list[str]:

    return sorted(set(splits), key=lambda s: (SPLITS.index(s) if s in SPLITS else 9, s))
