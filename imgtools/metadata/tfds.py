"""TFDS metadata beside TFRecord outputs, so ``tfds.builder_from_directory(root)`` loads them in
place, with class names and split sizes.

TFDS reads a folder of TFRecords when it finds ``dataset_info.json`` (splits: the file name
template, records per file, bytes) and ``features.json`` (how to decode each feature key), plus
one ``<feature-path>.labels.txt`` per ``ClassLabel`` holding its names, one a line. These are
the files ``tfds.folder_dataset.write_metadata`` writes; they are JSON renderings of TFDS's
protobufs, written here directly so that imgtools needs neither TensorFlow nor TFDS (a test
loads the result with the real ``tensorflow-datasets``).

Every schema gets them. TFDS nests feature dicts with ``/``, so TF-slim's ``image/encoded`` is
feature ``encoded`` of dict ``image``. A feature TFDS decodes must be in every record, so:
slim's ``image/class/synset`` and ``image/class/text`` (absent from unlabelled records) are
not declared (the ``ClassLabel`` names give the text); a flowers-schema split whose records
carry no ``class`` (``unsup``) is left out of ``dataset_info.json``. TFDS reads uncompressed
TFRecords only, so GZIP outputs get no TFDS metadata (:func:`tfds_readable` says why).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from imgtools.atomic import atomic_write_text
from imgtools.records import DatasetInfo

DATASET_INFO = "dataset_info.json"
FEATURES = "features.json"
FILE_TEMPLATE = "{SPLIT}.{FILEFORMAT}-{SHARD_X_OF_Y}"
"""Our shard names (``train.tfrecord-00000-of-00004``) in TFDS's template language."""

_CLASS = "tensorflow_datasets.core.features."


def _image() -> dict:
    # Three channels: TFDS decodes with channels=3, so a greyscale or PNG file comes out RGB
    # as every imgtools JPEG is.
    return {"pythonClassName": _CLASS + "image_feature.Image",
            "image": {"shape": {"dimensions": ["-1", "-1", "3"]}, "dtype": "uint8",
                      "encodingFormat": "jpeg"}}


def _text() -> dict:
    return {"pythonClassName": _CLASS + "text_feature.Text", "text": {}}


def _int64() -> dict:
    return {"pythonClassName": _CLASS + "scalar.Scalar",
            "tensor": {"shape": {}, "dtype": "int64", "encoding": "none"}}


def _class_label(num_classes: int) -> dict:
    return {"pythonClassName": _CLASS + "class_label_feature.ClassLabel",
            "classLabel": {"numClasses": str(num_classes)}}


def _dict(features: dict) -> dict:
    return {"pythonClassName": _CLASS + "features_dict.FeaturesDict",
            "featuresDict": {"features": features}}


def schema_features(schema: str, num_classes: int) -> tuple[dict, str]:
    """The ``features.json`` of a schema and the key path of its ``ClassLabel``."""
    if schema == "slim":
        image = {"encoded": _image(), "format": _text(), "height": _int64(), "width": _int64(),
                 "filename": _text(), "class": _dict({"label": _class_label(num_classes)})}
        return _dict({"image": _dict(image)}), "image/class/label"
    if schema == "flowers":
        return _dict({"image": _image(), "class": _class_label(num_classes),
                      "id": _text()}), "class"
    return _dict({"image": _image(), "label": _class_label(num_classes),
                  "file_name": _text()}), "label"


def tfds_readable(files: list[Path]) -> str | None:
    """Why TFDS cannot read these files in place, or None when it can."""
    if any(f.name.endswith(".gz") for f in files):
        return "TFDS reads uncompressed TFRecords only (these are GZIP)"
    return None


def _builder_name(name: str) -> str:
    """TFDS names builders in snake_case."""
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_") or "dataset"


def write_tfds_metadata(root: Path, info: DatasetInfo, schema: str,
                        shard_lengths: dict[str, list[int]], nbytes: dict[str, int]) -> list[Path]:
    """Write the three kinds of files into ``root``; ``shard_lengths`` gives each split's
    record count per file, in file order. Returns the files written."""
    root = Path(root)
    features, label_path = schema_features(schema, len(info.classes))
    splits = [{"name": split, "filepathTemplate": FILE_TEMPLATE,
               "shardLengths": [str(n) for n in lengths], "numBytes": str(nbytes[split])}
              for split, lengths in shard_lengths.items()
              if not (schema == "flowers" and split == "unsup")]
    dataset_info = {
        "name": _builder_name(info.name),
        "description": f"{info.name}, written by imgtools ({len(info.classes)} classes; "
                       f"label order: {info.label_order}). TFRecord schema: {schema}.",
        "fileFormat": "tfrecord",
        "version": "1.0.0",
        "splits": splits,
    }
    if schema == "tfds":
        dataset_info["supervisedKeys"] = {"tuple": {"items": [{"featureKey": "image"},
                                                              {"featureKey": "label"}]}}
    labels = root / f"{label_path.replace('/', '-')}.labels.txt"
    atomic_write_text(labels, "".join(f"{name}\n" for name in info.unique_class_names))
    atomic_write_text(root / FEATURES, json.dumps(features, indent=4) + "\n")
    atomic_write_text(root / DATASET_INFO, json.dumps(dataset_info, indent=2) + "\n")
    return [labels, root / FEATURES, root / DATASET_INFO]
