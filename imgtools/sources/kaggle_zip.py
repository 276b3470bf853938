"""The Kaggle download, ``imagenet-object-localization-challenge.zip``, read in place.

A zip's central directory says where every member's local header is, how it is compressed and
its CRC-32, so an image is one ``pread`` and an inflate, with no extraction (the zip is 155 GB).
The directory is streamed once (:func:`central_directory`) and cached in the user cache as a
table of contents (classes, flat val images, the val labels from ``LOC_val_solution.csv``) plus
one entry list per class, loaded only when the plan asks for that class. A member whose CRC
does not match is skipped and listed by the build with its name and offset.
"""

from __future__ import annotations

import io
import os
import struct
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from imgtools.errors import UserError
from imgtools.sources.base import MemberTable, Source, cached_index, is_image_name, store_index
from imgtools.sources.imagenet_tree import KAGGLE_VAL_CSV, kaggle_val_labels
from imgtools.sources.members import make_locator, open_locator
from imgtools.transforms.jpeg import BadImage

KAGGLE_ZIP = "imagenet-object-localization-challenge.zip"
DATA = "ILSVRC/Data/CLS-LOC/"
LOOKED_FOR = (f"the Kaggle zip ({KAGGLE_ZIP}, or a folder holding it) with {DATA}train and "
              f"{KAGGLE_VAL_CSV} inside")
_WIDTH = 5  # header offset, compressed size, size, CRC-32, method


_EOCD = struct.Struct("<4s4H2LH")  # end of central directory
_ZIP64_LOCATOR = struct.Struct("<4sLQL")
_ZIP64_EOCD = struct.Struct("<4sQ2H2L4Q")
_ENTRY = struct.Struct("<4s4B4HL2L5H2L")  # a central directory header (zipfile's layout)
_CHUNK = 1 << 20


def _directory_span(f: BinaryIO, size: int) -> tuple[int, int]:
    """(offset, size) of the central directory, from the end record (zip64's when the
    archive needs it: the Kaggle zip is 155 GB)."""
    tail_start = max(0, size - _EOCD.size - 0xFFFF)
    f.seek(tail_start)
    tail = f.read()
    at = tail.rfind(b"PK\x05\x06")
    if at < 0 or len(tail) - at < _EOCD.size:
        raise zipfile.BadZipFile("no end of central directory record (not a zip, or cut short)")
    _, _, _, _, entries, cd_size, cd_offset, _ = _EOCD.unpack_from(tail, at)
    if 0xFFFFFFFF in (cd_size, cd_offset) or entries == 0xFFFF:
        loc = at - _ZIP64_LOCATOR.size
        sig, _, eocd64, _ = _ZIP64_LOCATOR.unpack_from(tail, loc) if loc >= 0 else (b"",) * 4
        if sig != b"PK\x06\x07":
            raise zipfile.BadZipFile("zip64 end record locator missing")
        f.seek(eocd64)
        record = _ZIP64_EOCD.unpack(f.read(_ZIP64_EOCD.size))
        cd_size, cd_offset = record[-2], record[-1]
    if cd_offset + cd_size > size:
        raise zipfile.BadZipFile("the central directory lies past the end of the file "
                                 "(the zip is cut short)")
    return cd_offset, cd_size


def _zip64_values(extra: bytes, wanted: int) -> list[int]:
    """The 8-byte values of a zip64 extra field (id 1), in file order."""
    pos = 0
    while pos + 4 <= len(extra):
        tag, length = struct.unpack_from("<HH", extra, pos)
        if tag == 1:
            return list(struct.unpack_from(f"<{wanted}Q", extra, pos + 4))
        pos += 4 + length
    raise zipfile.BadZipFile("a zip64 entry without its zip64 extra field")


def central_directory(path: Path) -> Iterator[tuple[str, int, int, int, int, int]]:
    """``(name, local header offset, compressed size, size, CRC-32, method)`` of every entry,
    streamed from the central directory. ``zipfile.ZipFile`` would build 1.4 million ``ZipInfo``
    objects for the Kaggle zip (about 2 GB); this holds one megabyte of directory at a time."""
    with open(path, "rb") as f:
        offset, remaining = _directory_span(f, os.fstat(f.fileno()).st_size)
        f.seek(offset)
        buf, pos = b"", 0
        while True:
            if len(buf) - pos < _ENTRY.size + 3 * 0xFFFF and remaining:
                chunk = f.read(min(_CHUNK, remaining))
                remaining -= len(chunk)
                buf, pos = buf[pos:] + chunk, 0
            if pos >= len(buf):
                return
            head = _ENTRY.unpack_from(buf, pos)
            if head[0] != b"PK\x01\x02":
                raise zipfile.BadZipFile("bad central directory entry")
            flags, method, crc, csize, size = head[5], head[6], head[9], head[10], head[11]
            name_len, extra_len, comment_len, header_offset = head[12], head[13], head[14], \
                head[18]
            start = pos + _ENTRY.size
            name = buf[start:start + name_len].decode("utf-8" if flags & 0x800 else "cp437")
            big = [v == 0xFFFFFFFF for v in (size, csize, header_offset)]
            if any(big):
                extra = buf[start + name_len:start + name_len + extra_len]
                values = iter(_zip64_values(extra, sum(big)))
                size = next(values) if big[0] else size
                csize = next(values) if big[1] else csize
                header_offset = next(values) if big[2] else header_offset
            yield name, header_offset, csize, size, crc, method
            pos = start + name_len + extra_len + comment_len


