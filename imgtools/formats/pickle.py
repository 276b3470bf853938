"""Read CIFAR-style downsampled ImageNet: ``train_data_batch_*`` / ``val_data`` pickles or .npz.

Reads what ``imgtools build --format pickle|npz`` writes and the files published on
image-net.org (Imagenet8/16/32/64, pickled or ``.npz``). Each file is a dict with ``data``
(uint8, N x 3*s*s, channel-planar R, G, B), ``labels`` (1-based) and, in train files, ``mean``.
Records come out with 0-based labels and PNG-encoded pixels (lossless, so ``convert`` and
``preview`` see exactly the stored pixels).

Pickles are loaded with an allow-list unpickler: a pickle can run arbitrary code, and a dataset
downloaded from somewhere should not be able to. Writing (:mod:`.pickle_batches`) is in two
passes: work shards write parts of square rows, and the format's second pass makes the shuffled
batches and the train mean. The rows come from the
:class:`~imgtools.transforms.square.SquareRows` transform, which ``build --format pickle|npz``
and ``convert --to pickle|npz --size N`` put before this writer.
"""

from __future__ import annotations

import importlib
import io
import pickle
import re
import struct
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image

from imgtools.errors import CorruptDataError, UserError
from imgtools.formats.base import Format, InputShard, PassContext, ShardWriter
from imgtools.formats.common import generic_classes
from imgtools.formats.pickle_batches import RowPartWriter, make_batches
from imgtools.manifests import IMAGENET_MANIFEST, read_manifest
from imgtools.records import ClassInfo, DatasetInfo, Record
from imgtools.resources import manifest_path

BATCH_NAME = re.compile(r"^(?:(train)_data_batch_(\d+)|(val|unsup)_data)(\.npz|\.pkl|\.pickle)?$")
META_NAME = "batches.meta"

# Globals a numpy-array pickle may name (numpy 1.x and 2.x spellings, protocols 2-5).
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): ("numpy._core.multiarray", "numpy.core.multiarray"),
    ("numpy._core.multiarray", "_reconstruct"): ("numpy._core.multiarray", "numpy.core.multiarray"),
    ("numpy.core.multiarray", "scalar"): ("numpy._core.multiarray", "numpy.core.multiarray"),
    ("numpy._core.multiarray", "scalar"): ("numpy._core.multiarray", "numpy.core.multiarray"),
    ("numpy.core.numeric", "_frombuffer"): ("numpy._core.numeric", "numpy.core.numeric"),
    ("numpy._core.numeric", "_frombuffer"): ("numpy._core.numeric", "numpy.core.numeric"),
    ("numpy", "ndarray"): ("numpy",),
    ("numpy", "dtype"): ("numpy",),
    ("_codecs", "encode"): ("_codecs",),  # how Python 2 pickles carry bytes
}


class _SafeUnpickler(pickle.Unpickler):
    """Resolve only the numpy globals an array pickle needs; refuse anything else."""

    def find_class(self, module: str, name: str):
        candidates = _ALLOWED_GLOBALS.get((module, name))
        if candidates is None:
            raise pickle.UnpicklingError(f"refusing to load global {module}.{name}")
        for mod in candidates:  # prefer numpy 2's module: no deprecation warning
            try:
                return getattr(importlib.import_module(mod), name)
            except (ImportError, AttributeError):
                continue
        raise pickle.UnpicklingError(f"cannot resolve {module}.{name}")


def split_of(path: Path) -> str | None:
    """``train`` / ``val`` / ``unsup`` from a batch file name, None if it is not one."""
    m = BATCH_NAME.match(path.name)
    if not m:
        return None
    return m.group(1) or m.group(3)


def _sort_key(path: Path) -> tuple:
    m = BATCH_NAME.match(path.name)
    assert m is not None
    split = m.group(1) or m.group(3)
    return ({"train": 0, "val": 1, "unsup": 2}[split], int(m.group(2) or 0), path.name)


