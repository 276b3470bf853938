"""The image-net.org downloads, read in place: never extracted, and read only where needed.

``ILSVRC2012_img_train.tar`` is an uncompressed tar of 1,000 uncompressed tars
(``n01440764.tar`` holding ``n01440764_*.JPEG``), so any image is one ``pread`` at a known
offset. The first use reads only tar headers, seeking past every member's data: the outer
tar's 1,000 headers at once, and a class's inner tar headers when the plan first asks for that
class (Imagenette touches 10 of the 1,000). ``ILSVRC2012_img_val.tar`` holds 50,000 flat JPEGs,
labelled by ``ILSVRC2012_devkit_t12.tar.gz`` (``data/meta.mat`` and
``data/ILSVRC2012_validation_ground_truth.txt``, read from the gzip stream; no file is written
out) or by a Kaggle ``LOC_val_solution.csv`` beside the archives. Every index is cached in the
user cache (:func:`imgtools.sources.base.cached_index`), keyed by the archive's size and mtime.

Damage is reported, never silently dropped: a member whose data runs past the end of its tar
(inner or outer) is planned and then skipped and listed by the build with its name and offset;
a tar whose headers stop early is noted in the report's ignored entries; an inner member that
is not a tar is one clear error when the build needs that class.
"""

from __future__ import annotations

import io
import os
import re
import tarfile
from pathlib import Path

from imgtools.errors import UserError
from imgtools.sources.base import MemberTable, Source, cached_index, is_image_name
from imgtools.sources.imagenet_tree import (
    DEVKIT_DIR,
    GROUND_TRUTH,
    KAGGLE_VAL_CSV,
    _read_kaggle_val,
    devkit_val_labels,
    meta_mat_ids,
)
from imgtools.sources.members import make_locator

TRAIN_TAR = "ILSVRC2012_img_train.tar"
VAL_TAR = "ILSVRC2012_img_val.tar"
DEVKIT_TARS = ("ILSVRC2012_devkit_t12.tar.gz", "ILSVRC2012_devkit_t12.tar")
_CLASS_TAR = re.compile(r"^(n\d{8})\.tar$")
LOOKED_FOR = (f"the image-net.org archives: a folder holding {TRAIN_TAR} and/or {VAL_TAR} "
              f"(+ {DEVKIT_TARS[0]} for val labels), or one of them with the others "
              "beside it")


class _Window(io.RawIOBase):
    """Bytes ``[start, end)`` of a file as a seekable file of its own, read with ``pread``
    (no read-ahead: a header pass reads 512 bytes per member and nothing else). An inner
    tar is read through one, so that a damaged inner tar can never run into its neighbour."""

    def __init__(self, fd: int, start: int, end: int):
        super().__init__()
        self.fd, self.start, self.end, self.pos = fd, start, end, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.pos

    def seek(self, offset: int, whence: int = 0) -> int:
        base = {0: 0, 1: self.pos, 2: self.end - self.start}[whence]
        self.pos = max(0, base + offset)
        return self.pos

    def readinto(self, buffer) -> int:
        n = max(0, min(len(buffer), self.end - self.start - self.pos))
        data = os.pread(self.fd, n, self.start + self.pos) if n else b""
        buffer[:len(data)] = data
        self.pos += len(data)
        return len(data)


def scan_tar(path: Path, start: int = 0, end: int | None = None, what: str = "") -> dict:
    """The file members of the tar at bytes ``[start, end)`` of ``path`` from headers alone:
    ``{"members": [[name, data offset, size, bytes available], ...], "damage": str | None}``
    (offsets absolute in ``path``). Raises ``tarfile.ReadError`` when it is no tar at all."""
    fd = os.open(path, os.O_RDONLY)
    try:
        end = os.fstat(fd).st_size if end is None else end
        window = _Window(fd, start, end)
        members = []
        with tarfile.open(fileobj=window, mode="r:") as tar:  # type: ignore[call-overload]
            info = tar.next()  # the first member, read by open()
            while info is not None:
                tar.members.clear()  # tarfile keeps every TarInfo; an index needs none
                if info.isfile():
                    data = start + info.offset_data
                    members.append([info.name, data, info.size,
                                    max(0, min(info.size, end - data))])
                try:
                    info = tar.next()
                except tarfile.ReadError:  # the file ends inside the last member's data
                    break
            damage = _end_damage(window, tar.offset, what or str(path), start)
    finally:
        os.close(fd)
    return {"members": members, "damage": damage}


