"""Find the images of a raw ImageNet tree, whatever layout it came in.

Three layouts are common (see the README): the Kaggle download (``ILSVRC/Data/CLS-LOC`` with
``LOC_val_solution.csv``), the original tarballs (flat ``val/`` labelled by the devkit's
``ILSVRC2012_validation_ground_truth.txt`` and ``meta.mat``), and a tree whose ``val/`` was
already sorted into class folders. :func:`probe` detects which one ``--src`` holds, so the
rest of the tool only asks "which files does class X have in ImageNet's train / val split".
A tree's locators are plain file paths.
"""

from __future__ import annotations

import csv
import functools
import io
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from imgtools.errors import UserError
from imgtools.resources import manifest_path
from imgtools.sources.base import IMAGE_EXTENSIONS, Source

DEVKIT_DIR = "ILSVRC2012_devkit_t12"
GROUND_TRUTH = "ILSVRC2012_validation_ground_truth.txt"
KAGGLE_VAL_CSV = "LOC_val_solution.csv"


LOOKED_FOR = ("an extracted tree: ILSVRC/Data/CLS-LOC/{train,val} with LOC_val_solution.csv "
              "(Kaggle); train/ and a flat val/ with "
              f"{DEVKIT_DIR}/data/{GROUND_TRUTH} (original tarballs + devkit); train/ and "
              "val/<wnid>/ (val sorted into class folders)")


@dataclass
class ImageNetSource(Source):
    """A detected ImageNet tree. ``val_labels`` maps flat val file names to wnids (empty when
    val is already in class folders)."""

    root: Path
    layout: str  # "kaggle", "devkit", "valprep"
    train_dir: Path | None
    val_dir: Path | None
    val_labels: dict[str, str] = field(default_factory=dict)
    val_label_source: str = ""
    ignored: list[str] = field(default_factory=list)  # non-image files met while listing
    _val_by_class: dict[str, list[str]] | None = None

    def describe(self) -> str:
        parts = [f"{self.layout} layout at {self.root}"]
        if self.val_label_source:
            parts.append(f"val labels from {self.val_label_source}")
        return ", ".join(parts)

    def has_train(self) -> bool:
        return self.train_dir is not None

    def has_class(self, wnid: str) -> bool:
        return self.train_dir is not None and (self.train_dir / wnid).is_dir()

    def train_files(self, wnid: str) -> list[str]:
        """File names of ImageNet's train images of ``wnid``, sorted (stable across machines)."""
        assert self.train_dir is not None
        return self._list_images(self.train_dir / wnid)

    def val_files(self, wnid: str) -> list[str]:
        if self.val_dir is None:
            return []
        if self.layout == "valprep":
            d = self.val_dir / wnid
            return self._list_images(d) if d.is_dir() else []
        if self._val_by_class is None:
            by_class: dict[str, list[str]] = {}
            for name, w in self.val_labels.items():
                by_class.setdefault(w, []).append(name)
            self._val_by_class = {w: sorted(v) for w, v in by_class.items()}
        return self._val_by_class.get(wnid, [])

    def path_of(self, pool: str, wnid: str, filename: str) -> str:
        """Where a file of ImageNet split ``pool`` lives on disk. A string, not a Path, made by
        concatenation (names from a folder listing hold no separator): the planner asks once
        per image per pass, and pathlib's or even ``os.path.join``'s work would dominate that."""
        folder = self._folder_prefixes[pool != "train"]
        assert folder is not None, f"no {pool} folder in this tree"
        if pool == "train" or self.layout == "valprep":
            return f"{folder}{wnid}{os.sep}{filename}"
        return f"{folder}{filename}"

    @functools.cached_property
    def _folder_prefixes(self) -> tuple[str | None, str | None]:
        """``train/`` and ``val/`` as strings ending in a separator (None: no such folder)."""
        return tuple(None if d is None else os.path.join(d, "")
                     for d in (self.train_dir, self.val_dir))

    locate = path_of

    def _list_images(self, folder: Path) -> list[str]:
        """Image names of ``folder``. Every entry with an image extension is planned, whatever
        it is: a dangling or looping symlink, a FIFO, a name that is not UTF-8; reading it then
        fails (:func:`imgtools.transforms.jpeg.read_bytes`) and the build lists it as skipped with
        the reason, instead of it vanishing from every count. Sub-folders and other files are
        listed in ``ignored`` (a folder with a trailing ``/``; names as the OS gave them,
        escaped only for display)."""
        names = []
        with os.scandir(folder) as it:
            for entry in it:
                if entry.name.startswith("."):
                    continue
                try:
                    is_folder = entry.is_dir()
                except OSError:  # a symlink loop: planned below, reported when read
                    is_folder = False
                if is_folder:
                    self.ignored.append(os.path.join(folder, entry.name, ""))
                elif os.path.splitext(entry.name)[1].lower() in IMAGE_EXTENSIONS:
                    names.append(entry.name)
                else:
                    self.ignored.append(os.path.join(folder, entry.name))
        return sorted(names)


def probe(src: Path) -> ImageNetSource | None:
    """The layout of the ImageNet tree at ``src`` (the top, ``ILSVRC/`` or ``CLS-LOC/``), or
    None when ``src`` holds no train/ or val/ folder."""
    if not src.is_dir():
        return None
    for data in (src / "ILSVRC" / "Data" / "CLS-LOC", src / "Data" / "CLS-LOC", src):
        if (data / "train").is_dir() or (data / "val").is_dir():
            break
    else:
        return None
    train_dir = data / "train" if (data / "train").is_dir() else None
    val_dir = data / "val" if (data / "val").is_dir() else None
    kaggle = data.name == "CLS-LOC"
    if val_dir is None:
        return ImageNetSource(src, "kaggle" if kaggle else "valprep", train_dir, None)
    if _has_class_folders(val_dir):
        return ImageNetSource(src, "valprep", train_dir, val_dir,
                              val_label_source="val/<wnid>/ folders")
    labels, label_source = _flat_val_labels(data, src, val_dir)
    return ImageNetSource(src, "kaggle" if kaggle else "devkit", train_dir, val_dir, labels,
                          label_source)