def batch_files(path: Path) -> list[Path]:
    """The batch files at ``path`` (a file, or a folder holding them), in reading order."""
    path = Path(path)
    if path.is_file():
        return [path] if split_of(path) or path.suffix == ".npz" else []
    return sorted((p for p in path.iterdir() if p.is_file() and split_of(p)), key=_sort_key)


def load_batch(path: str | Path) -> dict:
    """One batch as ``{'data': uint8 N x D, 'labels': int64 N or None, 'mean': f8 D or None,
    'size': s}``; a clear error naming the file when it is not in the published format."""
    path = Path(path)
    raw = _load_npz(path) if _is_npz(path) else _load_pickle(path)
    if not isinstance(raw, dict):
        raise CorruptDataError(f"holds a {type(raw).__name__}, not a dict with 'data'", path=path,
                               fix="expected a downsampled-ImageNet batch (train_data_batch_N)")
    raw = {k.decode() if isinstance(k, bytes) else k: v for k, v in raw.items()}
    if "data" not in raw:
        raise CorruptDataError(f"no 'data' entry (keys: {sorted(raw)})", path=path,
                               fix="expected keys data, labels and (train files) mean")
    data = np.asarray(raw["data"])
    if data.dtype != np.uint8 or data.ndim != 2:
        raise CorruptDataError(f"'data' is {data.dtype} with shape {data.shape}, expected uint8 "
                               "N x 3*s*s", path=path, fix="the file is not a downsampled batch")
    size = _side(data.shape[1], path)
    labels = None
    if raw.get("labels") is not None:
        labels = np.asarray(raw["labels"], dtype=np.int64).reshape(-1)
        if len(labels) != len(data):
            raise CorruptDataError(f"{len(labels)} labels for {len(data)} images", path=path,
                                   fix="the file is damaged; rebuild or download it again")
    mean = None if raw.get("mean") is None else np.asarray(raw["mean"], dtype=np.float64)
    return {"data": data, "labels": labels, "mean": mean, "size": size}


def _is_npz(path: Path) -> bool:
    return path.suffix == ".npz" or zipfile.is_zipfile(path)


def _load_pickle(path: Path) -> object:
    try:
        with open(path, "rb") as f:
            return _SafeUnpickler(f, encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError, struct.error) as e:
        raise CorruptDataError(f"not a readable pickle: {e}", path=path,
                               fix="the file is truncated or not a batch; download or build "
                                   "it again") from e


def _load_npz(path: Path) -> dict:
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as e:
        raise CorruptDataError(f"not a readable .npz: {e}", path=path,
                               fix="the file is truncated or damaged; download or build it "
                                   "again") from e


def _side(width: int, path: Path) -> int:
    side = int(round((width / 3) ** 0.5))
    if 3 * side * side != width:
        raise CorruptDataError(f"rows of {width} values are not 3 x s x s", path=path,
                               fix="expected 192, 768, 3072 or 12288 values per image")
    return side


def row_to_array(row: np.ndarray, size: int) -> np.ndarray:
    """A channel-planar row back to an ``s x s x 3`` image (as the published test.py does)."""
    return np.ascontiguousarray(row.reshape(3, size, size).transpose(1, 2, 0))