def _end_damage(window: _Window, offset: int, what: str, start: int) -> str | None:
    """Why the listing stopped, when it was not at a proper end-of-archive marker (Python's
    tarfile stops quietly at a cut or garbled header)."""
    window.seek(offset)
    block = window.read(tarfile.BLOCKSIZE)
    if len(block) == tarfile.BLOCKSIZE and not block.strip(b"\0"):
        return None
    return (f"{what}: tar truncated or damaged at offset {start + offset} (no end-of-archive "
            "marker there): members after it, if any, cannot be listed")


class ImageNetArchives(Source):
    """The three downloads in one folder (the train tar, the val tar and the devkit)."""

    keeps_names = True

    def __init__(self, root: Path, train_tar: Path | None, val_tar: Path | None):
        self.root = root
        self.layout = "archives"
        self.train_tar, self.val_tar = train_tar, val_tar
        self.ignored: list[str] = []
        self._classes: dict[str, list[int]] = {}
        self._inner: dict[str, MemberTable] = {}
        self._val = MemberTable([], [], 3)
        self.val_labels: dict[str, str] = {}
        self._val_by_class: dict[str, list[str]] = {}
        if train_tar is not None:
            self._index_outer(train_tar)
        if val_tar is not None:
            self._index_val(val_tar)

    def describe(self) -> str:
        tars = ", ".join(p.name for p in (self.train_tar, self.val_tar) if p is not None)
        text = f"image-net.org archives at {self.root} ({tars}, read in place)"
        return f"{text}, val labels from {self.val_label_source}" if self.val_label_source \
            else text

    # ---------------------------------------------------------------- listing
    def _index_outer(self, train_tar: Path) -> None:
        index = _scan_cached(train_tar, "outer", TRAIN_TAR)
        self._note(index["damage"])
        for name, offset, size, available in index["members"]:
            m = _CLASS_TAR.match(os.path.basename(name))
            if m is None:
                self.ignored.append(f"{train_tar}//{name}")
            else:
                self._classes[m.group(1)] = [offset, size, available]

    def _index_val(self, val_tar: Path) -> None:
        index = _scan_cached(val_tar, "members", VAL_TAR)
        self._note(index["damage"])
        images = [m for m in index["members"] if is_image_name(m[0])]
        self.ignored += [f"{val_tar}//{m[0]}" for m in index["members"]
                         if not is_image_name(m[0])]
        self._val = MemberTable((os.path.basename(m[0]) for m in images),
                                (m[1:] for m in images), 3)
        if not len(self._val):
            return
        self.val_labels, self.val_label_source = _val_labels(self.root)
        by_class: dict[str, list[str]] = {}
        for name in self._val.sorted_names():
            wnid = self.val_labels.get(name)
            if wnid is not None:
                by_class.setdefault(wnid, []).append(name)
        self._val_by_class = by_class

    def _inner_table(self, wnid: str) -> MemberTable:
        """A class's inner tar, indexed when first asked for (and cached on disk)."""
        table = self._inner.get(wnid)
        if table is not None:
            return table
        assert self.train_tar is not None
        offset, size, available = self._classes[wnid]
        what = f"{self.train_tar.name}//{wnid}.tar"
        try:
            index = cached_index(self.train_tar, f"inner:{wnid}:{offset}:{size}",
                                 lambda: scan_tar(self.train_tar, offset, offset + available,
                                                  what))
        except tarfile.ReadError as e:
            raise UserError(f"member {wnid}.tar (at offset {offset}) is not a tar archive: {e}",
                            path=self.train_tar,
                            fix="the download is damaged: download ILSVRC2012_img_train.tar "
                                "again (or extract it and pass --src the tree)") from e
        self._note(index["damage"])
        if available < size and not index["damage"]:
            self._note(f"{what}: cut short at the end of {TRAIN_TAR} (offset "
                       f"{offset + available})")
        members = index["members"]
        self.ignored += [f"{self.train_tar}//{wnid}.tar/{m[0]}" for m in members
                         if not is_image_name(m[0])]
        images = [m for m in members if is_image_name(m[0])]
        table = MemberTable((os.path.basename(m[0]) for m in images), (m[1:] for m in images), 3)
        self._inner[wnid] = table
        return table

    def _note(self, damage: str | None) -> None:
        if damage and damage not in self.ignored:
            self.ignored.append(damage)

    # ---------------------------------------------------------------- the Source interface
    def has_train(self) -> bool:
        return self.train_tar is not None

    def has_class(self, wnid: str) -> bool:
        return wnid in self._classes

    def train_files(self, wnid: str) -> list[str]:
        return self._inner_table(wnid).sorted_names()

    def val_files(self, wnid: str) -> list[str]:
        return self._val_by_class.get(wnid, [])

    def locate(self, pool: str, wnid: str, filename: str) -> str:
        if pool == "train":
            offset, size, available = self._inner_table(wnid).lookup(filename)
            member, container = f"{wnid}.tar/{filename}", self.train_tar
        else:
            offset, size, available = self._val.lookup(filename)
            member, container = filename, self.val_tar
        numbers = (offset, size) if available >= size else (offset, size, available)
        return make_locator("tar", container, member, *numbers)  # type: ignore[arg-type]


