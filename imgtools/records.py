"""The unit every format reads and writes: one labelled, encoded image.

Formats agree on nothing but this record, which is why N formats give N x N conversions: a
reader yields :class:`Record` objects, a writer takes them. Image bytes travel encoded (JPEG as
ImageNet stores it) so that a conversion never decodes or re-encodes unless asked to resize.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

from imgtools.atomic import atomic_write_text
from imgtools.errors import CorruptDataError

SPLITS = ("train", "val", "unsup")
"""Split names, in canonical order. ``unsup`` holds Imagewang's unlabelled images."""

DATASET_META = "imgtools-dataset.json"
"""Sidecar written at the root of every dataset imgtools writes: class list, splits, counts."""

_KEY_UNSAFE = re.compile(r"[^A-Za-z0-9_\-]")


def plain_filename(name: str | None) -> str:
    """A stored file name reduced to its last component, or "" when nothing usable is left.

    Names inside TFRecords, WebDataset JSON and Parquet are whatever their writer put there
    (``train/n01440764/x.JPEG``, ``../../x.jpg``, ``C:\\x.jpg``). Output goes into our own
    class folders, so a path part must never steer a file elsewhere."""
    if not name:
        return ""
    base = re.split(r"[/\\]", str(name))[-1].strip()
    return "" if base in ("", ".", "..") else base


def safe_key(filename: str) -> str:
    """A record key from a file name: extension dropped, no dots (WebDataset cuts keys at the
    first dot), only characters safe in every format's member and file names."""
    # A plain name is its own last component (most calls: once per image, and pathlib costs
    # more than the rest of this function).
    stem = filename if "/" not in filename and filename not in ("", ".") else Path(filename).name
    if "." in stem:
        stem = stem[: stem.rindex(".")]
    return _KEY_UNSAFE.sub("_", stem)


@dataclass(frozen=True)
class ClassInfo:
    """One class: its WordNet id and a human name (``tench``, ``English springer``)."""

    wnid: str
    name: str


@dataclass
class DatasetInfo:
    """What a reader needs to know beyond the records: class list (label i is ``classes[i]``)."""

    name: str
    classes: list[ClassInfo]
    label_order: str = "recipe"  # "recipe", "map_clsloc (devkit)", "sorted wnid", ...
    extra: dict = field(default_factory=dict)

    @property
    def class_names(self) -> list[str]:
        return [c.name for c in self.classes]

    @property
    def unique_class_names(self) -> list[str]:
        """Class names that are distinct, as ``datasets``' ClassLabel demands: ImageNet-1k
        has two "crane" and two "maillot" classes, so a repeated name gets its wnid appended
        (``crane (n03126707)``)."""
        seen: dict[str, int] = {}
        for c in self.classes:
            seen[c.name] = seen.get(c.name, 0) + 1
        return [c.name if seen[c.name] == 1 else f"{c.name} ({c.wnid})" for c in self.classes]

    @property
    def wnids(self) -> list[str]:
        return [c.wnid for c in self.classes]

    def to_json(self) -> dict:
        return {
            "name": self.name,
            "label_order": self.label_order,
            "classes": [asdict(c) for c in self.classes],
            **({"extra": self.extra} if self.extra else {}),
        }

    @classmethod
    def from_json(cls, obj: dict, where: str | Path | None = None) -> DatasetInfo:
        """The class list from its JSON form; a damaged one (a hand edit, a truncated copy)
        is a :class:`CorruptDataError` naming ``where``, never a KeyError or TypeError."""
        problem = _class_list_problem(obj)
        if problem:
            raise CorruptDataError(f"damaged class list: {problem}", path=where,
                                   fix=_SIDECAR_FIX)
        return cls(
            name=obj.get("name", "dataset"),
            classes=[ClassInfo(c["wnid"], c["name"]) for c in obj["classes"]],
            label_order=obj.get("label_order", "recipe"),
            extra=obj.get("extra", {}),
        )

    def save(self, root: Path, splits: dict[str, int] | None = None,
             fmt: str | None = None) -> Path:
        """Write the sidecar atomically; ``splits`` maps split name to number of records."""

        obj = self.to_json()
        if fmt:
            obj["format"] = fmt
        if splits is not None:
            obj["splits"] = splits
        path = Path(root) / DATASET_META
        atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")
        return path

    @classmethod
    def load(cls, root: Path) -> DatasetInfo | None:
        path = Path(root) / DATASET_META
        if not path.is_file():
            return None
        return cls.from_json(load_sidecar(path), path)


_SIDECAR_FIX = (f"restore {DATASET_META} from the dataset's source (or convert the dataset "
                "again); for a JPEG folder, deleting it makes the classes the folder names")


def load_sidecar(path: Path) -> dict:
    """``imgtools-dataset.json`` as a dict whose ``splits``, when present, map split names to
    counts; empty, not JSON or of the wrong shape is a :class:`CorruptDataError`."""
    try:
        obj = json.loads(path.read_bytes())
    except (ValueError, UnicodeDecodeError) as e:
        raise CorruptDataError(f"not valid JSON ({e})", path=path, fix=_SIDECAR_FIX) from e
    if not isinstance(obj, dict):
        raise CorruptDataError(f"not a JSON object but {type(obj).__name__}", path=path,
                               fix=_SIDECAR_FIX)
    splits = obj.get("splits")
    if splits is not None and not (isinstance(splits, dict) and all(
            isinstance(k, str) and type(v) is int and v >= 0 for k, v in splits.items())):
        raise CorruptDataError("damaged 'splits': expected {split name: number of records}",
                               path=path, fix=_SIDECAR_FIX)
    return obj


def _class_list_problem(obj: object) -> str | None:
    """What is wrong with a class list object, or None."""
    if not isinstance(obj, dict):
        return f"not a JSON object but {type(obj).__name__}"
    classes = obj.get("classes")
    if not isinstance(classes, list):
        return "no 'classes' list" if classes is None else "'classes' is not a list"
    for i, c in enumerate(classes):
        if not (isinstance(c, dict) and isinstance(c.get("wnid"), str)
                and isinstance(c.get("name"), str)):
            return f"class {i} is not {{\"wnid\": text, \"name\": text}}"
    for key, kind in (("name", str), ("label_order", str), ("extra", dict)):
        if key in obj and not isinstance(obj[key], kind):
            return f"'{key}' is not {'text' if kind is str else 'an object'}"
    return None


@dataclass
class Record:
    """One image with its label. ``label`` is 0-based into ``DatasetInfo.classes``, or None for
    unlabelled (``unsup``) images. ``image`` holds the encoded bytes, untouched."""

    key: str
    split: str
    label: int | None
    image: bytes
    filename: str
    wnid: str | None = None
    class_name: str | None = None

    def with_image(self, image: bytes, filename: str | None = None) -> Record:
        """This record with other image bytes (and file name): ``dataclasses.replace`` without
        its generic field walk, which a transform would pay per output image."""
        return Record(self.key, self.split, self.label, image,
                      self.filename if filename is None else filename, self.wnid,
                      self.class_name)