def _scan(path: Path) -> dict:
    """Read the central directory once; cache every class's entries separately and return
    the table of contents."""
    classes: dict[str, list] = {}
    toc: dict = {"val": [], "ignored": [], "classes": [], "csv": None}
    train = val = None
    try:
        for name, *numbers in central_directory(path):
            if DATA in name and train is None:
                prefix = name[:name.index(DATA)]
                train, val = f"{prefix}{DATA}train/", f"{prefix}{DATA}val/"
            if name.endswith(KAGGLE_VAL_CSV) and toc["csv"] is None:
                toc["csv"] = open_locator(make_locator("zip", path, name, *numbers)).decode()
            if train is None or name.endswith("/") or not name.startswith((train, val)):
                continue
            if not is_image_name(name):
                toc["ignored"].append(f"{path}//{name}")
            elif name.startswith(val):
                toc["val"].append([name[len(val):], *numbers])
            else:
                wnid, _, rest = name[len(train):].partition("/")
                classes.setdefault(wnid, []).append([rest, *numbers])
    except (zipfile.BadZipFile, struct.error, OSError, UnicodeDecodeError, BadImage) as e:
        raise UserError(f"cannot read the zip: {e}", path=path,
                        fix="the download is damaged or incomplete: download it again") from e
    if train is None:
        raise UserError(f"the zip holds no {DATA}", path=path,
                        fix=f"pass --src the Kaggle ImageNet download ({KAGGLE_ZIP})")
    for wnid, members in classes.items():
        store_index(path, f"class:{wnid}", {"members": members, "prefix": train + wnid + "/"})
    toc["classes"] = sorted(classes)
    toc["prefix"] = {"train": train, "val": val}
    return toc


class KaggleZip(Source):
    layout = "kaggle-zip"
    keeps_names = True

    def __init__(self, path: Path):
        self.path, self.root = path, path
        self.ignored: list[str] = []
        toc = cached_index(path, "toc", lambda: _scan(path))
        self.ignored += toc["ignored"]
        self._prefix = toc["prefix"]
        self._classes = set(toc["classes"])
        self._inner: dict[str, MemberTable] = {}
        self._val = MemberTable((m[0] for m in toc["val"]), (m[1:] for m in toc["val"]),
                                _WIDTH)
        self.val_labels: dict[str, str] = {}
        self._val_by_class: dict[str, list[str]] = {}
        if len(self._val):
            if toc["csv"] is None:
                raise UserError(f"the zip has val images but no {KAGGLE_VAL_CSV}", path=path,
                                fix=f"use the complete Kaggle download ({KAGGLE_ZIP})")
            where = f"{path}//{KAGGLE_VAL_CSV}"
            self.val_labels = kaggle_val_labels(io.StringIO(toc["csv"]), where)
            self.val_label_source = where
            for name in self._val.sorted_names():
                wnid = self.val_labels.get(name)
                if wnid is not None:
                    self._val_by_class.setdefault(wnid, []).append(name)

    def describe(self) -> str:
        return f"Kaggle zip {self.path} (read in place), val labels from {KAGGLE_VAL_CSV}"

    def _table(self, wnid: str) -> MemberTable:
        table = self._inner.get(wnid)
        if table is None:
            part = f"class:{wnid}"
            index = cached_index(self.path, part, lambda: _scan_class(self.path, wnid))
            members = index["members"]
            table = MemberTable((m[0] for m in members), (m[1:] for m in members), _WIDTH)
            self._inner[wnid] = table
        return table

    def has_train(self) -> bool:
        return bool(self._classes)

    def has_class(self, wnid: str) -> bool:
        return wnid in self._classes

    def train_files(self, wnid: str) -> list[str]:
        return self._table(wnid).sorted_names()

    def val_files(self, wnid: str) -> list[str]:
        return self._val_by_class.get(wnid, [])

    def locate(self, pool: str, wnid: str, filename: str) -> str:
        if pool == "train":
            numbers = self._table(wnid).lookup(filename)
            member = f"{self._prefix['train']}{wnid}/{filename}"
        else:
            numbers = self._val.lookup(filename)
            member = f"{self._prefix['val']}{filename}"
        return make_locator("zip", self.path, member, *numbers)


def _scan_class(path: Path, wnid: str) -> dict:
    """A class's entries when its cache file is gone (the scan stores every class)."""
    _scan(path)
    return cached_index(path, f"class:{wnid}", lambda: {"members": []})


def probe(src: Path) -> KaggleZip | None:
    """The zip itself, or a folder holding it (and no extracted tree)."""
    if src.is_dir() and (src / KAGGLE_ZIP).is_file() and not (src / "ILSVRC").is_dir():
        src = src / KAGGLE_ZIP
    if not (src.is_file() and src.suffix.lower() == ".zip"):
        return None
    return KaggleZip(src)