def _scan_cached(archive: Path, part: str, label: str) -> dict:
    try:
        return cached_index(archive, part, lambda: scan_tar(archive, what=label))
    except tarfile.ReadError as e:
        raise UserError(f"not a tar archive: {e}", path=archive,
                        fix="the download is damaged or incomplete: download it again") from e
    except OSError as e:
        raise UserError(f"cannot read the archive: {e.strerror or e}", path=archive) from e


def _devkit(root: Path) -> Path | None:
    return next((root / n for n in DEVKIT_TARS if (root / n).is_file()), None)


def _val_labels(root: Path) -> tuple[dict[str, str], str]:
    """Labels of the val tar's images: LOC_val_solution.csv beside the archives, the devkit
    archive, or an extracted devkit folder."""
    csv_path = root / KAGGLE_VAL_CSV
    if csv_path.is_file():
        return _read_kaggle_val(csv_path), str(csv_path)
    devkit = _devkit(root)
    if devkit is not None:
        labels = cached_index(devkit, "val-labels", lambda: _devkit_labels(devkit))
        return labels, f"{devkit}//{GROUND_TRUTH}"
    extracted = root / DEVKIT_DIR / "data"
    if (extracted / GROUND_TRUTH).is_file():
        mat = extracted / "meta.mat"
        ids = meta_mat_ids(mat.read_bytes() if mat.is_file() else None, mat)
        truth = extracted / GROUND_TRUTH
        return devkit_val_labels(truth.read_text(), ids, truth), str(truth)
    raise UserError(
        f"{VAL_TAR} is here but nothing that labels its images", path=root,
        fix=f"put {DEVKIT_TARS[0]} (from image-net.org) or {KAGGLE_VAL_CSV} beside the "
            f"archives, or move {VAL_TAR} away to build from train only")


def _devkit_labels(devkit: Path) -> dict[str, str]:
    """Ground truth and meta.mat straight out of the devkit's gzip stream."""
    truth: bytes | None = None
    mat: bytes | None = None
    try:
        with tarfile.open(devkit) as tar:
            for info in tar:
                if info.isfile() and info.name.endswith("/data/" + GROUND_TRUTH):
                    truth = tar.extractfile(info).read()  # type: ignore[union-attr]
                elif info.isfile() and info.name.endswith("/data/meta.mat"):
                    mat = tar.extractfile(info).read()  # type: ignore[union-attr]
    except (tarfile.TarError, OSError, EOFError) as e:
        raise UserError(f"cannot read the devkit archive: {e}", path=devkit,
                        fix=f"download {DEVKIT_TARS[0]} again") from e
    if truth is None:
        raise UserError(f"the devkit archive has no data/{GROUND_TRUTH}", path=devkit,
                        fix=f"use the ILSVRC2012 devkit ({DEVKIT_TARS[0]})")
    where = f"{devkit}//data/{GROUND_TRUTH}"
    return devkit_val_labels(truth.decode("ascii", "replace"), meta_mat_ids(mat, devkit), where)


def probe(src: Path) -> ImageNetArchives | None:
    """A folder holding the train and/or val tar, or one of the archives (its folder)."""
    if src.is_file():
        if src.name not in (TRAIN_TAR, VAL_TAR, *DEVKIT_TARS):
            return None
        src = src.parent
    elif not src.is_dir():
        return None
    train, val = src / TRAIN_TAR, src / VAL_TAR
    if not (train.is_file() or val.is_file()):
        return None
    return ImageNetArchives(src, train if train.is_file() else None,
                            val if val.is_file() else None)
