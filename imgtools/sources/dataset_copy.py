"""ImageNet copies in training formats as a build source: the Hugging Face ``imagenet-1k``
tar.gz shards and its Parquet conversion, a TFDS-prepared ``imagenet2012`` folder, and
WebDataset copies such as timm's ``imagenet-1k-wds``.

Each file is indexed once (cached in the user cache by size and mtime): which ImageNet split it
holds (from its name: ``train``, ``val``/``validation``; ``test`` has no labels and is left
out), and per image its class, its ImageNet file name and where its bytes are. Labels become
wnids through the copy's class order: ``label.labels.txt`` when the copy has one (TFDS), else
ImageNet-1k's sorted-wnid order, which HF, TFDS and timm all use. File names are recovered
from TFDS's ``file_name``, HF's ``<name>_<wnid>.JPEG`` member names and ``image.path``, and a
WebDataset sample's ``json`` (``filename``) or ImageNet-style key. A copy that loses them
still builds with ``--split random`` (names are made up from the file and row), and refuses
``--split official`` with a clear error.

Images are opened by offset (uncompressed TFRecord and tar files), by row group and row
(Parquet) or by offset in the decompressed stream (``.tar.gz``: read forwards, so a build
from it decompresses each shard about once per pass in plan order).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import struct
import tarfile
from pathlib import Path

from imgtools.errors import UserError
from imgtools.records import DATASET_META, DatasetInfo
from imgtools.resources import manifest_path
from imgtools.sources.base import MemberTable, Source, cached_index, is_image_name
from imgtools.sources.imagenet_archives import scan_tar
from imgtools.sources.members import make_locator, pread_exact

LOOKED_FOR = ("a copy in a training format: HF imagenet-1k (train_images_*.tar.gz, "
              "val_images.tar.gz, or its *.parquet), a TFDS imagenet2012 folder "
              "(*.tfrecord-*), or WebDataset *.tar shards")
_WNID = re.compile(r"^n\d{8}$")
_IMAGENET_NAME = re.compile(r"^(n\d{8}_\d+|ILSVRC2012_val_\d{8})$")
_HF_MEMBER = re.compile(r"^(.+)_(n\d{8})\.[A-Za-z]+$")


def sorted_wnids() -> list[str]:
    """ImageNet-1k's classes in sorted-wnid order (label 0 = n01440764, tench)."""
    lines = manifest_path("imagenet1k_map_clsloc.txt").read_text().split("\n")
    return sorted(line.split()[0] for line in lines if line.strip())


def pool_of(path: Path) -> str | None:
    """ImageNet split a copy's file holds, from its name or else its folder's (HF's Parquet
    conversion names files ``train/0000.parquet``); None: test or unknown."""
    for name in (path.name.lower(), path.parent.name.lower()):
        if "train" in name:
            return "train"
        if "val" in name:  # val, validation
            return "val"
        if "test" in name:
            return None
    return None


def class_order(root: Path, files: list[Path]) -> tuple[list[str], str]:
    """The copy's wnids by label, and where that order came from: TFDS's label.labels.txt,
    an imgtools-dataset.json, a Parquet ClassLabel whose names are wnids, else ImageNet-1k's
    sorted-wnid order (HF imagenet-1k's ClassLabel names are words, not wnids)."""
    for folder in dict.fromkeys((root, files[0].parent)):
        labels = folder / "label.labels.txt"
        if labels.is_file():
            names = labels.read_text().split()
            if not names or not all(_WNID.match(n) for n in names):
                raise UserError("label.labels.txt does not list wnids", path=labels,
                                fix="an ImageNet copy's classes must be wnids (n01440764 ...)")
            return names, str(labels)
        info = DatasetInfo.load(folder)
        if info is not None and info.wnids and all(_WNID.match(w or "") for w in info.wnids):
            return info.wnids, str(folder / DATASET_META)
    if files[0].name.endswith(".parquet"):
        import pyarrow.parquet as pq

        try:
            meta = json.loads((pq.read_schema(files[0]).metadata or {})[b"huggingface"])
            label = meta["info"]["features"]["label"]
            names = label["names"] if label.get("_type") == "ClassLabel" else []
        except (OSError, ValueError, KeyError, TypeError):
            names = []
        if names and all(_WNID.match(str(n)) for n in names):
            return list(names), f"{files[0]} (ClassLabel names)"
    return sorted_wnids(), "labels in ImageNet-1k's sorted-wnid order"


