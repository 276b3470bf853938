"""Parquet in the layout the Hugging Face ``datasets`` library writes and reads.

Files are ``<split>-00000-of-00004.parquet``, named as ``push_to_hub`` names them inside a config
folder. Split names stay ours (``train``, ``val``, ``unsup``): ``datasets`` maps a file to a
split by the word before the first dash, so a repo needs ``validation`` for ``val`` only in its
README ``configs:`` block, which ``imgtools push-hub`` writes (``val`` -> ``validation``).
``HF_SPLIT_NAMES`` holds that mapping for it.

Columns: ``image`` as struct ``{bytes: binary, path: string}`` (``path`` is the original file
name, as ``push_to_hub`` stores it) and ``label`` as int64 (-1 for unlabelled images). The Arrow
schema metadata carries the ``huggingface`` features (``Image`` and ``ClassLabel`` with the class
names), so ``datasets.load_dataset("parquet", ...)`` shows images and names; and ``imgtools``
(the full class list with wnids), so a single file is enough to rebuild a folder.

Row groups hold 100 images (what ``datasets`` uses for image data): a reader that wants one image
decodes one small group, and a writer buffers at most that many images. Images are stored
uncompressed (no dictionary, no statistics): JPEG bytes do not compress and Snappy would only
spend time finding that out.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

from imgtools.atomic import naming_errors, tmp_path_for
from imgtools.errors import CorruptDataError, UserError
from imgtools.formats.base import (
    Format,
    InputShard,
    ShardWriter,
    files_with_suffix,
    listed_files,
)
from imgtools.formats.common import dataset_root, generic_classes, image_ext, split_from_name
from imgtools.metadata.croissant import write_croissant
from imgtools.pipeline.packing import PackedParts
from imgtools.records import DatasetInfo, Record, plain_filename, safe_key

HF_SPLIT_NAMES = {"train": "train", "val": "validation", "unsup": "unsup", "test": "test"}
"""Our split name -> the Hub's conventional split name (for README ``configs:``)."""

ROW_GROUP_ROWS = 100
IMAGE_COLUMNS = ("image", "img", "jpg", "png", "picture")
LABEL_COLUMNS = ("label", "labels", "class", "cls", "fine_label")


def shard_name(split: str, index: int, num_shards: int) -> str:
    return f"{split}-{index:05d}-of-{num_shards:05d}.parquet"


def hf_features(info: DatasetInfo) -> dict:
    """The ``datasets`` features of our columns, as ``push_to_hub`` would store them."""
    label = ({"names": info.unique_class_names, "_type": "ClassLabel"} if info.classes
             else {"dtype": "int64", "_type": "Value"})
    return {"image": {"_type": "Image"}, "label": label}


def _arrow_schema(info: DatasetInfo):
    import pyarrow as pa

    schema = pa.schema([
        pa.field("image", pa.struct([pa.field("bytes", pa.binary()),
                                     pa.field("path", pa.string())])),
        pa.field("label", pa.int64()),
    ])
    return schema.with_metadata({
        "huggingface": json.dumps({"info": {"features": hf_features(info)}}),
        "imgtools": json.dumps(info.to_json(), ensure_ascii=False),
    })


def _columns(path: Path, schema) -> tuple[str, str | None]:
    """(image column, label column or None) of a Parquet schema, or a clear error."""
    import pyarrow as pa

    meta = schema.metadata or {}
    features: dict = {}
    with contextlib.suppress(ValueError, KeyError, TypeError):
        features = json.loads(meta[b"huggingface"])["info"]["features"]
    image = next((k for k, v in features.items()
                  if isinstance(v, dict) and v.get("_type") == "Image"), None)
    if image is None:
        image = next((c for c in IMAGE_COLUMNS if c in schema.names), None)
    if image is None:
        raise UserError(f"no image column (columns: {schema.names})", path=path,
                        fix="expected an Image feature or a column named image holding "
                            "{bytes, path} or binary")
    kind = schema.field(image).type
    if not (pa.types.is_binary(kind) or pa.types.is_large_binary(kind)
            or (pa.types.is_struct(kind) and kind.get_field_index("bytes") >= 0)):
        raise UserError(f"column {image!r} holds {kind}, not encoded images", path=path,
                        fix="expected struct{bytes, path} (the datasets Image feature) or binary")
    label = next((k for k, v in features.items()
                  if isinstance(v, dict) and v.get("_type") == "ClassLabel"), None)
    if label is None:
        label = next((c for c in LABEL_COLUMNS if c in schema.names), None)
    if label is not None and not pa.types.is_integer(schema.field(label).type):
        # Read as labels, non-integers would all become "unlabelled": refuse, never drop.
        raise UserError(f"label column {label!r} holds {schema.field(label).type}, not integer "
                        "class numbers: every label would be lost", path=path,
                        fix="store labels as integers 0..N-1 with their names as a ClassLabel "
                            "(datasets: ds.class_encode_column("
                            f"{label!r}).to_parquet(...)), or rename the column if it is not "
                            "the label")
    return image, label


