"""The Kaggle download, ``imagenet-object-localization-challenge.zip``, read in place.

A zip's central directory says where every member's local header is, how it is compressed and
its CRC-32, so an image is one ``pread`` and an inflate, with no extraction (the zip is 155 GB).
The directory is read once (``zipfile``) and cached in the user cache as a table of contents
(classes, flat val images, the val labels from ``LOC_val_solution.csv``) plus one entry list per
class, loaded only when the plan asks for that class. A member whose CRC does not match is
skipped and listed by the build with its name and offset.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

from imgtools.errors import UserError
from imgtools.sources.base import MemberTable, Source, cached_index, is_image_name, store_index
from imgtools.sources.imagenet_tree import KAGGLE_VAL_CSV, kaggle_val_labels
from imgtools.sources.members import make_locator

KAGGLE_ZIP = "imagenet-object-localization-challenge.zip"
DATA = "ILSVRC/Data/CLS-LOC/"
LOOKED_FOR = (f"the Kaggle zip ({KAGGLE_ZIP}, or a folder holding it) with {DATA}train and "
              f"{KAGGLE_VAL_CSV} inside")
_WIDTH = 5  # header offset, compressed size, size, CRC-32, method


def _numbers(info: zipfile.ZipInfo) -> list[int]:
    return [info.header_offset, info.compress_size, info.file_size, info.CRC,
            info.compress_type]


def _scan(path: Path) -> dict:
    """Read the central directory once; cache every class's entries separately and return
    the table of contents."""
    try:
        with zipfile.ZipFile(path) as z:
            infos = z.infolist()
            prefix = next((i.filename[:i.filename.index(DATA)] for i in infos
                           if DATA in i.filename), None)
            csv_info = next((i for i in infos if i.filename.endswith(KAGGLE_VAL_CSV)), None)
            csv_text = z.read(csv_info).decode("utf-8") if csv_info is not None else None
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        raise UserError(f"cannot read the zip: {e}", path=path,
                        fix="the download is damaged or incomplete: download it again") from e
    if prefix is None:
        raise UserError(f"the zip holds no {DATA}", path=path,
                        fix=f"pass --src the Kaggle ImageNet download ({KAGGLE_ZIP})")
    train, val = f"{prefix}{DATA}train/", f"{prefix}{DATA}val/"
    classes: dict[str, list] = {}
    toc: dict = {"val": [], "ignored": [], "classes": [], "csv": csv_text}
    for info in infos:
        name = info.filename
        if info.is_dir() or not name.startswith((train, val)):
            continue
        if not is_image_name(name):
            toc["ignored"].append(f"{path}//{name}")
        elif name.startswith(val):
            toc["val"].append([name[len(val):], *_numbers(info)])
        else:
            wnid, _, rest = name[len(train):].partition("/")
            classes.setdefault(wnid, []).append([rest, *_numbers(info)])
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