def encode_png(pixels: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(buf, "PNG")
    return buf.getvalue()


class PickleFormat(Format):
    name = "pickle"
    takes = frozenset({"planar-rows"})
    writes_parts = True
    pass_options = frozenset({"batches", "container"})

    def detect(self, path: Path) -> bool:
        path = Path(path)
        if path.is_file():
            if split_of(path):
                return True
            return path.suffix == ".npz" and _npz_has_data(path)
        return path.is_dir() and bool(batch_files(path))

    def read_info(self, path: Path) -> DatasetInfo:
        """Our sidecar, else ``batches.meta``, else (published files) the 1000 ImageNet
        classes in map_clsloc order, which is what their 1-based labels index.

        Files alone are taken as ImageNet-1k only when their labels reach 1000: every
        published batch holds all 1000 classes, while a subset's batch copied without its
        ``batches.meta`` (Imagenette: labels 1..10) would otherwise get ImageNet's first
        classes' names and wnids. Such files get numbered classes (``000``, ``001``...)."""

        root = Path(path) if Path(path).is_dir() else Path(path).parent
        info = DatasetInfo.load(root)
        if info is not None:
            return info
        meta = root / META_NAME
        if meta.is_file():
            return _info_from_meta(meta, root.name)

        classes = read_manifest(manifest_path(IMAGENET_MANIFEST))
        top = _largest_label(Path(path))
        if top == len(classes) or top is None:
            return DatasetInfo(root.name, classes, label_order="map_clsloc (devkit order)")
        return DatasetInfo(root.name, generic_classes(range(top)),
                           label_order=f"as stored (no {META_NAME} beside the files: labels "
                                       f"reach only {top}, so not ImageNet-1k; names unknown)")

    def input_shards(self, path: Path) -> list[InputShard]:
        files = batch_files(Path(path))
        if not files:
            raise UserError("no train_data_batch_* / val_data files here", path=path,
                            fix="point at a folder of downsampled-ImageNet batches")
        return [InputShard(str(f), split_of(f) or "train") for f in files]

    def read_shard(self, shard: InputShard, info: DatasetInfo) -> Iterator[Record]:
        path = Path(shard.path)
        batch = load_batch(path)
        size, labels = batch["size"], batch["labels"]
        stem = path.name.split(".")[0]
        n_classes = len(info.classes)
        for i, row in enumerate(batch["data"]):
            label = None
            wnid = class_name = None
            if labels is not None and shard.split != "unsup":
                label = int(labels[i]) - 1
                if not 0 <= label < n_classes:
                    raise CorruptDataError(
                        f"image {i} has label {label + 1}, outside 1..{n_classes}", path=path,
                        fix="labels are 1-based into the class list (batches.meta / sidecar)")
                wnid, class_name = info.classes[label].wnid, info.classes[label].name
            key = f"{stem}_{i:07d}"
            yield Record(key=key, split=shard.split or "train", label=label,
                         image=encode_png(row_to_array(row, size)), filename=f"{key}.png",
                         wnid=wnid, class_name=class_name)

    def open_writer(self, root: Path, info: DatasetInfo, split: str, shard_index: int,
                    num_shards: int, *, digests: bool = False) -> ShardWriter:
        """A part writer (pass 1): the rows of one work shard (:mod:`.pickle_batches`)."""
        return RowPartWriter(root, split, shard_index)

    def second_pass(self, ctx: PassContext) -> list[tuple[str, str]]:
        """Mean, seeded shuffle and batch files (pass 2, :func:`make_batches`)."""
        return make_batches(ctx)

    def finalize(self, root: Path, info: DatasetInfo, counts: dict[str, int],
                 facts: dict[str, dict] | None = None) -> None:
        """Nothing left to do: ``batches.meta`` and the sidecar need the batch layout, so the
        second pass writes them."""


def _largest_label(path: Path) -> int | None:
    """The largest 1-based label in the smallest batch file at ``path`` (None: unlabelled)."""
    files = batch_files(path)
    if not files:
        return None
    labels = load_batch(min(files, key=lambda f: f.stat().st_size))["labels"]
    return int(np.max(labels)) if labels is not None and len(labels) else None


def _npz_has_data(path: Path) -> bool:
    try:
        with zipfile.ZipFile(path) as z:
            return "data.npy" in z.namelist()
    except (zipfile.BadZipFile, OSError):
        return False


def _info_from_meta(meta: Path, name: str) -> DatasetInfo:
    raw = _load_pickle(meta)
    if not isinstance(raw, dict) or "label_names" not in raw:
        raise CorruptDataError("batches.meta has no label_names", path=meta,
                               fix="rebuild the dataset or delete the file")
    names = [n.decode() if isinstance(n, bytes) else str(n) for n in raw["label_names"]]
    wnids = raw.get("wnids") or [""] * len(names)
    return DatasetInfo(name, [ClassInfo(w, n) for w, n in zip(wnids, names, strict=True)],
                       label_order=str(raw.get("label_order", "recipe")))


FORMAT = PickleFormat()
