"""JPEG folders, laid out like the fastai tarballs: ``<root>/<split>/<wnid>/<file>.JPEG``.

Unlabelled images (Imagewang's ``unsup``) go flat into ``<root>/unsup/<file>``: no label in the
name or the path, as in the official tarball. This is what fastai's and torchvision's
``ImageFolder`` read. The class list travels in the ``imgtools-dataset.json`` sidecar; without
one (a folder some other tool wrote) the classes are the sorted folder names, named from the
ImageNet class table when they are wnids.

Beside the split folders go ``classes.txt`` (one wnid a line; line i is label i) and
``class_to_idx.json`` (torchvision's ``class_to_idx``): ImageFolder numbers the folders *present*,
so a split holding only some classes (Imagewang's val: 10 of 20) would be numbered differently
from train; with these files (README: "Labels") every split gets the dataset's integers.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import secrets
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from imgtools.atomic import (
    TMP_PREFIX,
    NameTaken,
    atomic_write_text,
    read_file,
    walk_folders,
    write_new,
)
from imgtools.checksums import sha256sum_lines
from imgtools.errors import UserError, is_utf8_name
from imgtools.formats.base import Format, InputShard, ShardWriter
from imgtools.manifests import imagenet_names
from imgtools.records import SPLITS, ClassInfo, DatasetInfo, Record, safe_key

IMAGE_SUFFIXES = {".jpeg", ".jpg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"}
SPLIT_ALIASES = {"validation": "val", "valid": "val", "test": "test"}
_CHUNK = 512  # files per input shard of a flat folder (unsup)
CLASSES_TXT = "classes.txt"
CLASS_TO_IDX = "class_to_idx.json"
CLASS_FILES = (CLASSES_TXT, CLASS_TO_IDX)


_IMAGE_EXTENSIONS = frozenset(s[1:] for s in IMAGE_SUFFIXES)


def _is_image(name: str) -> bool:
    """Whether ``name`` is an image file's (not hidden, not a temporary ``.tmp-`` file, an
    image suffix in any case): ``os.path.splitext``'s answer for such names, without its
    cost (this runs two or three times per input file)."""
    if name.startswith((".", TMP_PREFIX)):
        return False
    _stem, dot, ext = name.rpartition(".")
    return bool(dot) and ext.lower() in _IMAGE_EXTENSIONS


def _split_dirs(root: Path) -> list[tuple[str, Path]]:
    out = []
    for d in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        split = SPLIT_ALIASES.get(d.name, d.name)
        if split in SPLITS or split == "test":
            out.append((split, d))
    return out


PLANNED_NAMES = 1 << 18
"""How many image names the listings made while planning a run keep (:class:`_PlanListings`), for
the readers of the same process - a ``-j 1`` run, or workers forked after the plan - to read
without listing each class folder again (a ``listdir``, a filter and a sort per image, once
more: docs/bench_engine.md, "Stop 29"). Beyond it the readers list the folders themselves;
memory stays bounded whatever the number of images."""


@dataclass
class _PlanListings:
    """The images of the class folders the plan of the latest run in this process listed (its
    listing token), by folder, while they fit in :data:`PLANNED_NAMES`."""

    token: str | None = None
    names: dict[str, tuple[str, ...]] = field(default_factory=dict)
    count: int = 0

    def keep(self, shard: InputShard, names: list[str]) -> None:
        token = shard.options.get("listed")
        if not token:
            return
        if token != self.token:  # a new run's plan: the last one's listings go
            self.token, self.names, self.count = token, {}, 0
        if self.count + len(names) <= PLANNED_NAMES:
            self.names[shard.path] = tuple(names)
            self.count += len(names)

    def get(self, shard: InputShard, token: str) -> tuple[str, ...] | None:
        return self.names.get(shard.path) if token == self.token else None


_plan_listings = _PlanListings()


def _shard_files(shard: InputShard) -> Sequence[str]:
    """The image files of an input shard, in read order: the shard's own list; or, when the
    shard carries its run's ``listed`` token, its folder as the plan listed it in this process
    (:class:`_PlanListings`) or as listed once per run and process (:func:`_listed_once`); else
    listed now. The names a plan listed are the ones it counted, so its slices hold exactly
    them even when the folder changed since."""
    if "files" in shard.options:
        return shard.options["files"]
    token = shard.options.get("listed")
    if not token:
        return _list_images(shard.path)
    planned = _plan_listings.get(shard, token)
    return _listed_once(shard.path, token) if planned is None else planned


@functools.lru_cache(maxsize=4)
def _listed_once(folder: str, token: str) -> tuple[str, ...]:
    """A class folder's images, listed once for every slice of it a process reads in one run
    (``token``: made by :meth:`FolderFormat.input_shards` for that run): a folder cut into
    many output shards is otherwise listed once per slice, quadratic in its size, and the
    slices' indices all refer to the one listing. A few folders are kept: a worker reads its
    slices in plan order."""
    return tuple(_list_images(folder))


def _list_images(folder: str) -> list[str]:
    """``scandir`` knows a directory entry's type without a ``stat`` per file."""
    with os.scandir(folder) as entries:
        return _images_among(folder, [e.name for e in entries if e.is_file()])


