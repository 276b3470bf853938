"""The YAML header of a ``README.md`` beside a WebDataset output, as Hugging Face ``datasets``
reads it when a folder is loaded with ``load_dataset(folder)``.

Why: ``datasets``' WebDataset builder infers its features from the first five samples of one
shard, so ``cls`` stays a plain integer (the class names are lost) and an unlabelled split
(no ``.cls`` member, ``null`` JSON fields) can fix the wrong types for every split. A
``dataset_info.features`` block in the card replaces that inference: ``cls`` becomes a
``ClassLabel`` with our class names, and every split is read with the same types. The
``configs`` block names each split's shards, so ``unsup`` loads as a split of its own.

``load_dataset("webdataset", data_dir=folder)`` reads no card: it finds the shards by their
``data/<split>-00000-of-00004.tar`` names (every split, ``unsup`` included) and infers the
features; class names then travel in each sample's ``.json`` (``class_name``).
"""

from __future__ import annotations

from pathlib import Path

import yaml

from imgtools.atomic import atomic_write_text
from imgtools.records import DatasetInfo

CARD = "README.md"
JSON_FIELDS = ("class_name", "filename", "label", "split", "wnid")
"""The keys of each sample's ``.json`` (see :mod:`imgtools.formats.webdataset`)."""


def webdataset_features(info: DatasetInfo, image_fields: list[str]) -> list[dict]:
    """``dataset_info.features`` in the card's list form: one ``Image`` per image extension
    present, ``cls`` as a ``ClassLabel``, the ``.json`` struct, and the ``__key__`` /
    ``__url__`` columns the WebDataset builder adds to every row."""
    names = {str(i): name for i, name in enumerate(info.unique_class_names)}
    cls = ({"name": "cls", "dtype": {"class_label": {"names": names}}} if names
           else {"name": "cls", "dtype": "int64"})
    json_struct = [{"name": key, "dtype": "int64" if key == "label" else "string"}
                   for key in JSON_FIELDS]
    return [cls, *({"name": f, "dtype": "image"} for f in image_fields),
            {"name": "json", "struct": json_struct},
            {"name": "__key__", "dtype": "string"}, {"name": "__url__", "dtype": "string"}]


def webdataset_card(info: DatasetInfo, splits: dict[str, list[str]],
                    counts: dict[str, int], image_fields: list[str],
                    nbytes: dict[str, int]) -> str:
    """A ``README.md`` whose YAML makes ``load_dataset(folder)`` read the shards with class
    names; ``splits`` maps each split to its shard paths relative to the folder, ``nbytes``
    to the size of those shards (the card's ``num_bytes``; ``datasets`` checks only
    ``num_examples`` against what it reads)."""
    meta = {
        "configs": [{"config_name": "default", "data_files": [
            {"split": split, "path": f"data/{split}-*.tar"} for split in splits]}],
        "dataset_info": {
            "features": webdataset_features(info, image_fields),
            "splits": [{"name": split, "num_bytes": nbytes.get(split, 0),
                        "num_examples": counts.get(split, 0)} for split in splits],
        },
    }
    header = yaml.safe_dump(meta, sort_keys=False, allow_unicode=True)
    classes = ", ".join(info.unique_class_names[:5]) + (" ..." if len(info.classes) > 5 else "")
    return (f"---\n{header}---\n\n# {info.name} (WebDataset)\n\n"
            f"Written by imgtools. {len(info.classes)} classes ({classes}); label `i` is "
            f"`imgtools-dataset.json`'s `classes[i]`.\n\n"
            "```python\nimport datasets\nds = datasets.load_dataset(\"path/to/this/folder\")  "
            "# cls is a ClassLabel\n```\n")


def write_webdataset_card(root: Path, info: DatasetInfo, splits: dict[str, list[str]],
                          counts: dict[str, int], image_fields: list[str]) -> Path:
    root = Path(root)
    nbytes = {split: sum((root / f).stat().st_size for f in files)
              for split, files in splits.items()}
    path = root / CARD
    atomic_write_text(path, webdataset_card(info, splits, counts, image_fields, nbytes))
    return path
