"""The Source interface, the index cache the archive sources share, and the source registry.

A source answers the planner's questions - which classes exist, which images ImageNet's train
and val splits hold for a class - and turns an image into a *locator* (see
:mod:`imgtools.sources.members`), the string a shard worker opens. Nothing outside this package
knows whether a locator is a path, an offset in a tar or a row of a Parquet file.

:func:`open_source` asks each source module in turn whether ``--src`` is one of its kind
(``probe``); the first that recognises it wins, and when none does the error lists what every
one of them looked for.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
from abc import ABC, abstractmethod
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from imgtools.atomic import atomic_write_text
from imgtools.errors import UserError
from imgtools.sources.members import open_locator

IMAGE_EXTENSIONS = {".jpeg", ".jpg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"}

# Tried in this order: archives and zips are files with telling names; a tree is checked
# before a dataset copy because a JPEG folder of train/<wnid>/ is both, and is a tree.
_SOURCE_MODULES = (
    "imgtools.sources.imagenet_archives",
    "imgtools.sources.kaggle_zip",
    "imgtools.sources.imagenet_tree",
    "imgtools.sources.dataset_copy",
)


def is_image_name(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


class Source(ABC):
    """Where a build's images come from. ``val_labels``: flat val name -> wnid where the
    source keeps val flat (reports and tests read it); ``ignored``: non-image entries met."""

    root: Path
    layout: str
    val_label_source: str = ""
    keeps_names: bool = True  # False: file names are lost, --split official is impossible
    ignored: list[str]

    @abstractmethod
    def describe(self) -> str:
        """One line for the user: what was found where."""

    @abstractmethod
    def has_train(self) -> bool:
        """Whether ImageNet's train split is there at all."""

    @abstractmethod
    def has_class(self, wnid: str) -> bool: ...

    @abstractmethod
    def train_files(self, wnid: str) -> list[str]:
        """File names of the train images of ``wnid``, sorted (stable across machines)."""

    @abstractmethod
    def val_files(self, wnid: str) -> list[str]:
        """File names of the val images of ``wnid``, sorted."""

    @abstractmethod
    def locate(self, pool: str, wnid: str, filename: str) -> str:
        """The locator of one image of ImageNet split ``pool`` (a str: called once per image)."""

    def open(self, locator: str) -> bytes:
        """The bytes of the image at ``locator`` (workers call :func:`open_locator` directly:
        a locator needs no source object)."""
        return open_locator(locator)


class MemberTable:
    """Names of one group of archive members (a class, or flat val) with a row of integers
    each (offset, size, ...), as numpy columns sorted by name: ImageNet-1k's 1.3 million
    members take ~60 MB this way, where tuples in a dict would take ~300 MB."""

    def __init__(self, names: Iterable[str], numbers: Iterable[Iterable[int]], width: int):
        pairs = sorted(zip(names, (tuple(n) for n in numbers)))
        self.names = np.array([n.encode("utf-8", "surrogateescape") for n, _ in pairs],
                              dtype=np.bytes_) if pairs else np.zeros(0, "S1")
        self.numbers = (np.array([v for _, v in pairs], dtype=np.int64).reshape(-1, width))

    def __len__(self) -> int:
        return len(self.names)

    def sorted_names(self) -> list[str]:
        return [n.decode("utf-8", "surrogateescape") for n in self.names]

    def lookup(self, name: str) -> list[int]:
        key = name.encode("utf-8", "surrogateescape")
        i = int(np.searchsorted(self.names, key))
        if i >= len(self.names) or self.names[i] != key:
            raise KeyError(name)
        return [int(v) for v in self.numbers[i]]


def cache_dir() -> Path:
    """Where archive indexes are kept: ``$IMGTOOLS_CACHE_DIR``, else the XDG user cache
    (``$XDG_CACHE_HOME/imgtools``, ``~/.cache/imgtools``)."""
    if os.environ.get("IMGTOOLS_CACHE_DIR"):
        return Path(os.environ["IMGTOOLS_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "imgtools"


def _cache_file(archive: Path, part: str) -> tuple[Path, dict]:
    st = archive.stat()
    key = {"archive": str(archive), "size": st.st_size, "mtime_ns": st.st_mtime_ns, "part": part}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:32]
    return cache_dir() / "index" / f"{digest}.json", key


def cached_index(archive: Path, part: str, make) -> dict:
    """``make()`` (a JSON-able dict: an index read from an archive's headers), cached under
    the archive's path, size and mtime so that the next build skips the header pass. A
    changed archive gets a new key; an unwritable cache only costs the pass again."""
    path, key = _cache_file(archive, part)
    try:
        cached = json.loads(path.read_text())
        if cached.get("key") == key:
            return cached["index"]
    except (OSError, ValueError, AttributeError):
        pass
    index = make()
    store_index(archive, part, index)
    return index


def store_index(archive: Path, part: str, index: dict) -> None:
    """Cache ``index`` as :func:`cached_index` would (for a pass that indexes several parts
    at once)."""
    path, key = _cache_file(archive, part)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps({"key": key, "index": index}))
    except OSError:
        pass


def open_source(src: str | Path) -> Source:
    """The source ``--src`` holds: an extracted tree, the image-net.org archives, the Kaggle
    zip, or a copy in a training format."""
    path = Path(src).expanduser().resolve()
    if not path.exists():
        raise UserError("no such file or directory", path=path,
                        fix="pass --src an ImageNet tree, the image-net.org archives, the "
                            "Kaggle zip or a dataset copy")
    looked_for = []
    for name in _SOURCE_MODULES:
        module = importlib.import_module(name)
        source = module.probe(path)
        if source is not None:
            return source
        looked_for.append(module.LOOKED_FOR)
    raise UserError(
        "could not recognise an ImageNet source here", path=path,
        fix="expected one of:\n    - " + "\n    - ".join(looked_for))