def _images_among(folder: str, names: Iterable[str]) -> list[str]:
    """The image files among ``names`` (files of ``folder``), in read order (by name), each
    checked :func:`_usable`: how every listing of a folder's images picks them."""
    return _usable(folder, sorted(name for name in names if _is_image(name)))


def _usable(folder: str, names: list[str]) -> list[str]:
    """``names``, after checking each can be stored as text. A conversion has no skip list, so
    a name that is not UTF-8 (every output keeps names as UTF-8: JSON, Parquet, tar headers)
    stops it before anything is written, naming the file. ASCII names (nearly all) are
    UTF-8: checked all at once, not name by name (this runs twice per input file)."""
    if "".join(names).isascii():
        return names
    for name in names:
        if not is_utf8_name(name):
            raise UserError("file name is not valid UTF-8 (shown with \\x escapes): the "
                            "output stores names as UTF-8 text", path=os.path.join(folder, name),
                            fix="rename the file (e.g. with convmv), then run the command again")
    return names


class FolderWriter(ShardWriter):
    """Writes each image as its own file as soon as it arrives (:func:`write_new`: in the
    run's staging folder, never over another record's file).

    With ``digests`` it also hashes each image while it is in memory (a build's SHA256SUMS then
    need not read the files back); a conversion has no use for the hashes and skips the cost.
    Paths stay strings until :meth:`close`: this runs once per image, and pathlib's joins cost
    more than the hash.
    """

    def __init__(self, root: Path, split: str, digests: bool = False):
        self.root = root
        self.split = split
        self.digests = digests
        self.written: list[str] = []
        self.known_digests: dict[Path | str, str] = {}
        self._hashes: list[str] = []
        self._names: list[str] = []  # relative to root, with digests: SHA256SUMS's names
        self._sizes: list[int] = []
        # class folder (None: flat) -> its path, made, and its path relative to root
        self._folders: dict[str | None, tuple[str, str]] = {}

    def _folder(self, record: Record) -> tuple[str, str]:
        sub = None if self.split == "unsup" or record.label is None else \
            (record.wnid or str(record.label))
        folder = self._folders.get(sub)
        if folder is None:
            parts = (self.split,) + (() if sub is None else (sub,))
            path = os.path.join(os.fspath(self.root), *parts)
            os.makedirs(path, exist_ok=True)
            folder = self._folders[sub] = (path + os.sep, os.path.join(*parts) + os.sep)
        return folder

    def write(self, record: Record) -> None:
        folder, relative = self._folder(record)
        path = folder + record.filename  # os.path.join costs a us here
        try:
            write_new(path, record.image)
        except NameTaken:
            raise UserError(
                f"two records are both named {record.filename!r} in the same folder: writing "
                "both would keep only one", path=path,
                fix="give the input unique file names per class (or per split for unlabelled "
                    "images), or convert to tfrecord, webdataset or parquet, which keep "
                    "both") from None
        self.written.append(path)
        self._sizes.append(len(record.image))
        if self.digests:
            self._hashes.append(hashlib.sha256(record.image).hexdigest())
            self._names.append(relative + record.filename)

    def close(self) -> list[str]:
        self.known_sizes = dict(zip(self.written, self._sizes))
        if self.digests:
            self.known_digests = dict(zip(self.written, self._hashes))
        return list(self.written)

    def _wrote(self, paths: list[Path] | list[str]) -> bool:
        """Whether ``paths`` are this writer's files, in order (what :meth:`close` returned):
        then what it kept while writing answers for them, not a look at each path."""
        return len(paths) == len(self.written) and list(paths) == self.written

    def sizes(self, paths: list[Path] | list[str]) -> list[int]:
        """The sizes kept while writing, in order, for this writer's own files."""
        return list(self._sizes) if self._wrote(paths) else super().sizes(paths)

    def folders(self, paths: list[Path] | list[str]) -> set[str]:
        """The class folders this writer made, for its own files: not found again from every
        image's path."""
        if self._wrote(paths):
            return {folder.rstrip(os.sep) for folder, _relative in self._folders.values()}
        return super().folders(paths)

    def sha256sum_text(self, root: str, paths: list[Path] | list[str]) -> str:
        """The lines from the names and digests kept while writing (no path taken apart per
        image), for this writer's own files under its own root."""
        if (self.digests and root.rstrip(os.sep) == os.fspath(self.root)
                and self._wrote(paths)):
            return sha256sum_lines(zip(self._hashes, self._names))
        return super().sha256sum_text(root, paths)

    def abort(self) -> None:
        """Remove the images this shard published: an aborted shard leaves nothing, as every
        other writer's does (a rerun writes them again)."""
        for path in self.written:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        self.written.clear()
        self._sizes.clear()
        self._hashes.clear()


