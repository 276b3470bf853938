"""The class maps of the generated ImageNet tree, in the three files real copies carry them:
Kaggle's ``LOC_synset_mapping.txt`` and ``LOC_val_solution.csv``, and the devkit's ``meta.mat``
(a MATLAB struct array with WordNet's internal nodes, which readers must filter out) with the
val ground truth. Also the 1000 ImageNet-1k classes in devkit order and the val file names they
index. Written byte for byte the same for the same seed, like the rest of
:mod:`imgtools.demo_tree`.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from imgtools.atomic import atomic_write_bytes, atomic_write_text
from imgtools.resources import manifest_path

DEVKIT_DIR = Path("ILSVRC2012_devkit_t12")
VAL_STREAM = 2
"""The tag of the random stream of everything val (file order, images, Kaggle's boxes):
:mod:`imgtools.demo_tree` seeds its val images with it too, so changing it changes the trees."""


@dataclass(frozen=True)
class Synset:
    ilsvrc_id: int  # 1-based devkit id (map_clsloc order)
    wnid: str
    name: str  # map_clsloc spelling with spaces: "English springer"


def load_clsloc() -> list[Synset]:
    """The 1000 ImageNet-1k classes in devkit (map_clsloc) order, from the shipped manifest."""

    path = manifest_path("imagenet1k_map_clsloc.txt")
    synsets = []
    for line in path.read_text().splitlines():
        if line.strip():
            wnid, ilsvrc_id, name = line.split()
            synsets.append(Synset(int(ilsvrc_id), wnid, name.replace("_", " ")))
    return synsets


def val_name(number: int) -> str:
    """Val file name for a 1-based global index: ILSVRC2012_val_00000001.JPEG."""
    return f"ILSVRC2012_val_{number:08d}.JPEG"


def write_kaggle_meta(root: Path, val_wnids: Sequence[str], seed: int = 0,
                      clsloc: list[Synset] | None = None) -> None:
    """LOC_synset_mapping.txt (all 1000, sorted by wnid) and LOC_val_solution.csv, where
    ``val_wnids[i]`` is the class of ``ILSVRC2012_val_<i+1>.JPEG``.

    The CSV's rows are in a shuffled order, not file order (readers must key by ImageId), and
    each PredictionString holds one to three boxes ``wnid x_min y_min x_max y_max`` with a
    trailing space, like the Kaggle file.
    """
    clsloc = clsloc or load_clsloc()
    mapping = "".join(f"{s.wnid} {s.name}\n" for s in sorted(clsloc, key=lambda s: s.wnid))
    atomic_write_text(root / "LOC_synset_mapping.txt", mapping)
    rng = np.random.default_rng([seed, VAL_STREAM, 0xB0C5])
    rows = []
    for number, wnid in enumerate(val_wnids, start=1):
        boxes = ""
        for _ in range(int(rng.integers(1, 4))):
            x0, y0 = int(rng.integers(0, 150)), int(rng.integers(0, 110))
            x1, y1 = x0 + int(rng.integers(5, 160)), y0 + int(rng.integers(5, 120))
            boxes += f"{wnid} {x0} {y0} {x1} {y1} "
        rows.append(f"{val_name(number)[:-5]},{boxes}\n")
    order = rng.permutation(len(rows))
    atomic_write_text(root / "LOC_val_solution.csv",
                      "ImageId,PredictionString\n" + "".join(rows[k] for k in order))


# A stand-in for the 860 internal WordNet nodes of the real meta.mat (ids 1001-1860). Real
# wnids and names, simplified tree: entity -> {animal, artifact}; leaves are split between the
# two by sorted-wnid position (the first 398 sorted ImageNet-1k classes are animals). They exist
# so that readers must filter on num_children == 0, as torchvision does.
_INTERNAL = (("n00001740", "entity"), ("n00015388", "animal, animate being, beast, brute, "
             "creature, fauna"), ("n00021939", "artifact, artefact"))
_N_ANIMAL_CLASSES = 398


def meta_mat_records(clsloc: list[Synset], train_counts: dict[str, int]) -> list[dict]:
    """Rows of meta.mat's ``synsets`` struct array, leaves 1..1000 then internal nodes."""
    sorted_wnids = sorted(s.wnid for s in clsloc)
    animals = set(sorted_wnids[:_N_ANIMAL_CLASSES])
    leaf_ids = {"animal": [s.ilsvrc_id for s in clsloc if s.wnid in animals],
                "artifact": [s.ilsvrc_id for s in clsloc if s.wnid not in animals]}
    rows = [dict(ILSVRC2012_ID=s.ilsvrc_id, WNID=s.wnid, words=s.name,
                 gloss=f"{s.name} (synthetic gloss written by imgtools.demo_tree)",
                 children=[], wordnet_height=0, num_train_images=train_counts.get(s.wnid, 0))
            for s in clsloc]
    root_id, animal_id, artifact_id = 1001, 1002, 1003
    count = {w: train_counts.get(w, 0) for w in (s.wnid for s in clsloc)}
    by_id = {s.ilsvrc_id: s.wnid for s in clsloc}
    animal_n = sum(count[by_id[i]] for i in leaf_ids["animal"])
    artifact_n = sum(count[by_id[i]] for i in leaf_ids["artifact"])
    for (wnid, words), ilsvrc_id, children, height, n in zip(
        _INTERNAL, (root_id, animal_id, artifact_id),
        ([animal_id, artifact_id], leaf_ids["animal"], leaf_ids["artifact"]),
        (2, 1, 1), (animal_n + artifact_n, animal_n, artifact_n), strict=True,
    ):
        rows.append(dict(ILSVRC2012_ID=ilsvrc_id, WNID=wnid, words=words,
                         gloss=f"{words} (synthetic gloss written by imgtools.demo_tree)",
                         children=children, wordnet_height=height, num_train_images=n))
    return rows


_META_FIELDS = ("ILSVRC2012_ID", "WNID", "words", "gloss", "num_children", "children",
                "wordnet_height", "num_train_images")


def write_devkit_meta(root: Path, val_wnids: Sequence[str], train_counts: dict[str, int],
                      clsloc: list[Synset] | None = None) -> None:
    """ILSVRC2012_devkit_t12/data/: meta.mat (MATLAB struct array ``synsets``, 1003x1, real
    field order) and the val ground truth (line i = id of ``ILSVRC2012_val_<i>.JPEG``)."""
    import scipy.io

    clsloc = clsloc or load_clsloc()
    data_dir = root / DEVKIT_DIR / "data"
    rows = meta_mat_records(clsloc, train_counts)
    synsets = np.empty((len(rows), 1), dtype=[(f, object) for f in _META_FIELDS])
    for i, row in enumerate(rows):
        synsets[i, 0] = (
            np.array([[row["ILSVRC2012_ID"]]], dtype=np.uint16),
            np.array([row["WNID"]]),
            np.array([row["words"]]),
            np.array([row["gloss"]]),
            np.array([[len(row["children"])]], dtype=np.uint8 if len(row["children"]) < 256
                     else np.uint16),
            np.array([row["children"]], dtype=np.uint16).reshape(1, -1),
            np.array([[row["wordnet_height"]]], dtype=np.uint8),
            np.array([[row["num_train_images"]]], dtype=np.uint16),
        )
    buf = io.BytesIO()
    scipy.io.savemat(buf, {"synsets": synsets}, do_compression=False)
    atomic_write_bytes(data_dir / "meta.mat", _fixed_mat_header(buf.getvalue()))
    id_of = {s.wnid: s.ilsvrc_id for s in clsloc}
    truth = "".join(f"{id_of[wnid]}\n" for wnid in val_wnids)
    atomic_write_text(data_dir / "ILSVRC2012_validation_ground_truth.txt", truth)


_MAT_HEADER_TEXT = 116  # MAT v5: 116 bytes of text, then subsystem offset, version, endianness


def _fixed_mat_header(mat: bytes) -> bytes:
    """Replace scipy's "Created on: <now>" header text so the same seed gives the same bytes."""
    text = b"MATLAB 5.0 MAT-file, Platform: posix, written by imgtools.demo_tree"
    return text.ljust(_MAT_HEADER_TEXT, b" ") + mat[_MAT_HEADER_TEXT:]