# ------------------------------------------------------------------------- indexers
# Each returns [[wnid, file name or "", *locator numbers], ...] for one file.


def _index_tfrecord(path: Path, classes: list[str]) -> list[list]:
    from tfrecord import example_pb2  # protobuf: imported only when a TFRecord is indexed

    out, offset, size = [], 0, path.stat().st_size
    while offset < size:
        (length,) = struct.unpack("<Q", pread_exact(str(path), offset, 8, "record header"))
        payload = pread_exact(str(path), offset + 12, length, "record")
        feature = example_pb2.Example.FromString(payload).features.feature
        label = feature["label"].int64_list.value[0] if "label" in feature else None
        name = (feature["file_name"].bytes_list.value[0].decode()
                if "file_name" in feature else "")
        if label is not None and 0 <= label < len(classes):
            out.append([classes[label], name, offset, length])
        offset += 12 + length + 4
    return out


def _index_parquet(path: Path, classes: list[str]) -> list[list]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(path)
    schema = pf.schema_arrow
    image_col = schema.names.index("image")
    kind = schema.field("image").type
    has_path = pa.types.is_struct(kind) and kind.get_field_index("path") >= 0
    out = []
    for group in range(pf.num_row_groups):
        # Only the path leaf of the image struct: the index pass never reads image bytes.
        table = pf.read_row_group(group, columns=["label", *(["image.path"] if has_path else [])])
        paths = (table.column("image").combine_chunks().field("path").to_pylist() if has_path
                 else [None] * table.num_rows)
        for row, (label, p) in enumerate(zip(table.column("label").to_pylist(), paths)):
            if label is None or not 0 <= label < len(classes):
                continue
            out.append([classes[label], _hf_name(p or "", classes[label]), group, row,
                        image_col])
    return out


def _hf_name(member: str, wnid: str) -> str:
    """``n01440764_10026_n01440764.JPEG`` -> ``n01440764_10026.JPEG`` (HF's loading script
    appends the synset id to every file name)."""
    base = os.path.basename(member)
    m = _HF_MEMBER.match(base)
    if m and m.group(2) == wnid:
        return f"{m.group(1)}{os.path.splitext(base)[1]}"
    return base


def _index_targz(path: Path, classes: list[str]) -> list[list]:
    out = []
    try:
        with tarfile.open(path, "r:gz") as tar:
            while (info := tar.next()) is not None:
                tar.members.clear()
                m = _HF_MEMBER.match(os.path.basename(info.name))
                if info.isfile() and m and _WNID.match(m.group(2)):
                    out.append([m.group(2), _hf_name(info.name, m.group(2)),
                                info.offset_data, info.size])
    except (tarfile.TarError, OSError, EOFError) as e:
        raise UserError(f"cannot read this .tar.gz: {e}", path=path,
                        fix="the file is damaged or incomplete: download it again") from e
    return out


def _index_webdataset(path: Path, classes: list[str]) -> list[list]:
    members = scan_tar(path)["members"]
    samples: dict[str, dict[str, list]] = {}
    for name, offset, size, _available in members:
        key, _, field = os.path.basename(name).partition(".")
        samples.setdefault(key, {})[field.lower()] = [offset, size]
    out = []
    for key, fields in samples.items():
        image = next((fields[f] for f in ("jpg", "jpeg", "png", "webp") if f in fields), None)
        if image is None or "cls" not in fields:
            continue
        try:
            label = int(pread_exact(str(path), *fields["cls"], f"{key}.cls"))
        except ValueError:
            continue  # not a class index: not a sample of an ImageNet copy
        meta = json.loads(pread_exact(str(path), *fields["json"], f"{key}.json")) \
            if "json" in fields else {}
        meta = meta if isinstance(meta, dict) else {}
        name = meta.get("filename") or meta.get("file_name") or (
            f"{key}.JPEG" if _IMAGENET_NAME.match(key) else "")
        wnid = str(meta.get("wnid") or "")  # imgtools' own copies say it per sample
        if not _WNID.match(wnid):
            wnid = classes[label] if 0 <= label < len(classes) else ""
        if wnid:
            out.append([wnid, os.path.basename(name), *image])
    return out