class FolderFormat(Format):
    name = "folder"
    records_are_files = True

    def detect(self, path: Path) -> bool:
        if not path.is_dir():
            return False
        for _split, d in _split_dirs(path):
            for entry in d.iterdir():
                if entry.is_dir() or _is_image(entry.name):
                    return True
        return False

    def read_info(self, path: Path) -> DatasetInfo:
        info = DatasetInfo.load(path)
        if info is not None:
            return info

        names = imagenet_names()
        wnids = sorted({c.name for _s, d in _split_dirs(path) if _s != "unsup"
                        for c in d.iterdir() if c.is_dir() and not c.name.startswith(".")})
        if not wnids:
            raise UserError("no class folders found", path=path,
                            fix="expected <split>/<class>/<image> (e.g. train/n01440764/x.JPEG)")
        return DatasetInfo(path.name, [ClassInfo(w, names.get(w, w)) for w in wnids],
                           label_order="sorted folder names")

    def input_shards(self, path: Path) -> list[InputShard]:
        shards = []
        token = secrets.token_hex(8)  # this listing's: a reader lists a class folder once
        for split, d in _split_dirs(path):
            with os.scandir(d) as it:  # an entry's type without a stat per image
                entries = [(e.name, e.is_dir(), e.is_file()) for e in it]
            # Hidden folders (.ipynb_checkpoints, .DS_Store dirs) are not classes.
            for name in sorted(n for n, is_dir, _f in entries if is_dir and n[0] != "."):
                shards.append(InputShard(str(d / name), split, {"wnid": name,
                                                                "listed": token}))
            flat = _images_among(str(d), [n for n, _d, is_file in entries if is_file])
            for i in range(0, len(flat), _CHUNK):
                shards.append(InputShard(str(d), split, {"files": flat[i:i + _CHUNK]}))
        if not shards:
            raise UserError("the folder holds no images", path=path,
                            fix="expected train/, val/ or unsup/ folders with images")
        return shards

    def scan_records(self, shard: InputShard, info: DatasetInfo, *, sizes: bool = True
                     ) -> tuple[list[int], None]:
        """Without ``sizes``, a listing alone: no stat per image (a plan by records, as for a
        folder or pickle output, has no use for them)."""
        if not sizes:
            return [0] * len(_shard_files(shard)), None
        return self.scan_shard(shard, info), None

    def scan_shard(self, shard: InputShard, info: DatasetInfo) -> list[int]:
        """File sizes of the shard's images, in read order, from stat alone: lets
        ``imgtools convert`` plan output shards by bytes without reading every image twice."""
        base = shard.path + os.sep
        return [os.path.getsize(base + name) for name in _shard_files(shard)]

    def sizes_from_listing(self, shard: InputShard, sizes: Mapping[str, int]
                           ) -> list[int] | None:
        """The sizes :meth:`scan_shard` would stat, from the identity's listing (in name
        order, as :func:`_shard_files` lists them)."""
        if "files" in shard.options:
            try:
                return [sizes[name] for name in shard.options["files"]]
            except KeyError:  # gone since input_shards listed it: the scan says so
                return None
        names = _images_among(shard.path, sizes)
        _plan_listings.keep(shard, names)
        return [sizes[name] for name in names]

    def read_shard(self, shard: InputShard, info: DatasetInfo) -> Iterator[Record]:
        return self.read_range(shard, info, 0, None)

    def read_range(self, shard: InputShard, info: DatasetInfo, start: int, stop: int | None,
                   offset: int | None = None) -> Iterator[Record]:
        """Files ``start:stop`` of the shard, in read order. Only those are opened: a class
        folder cut into many output shards would otherwise be read from its first file once
        per slice (quadratic in the folder's size)."""
        folder = Path(shard.path)
        label_of = {c.wnid: i for i, c in enumerate(info.classes)}
        wnid = shard.options.get("wnid")
        files = _shard_files(shard)
        label = label_of.get(wnid) if wnid else None
        if wnid and label is None:
            raise UserError(f"class folder {wnid!r} is not in the dataset's class list",
                            path=folder, fix="update imgtools-dataset.json or remove the folder")
        name = info.classes[label].name if label is not None else None
        base = str(folder) + os.sep  # names from a listing: no separator, not absolute
        for fname in files[start:stop]:
            data = read_file(base + fname)
            yield Record(safe_key(fname), shard.split or "train", label, data, fname,
                         wnid if label is not None else None, name)

    def open_writer(self, root: Path, info: DatasetInfo, split: str, shard_index: int,
                    num_shards: int, *, digests: bool = False) -> ShardWriter:
        return FolderWriter(Path(root), split, digests)

    def finalize(self, root: Path, info: DatasetInfo, counts: dict[str, int],
                 facts: dict[str, dict] | None = None) -> None:
        """The sidecar, plus the class list in the two shapes ImageFolder readers take, once
        every split is checked to hold a file per record."""
        for split, records in counts.items():
            _check_one_file_per_record(Path(root) / split, records)
        write_class_files(Path(root), info)
        super().finalize(root, info, counts)


