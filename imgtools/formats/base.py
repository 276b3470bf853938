"""The one small interface every format implements.

A format is a module in ``imgtools.formats`` exposing a :class:`Format` object. A conversion or
a build only ever talks to this interface, so adding a format adds every conversion to and from
it. Work is split into shards so it can run in parallel (joblib) and resume: a reader lists its
input shards as small picklable :class:`InputShard` values, and a writer writes one output shard
per :meth:`Format.open_writer` call, publishing it atomically on :meth:`ShardWriter.close`.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from imgtools.atomic import TMP_PREFIX
from imgtools.errors import UserError
from imgtools.records import DatasetInfo, Record


def files_named(path: Path, name_ok: Callable[[str], bool]) -> list[Path]:
    """Every regular file below ``path`` (sorted) whose name passes ``name_ok``, leaving out
    hidden files and folders and temporaries of an unfinished write.

    Names are tested before anything is stat'ed: format detection lists a dataset folder three
    times (TFRecord, tar, Parquet), and a JPEG folder holds a million files that match none.
    """

    found: list[Path] = []
    for folder, dirs, names in os.walk(path):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in names:
            if name.startswith((TMP_PREFIX, ".")) or not name_ok(name):
                continue
            file = Path(folder, name)
            if file.is_file():
                found.append(file)
    return sorted(found)


def files_with_suffix(path: Path, suffix: str) -> list[Path]:
    """``path`` itself if it is such a file, else every such file below it (sorted), leaving
    out temporaries of an unfinished write and hidden files."""
    path = Path(path)
    if path.is_file():
        return [path] if path.suffix == suffix else []
    return files_named(path, lambda name: name.endswith(suffix))


def listed_files(fmt: Format, path: Path, what: str, example: str) -> tuple[list[Path], Path]:
    """``fmt.files(path)`` and the folder their split names are relative to; a clear error
    when there are none."""

    path = Path(path)
    files = fmt.files(path)
    if not files:
        raise UserError(f"no {what} here", path=path, fix=f"expected {example}")
    return files, (path if path.is_dir() else path.parent)


@dataclass(frozen=True)
class InputShard:
    """A self-contained unit of reading: a file (or folder) and which split it holds."""

    path: str
    split: str | None = None
    options: dict = field(default_factory=dict, hash=False, compare=False)


class ShardWriter(ABC):
    """Writes the records of one output shard; nothing is visible until :meth:`close`.

    ``known_digests`` maps files a writer has already hashed (sha256) while writing them, so
    the build's SHA256SUMS need not read those files back.
    """

    known_digests: dict[Path, str]

    @abstractmethod
    def write(self, record: Record) -> None: ...

    @abstractmethod
    def close(self) -> list[Path]:
        """Publish the shard (rename temporaries into place); returns the files written."""

    @abstractmethod
    def abort(self) -> None:
        """Drop everything written so far (on error), leaving no partial file behind."""

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


class Format(ABC):
    """A dataset format: how to recognise it, read it shard by shard, and write it.

    Optional methods that make a conversion cheaper (``imgtools.convert`` looks them up):

    * ``scan_shard(shard, info) -> list[int]``: the image byte size of every record, without
      reading the images (tar headers, TFRecord framing, Parquet footers, ``stat``);
    * ``scan_records(shard, info) -> (sizes, offsets)``: the same plus the byte offset where
      each record starts;
    * ``read_range(shard, info, start, stop[, offset])``: records ``start:stop`` without
      reading the ones before (seeking to ``offset`` when the scan gave one).
    """

    name: str  # "folder", "tfrecord", "webdataset", "parquet", "pickle"

    @abstractmethod
    def detect(self, path: Path) -> bool:
        """True when ``path`` (a file or directory) holds a dataset in this format."""

    @abstractmethod
    def read_info(self, path: Path) -> DatasetInfo:
        """Class list and name of the dataset at ``path``."""

    @abstractmethod
    def input_shards(self, path: Path) -> list[InputShard]:
        """The independent pieces of the dataset at ``path``, in a stable order."""

    @abstractmethod
    def read_shard(self, shard: InputShard, info: DatasetInfo) -> Iterator[Record]:
        """Yield the records of one shard, in stored order."""

    @abstractmethod
    def open_writer(self, root: Path, info: DatasetInfo, split: str, shard_index: int,
                    num_shards: int, **options) -> ShardWriter:
        """A writer for shard ``shard_index`` of ``num_shards`` of ``split`` under ``root``."""

    def shard_done(self, root: Path, split: str, shard_index: int, num_shards: int) -> bool:
        """Whether a previous run already published this shard (for ``--resume``)."""
        return False

    def finalize(self, root: Path, info: DatasetInfo, counts: dict[str, int]) -> None:
        """Write dataset-level metadata once every shard is done (indexes, class lists)."""
        info.save(root, counts, fmt=self.name)