def _has_class_folders(val_dir: Path) -> bool:
    with os.scandir(val_dir) as it:
        for entry in it:
            if entry.is_dir() and entry.name.startswith("n") and entry.name[1:].isdigit():
                return True
    return False


def _ancestors(path: Path, levels: int = 4) -> list[Path]:
    out = [path]
    for _ in range(levels):
        path = path.parent
        out.append(path)
    return out


def _flat_val_labels(data: Path, src: Path, val_dir: Path) -> tuple[dict[str, str], str]:
    """Labels of a flat val/ folder: LOC_val_solution.csv (Kaggle) or the devkit ground truth."""
    places = list(dict.fromkeys(_ancestors(data) + _ancestors(src, 1)))
    for place in places:
        csv_path = place / KAGGLE_VAL_CSV
        if csv_path.is_file():
            return _read_kaggle_val(csv_path), str(csv_path)
    for place in places:
        for devkit in (place / DEVKIT_DIR / "data", place / "data", place):
            gt = devkit / GROUND_TRUTH
            if gt.is_file():
                return _read_devkit_val(gt, devkit / "meta.mat", val_dir), str(gt)
    raise UserError(
        "val/ is a flat folder, but no labels for it were found",
        path=val_dir,
        fix=f"put {KAGGLE_VAL_CSV} (Kaggle) or {DEVKIT_DIR}/data/{GROUND_TRUTH} (+ meta.mat) "
            f"beside the tree (looked in: {', '.join(str(p) for p in places)}), or sort val "
            "into val/<wnid>/ folders",
    )


def _read_kaggle_val(path: Path) -> dict[str, str]:
    with open(path, newline="") as f:
        return kaggle_val_labels(f, path)


def kaggle_val_labels(lines: Iterable[str], where: str | Path) -> dict[str, str]:
    """Val file name -> wnid from the lines of LOC_val_solution.csv (a file, or a zip member)."""
    labels: dict[str, str] = {}
    reader = csv.DictReader(lines)
    if reader.fieldnames is None or not {"ImageId", "PredictionString"} <= set(
            reader.fieldnames):
        raise UserError("expected columns ImageId,PredictionString", path=where,
                        fix="use the LOC_val_solution.csv of the Kaggle download")
    for row in reader:
        tokens = row["PredictionString"].split()
        if not tokens:
            raise UserError(f"image {row['ImageId']} has an empty PredictionString",
                            path=where)
        labels[row["ImageId"] + ".JPEG"] = tokens[0]
    return labels


def _read_devkit_val(gt: Path, meta: Path, val_dir: Path) -> dict[str, str]:
    """Val labels from the devkit: line i of the ground truth is the ILSVRC2012_ID of
    ``ILSVRC2012_val_<i, 8 digits>.JPEG``; meta.mat maps ids to wnids. Without meta.mat the
    shipped map_clsloc table is used: its ids are the devkit's ILSVRC2012_IDs."""
    id_to_wnid = _read_meta_mat(meta) if meta.is_file() else _map_clsloc_ids()
    return devkit_val_labels(gt.read_text(), id_to_wnid, gt)


def devkit_val_labels(truth: str, id_to_wnid: dict[int, str], where: str | Path
                      ) -> dict[str, str]:
    """Val file name -> wnid from the ground-truth text (line i: the ILSVRC2012_ID of
    ``ILSVRC2012_val_<i, 8 digits>.JPEG``) and the id -> wnid map."""
    labels: dict[str, str] = {}
    for i, line in enumerate(truth.split(), 1):
        try:
            labels[f"ILSVRC2012_val_{i:08d}.JPEG"] = id_to_wnid[int(line)]
        except (ValueError, KeyError) as e:
            raise UserError(f"line {i}: {line!r} is not an ILSVRC2012_ID between 1 and 1000",
                            path=where) from e
    return labels


def meta_mat_ids(mat: bytes | None, where: str | Path) -> dict[int, str]:
    """ILSVRC2012_ID -> wnid from meta.mat's bytes (None: the shipped map_clsloc table)."""
    return _read_meta_mat(io.BytesIO(mat), where) if mat is not None else _map_clsloc_ids()


def _read_meta_mat(path: Path | IO[bytes], where: str | Path | None = None) -> dict[int, str]:
    where = path if where is None else where
    try:
        from scipy.io import loadmat
    except ImportError as e:  # pragma: no cover - scipy is a dependency
        raise UserError("reading meta.mat needs scipy", path=where,
                        fix="pip install scipy") from e
    try:
        synsets = loadmat(path if isinstance(path, io.IOBase) else str(path),
                          squeeze_me=True)["synsets"]
    except Exception as e:  # noqa: BLE001 - scipy raises many kinds for a bad file
        raise UserError(f"cannot read the devkit's meta.mat: {e}", path=where,
                        fix="re-extract ILSVRC2012_devkit_t12.tar.gz") from e
    out = {}
    for s in synsets:
        if int(s["num_children"]) == 0:
            out[int(s["ILSVRC2012_ID"])] = str(s["WNID"])
    return out


def _map_clsloc_ids() -> dict[int, str]:

    out = {}
    for line in manifest_path("imagenet1k_map_clsloc.txt").read_text().splitlines():
        wnid, idx, _ = line.split(None, 2)
        out[int(idx)] = wnid
    return out
