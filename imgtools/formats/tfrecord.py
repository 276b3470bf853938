"""TFRecord: ``tf.train.Example`` records, the format TensorFlow input pipelines read.

This module is the format (finding, reading and writing shards); its parts are
:mod:`~imgtools.formats.tfrecord_framing` (records on disk, their CRCs and the ``.index``
files) and :mod:`~imgtools.formats.tfrecord_example` (the three feature-key schemas - tfds,
slim, flowers - and the Example codec).

Files are ``<split>.tfrecord-00000-of-00016`` (``.gz`` added for GZIP), each with an index
``<file>.index`` in the ``tfrecord2idx`` format of the ``tfrecord`` package (``offset length``
per record) so its ``TFRecordDataset`` can shard and shuffle. A GZIP file compresses the whole
stream, so offsets into it mean nothing and no index is written for it.

Reading checks both masked CRC-32C values of every record ourselves: the ``tfrecord`` package's
reader does not check them, and a flipped bit would otherwise become a silently wrong image.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import os
import re
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from imgtools.atomic import TMP_PREFIX, atomic_write_text, named, naming_errors, tmp_path_for
from imgtools.errors import CorruptDataError, UserError
from imgtools.formats.base import Format, InputShard, ShardWriter, files_named
from imgtools.formats.common import dataset_root, image_ext, info_from_labels, split_from_name
from imgtools.formats.gathered import GatheredFile
from imgtools.formats.tfrecord_example import (
    DEFAULT_SCHEMA,
    FLOWERS_NAME,
    SCHEMAS,
    check_label_key,
    detect_schema,
    example_features,
    keys_for,
    parse_example,
    serialize_example,
)
from imgtools.formats.tfrecord_framing import (
    frame_parts,
    index_problems,
    iter_frames,
    masked_crc,
    open_records,
    scan_lengths,
)
from imgtools.metadata.croissant import write_croissant
from imgtools.metadata.tfds import tfds_readable, write_tfds_metadata
from imgtools.pipeline.packing import PackedParts
from imgtools.records import DatasetInfo, Record, plain_filename, safe_key

_NAME = re.compile(r"(\.tfrecords?(-\d+-of-\d+)?|\.tfrec|^[a-z]+-\d{5}-of-\d{5})(\.gz)?$")


def is_tfrecord_file(path: Path) -> bool:
    name = path.name
    return (path.is_file() and not name.startswith((".", TMP_PREFIX))
            and bool(_NAME.search(name)))


# ---------------------------------------------------------------------------------- the format


class TFRecordFormat(PackedParts, Format):
    name = "tfrecord"
    default_shard_records = None
    default_shard_bytes = 200_000_000
    reader_options = frozenset({"image_key", "label_key", "filename_key"})
    writer_options = frozenset({"schema", "compression", "index"})
    """About 200 MB a shard: TensorFlow's guide asks for 100+ MB files for efficient reads."""

    # ------------------------------------------------------------------ reading
    def files(self, path: Path) -> list[Path]:
        path = Path(path)
        if path.is_file():
            return [path] if is_tfrecord_file(path) or path.suffix in (".tfrecord",) else []
        return files_named(path, lambda name: bool(_NAME.search(name)))

    def detect(self, path: Path) -> bool:
        path = Path(path)
        if path.is_file():
            return is_tfrecord_file(path)
        return path.is_dir() and bool(self.files(path))

    def _schema_of(self, path: Path) -> dict:
        """Schema options from the first record of the first file (all files must match)."""
        for file in self.files(path):
            for offset, payload in iter_frames(file):
                keys = set(parse_example(payload, file, offset))
                # Unknown keys: fall back to tfds; reading then names the keys it found
                # and asks for --image-key, unless the user already named them.
                return {"schema": detect_schema(keys) or DEFAULT_SCHEMA}
        return {"schema": DEFAULT_SCHEMA}

    def input_shards(self, path: Path, **options) -> list[InputShard]:
        """One shard per file; ``options`` (``image_key``, ``label_key``, ``filename_key``)
        override the keys of the schema detected from the first record."""

        path = Path(path)
        files = self.files(path)
        if not files:
            raise UserError("no TFRecord files here", path=path,
                            fix="expected files named *.tfrecord*, *.tfrec or "
                                "train-00000-of-00016")
        if "label_key" not in options:  # a key the user named is theirs to choose
            check_label_key(files, {**self._schema_of(path), **options})
        options = {**self._schema_of(path), **options}
        base = path if path.is_dir() else path.parent
        return [InputShard(str(f), split_from_name(str(f.relative_to(base))), options)
                for f in files]

    def read_info(self, path: Path, **options) -> DatasetInfo:

        path = Path(path)
        info = DatasetInfo.load(dataset_root(path))
        if info is not None:
            return info
        return info_from_labels(path, self._labels_seen(path, **options))

    def _labels_seen(self, path: Path, **options) -> Iterator[tuple[object, str | None,
                                                                    str | None]]:
        """Foreign TFRecords carry only integer labels: one pass over the records finds them
        (and TF-slim's class texts/synsets, when written)."""
        for shard in self.input_shards(path, **options):
            keys = keys_for(shard.options)
            for offset, payload in iter_frames(Path(shard.path)):
                feats = parse_example(payload, Path(shard.path), offset)
                text, synset = feats.get("image/class/text"), feats.get("image/class/synset")
                yield (feats.get(keys["label"]),
                       text.decode() if isinstance(text, bytes) else None,
                       synset.decode() if isinstance(synset, bytes) else None)

    def scan_shard(self, shard: InputShard, info: DatasetInfo) -> list[int]:
        """Approximate image size per record: the Example's length (a few dozen bytes of keys
        and label more than the image), read from the headers without reading payloads."""
        return [length for _offset, length in scan_lengths(Path(shard.path))]

    def read_shard(self, shard: InputShard, info: DatasetInfo) -> Iterator[Record]:
        return self.read_range(shard, info, 0, None)

    def read_range(self, shard: InputShard, info: DatasetInfo, start: int,
                   stop: int | None, offset: int | None = None) -> Iterator[Record]:
        path = Path(shard.path)
        keys = keys_for(shard.options)
        split = shard.split or "train"
        index = start
        for offset, payload in iter_frames(path, skip=start):
            if stop is not None and index >= stop:
                return
            yield self._record(parse_example(payload, path, offset), keys, split, info, path,
                               offset, index)
            index += 1

    @staticmethod
    def _record(feats: dict, keys: dict[str, str], split: str, info: DatasetInfo, path: Path,
                offset: int, index: int) -> Record:
        image = feats.get(keys["image"])
        if not isinstance(image, bytes):  # b"" is kept: an empty file converts losslessly
            raise UserError(
                f"record {index} has no image bytes under {keys['image']!r} "
                f"(its features: {sorted(feats)}) - mixed schemas in one dataset?",
                path=f"{path} (at byte offset {offset})",
                fix="convert files of different schemas separately, or name the keys with "
                    "--image-key/--label-key/--filename-key")
        label = feats.get(keys["label"])
        if label is not None and not isinstance(label, int):
            raise UserError(f"record {index}: label feature {keys['label']!r} is not an integer",
                            path=f"{path} (at byte offset {offset})", fix="name it with "
                            "--label-key")
        if label is not None and label < 0:
            label = None
        if label is not None and label >= len(info.classes):
            raise CorruptDataError(
                f"record {index}: label {label} but the dataset has {len(info.classes)} "
                "classes", path=path, offset=offset,
                fix="fix the class list in imgtools-dataset.json next to the files")

        raw_name = feats.get(keys["filename"])
        if keys["filename"] == "id" and isinstance(feats.get(FLOWERS_NAME), bytes):
            raw_name = feats[FLOWERS_NAME]  # our flowers records keep the full name there
        name = plain_filename(raw_name.decode("utf-8", "replace")
                              if isinstance(raw_name, bytes) else "")
        if not name:  # unique per record: the whole shard file name, then the record's index
            name = f"{Path(path).name.replace('.', '_')}-{index:06d}"
        if "." not in name:  # flowers ids, missing names: give the file its real extension
            name = f"{name}.{image_ext(image)}"
        cls = info.classes[label] if label is not None else None
        return Record(key=safe_key(name), split=split, label=label, image=image, filename=name,
                      wnid=cls.wnid if cls else None, class_name=cls.name if cls else None)

    # ------------------------------------------------------------------ writing
    def container_problems(self, path: Path) -> list[dict]:
        """Both masked CRC-32C of every record (the tfrecord reader checks none). GZIP is told
        by the magic bytes, through the reader's own opener: TensorFlow's GZIP writer adds no
        ``.gz`` suffix, and a file the reader reads must not be called corrupted here. Then the
        shard's ``.index``, which the ``tfrecord`` reader seeks by."""
        problems = []
        offset = 0
        framing: list[tuple[int, int]] = []
        with open_records(path) as f:
            while True:
                head = f.read(12)
                if not head:
                    break
                if len(head) < 12:
                    problems.append({"path": str(path), "offset": offset,
                                     "what": "truncated record header"})
                    break
                length, length_crc = struct.unpack("<QI", head)
                if masked_crc(head[:8]) != length_crc:
                    problems.append({"path": str(path), "offset": offset,
                                     "what": "length CRC mismatch (corrupted record)"})
                    break
                data = f.read(length)
                tail = f.read(4)
                if len(data) < length or len(tail) < 4:
                    problems.append({"path": str(path), "offset": offset,
                                     "what": "truncated record"})
                    break
                if masked_crc(data) != struct.unpack("<I", tail)[0]:
                    problems.append({"path": str(path), "offset": offset,
                                     "what": "data CRC mismatch (corrupted record)"})
                framing.append((offset, 16 + length))
                offset += 16 + length
        if not problems:
            problems += index_problems(path, framing)
        return problems

    def shard_path(self, root: Path, split: str, shard_index: int, num_shards: int,
                   compression: str | None = None) -> Path:
        suffix = ".gz" if compression else ""
        return Path(root) / f"{split}.tfrecord-{shard_index:05d}-of-{num_shards:05d}{suffix}"

    def open_writer(self, root: Path, info: DatasetInfo, split: str, shard_index: int,
                    num_shards: int, *, schema: str = DEFAULT_SCHEMA,
                    compression: str | None = None, index: bool = True,
                    digests: bool = False) -> ShardWriter:
        if schema not in SCHEMAS:
            raise UserError(f"unknown TFRecord schema {schema!r}",
                            fix=f"use one of: {', '.join(SCHEMAS)}")
        compression = (compression or "").lower() or None
        if compression not in (None, "gzip"):
            raise UserError(f"unsupported TFRecord compression {compression!r}",
                            fix="use gzip, or none (the tfrecord package reads only GZIP)")
        path = self.shard_path(root, split, shard_index, num_shards, compression)
        return TFRecordShardWriter(path, schema, compression, index and not compression,
                                   digests)

    def finalize(self, root: Path, info: DatasetInfo, counts: dict[str, int],
                 facts: dict[str, dict] | None = None) -> None:
        """Sidecar, plus TFDS's metadata so ``tfds.builder_from_directory(root)`` loads the
        files in place (:mod:`imgtools.metadata.tfds`; not for GZIP, which TFDS cannot read)."""
        root = Path(root)
        shards = {split: [f for f in sorted(root.glob(f"{split}.tfrecord-*-of-*"))
                          if not f.name.endswith(".index")] for split in counts}
        shards = {split: files for split, files in shards.items() if files}
        files = [f for split_files in shards.values() for f in split_files]
        if files and tfds_readable(files) is None:
            lengths = {split: [_records_in(f, (facts or {}).get(f.name)) for f in split_files]
                       for split, split_files in shards.items()}
            nbytes = {split: sum(f.stat().st_size for f in split_files)
                      for split, split_files in shards.items()}
            write_tfds_metadata(root, info, self._schema_of(root)["schema"], lengths, nbytes)
        super().finalize(root, info, counts)
        write_croissant(root, info, self.name, [s for s, n in counts.items() if n])



