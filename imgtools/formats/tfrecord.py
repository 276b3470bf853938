"""TFRecord: ``tf.train.Example`` records, the format TensorFlow input pipelines read.

Three feature-key conventions are in use and all three are read and written:

========  ===================  =====================  ================  =========================
schema    image                label                  file name         also written
========  ===================  =====================  ================  =========================
tfds      ``image``            ``label``              ``file_name``
slim      ``image/encoded``    ``image/class/label``  ``image/filename`` ``image/format``,
                                                                         ``image/height``/``width``,
                                                                         ``image/class/synset``,
                                                                         ``image/class/text``
flowers   ``image``            ``class``              ``id`` (the key)   ``file_name`` (the name)
========  ===================  =====================  ================  =========================

Labels are 0-based in every schema (slim's flowers converter does the same; Inception's ImageNet
converter used 1..1000 - name the key and subtract yourself if you read such files elsewhere).
Unlabelled records (``unsup``) get label -1, or no ``class`` feature in the flowers schema (as
the Kaggle test split has none).

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
import io
import os
import re
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import crc32c

from imgtools.atomic import TMP_PREFIX, atomic_write_text, naming_errors, tmp_path_for
from imgtools.errors import CorruptDataError, UserError
from imgtools.formats.base import Format, InputShard, ShardWriter, files_named
from imgtools.formats.common import dataset_root, image_ext, info_from_labels, split_from_name
from imgtools.metadata.croissant import write_croissant
from imgtools.metadata.tfds import tfds_readable, write_tfds_metadata
from imgtools.pipeline.packing import PackedParts
from imgtools.records import DatasetInfo, Record, plain_filename, safe_key

SCHEMAS: dict[str, dict[str, str]] = {
    "tfds": {"image": "image", "label": "label", "filename": "file_name"},
    "slim": {"image": "image/encoded", "label": "image/class/label",
             "filename": "image/filename", "format": "image/format",
             "height": "image/height", "width": "image/width",
             "synset": "image/class/synset", "text": "image/class/text"},
    "flowers": {"image": "image", "label": "class", "filename": "id"},
}
DEFAULT_SCHEMA = "tfds"

_NAME = re.compile(r"(\.tfrecords?(-\d+-of-\d+)?|\.tfrec|^[a-z]+-\d{5}-of-\d{5})(\.gz)?$")
_GZIP_MAGIC = b"\x1f\x8b"
_HEADER = struct.Struct("<QI")
_CRC = struct.Struct("<I")
_MASK_DELTA = 0xA282EAD8


def masked_crc(data: bytes) -> int:
    """TFRecord's masked CRC-32C (Castagnoli): rotate right 15 bits, add a constant."""
    return _mask(crc32c.crc32c(data))


def _mask(crc: int) -> int:
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


def frame_parts(payload: list[bytes]) -> list[bytes]:
    """One record on disk (length, its CRC, payload, payload's CRC) as a list of pieces, the
    payload's pieces included as they are: a writer hands them to ``writev``, so an image is
    never copied into a new buffer. The CRC runs over the pieces in turn."""
    size = sum(len(p) for p in payload)
    crc = 0
    for piece in payload:
        crc = crc32c.crc32c(piece, value=crc)
    length = struct.pack("<Q", size)
    return [length + _CRC.pack(masked_crc(length)), *payload, _CRC.pack(_mask(crc))]


def write_all(fd: int, parts: list[bytes]) -> None:
    """``os.writev`` until every byte is written (a regular file rarely takes less, but may)."""
    views = [memoryview(p) for p in parts]
    while views:
        written = os.writev(fd, views)
        while views and written >= len(views[0]):
            written -= len(views[0])
            views.pop(0)
        if views and written:
            views[0] = views[0][written:]


def is_tfrecord_file(path: Path) -> bool:
    name = path.name
    return (path.is_file() and not name.startswith((".", TMP_PREFIX))
            and bool(_NAME.search(name)))


def _open(path: Path) -> BinaryIO:
    f = open(path, "rb")  # noqa: SIM115 - returned to the caller, closed there
    if f.read(2) == _GZIP_MAGIC:
        f.close()
        return gzip.open(path, "rb")  # type: ignore[return-value]
    f.seek(0)
    return f


def _read_exact(f: BinaryIO, n: int, path: Path, offset: int, what: str) -> bytes:
    try:
        data = f.read(n)
    except (EOFError, gzip.BadGzipFile, OSError) as e:
        raise CorruptDataError(f"truncated or damaged GZIP stream while reading {what}: {e}",
                               path=path, offset=offset,
                               fix="the file was cut short or damaged; copy it again") from e
    if len(data) != n:
        raise CorruptDataError(f"truncated record: {what} needs {n} bytes, the file has "
                               f"{len(data)} left", path=path, offset=offset,
                               fix="the file was cut short (interrupted copy or download?); "
                                   "copy it again or regenerate it")
    return data


