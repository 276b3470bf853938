"""Helpers the format modules share: split names from file names, image types from magic
bytes, class lists of foreign data, and size strings. They live here, below every format and
above nothing, so formats never import the conversion engine (or each other).

May import: ``imgtools.records``, ``imgtools.errors`` and the standard library.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

from imgtools.errors import UserError
from imgtools.records import SPLITS, ClassInfo, DatasetInfo

_SPLIT_WORDS = {
    "train": "train", "training": "train",
    "val": "val", "valid": "val", "validation": "val", "dev": "val",
    "unsup": "unsup", "unlabeled": "unsup", "unlabelled": "unsup", "unsupervised": "unsup",
    "test": "test",
}


def split_from_name(relpath: str, default: str = "train") -> str:
    """The split a file holds, from the first split-like word in its relative path.

    Covers our own names (``train-000000.tar``, ``val.tfrecord-00000-of-00002``), TFDS
    (``imagenette-validation.tfrecord-...``), Inception (``validation-00000-of-00128``), Hugging
    Face (``data/validation-00000-of-00001.parquet``) and the Kaggle flowers layout
    (``val/00-224x224-232.tfrec``). ``validation``/``valid`` map to our ``val``.
    """
    for word in re.split(r"[/\\._\-\s]+", relpath.lower()):
        if word in _SPLIT_WORDS:
            return _SPLIT_WORDS[word]
    return default


def split_sort_key(split: str) -> tuple[int, str]:
    """Canonical split order: train, val, unsup, then anything else alphabetically."""
    return (SPLITS.index(split) if split in SPLITS else len(SPLITS), split)


_MAGIC = (
    (b"\xff\xd8\xff", "jpg"),
    (b"\x89PNG\r\n\x1a\n", "png"),
    (b"GIF87a", "gif"),
    (b"GIF89a", "gif"),
    (b"BM", "bmp"),
)


def image_ext(data: bytes, filename: str | None = None) -> str:
    """File extension for encoded image bytes, from their magic number (not from the file name:
    ImageNet has a PNG named ``.JPEG``). WebDataset decoders pick their codec by this."""
    head = bytes(data[:12])
    for magic, ext in _MAGIC:
        if head.startswith(magic):
            return ext
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    if filename and "." in filename:
        return filename.rsplit(".", 1)[1].lower()
    return "bin"


def dataset_root(path: Path) -> Path:
    """The folder holding a dataset's sidecar: the path itself, or a file's parent."""
    return path if path.is_dir() else path.parent


def info_from_labels(path: Path, seen: Iterable[tuple[object, str | None, str | None]]
                     ) -> DatasetInfo:
    """The class list of foreign data from what its records say: ``seen`` yields ``(label,
    class name or None, wnid or None)`` per record; the first name and wnid met for a label
    win. Used by the record formats that carry labels inline (TFRecord, WebDataset)."""
    labels: set[int] = set()
    names: dict[int, str] = {}
    wnids: dict[int, str] = {}
    for label, name, wnid in seen:
        if isinstance(label, int) and label >= 0:
            labels.add(label)
            if name:
                names.setdefault(label, str(name))
            if wnid:
                wnids.setdefault(label, str(wnid))
    return DatasetInfo(name=dataset_root(path).name,
                       classes=generic_classes(labels, names, wnids),
                       label_order="as stored (integer labels)")


def generic_classes(labels: Iterable[int], names: dict[int, str] | None = None,
                    wnids: dict[int, str] | None = None) -> list:
    """A class list for foreign data that carries only integer labels (0..max seen).

    Ids are zero-padded label numbers (``007``) so folder output sorts in label order; names come
    from the data when it has them (TF-slim ``image/class/text``, WebDataset ``.json``)."""
    labels = [x for x in labels if x is not None and x >= 0]
    if not labels:
        return []
    count = max(labels) + 1
    width = max(3, len(str(count - 1)))
    names, wnids = names or {}, wnids or {}
    classes = []
    for i in range(count):
        wnid = wnids.get(i) or f"{i:0{width}d}"
        classes.append(ClassInfo(wnid=wnid, name=names.get(i) or wnid))
    return classes


def parse_size(text: str | int | None) -> int | None:
    """``"500MB"``, ``"1.5GB"``, ``"2GiB"`` or a plain number of bytes -> bytes (decimal units,
    as ``datasets`` uses for ``max_shard_size``). ``0``/``None`` means no limit."""
    if text is None:
        return None
    if isinstance(text, int):
        return text or None
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([kmgt]?i?b?)\s*", str(text).lower())
    if not m:
        raise UserError(f"not a size: {text!r}", fix="write it like 500MB, 1.5GB, 2GiB or 1000000")
    number, unit = float(m.group(1)), m.group(2).rstrip("b")
    scale = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12,
             "ki": 2**10, "mi": 2**20, "gi": 2**30, "ti": 2**40}[unit]
    return int(number * scale) or None