def _check_one_file_per_record(folder: Path, records: int) -> None:
    """Refuse a split with fewer files than records: two records with one file name in one
    class folder that :func:`~imgtools.atomic.write_new` could not tell apart (the same
    bytes, or the bytes of one beginning the other's) went to one file, and a conversion may
    lose no record silently. A count of directory entries, no stat: cheap next to the run."""
    files = _count_files(os.fspath(folder))
    if files != records:
        raise UserError(
            f"split {folder.name!r} holds {files} image files for {records} records: two "
            "records with one file name in one class folder were written to one file",
            path=folder,
            fix="give the input unique file names per class (or per split for unlabelled "
                "images), or convert to tfrecord, webdataset or parquet, which keep both; "
                "then run the command again with --overwrite")


def _count_files(folder: str) -> int:
    """The visible files under ``folder`` (a symlink counts as a file and is not followed;
    hidden folders are not looked into), with :func:`~imgtools.atomic.walk_folders`: a
    class folder's names from one ``listdir`` (this walks every output image)."""
    count = 0
    for _path, _rel, names, dirs in walk_folders(folder):
        dirs[:] = [d for d in dirs if d[0] != "."]
        count += sum(1 for name in names if name[0] != ".")
    return count


def write_class_files(root: Path, info: DatasetInfo) -> None:
    """``classes.txt`` and ``class_to_idx.json``: the dataset's label order for readers that
    would otherwise number the class folders each split happens to hold."""
    folders = [c.wnid or str(i) for i, c in enumerate(info.classes)]  # as FolderWriter names
    atomic_write_text(root / CLASSES_TXT, "".join(f"{f}\n" for f in folders))
    mapping = {f: i for i, f in enumerate(folders)}
    atomic_write_text(root / CLASS_TO_IDX, json.dumps(mapping, indent=1) + "\n")


FORMAT = FolderFormat()