def _read_length(f: BinaryIO, path: Path, offset: int, check_crc: bool,
                 what: str = "") -> int | None:
    """The payload length from the 12-byte record header at ``offset``; None at a clean end
    of file. A short header or (when asked) a bad length CRC is a :class:`CorruptDataError`."""
    try:
        head = f.read(_HEADER.size)
    except (EOFError, OSError) as e:
        raise CorruptDataError(f"damaged GZIP stream: {e}", path=path, offset=offset,
                               fix="copy the file again") from e
    if not head:
        return None
    if len(head) != _HEADER.size:
        raise CorruptDataError("truncated record header", path=path, offset=offset,
                               fix="the file was cut short; copy it again")
    length, length_crc = _HEADER.unpack(head)
    if check_crc and masked_crc(head[:8]) != length_crc:
        raise CorruptDataError(
            f"{what}length CRC mismatch (not a TFRecord file, or damaged)",
            path=path, offset=offset, fix="copy the file again or regenerate it")
    return length


def iter_frames(path: Path, skip: int = 0, check_crc: bool = True) -> Iterator[tuple[int, bytes]]:
    """Yield ``(offset, payload)`` of every record after the first ``skip`` (which are stepped
    over by seeking, without reading their payloads), checking both CRCs."""
    with _open(path) as f:
        offset = 0
        index = 0
        while True:
            length = _read_length(f, path, offset, check_crc, f"record {index}: ")
            if length is None:
                return
            if index < skip:
                _skip(f, length + 4, path, offset)
            else:
                payload = _read_exact(f, length, path, offset, f"record {index}")
                crc = _read_exact(f, 4, path, offset, f"record {index} CRC")
                if check_crc and masked_crc(payload) != _CRC.unpack(crc)[0]:
                    raise CorruptDataError(f"record {index}: data CRC mismatch", path=path,
                                           offset=offset,
                                           fix="the file is damaged; copy it again or "
                                               "regenerate it")
                yield offset, payload
            offset += _HEADER.size + length + 4
            index += 1


def _skip(f: BinaryIO, n: int, path: Path, offset: int) -> None:
    if isinstance(f, gzip.GzipFile):
        _read_exact(f, n, path, offset, "a skipped record")
        return
    end = f.seek(n, os.SEEK_CUR)
    if end > os.fstat(f.fileno()).st_size:
        raise CorruptDataError("truncated record", path=path, offset=offset,
                               fix="the file was cut short; copy it again")


def scan_lengths(path: Path) -> Iterator[tuple[int, int]]:
    """``(offset, payload length)`` of every record from the headers alone (length CRC checked;
    a truncated last record is detected from the file size)."""
    size = path.stat().st_size
    with _open(path) as f:
        gz = isinstance(f, gzip.GzipFile)
        offset = 0
        while True:
            length = _read_length(f, path, offset, check_crc=True)
            if length is None:
                return
            end = offset + _HEADER.size + length + 4
            if gz:
                _read_exact(f, length + 4, path, offset, "a record")
            elif end > size:
                raise CorruptDataError(f"truncated record: needs {end - offset} bytes, the file "
                                       f"has {size - offset} left", path=path, offset=offset,
                                       fix="the file was cut short; copy it again")
            else:
                f.seek(length + 4, os.SEEK_CUR)
            yield offset, length
            offset = end


# ------------------------------------------------------------------------------- Example protos


def _example_pb2():
    from tfrecord import example_pb2

    return example_pb2


def parse_example(payload: bytes, path: Path, offset: int) -> dict:
    """``{key: first value}`` of a serialized ``tf.train.Example`` (bytes or int)."""
    try:
        example = _example_pb2().Example.FromString(payload)
    except Exception as e:  # protobuf raises DecodeError, a plain Exception subclass
        raise CorruptDataError(f"record is not a tf.train.Example: {e}", path=path,
                               offset=offset, fix="is this a TFRecord of images?") from e
    out: dict = {}
    for key, feature in example.features.feature.items():
        kind = feature.WhichOneof("kind")
        values = getattr(feature, kind).value if kind else []
        out[key] = values[0] if len(values) else None
    return out


FLOWERS_NAME = "file_name"
"""The feature our flowers-schema records add beside ``id``: the original file name."""


def detect_schema(keys: set[str]) -> str | None:
    if "image/encoded" in keys:
        return "slim"
    if "image" in keys and "class" in keys and "label" not in keys:
        return "flowers"
    if "image" in keys:
        return "tfds" if "label" in keys or "id" not in keys else "flowers"
    return None