def _class_names(schema) -> list[str] | None:
    with contextlib.suppress(ValueError, KeyError, TypeError, AttributeError):
        features = json.loads((schema.metadata or {})[b"huggingface"])["info"]["features"]
        for feature in features.values():
            if feature.get("_type") == "ClassLabel":
                return list(feature["names"])
    return None


class ParquetFormat(PackedParts, Format):
    name = "parquet"
    default_shard_records = None
    default_shard_bytes = 500_000_000
    writer_options = frozenset({"row_group_rows"})
    """500 MB a file, ``datasets.push_to_hub``'s default ``max_shard_size``."""

    # ------------------------------------------------------------------ reading
    def files(self, path: Path) -> list[Path]:
        return files_with_suffix(path, ".parquet")

    def detect(self, path: Path) -> bool:
        return bool(self.files(Path(path)))

    def input_shards(self, path: Path) -> list[InputShard]:
        """One shard per file; every file must have the first file's columns."""
        import pyarrow.parquet as pq


        files, base = listed_files(self, path, ".parquet files",
                                   "train-00000-of-00001.parquet …")
        shards = []
        first: tuple[Path, list[str]] | None = None
        for file in files:
            schema = self._schema(file, pq)
            image, label = _columns(file, schema)
            if first is None:
                first = (file, schema.names)
            elif schema.names != first[1]:
                raise UserError(f"mixed schemas: columns {schema.names}, but {first[0].name} "
                                f"has {first[1]}", path=file,
                                fix="convert files with different columns separately")
            shards.append(InputShard(str(file), split_from_name(str(file.relative_to(base))),
                                     {"image_column": image, "label_column": label}))
        return shards

    @staticmethod
    def _schema(file: Path, pq):
        try:
            return pq.read_schema(file)
        except Exception as e:  # pyarrow raises ArrowInvalid/OSError for damaged files
            raise CorruptDataError(f"not a readable Parquet file: {e}", path=file,
                                   fix="the file is truncated or damaged; copy it again") from e

    def read_info(self, path: Path) -> DatasetInfo:
        import pyarrow.parquet as pq


        path = Path(path)
        info = DatasetInfo.load(dataset_root(path))
        if info is not None:
            return info
        shards = self.input_shards(path)
        schema = self._schema(Path(shards[0].path), pq)
        with contextlib.suppress(ValueError, KeyError, TypeError):
            return DatasetInfo.from_json(json.loads((schema.metadata or {})[b"imgtools"]))
        root = dataset_root(path)
        names = _class_names(schema)
        if names is not None:
            return DatasetInfo(name=root.name, classes=generic_classes(
                range(len(names)), dict(enumerate(names))), label_order="ClassLabel names")
        labels: set[int] = set()
        for shard in shards:
            column = shard.options["label_column"]
            if column:
                values = pq.read_table(shard.path, columns=[column]).column(column)
                labels.update(v for v in values.to_pylist() if isinstance(v, int))
        return DatasetInfo(name=root.name, classes=generic_classes(labels),
                           label_order="as stored (integer labels)")

    def scan_shard(self, shard: InputShard, info: DatasetInfo) -> list[int]:
        """Per-row image size estimated from each row group's size in the footer (exact sizes
        would mean reading every image)."""
        import pyarrow.parquet as pq

        meta = pq.ParquetFile(shard.path).metadata
        sizes: list[int] = []
        for i in range(meta.num_row_groups):
            group = meta.row_group(i)
            if group.num_rows:
                sizes.extend([group.total_byte_size // group.num_rows] * group.num_rows)
        return sizes

    def read_shard(self, shard: InputShard, info: DatasetInfo) -> Iterator[Record]:
        return self.read_range(shard, info, 0, None)

    def read_range(self, shard: InputShard, info: DatasetInfo, start: int,
                   stop: int | None, offset: int | None = None) -> Iterator[Record]:
        import pyarrow.parquet as pq

        path = Path(shard.path)
        image_col = shard.options.get("image_column", "image")
        label_col = shard.options.get("label_column", "label")
        columns = [image_col] + ([label_col] if label_col else [])
        split = shard.split or "train"
        try:
            pf = pq.ParquetFile(path)
            first_row = 0
            for g in range(pf.metadata.num_row_groups):
                rows = pf.metadata.row_group(g).num_rows
                if first_row + rows <= start:
                    first_row += rows
                    continue
                if stop is not None and first_row >= stop:
                    return
                table = pf.read_row_group(g, columns=columns)
                yield from self._rows(path, table, image_col, label_col, split, info,
                                      first_row, start, stop)
                first_row += rows
        except (OSError, ValueError) as e:  # pyarrow's ArrowInvalid is a ValueError
            if isinstance(e, UserError):
                raise
            raise CorruptDataError(f"cannot read Parquet data: {e}", path=path,
                                   fix="the file is truncated or damaged; copy it again") from e

    @staticmethod
    def _rows(path: Path, table, image_col: str, label_col: str | None, split: str,
              info: DatasetInfo, first_row: int, start: int, stop: int | None
              ) -> Iterator[Record]:
        import pyarrow as pa


        column = table.column(image_col).combine_chunks()
        if pa.types.is_struct(column.type):
            images = column.field("bytes").to_pylist()
            paths = (column.field("path").to_pylist()
                     if column.type.get_field_index("path") >= 0 else [None] * len(images))
        else:
            images, paths = column.to_pylist(), [None] * len(column)
        labels = (table.column(label_col).to_pylist() if label_col
                  else [None] * len(images))
        for i, (image, name, label) in enumerate(zip(images, paths, labels, strict=True)):
            row = first_row + i
            if row < start or (stop is not None and row >= stop):
                continue
            if image is None:  # b"" is an (empty) image, not a reference to a path
                image = _image_from_path(path, row, name)
            if label is not None and (not isinstance(label, int) or label < 0):
                label = None
            if label is not None and label >= len(info.classes):
                raise CorruptDataError(f"row {row}: label {label} but the dataset has "
                                       f"{len(info.classes)} classes", path=path,
                                       fix="fix the class list in imgtools-dataset.json")
            filename = plain_filename(name) or (
                f"{path.name.replace('.', '_')}-{row:06d}.{image_ext(image)}")
            cls = info.classes[label] if label is not None else None
            yield Record(key=safe_key(filename), split=split, label=label, image=image,
                         filename=filename, wnid=cls.wnid if cls else None,
                         class_name=cls.name if cls else None)

    # ------------------------------------------------------------------ writing
    def container_problems(self, path: Path) -> list[dict]:
        """Every page's checksum, where the writer stored one, and every row group read."""
        import pyarrow.parquet as pq

        pf = pq.ParquetFile(path, page_checksum_verification=True)
        for _batch in pf.iter_batches(batch_size=256):
            pass
        return []

    def open_writer(self, root: Path, info: DatasetInfo, split: str, shard_index: int,
                    num_shards: int, *, row_group_rows: int = ROW_GROUP_ROWS,
                    digests: bool = False) -> ShardWriter:
        return ParquetShardWriter(Path(root) / shard_name(split, shard_index, num_shards),
                                  info, row_group_rows)

    def finalize(self, root: Path, info: DatasetInfo, counts: dict[str, int],
                 facts: dict[str, dict] | None = None) -> None:
        """Sidecar, plus ``croissant.json`` (:mod:`imgtools.metadata.croissant`)."""
        super().finalize(root, info, counts)
        write_croissant(root, info, self.name, [s for s, n in counts.items() if n])


def _image_from_path(parquet: Path, row: int, name: str | None) -> bytes:
    """``Dataset.to_parquet`` of an image folder stores paths, not bytes: follow them."""
    if name:
        # Relative to the Parquet file, never to wherever the user happens to run us.
        candidate = Path(name) if Path(name).is_absolute() else parquet.parent / name
        if candidate.is_file():
            return candidate.read_bytes()
    raise CorruptDataError(f"row {row} has no image bytes and its path {name!r} is not a file",
                           path=parquet,
                           fix="this Parquet refers to images by path (Dataset.to_parquet does "
                               "that); re-export it with the bytes embedded (push_to_hub or "
                               "datasets.table.embed_table_storage)")


class ParquetShardWriter(ShardWriter):
    """One Parquet file, written a row group at a time to a temporary name."""

    def __init__(self, path: Path, info: DatasetInfo, row_group_rows: int):
        import pyarrow.parquet as pq

        self.path = path
        self.row_group_rows = max(1, row_group_rows)
        self.schema = _arrow_schema(info)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = tmp_path_for(path)
        self._writer = pq.ParquetWriter(self.tmp, self.schema, compression="NONE",
                                        use_dictionary=False, write_statistics=["label"])
        self._rows: list[tuple[bytes, str, int]] = []

    def write(self, record: Record) -> None:
        self._rows.append((record.image, record.filename,
                           record.label if record.label is not None else -1))
        if len(self._rows) >= self.row_group_rows:
            self._flush()

    def _flush(self) -> None:
        import pyarrow as pa

        if not self._rows:
            return
        images, names, labels = zip(*self._rows, strict=True)
        image = pa.StructArray.from_arrays(
            [pa.array(images, pa.binary()), pa.array(names, pa.string())],
            fields=list(self.schema.field("image").type))
        table = pa.Table.from_arrays([image, pa.array(labels, pa.int64())], schema=self.schema)
        with naming_errors(self.path):
            self._writer.write_table(table, row_group_size=len(self._rows))
        self._rows = []

    def close(self) -> list[Path]:
        try:  # a full disk may fail the footer: the temporary file must not stay
            self._flush()
            with naming_errors(self.path):
                self._writer.close()
                os.replace(self.tmp, self.path)
        except BaseException:
            self.abort()
            raise
        return [self.path]

    def abort(self) -> None:
        self._rows = []
        with contextlib.suppress(Exception):
            self._writer.close()
        with contextlib.suppress(FileNotFoundError):
            self.tmp.unlink()


FORMAT = ParquetFormat()
