"""The one small interface every format implements.

A format is a module in ``imgtools.formats`` exposing a :class:`Format` object. A conversion or
a build only ever talks to this interface, so adding a format adds every conversion to and from
it. Work is split into shards so it can run in parallel (on an executor) and resume: a reader
lists its input shards as small picklable :class:`InputShard` values, and a writer writes one
output shard per :meth:`Format.open_writer` call, publishing it atomically on
:meth:`ShardWriter.close`.
"""

from __future__ import annotations

import itertools
import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from imgtools.atomic import TMP_PREFIX, folders_of
from imgtools.checksums import relative_name, sha256_file, sha256sum_lines
from imgtools.errors import UserError
from imgtools.executors.base import Executor
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
    the build's SHA256SUMS need not read those files back; ``known_sizes`` their sizes;
    ``file_facts`` what the format's :meth:`Format.finalize` would otherwise read back from a
    file of many records (``{"records": n}``, and whatever else that format lists), set by
    writers of such files only, so it holds one entry per output file, never one per image.
    """

    known_digests: dict[Path | str, str] = {}  # noqa: RUF012 - read-only default; writers that hash set their own
    known_sizes: dict[Path | str, int] = {}  # noqa: RUF012 - the same, for the files' sizes
    file_facts: dict[Path | str, dict] = {}  # noqa: RUF012 - the same, for finalize's facts

    def digest(self, path: Path | str) -> str:
        """The sha256 of a file this writer wrote: known from writing it, else read back."""
        return self.known_digests.get(path) or sha256_file(path)

    def size(self, path: Path | str) -> int:
        """The size of a file this writer wrote: known from writing it, else ``stat``'ed (a
        writer of one file per image saves a ``stat`` per image)."""
        size = self.known_sizes.get(path)
        return os.path.getsize(path) if size is None else size

    def sizes(self, paths: list[Path] | list[str]) -> list[int]:
        """The sizes of ``paths`` (what :meth:`close` returned), in their order."""
        return [self.size(p) for p in paths]

    def folders(self, paths: list[Path] | list[str]) -> set[str]:
        """The folders holding ``paths`` (what :meth:`close` returned): what must be synced
        with them before a marker vouches for them."""
        return folders_of(map(os.fspath, paths))

    def sha256sum_text(self, root: str, paths: list[Path] | list[str]) -> str:
        """The ``SHA256SUMS`` lines of ``paths`` (what :meth:`close` returned), named relative
        to ``root``, the output folder this writer wrote into."""
        return sha256sum_lines((self.digest(p), relative_name(p, root)) for p in paths)

    @abstractmethod
    def write(self, record: Record) -> None: ...

    @abstractmethod
    def close(self) -> list[Path] | list[str]:
        """Publish the shard (rename temporaries into place); returns the files written (as
        strings by a writer that makes one file per image: no path object per image)."""

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

    What a format can do is declared, not discovered: the class attributes below say which
    options its reader and writer take (anything else is an error before any work starts, so a
    misspelt option never does nothing) and how it sizes output files; the methods with a
    default here (:meth:`scan_records`, :meth:`read_range`) are overridden by formats that can
    do them cheaply (tar headers, TFRecord framing, Parquet footers, ``stat``).
    """

    name: str  # "folder", "tfrecord", "webdataset", "parquet", "pickle"
    reader_options: frozenset[str] = frozenset()
    """Keyword options :meth:`read_info` and :meth:`input_shards` accept."""
    writer_options: frozenset[str] = frozenset()
    """Keyword options :meth:`open_writer` accepts besides :data:`COMMON_WRITER_OPTIONS`."""
    default_shard_records: int | None = None
    default_shard_bytes: int | None = None
    takes: frozenset[str] = frozenset({"jpeg", "as-input"})
    """What its writer takes (:data:`imgtools.transforms.base.PRODUCTS`): encoded images, or
    a pickle's raw rows. The engine refuses a job whose transform makes something else."""
    pass_options: frozenset[str] = frozenset()
    """Options of :meth:`second_pass` (output file sizes; a pickle's batch count)."""
    writes_parts: bool = False
    """True when the work shards' files are *parts* (in the run's work folder) from which
    :meth:`second_pass` makes the output: record files of the format's own size, or the
    shuffled batches and mean image of CIFAR-style pickles."""
    records_are_files: bool = False
    """True when each record is a file of its own, whose size is the image's (a JPEG folder):
    a conversion then plans from the listing that makes the input's identity
    (:meth:`sizes_from_listing`), one ``stat`` per file serving both."""

    def split_options(self, options: dict) -> tuple[dict, dict]:
        """``(writer options, second-pass options)`` of a run's format options."""
        return ({k: v for k, v in options.items() if k not in self.pass_options},
                {k: v for k, v in options.items() if k in self.pass_options})

    def check_options(self, options: dict, kind: str = "writer") -> None:
        """Refuse an option this format's reader or writer does not take, naming those it
        does."""
        known = (self.writer_options | self.pass_options | COMMON_WRITER_OPTIONS
                 if kind == "writer" else self.reader_options)
        unknown = sorted(set(options) - known)
        if unknown:
            takes = ", ".join(sorted(known - COMMON_WRITER_OPTIONS)) or "none"
            raise UserError(f"the {self.name} {kind} has no option "
                            f"{', '.join(map(repr, unknown))}",
                            fix=f"drop it; the {self.name} {kind} takes: {takes}")

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

    def scan_shard(self, shard: InputShard, info: DatasetInfo) -> list[int]:
        """The image byte size of every record of ``shard``, in order. This default reads
        every record; formats that can tell from headers override it."""
        return [len(r.image) for r in self.read_shard(shard, info)]

    def scan_records(self, shard: InputShard, info: DatasetInfo, *, sizes: bool = True
                     ) -> tuple[list[int], list[int] | None]:
        """:meth:`scan_shard` plus the byte offset where each record starts, when the format
        can say (then :meth:`read_range` can seek there). ``sizes=False``: the plan cuts by
        records alone, so a format whose sizes cost something per record (a stat) may give
        0 for each."""
        return list(self.scan_shard(shard, info)), None

    def read_range(self, shard: InputShard, info: DatasetInfo, start: int, stop: int | None,
                   offset: int | None = None) -> Iterator[Record]:
        """Records ``start:stop`` of ``shard``. This default walks from the first record;
        formats that can seek override it (``offset``: where record ``start`` begins, when
        :meth:`scan_records` knew)."""
        return itertools.islice(self.read_shard(shard, info), start, stop)

    def sizes_from_listing(self, shard: InputShard, sizes: Mapping[str, int]
                           ) -> list[int] | None:
        """The image byte size of every record of ``shard``, in order, told from ``sizes``
        (every regular file of the shard's folder, by name, from the listing that makes the
        input's identity), or None when they cannot be told from it (the shard is then
        scanned). Only a format whose :attr:`records_are_files` can."""
        return None

    @abstractmethod
    def open_writer(self, root: Path, info: DatasetInfo, split: str, shard_index: int,
                    num_shards: int, *, digests: bool = False) -> ShardWriter:
        """A writer for shard ``shard_index`` of ``num_shards`` of ``split`` under ``root``.
        ``digests``: hash files while writing them, when the writer can (see
        :attr:`ShardWriter.known_digests`)."""

    def second_pass(self, ctx: PassContext) -> list[tuple[str, str]]:
        """Make the output at ``ctx.output`` from the parts at ``ctx.parts`` (only for a format
        that :attr:`writes_parts`), running its tasks on ``ctx.executor`` with done markers in
        ``ctx.state``. Returns ``(path relative to the output, sha256)`` of every file it wrote,
        in order, for ``SHA256SUMS``."""
        raise NotImplementedError(f"the {self.name} format writes its output directly")

    def container_problems(self, path: Path) -> list[dict]:
        """What is wrong with one file of this format as a container (checksums, framing,
        truncation), beyond what decoding its records shows: ``verify`` asks each format.
        Each problem is ``{"path", "what"[, "offset"]}``; an exception counts as one too."""
        return []

    def finalize(self, root: Path, info: DatasetInfo, counts: dict[str, int],
                 facts: dict[str, dict] | None = None) -> None:
        """Write dataset-level metadata once every shard is done (indexes, class lists).
        ``facts``: the writers' :attr:`ShardWriter.file_facts` by path relative to ``root``,
        as this run's shard summaries carried them (a file not in it is read back)."""
        info.save(root, counts, fmt=self.name)


@dataclass
class PassContext:
    """What a format's :meth:`Format.second_pass` gets: where the parts are, where the output
    goes, its own marker folder, the pass's options, and how to run tasks."""

    parts: Path
    output: Path
    state: Path
    info: DatasetInfo
    options: dict
    writer_options: dict = field(default_factory=dict)
    """What the format's writer takes (packing writes the output files with it)."""
    n_jobs: int | None = None
    quiet: bool = True
    executor: Executor | None = None
    skipped: list[dict] = field(default_factory=list)
    """The inputs the work shards skipped (a pass that ends up with nothing names them)."""


COMMON_WRITER_OPTIONS = frozenset({"digests"})
"""Options every writer takes (a writer that cannot use one ignores it)."""