_LABEL_LIKE = re.compile(r"label|class|cls|target|categor", re.IGNORECASE)
_NOT_LABEL = re.compile(r"height|width|channel|size|shape|offset", re.IGNORECASE)


def _check_label_key(files: list[Path], options: dict) -> None:
    """Refuse to read labelled records as unlabelled: when the first record lacks the label
    key (the schema's, or tfds' ``label`` after ``--image-key``) but holds an integer feature
    that looks like a label, every label would silently become "none"."""
    label_key = _keys_for(options)["label"]
    for file in files:
        for offset, payload in iter_frames(file):
            feats = parse_example(payload, file, offset)
            if label_key in feats:
                return
            ints = sorted(k for k, v in feats.items() if type(v) is int and (
                _LABEL_LIKE.search(k) or ("image_key" in options and not _NOT_LABEL.search(k))))
            if ints:
                raise UserError(
                    f"the records have no label feature {label_key!r}, but integer features "
                    f"{', '.join(ints)}: read as they are, every label would be lost",
                    path=file, fix=f"name the label with --label-key {ints[0]} (or "
                                   "--label-key none to read the records as unlabelled)")
            return


def _keys_for(options: dict) -> dict[str, str]:
    keys = dict(SCHEMAS[options.get("schema", DEFAULT_SCHEMA)])
    for field in ("image", "label", "filename"):
        if options.get(f"{field}_key"):
            keys[field] = options[f"{field}_key"]
    return keys


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
            _check_label_key(files, {**self._schema_of(path), **options})
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
            keys = _keys_for(shard.options)
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
        keys = _keys_for(shard.options)
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
        with _open(path) as f:
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
            problems += _index_problems(path, framing)
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
        return TFRecordShardWriter(path, schema, compression, index and not compression)

    def finalize(self, root: Path, info: DatasetInfo, counts: dict[str, int]) -> None:
        """Sidecar, plus TFDS's metadata so ``tfds.builder_from_directory(root)`` loads the
        files in place (:mod:`imgtools.metadata.tfds`; not for GZIP, which TFDS cannot read)."""
        root = Path(root)
        shards = {split: [f for f in sorted(root.glob(f"{split}.tfrecord-*-of-*"))
                          if not f.name.endswith(".index")] for split in counts}
        shards = {split: files for split, files in shards.items() if files}
        files = [f for split_files in shards.values() for f in split_files]
        if files and tfds_readable(files) is None:
            lengths = {split: [sum(1 for _ in scan_lengths(f)) for f in split_files]
                       for split, split_files in shards.items()}
            nbytes = {split: sum(f.stat().st_size for f in split_files)
                      for split, split_files in shards.items()}
            write_tfds_metadata(root, info, self._schema_of(root)["schema"], lengths, nbytes)
        super().finalize(root, info, counts)
        write_croissant(root, info, self.name, [s for s, n in counts.items() if n])


def example_features(record: Record, schema: str) -> dict[str, tuple[object, str]]:
    """The ``tfrecord`` package's ``datum`` (``{key: (value, "byte"|"int")}``) of a record."""
    keys = SCHEMAS[schema]
    label = record.label if record.label is not None else -1
    if schema == "flowers":
        # ``id`` is the competition's extension-less id; ``file_name`` (the TFDS key, which
        # Kaggle's parsing spec ignores) keeps the real name, so nothing is dropped.
        datum: dict[str, tuple[object, str]] = {"image": (record.image, "byte"),
                                                "id": (record.key.encode(), "byte"),
                                                FLOWERS_NAME: (record.filename.encode(), "byte")}
        if record.label is not None:
            datum["class"] = (label, "int")
        return datum
    datum = {keys["image"]: (record.image, "byte"), keys["label"]: (label, "int"),
             keys["filename"]: (record.filename.encode(), "byte")}
    if schema == "slim":
        from PIL import Image


        try:
            width, height = Image.open(io.BytesIO(record.image)).size
        except (OSError, ValueError) as e:
            raise CorruptDataError(f"cannot read the size of image {record.filename!r}: {e}",
                                   fix="the slim schema stores image/height and image/width; "
                                       "use --schema tfds, or drop the damaged image") from e
        ext = image_ext(record.image, record.filename)
        datum["image/format"] = ({"jpg": b"jpeg"}.get(ext, ext.encode()), "byte")
        datum["image/height"] = (height, "int")
        datum["image/width"] = (width, "int")
        if record.wnid:
            datum["image/class/synset"] = (record.wnid.encode(), "byte")
        if record.class_name:
            datum["image/class/text"] = (record.class_name.encode(), "byte")
    return datum


