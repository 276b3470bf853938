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
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from imgtools.errors import UserError
from imgtools.executors.base import Executor
from imgtools.executors.local import LocalExecutor
from imgtools.formats.base import Format, InputShard
from imgtools.formats.common import split_sort_key
from imgtools.pipeline.identity import (
    InputsFile,
    folder_lines,
    tree_listing,
    write_input_lines,
)
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


class ShardCutter:
    """Cuts one split's records, in order, into output shards of at most ``max_records``
    records and ``max_bytes`` image bytes (a single bigger image still gets a shard), input
    shard by input shard: only the output shard being filled is held."""

    def __init__(self, max_records: int | None, max_bytes: int | None):
        self.max_records, self.max_bytes = max_records, max_bytes
        self.shards: list[tuple[list[Slice], int, int]] = []
        self._slices: list[Slice] = []
        self._count = self._nbytes = 0

    def add(self, shard: InputShard, sizes: list[int], offsets: list[int] | None = None
            ) -> None:
        """The next input shard's records (their byte sizes, and offsets when known)."""
        def piece(start: int, stop: int) -> Slice:
            return Slice(shard, start, stop, offsets[start] if offsets else None)

        max_records, max_bytes = self.max_records, self.max_bytes
        count, nbytes, start = self._count, self._nbytes, 0
        for i, size in enumerate(sizes):
            full = (max_records and count >= max_records) or (
                max_bytes and nbytes + size > max_bytes)
            if count and full:
                if i > start:
                    self._slices.append(piece(start, i))
                self.shards.append((self._slices, count, nbytes))
                self._slices, count, nbytes, start = [], 0, 0, i
            count += 1
            nbytes += size
        if len(sizes) > start:
            self._slices.append(piece(start, len(sizes)))
        self._count, self._nbytes = count, nbytes

    def finish(self) -> list[tuple[list[Slice], int, int]]:
        """``(slices, records, bytes)`` per output shard."""
        if self._count:
            self.shards.append((self._slices, self._count, self._nbytes))
            self._slices, self._count, self._nbytes = [], 0, 0
        return self.shards


def cut_shards(scans: Iterable[tuple], max_records: int | None, max_bytes: int | None
               ) -> list[tuple[list[Slice], int, int]]:
    """Cut one split's records into output shards (:class:`ShardCutter`). ``scans`` holds
    ``(shard, sizes)`` or ``(shard, sizes, offsets)`` per input shard. Returns
    ``(slices, records, bytes)`` per output shard."""
    cutter = ShardCutter(max_records, max_bytes)
    for shard, sizes, *rest in scans:
        cutter.add(shard, sizes, rest[0] if rest else None)
    return cutter.finish()


def _scan_one(fmt: Format, info: DatasetInfo, sizes: bool, shard: InputShard
              ) -> tuple[list[int], list[int] | None]:
    return fmt.scan_records(shard, info, sizes=sizes)


def _by_split(src_fmt: Format, shards: list[InputShard]) -> dict[str, list[InputShard]]:
    for shard in shards:
        if not shard.split:
            raise UserError(f"the {src_fmt.name} reader gave no split for this input shard",
                            path=shard.path, fix="report this as a bug in imgtools")
    by_split: dict[str, list[InputShard]] = {}
    for shard in shards:
        by_split.setdefault(shard.split, []).append(shard)
    return by_split


def _output_shards(cuts_by_split: dict[str, list[tuple[list[Slice], int, int]]]
                   ) -> list[OutputShard]:
    return [OutputShard(split, i, len(cuts_by_split[split]), tuple(sl), n, b)
            for split in sorted(cuts_by_split, key=split_sort_key)
            for i, (sl, n, b) in enumerate(cuts_by_split[split])]


def plan_conversion(src_fmt: Format, shards: list[InputShard], info: DatasetInfo,
                    max_records: int | None, max_bytes: int | None, n_jobs: int,
                    quiet: bool = True, executor: Executor | None = None
                    ) -> list[OutputShard]:
    """Scan the input and cut every split into output shards (see the module docstring); the
    scans run on ``executor`` (default: this machine with ``n_jobs`` workers)."""
    by_split = _by_split(src_fmt, shards)
    executor = executor or LocalExecutor(n_jobs if len(shards) > 1 else 1)
    scan = functools.partial(_scan_one, src_fmt, info, bool(max_bytes))
    cuts: dict[str, list[tuple[list[Slice], int, int]]] = {}
    for split in sorted(by_split, key=split_sort_key):
        group = by_split[split]
        sizes = executor.map(scan, group, tasks=len(group))
        scans = ((shard, *scan) for shard, scan in zip(
            group, tqdm(sizes, total=len(group), desc=f"scan {split}", unit="file",
                        disable=quiet), strict=True))
        cuts[split] = cut_shards(scans, max_records, max_bytes)
    return _output_shards(cuts)


def plan_while_listing(src_fmt: Format, src: Path, shards: list[InputShard],
                       info: DatasetInfo, max_records: int | None, max_bytes: int | None,
                       inputs: Path) -> tuple[list[OutputShard], InputsFile]:
    """:func:`plan_conversion` for an input whose record sizes are its files' sizes (a JPEG
    folder: :meth:`Format.sizes_from_listing`), made from the listing that writes the input's
    identity to ``inputs`` (:func:`~imgtools.pipeline.identity.tree_listing`): one ``stat`` per
    input file serves both, where a scan would make a second. The plan is the one
    :func:`plan_conversion` makes: the listing visits folders in ``os.walk`` order, and an
    input shard reached before its turn in the split waits (one folder's sizes); a shard the
    listing does not reach (a folder behind a symlink) is scanned as :func:`plan_conversion`
    would."""
    by_split = _by_split(src_fmt, shards)
    cutters = {split: ShardCutter(max_records, max_bytes) for split in by_split}
    done = dict.fromkeys(by_split, 0)  # shards of each split handed to its cutter
    waiting: dict[tuple[str, int], list[int]] = {}  # listed before their turn
    at_folder: dict[str, list[tuple[str, int]]] = {}
    for split, group in by_split.items():
        for index, shard in enumerate(group):
            at_folder.setdefault(os.path.normpath(shard.path), []).append((split, index))

    def hand_over(split: str) -> None:
        group, cutter = by_split[split], cutters[split]
        while done[split] < len(group) and (split, done[split]) in waiting:
            cutter.add(group[done[split]], waiting.pop((split, done[split])))
            done[split] += 1

    def identity() -> Iterator[str]:
        for folder, files in tree_listing(src):
            here = at_folder.get(os.path.normpath(folder))
            if here:
                sizes = {name: size for name, size, _mtime, regular in files if regular}
                for split, index in here:
                    listed = src_fmt.sizes_from_listing(by_split[split][index], sizes)
                    if listed is not None:
                        waiting[split, index] = listed
                        hand_over(split)
            yield folder_lines(folder, files)

    count, digest = write_input_lines(inputs, identity())
    for split, group in by_split.items():  # what the listing did not reach
        for index in range(done[split], len(group)):
            if (split, index) not in waiting:
                waiting[split, index] = list(src_fmt.scan_records(
                    group[index], info, sizes=bool(max_bytes))[0])
        hand_over(split)
    return (_output_shards({split: cutter.finish() for split, cutter in cutters.items()}),
            InputsFile(inputs, count, digest))