def _records_in(path: Path, known: dict | None) -> int:
    """Records in a shard: as its writer counted them, else from its framing."""
    return known["records"] if known is not None else sum(1 for _ in scan_lengths(path))


class TFRecordShardWriter(ShardWriter):
    """Writes one ``.tfrecord`` shard (and its index) under temporary names, renamed on close.
    With ``digests``, an uncompressed shard is hashed as it is written (the bytes are at hand:
    reading the file back for ``SHA256SUMS`` would read every output byte twice, from disk
    once the output outgrows the page cache); a GZIP shard is hashed afterwards."""

    def __init__(self, path: Path, schema: str, compression: str | None, index: bool,
                 digests: bool = False):
        self.path = path
        self._hashed = digests and not compression
        self.schema = schema
        self.index_path = path.with_name(path.name + ".index") if index else None
        path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = tmp_path_for(path)
        # Uncompressed records go to the file as their pieces, by writev (gathered.py): no copy.
        self._file = GatheredFile(self.tmp, digest=self._hashed)
        self._out: BinaryIO | None = (gzip.GzipFile(filename="", mode="wb",
                                                    fileobj=self._file.raw, mtime=0)
                                      if compression else None)
        self._index = io.StringIO() if index else None
        self._offset = 0
        self._records = 0

    def write(self, record: Record) -> None:
        parts = frame_parts([serialize_example(example_features(record, self.schema))])
        size = sum(map(len, parts))
        try:  # what naming_errors does, without a context manager per record
            if self._out is None:
                self._file.write(parts, size)
            else:
                self._out.write(b"".join(parts))
        except OSError as e:
            if e.filename:
                raise
            raise named(e, self.path) from e
        if self._index is not None:
            self._index.write(f"{self._offset} {size}\n")
        self._offset += size
        self._records += 1

    def close(self) -> list[Path]:

        written = []
        try:  # a full disk may fail the GZIP trailer or the index: no temporary file may stay
            with naming_errors(self.path):
                if self._out is not None:
                    self._out.close()
                self._file.close()
            if self.index_path is not None and self._index is not None:
                index = self._index.getvalue()
                atomic_write_text(self.index_path, index)
                written.append(self.index_path)
                if self._hashed:
                    self.known_digests = {
                        self.index_path: hashlib.sha256(index.encode()).hexdigest()}
            os.replace(self.tmp, self.path)
        except BaseException:
            self.abort()
            raise
        if self._hashed:
            self.known_digests = {**self.known_digests, self.path: self._file.hexdigest()}
        self.file_facts = {self.path: {"records": self._records}}
        return [self.path, *written]

    def abort(self) -> None:
        with contextlib.suppress(Exception):
            if self._out is not None:
                self._out.close()
        with contextlib.suppress(OSError):
            self._file.abort()
        with contextlib.suppress(FileNotFoundError):
            self.tmp.unlink()


FORMAT = TFRecordFormat()