def serialize_example(datum: dict[str, tuple[object, str]]) -> bytes:
    """The ``tf.train.Example`` holding ``datum`` (the ``tfrecord`` package's convention, one
    bytes or int64 value per feature), serialized by protobuf *deterministically* (map entries
    sorted by key), so the same records give the same bytes on every run.

    protobuf, not a hand-written encoder: ``scripts/bench_codecs.py`` measured imgtools' former
    zero-copy encoder (now kept in that script) against this, framed and written to a file, on
    the corpus photos with protobuf 7.36 (upb), CPU per image, best of 15 interleaved runs on 2
    shared cores: 0.051 vs 0.039 ms at 35 KB (the hand-written one 1.3x slower) and 0.094 vs
    0.088 ms at 110 KB (level). Copying the image once into upb's arena costs less than the
    Python-level encoding it saved.
    """
    example = _example_pb2().Example()
    features = example.features.feature
    for key, (value, kind) in datum.items():
        # Filled in place: passing submessages to constructors copies each (and the image)
        # once per level, which made protobuf 7x slower on a 110 KB image.
        if kind == "byte":
            features[key].bytes_list.value.append(value)
        elif kind == "int":
            features[key].int64_list.value.append(value)
        else:  # pragma: no cover - example_features only makes the two kinds above
            raise ValueError(kind)
    return example.SerializeToString(deterministic=True)


class TFRecordShardWriter(ShardWriter):
    """Writes one ``.tfrecord`` shard (and its index) under temporary names, renamed on close."""

    def __init__(self, path: Path, schema: str, compression: str | None, index: bool):
        self.path = path
        self.schema = schema
        self.index_path = path.with_name(path.name + ".index") if index else None
        path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = tmp_path_for(path)
        # Unbuffered: uncompressed records go to the file with one writev each, no copy.
        self._raw = open(self.tmp, "wb", buffering=0)  # noqa: SIM115 - closed in close()/abort()
        self._out: BinaryIO | None = (gzip.GzipFile(filename="", mode="wb", fileobj=self._raw,
                                                    mtime=0) if compression else None)
        self._index = io.StringIO() if index else None
        self._offset = 0

    def write(self, record: Record) -> None:
        parts = frame_parts([serialize_example(example_features(record, self.schema))])
        size = sum(len(p) for p in parts)
        with naming_errors(self.path):
            if self._out is None:
                write_all(self._raw.fileno(), parts)
            else:
                self._out.write(b"".join(parts))
        if self._index is not None:
            self._index.write(f"{self._offset} {size}\n")
        self._offset += size

    def close(self) -> list[Path]:

        written = []
        try:  # a full disk may fail the GZIP trailer or the index: no temporary file may stay
            with naming_errors(self.path):
                if self._out is not None:
                    self._out.close()
                self._raw.close()
            if self.index_path is not None and self._index is not None:
                atomic_write_text(self.index_path, self._index.getvalue())
                written.append(self.index_path)
            os.replace(self.tmp, self.path)
        except BaseException:
            self.abort()
            raise
        return [self.path, *written]

    def abort(self) -> None:
        with contextlib.suppress(Exception):
            if self._out is not None:
                self._out.close()
        with contextlib.suppress(OSError):
            self._raw.close()
        with contextlib.suppress(FileNotFoundError):
            self.tmp.unlink()


FORMAT = TFRecordFormat()


def _index_problems(path: Path, framing: list[tuple[int, int]]) -> list[dict]:
    """The shard's ``tfrecord2idx`` index (``<file>.index``: ``offset length`` per record) must
    hold exactly the records' framing: the ``tfrecord`` reader seeks by it, so an index copied
    from another shard makes it read garbage or the wrong records."""
    index = path.with_name(path.name + ".index")
    if not index.is_file():
        return []
    try:
        entries = [tuple(int(v) for v in line.split())
                   for line in index.read_text(encoding="utf-8").splitlines() if line.strip()]
    except (ValueError, UnicodeDecodeError):
        return [{"path": str(index), "what": "index is not `offset length` lines of numbers"}]
    if entries == framing:
        return []
    if len(entries) != len(framing):
        what = f"index lists {len(entries)} records, the shard holds {len(framing)}"
    else:
        first = next(i for i, (a, b) in enumerate(zip(entries, framing)) if a != b)
        what = (f"index entry {first} says {' '.join(map(str, entries[first]))}, the record is "
                f"at {framing[first][0]} with {framing[first][1]} bytes")
    return [{"path": str(index), "what": f"{what} (an index of another file?)"}]
