"""Work units: what one shard task reads, from either kind of source.

A unit is small and picklable (it travels to wherever the executor runs the shard) and names
its inputs without holding them. :meth:`entries` yields, for every input, where it comes from
(for reports) and a function that reads it as a :class:`Record`; reading happens in the worker,
inside the engine's bad-input handling, so an unreadable file is skipped and listed (a build)
or is one clear error (a conversion) - never a traceback.

* :class:`PlanUnit`: images of a build plan, opened by their source locator
  (:func:`imgtools.sources.open_locator`: a path, or a member of an archive);
* :class:`SliceUnit`: records of a dataset in any registered format, as cut by
  :mod:`imgtools.pipeline.slices`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

from imgtools.errors import UserError
from imgtools.formats.base import Format
from imgtools.pipeline.slices import OutputShard, read_slice
from imgtools.records import DatasetInfo, Record, safe_key
from imgtools.sources import open_locator

Entry = tuple[str, Callable[[], Record]]
"""``(where, read)``: a name for reports (a path, or a record's file name) and its reader."""


class PlanEntry(Protocol):
    """What a plan item must have (:class:`imgtools.plan.PlanItem` and the downsampled-ImageNet
    library's items both do)."""

    src: str
    split: str
    label: int | None
    wnid: str | None
    out_name: str


class WorkUnit(Protocol):
    split: str
    index: int
    num_shards: int

    @property
    def shard_id(self) -> str: ...

    @property
    def weight(self) -> int: ...

    def entries(self, info: DatasetInfo) -> Iterator[Entry]: ...


@dataclass(frozen=True)
class PlanUnit:
    """Shard ``index`` of ``num_shards`` of ``split``: the plan items it holds."""

    items: Sequence[PlanEntry]
    split: str
    index: int
    num_shards: int

    @property
    def shard_id(self) -> str:
        return f"{self.split}-{self.index:05d}"

    @property
    def weight(self) -> int:
        return len(self.items)

    def entries(self, info: DatasetInfo) -> Iterator[Entry]:
        for item in self.items:
            yield item.src, functools.partial(plan_record, item, info)


def plan_record(item: PlanEntry, info: DatasetInfo) -> Record:
    """The record of one plan item: its bytes read through the source, its label and names
    (the class of an unlabelled image is not given away)."""
    cls = info.classes[item.label] if item.label is not None else None
    return Record(safe_key(item.out_name), item.split, item.label, open_locator(item.src),
                  item.out_name, cls.wnid if cls else None, cls.name if cls else None)


@dataclass(frozen=True)
class SliceUnit:
    """One output shard of a conversion: slices of the input's shards, read by ``fmt``."""

    fmt: Format
    shard: OutputShard

    @property
    def split(self) -> str:
        return self.shard.split

    @property
    def index(self) -> int:
        return self.shard.index

    @property
    def num_shards(self) -> int:
        return self.shard.num_shards

    @property
    def shard_id(self) -> str:
        return f"{self.split}-{self.index:05d}-of-{self.num_shards:05d}"

    @property
    def weight(self) -> int:
        return self.shard.records

    def entries(self, info: DatasetInfo) -> Iterator[Entry]:
        count = 0
        for piece in self.shard.slices:
            for record in read_slice(self.fmt, piece, info):
                count += 1
                yield (f"{record.filename!r} (split {record.split})",
                       functools.partial(_given, record))
        if count != self.shard.records:
            raise UserError(
                f"read {count} records where the scan counted {self.shard.records}",
                path=self.shard.slices[0].shard.path if self.shard.slices else None,
                fix="the input changed during the conversion; run it again")


def _given(record: Record) -> Record:
    return record