def _index(indexer, file: Path, classes: list[str]) -> list[list]:
    """``indexer(file, classes)``, any failure to read the file as one clear error."""
    try:
        return indexer(file, classes)
    except UserError:
        raise
    except Exception as e:  # noqa: BLE001 - tarfile, protobuf, pyarrow, struct, json: many kinds
        raise UserError(f"cannot index this file of the copy: {e}", path=file,
                        fix="the file is damaged or not what its name says; copy it again, "
                            "or move it out of --src") from e


_KINDS = {  # kind: (file name test, indexer, locator scheme)
    "tfds": (lambda n: ".tfrecord" in n, _index_tfrecord, "tfrecord"),
    "hf-parquet": (lambda n: n.endswith(".parquet"), _index_parquet, "parquet"),
    "hf-targz": (lambda n: n.endswith(".tar.gz"), _index_targz, "targz"),
    "webdataset": (lambda n: n.endswith(".tar"), _index_webdataset, "tar"),
}


class DatasetCopy(Source):
    """An ImageNet copy in one of :data:`_KINDS`, indexed file by file."""

    def __init__(self, root: Path, kind: str, files: list[Path]):
        self.root, self.layout, self.files = root, f"copy:{kind}", files
        self.ignored: list[str] = []
        _, indexer, self.scheme = _KINDS[kind]
        classes, self.val_label_source = class_order(root, files)
        order = hashlib.sha256("\n".join(classes).encode()).hexdigest()[:16]
        entries: dict[tuple[str, str], list] = {}
        unnamed = 0
        for number, file in enumerate(files):
            pool = pool_of(file)
            if pool is None:
                self.ignored.append(str(file))
                continue
            index = cached_index(file, f"copy:{kind}:{order}",
                                 lambda f=file: {"entries": _index(indexer, f, classes)})
            for row, (wnid, name, *numbers) in enumerate(index["entries"]):
                if not name or not is_image_name(name):
                    unnamed += 1
                    name = f"{file.name.split('.')[0]}-{row:07d}.JPEG"
                entries.setdefault((pool, wnid), []).append((name, [number, *numbers]))
        self.keeps_names = unnamed == 0
        width = 1 + max((len(v[0][1]) - 1 for v in entries.values()), default=2)
        self._tables = {k: MemberTable((n for n, _ in v), (x for _, x in v), width)
                        for k, v in entries.items()}

    def describe(self) -> str:
        names = "" if self.keeps_names else " (file names lost: --split random only)"
        return f"{self.layout[5:]} copy at {self.root}, {len(self.files)} files{names}"

    def has_train(self) -> bool:
        return any(pool == "train" for pool, _ in self._tables)

    def has_class(self, wnid: str) -> bool:
        return ("train", wnid) in self._tables

    def _names(self, pool: str, wnid: str) -> list[str]:
        table = self._tables.get((pool, wnid))
        return table.sorted_names() if table is not None else []

    def train_files(self, wnid: str) -> list[str]:
        return self._names("train", wnid)

    def val_files(self, wnid: str) -> list[str]:
        return self._names("val", wnid)

    def locate(self, pool: str, wnid: str, filename: str) -> str:
        number, *numbers = self._tables[(pool, wnid)].lookup(filename)
        return make_locator(self.scheme, self.files[number], filename, *numbers)


def probe(src: Path) -> DatasetCopy | None:
    """A folder (or one file) of a copy: the first kind whose files are there."""
    if src.is_file():
        candidates, root = [src], src.parent
    elif src.is_dir():
        candidates = sorted(p for p in src.rglob("*") if p.is_file()
                            and not p.name.startswith("."))
        root = src
    else:
        return None
    for kind, (matches, _, _) in _KINDS.items():
        files = [p for p in candidates if matches(p.name.lower())]
        if files:
            return DatasetCopy(root, kind, files)
    return None
