"""Plan a dataset source: cut the records of a dataset in any registered format into output
shards of a target record count and byte size, without reading the images.

1. the input format lists its shards (files) and each is *scanned* for the byte size of every
   record (formats that can do this cheaply - TFRecord framing, tar headers, Parquet metadata -
   override :meth:`Format.scan_records`; any other format is read once);
2. the records of every split, in stored order, are cut into output shards by record count and
   byte size; each output shard is a list of slices ``(input shard, start, stop)``.

The cut depends only on the records, so the output is the same however many workers run it
and however often it is resumed. ``imgtools convert`` plans its input this way, and record-format
builds plan the packing of their parts (:mod:`imgtools.pipeline.packing`). The plan holds a few
numbers per output shard, never per image.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from imgtools.errors import UserError
from imgtools.executors.base import Executor
from imgtools.executors.local import LocalExecutor
from imgtools.formats.base import Format, InputShard
from imgtools.formats.common import split_sort_key
from imgtools.progress import tqdm
from imgtools.records import DatasetInfo, Record

DEFAULT_TASK_RECORDS = 1000
"""Records per task when the output format has no shards of its own (folder): enough to
amortise the executor's per-task overhead, small enough to spread over the workers."""


@dataclass(frozen=True)
class Slice:
    """Records ``start:stop`` of input shard ``shard``; ``offset``, when the scan knew it, is
    the byte offset of record ``start``, so a reader can seek there instead of walking."""

    shard: InputShard
    start: int
    stop: int
    offset: int | None = None


@dataclass(frozen=True)
class OutputShard:
    split: str
    index: int
    num_shards: int
    slices: tuple[Slice, ...]
    records: int
    nbytes: int


def read_slice(fmt: Format, piece: Slice, info: DatasetInfo) -> Iterator[Record]:
    """Records ``start:stop`` of a shard (seeking to the slice's byte ``offset`` when the scan
    recorded one)."""
    return fmt.read_range(piece.shard, info, piece.start, piece.stop, offset=piece.offset)


def cut_shards(scans: Iterable[tuple], max_records: int | None, max_bytes: int | None
               ) -> list[tuple[list[Slice], int, int]]:
    """Cut one split's records, in order, into output shards of at most ``max_records`` records
    and ``max_bytes`` image bytes (a single bigger image still gets a shard). ``scans`` holds
    ``(shard, sizes)`` or ``(shard, sizes, offsets)`` per input shard. Returns
    ``(slices, records, bytes)`` per output shard."""
    shards: list[tuple[list[Slice], int, int]] = []
    slices: list[Slice] = []
    count = nbytes = 0
    for shard, sizes, *rest in scans:
        offsets = rest[0] if rest else None

        def piece(start: int, stop: int, shard=shard, offsets=offsets) -> Slice:
            return Slice(shard, start, stop, offsets[start] if offsets else None)

        start = 0
        for i, size in enumerate(sizes):
            full = (max_records and count >= max_records) or (
                max_bytes and nbytes + size > max_bytes)
            if count and full:
                if i > start:
                    slices.append(piece(start, i))
                shards.append((slices, count, nbytes))
                slices, count, nbytes, start = [], 0, 0, i
            count += 1
            nbytes += size
        if len(sizes) > start:
            slices.append(piece(start, len(sizes)))
    if count:
        shards.append((slices, count, nbytes))
    return shards


def _scan_one(fmt: Format, info: DatasetInfo, sizes: bool, shard: InputShard
              ) -> tuple[list[int], list[int] | None]:
    return fmt.scan_records(shard, info, sizes=sizes)


def plan_conversion(src_fmt: Format, shards: list[InputShard], info: DatasetInfo,
                    max_records: int | None, max_bytes: int | None, n_jobs: int,
                    quiet: bool = True, executor: Executor | None = None
                    ) -> list[OutputShard]:
    """Scan the input and cut every split into output shards (see the module docstring); the
    scans run on ``executor`` (default: this machine with ``n_jobs`` workers)."""
    for shard in shards:
        if not shard.split:
            raise UserError(f"the {src_fmt.name} reader gave no split for this input shard",
                            path=shard.path, fix="report this as a bug in imgtools")
    by_split: dict[str, list[InputShard]] = {}
    for shard in shards:
        by_split.setdefault(shard.split, []).append(shard)
    plan: list[OutputShard] = []
    executor = executor or LocalExecutor(n_jobs if len(shards) > 1 else 1)
    scan = functools.partial(_scan_one, src_fmt, info, bool(max_bytes))
    for split in sorted(by_split, key=split_sort_key):
        group = by_split[split]
        sizes = executor.map(scan, group, tasks=len(group))
        scans = ((shard, *scan) for shard, scan in zip(
            group, tqdm(sizes, total=len(group), desc=f"scan {split}", unit="file",
                        disable=quiet), strict=True))
        cuts = cut_shards(scans, max_records, max_bytes)
        plan.extend(OutputShard(split, i, len(cuts), tuple(sl), n, b)
                    for i, (sl, n, b) in enumerate(cuts))
    return plan
