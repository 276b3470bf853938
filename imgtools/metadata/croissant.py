"""An MLCommons Croissant 1.0 description (``croissant.json``) of every dataset imgtools
writes, and of a Hub repository's Parquet layout.

Croissant is JSON-LD on schema.org's ``Dataset``: *resources* (``FileObject``, ``FileSet``)
say which files hold the data, *record sets* say how to read records out of them. What
``mlcroissant`` (the reference reader) can read back, and so what we describe that way:

* **JPEG folders**: one ``FileSet`` per split (``train/*/*``); each record's image is the
  file's content, its split and wnid come from the path by regex, and its integer label and
  class name from a join (``references``) with the ``classes`` record set.
* **Parquet**: a ``FileSet`` of ``*.parquet``; image bytes and file name from the ``image``
  struct column (``jsonPath``), the label from the ``label`` column (-1: unlabelled), the
  split from the file name.

mlcroissant reads neither TFRecord nor the members of WebDataset tars as records, so for those
the files are described (a ``FileSet`` with its encoding format and what each record holds,
in the description) and the ``classes`` record set gives the label -> wnid -> name table;
:data:`RECORDS_READABLE` lists the formats whose records it reads. Every description carries
the ``classes`` record set (inline data), so class names are never lost.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from imgtools.atomic import atomic_write_text
from imgtools.records import DatasetInfo

CROISSANT = "croissant.json"
CONFORMS_TO = "http://mlcommons.org/croissant/1.0"
RECORDS_READABLE = ("folder", "parquet")
"""Formats whose records mlcroissant reads back; the others get their files described."""

CONTEXT = {
    "@language": "en", "@vocab": "https://schema.org/", "citeAs": "cr:citeAs",
    "column": "cr:column", "conformsTo": "dct:conformsTo", "cr": "http://mlcommons.org/croissant/",
    "rai": "http://mlcommons.org/croissant/RAI/", "data": {"@id": "cr:data", "@type": "@json"},
    "dataType": {"@id": "cr:dataType", "@type": "@vocab"}, "dct": "http://purl.org/dc/terms/",
    "equivalentProperty": "cr:equivalentProperty",
    "examples": {"@id": "cr:examples", "@type": "@json"}, "extract": "cr:extract",
    "field": "cr:field", "fileProperty": "cr:fileProperty", "fileObject": "cr:fileObject",
    "fileSet": "cr:fileSet", "format": "cr:format", "includes": "cr:includes",
    "isLiveDataset": "cr:isLiveDataset", "jsonPath": "cr:jsonPath", "key": "cr:key",
    "md5": "cr:md5", "parentField": "cr:parentField", "path": "cr:path",
    "recordSet": "cr:recordSet", "references": "cr:references", "regex": "cr:regex",
    "repeated": "cr:repeated", "replace": "cr:replace", "samplingRate": "cr:samplingRate",
    "sc": "https://schema.org/", "separator": "cr:separator", "source": "cr:source",
    "subField": "cr:subField", "transform": "cr:transform",
}
"""The standard Croissant 1.0 ``@context`` (what ``mlcroissant`` writes)."""

IMAGENET_URL = "https://www.image-net.org/"
IMAGENET_TERMS = "https://image-net.org/download.php"
_CITATION = ("Russakovsky et al., ImageNet Large Scale Visual Recognition Challenge, IJCV "
             "115(3), 2015. Howard, Imagenette (https://github.com/fastai/imagenette), 2019.")

_ENCODINGS = {"tfrecord": "application/x-tfrecord", "webdataset": "application/x-tar",
              "parquet": "application/x-parquet", "pickle": "application/x-python-pickle",
              "npz": "application/x-npz"}
_RECORD_TEXT = {
    "tfrecord": "tf.train.Example records (schema in imgtools-dataset.json and features.json; "
                "default keys image, label, file_name).",
    "webdataset": "WebDataset samples: <key>.jpg (or .png), <key>.cls (0-based label, absent "
                  "for unlabelled images) and <key>.json (label, class_name, wnid, split, "
                  "filename).",
    "pickle": "CIFAR-style batches (data, labels, mean) as the published downsampled "
              "ImageNet; labels are 1-based (label index + 1).",
}
_RECORD_TEXT["npz"] = _RECORD_TEXT["pickle"]


def _field(record_set: str, name: str, data_type: str, source: dict | None = None,
           **extra) -> dict:
    field = {"@type": "cr:Field", "@id": f"{record_set}/{name}", "name": f"{record_set}/{name}",
             "dataType": data_type}
    if source is not None:
        field["source"] = source
    field.update(extra)
    return field


def classes_record_set(info: DatasetInfo) -> dict:
    """Label -> wnid -> class name, as inline data: every description has it."""
    return {
        "@type": "cr:RecordSet", "@id": "classes", "name": "classes",
        "description": f"The {len(info.classes)} classes; an image's integer label is the "
                       f"index of its class here (label order: {info.label_order}).",
        "key": {"@id": "classes/label"},
        "field": [_field("classes", "label", "sc:Integer"),
                  _field("classes", "wnid", "sc:Text"),
                  _field("classes", "name", "sc:Text")],
        "data": [{"classes/label": i, "classes/wnid": c.wnid, "classes/name": name}
                 for i, (c, name) in enumerate(zip(info.classes, info.unique_class_names))],
    }


def _from_path(file_set: str, regex: str, prop: str = "fullpath") -> dict:
    return {"fileSet": {"@id": file_set}, "extract": {"fileProperty": prop},
            "transform": {"regex": regex}}


def _folder_resources(splits: list[str]) -> tuple[list[dict], list[dict]]:
    labelled = [s for s in splits if s != "unsup"]
    resources = [{"@type": "cr:FileSet", "@id": "labelled-images", "name": "labelled-images",
                  "description": "JPEG files laid out <split>/<wnid>/<file>.",
                  "encodingFormat": "image/jpeg",
                  "includes": [f"{s}/*/*" for s in labelled]}] if labelled else []
    records = []
    if labelled:
        content = {"fileSet": {"@id": "labelled-images"}, "extract": {"fileProperty": "content"}}
        records.append({
            "@type": "cr:RecordSet", "@id": "images", "name": "images",
            "description": "Labelled images: split and wnid from the path; label and class "
                           "name joined from the classes record set by wnid.",
            "field": [
                _field("images", "image", "sc:ImageObject", content),
                _field("images", "filename", "sc:Text",
                       {"fileSet": {"@id": "labelled-images"},
                        "extract": {"fileProperty": "filename"}}),
                # filepath, not fullpath: mlcroissant's join rewrites the fullpath column
                # with the wnid field's value before other fields read it.
                _field("images", "split", "sc:Text",
                       _from_path("labelled-images", r"^(?:.*/)?([^/]+)/[^/]+/[^/]+$",
                                  "filepath")),
                # The second alternative: mlcroissant applies the transform again to the
                # value it joined on (already the wnid).
                _field("images", "wnid", "sc:Text",
                       _from_path("labelled-images", r"^(?:.*/)?([^/]+)/[^/]+$|^([^/]+)$"),
                       references={"field": {"@id": "classes/wnid"}}),
                _field("images", "label", "sc:Integer", {"field": {"@id": "classes/label"}}),
                _field("images", "class_name", "sc:Text", {"field": {"@id": "classes/name"}}),
            ]})
    if "unsup" in splits:
        resources.append({"@type": "cr:FileSet", "@id": "unlabelled-images",
                          "name": "unlabelled-images", "encodingFormat": "image/jpeg",
                          "description": "Unlabelled images (no class in name or path).",
                          "includes": "unsup/*"})
        records.append({
            "@type": "cr:RecordSet", "@id": "unsup", "name": "unsup",
            "description": "Unlabelled images.",
            "field": [_field("unsup", "image", "sc:ImageObject",
                             {"fileSet": {"@id": "unlabelled-images"},
                              "extract": {"fileProperty": "content"}}),
                      _field("unsup", "filename", "sc:Text",
                             {"fileSet": {"@id": "unlabelled-images"},
                              "extract": {"fileProperty": "filename"}})]})
    return resources, records


def _parquet_resources(includes: list[str], name: str = "parquet-files"
                       ) -> tuple[list[dict], list[dict]]:
    """Parquet shards with ``image`` {bytes, path} and ``label`` columns."""
    resources = [{"@type": "cr:FileSet", "@id": name, "name": name,
                  "description": "Parquet shards <split>-00000-of-00004.parquet: image "
                                 "{bytes, path}, label (-1: unlabelled).",
                  "encodingFormat": "application/x-parquet", "includes": includes}]

    def column(col: str, json_path: str | None = None) -> dict:
        source: dict = {"fileSet": {"@id": name}, "extract": {"column": col}}
        if json_path:
            source["transform"] = {"jsonPath": json_path}
        return source

    records = [{
        "@type": "cr:RecordSet", "@id": "images", "name": "images",
        "description": "Every image: bytes, original file name, integer label (an index into "
                       "the classes record set; -1 for unlabelled images), split.",
        "field": [
            _field("images", "image", "sc:ImageObject", column("image", "bytes")),
            _field("images", "filename", "sc:Text", column("image", "path")),
            _field("images", "label", "sc:Integer", column("label")),
            _field("images", "split", "sc:Text",
                   _from_path(name, r"^(?:.*/)?([A-Za-z]+)-\d+-of-\d+\.parquet$")),
        ]}]
    return resources, records


def _described_resources(fmt: str, includes: list[str]) -> list[dict]:
    return [{"@type": "cr:FileSet", "@id": f"{fmt}-files", "name": f"{fmt}-files",
             "description": _RECORD_TEXT.get(fmt, "") + " mlcroissant does not read records "
                            "from this format; the classes record set gives the label table.",
             "encodingFormat": _ENCODINGS.get(fmt, "application/octet-stream"),
             "includes": includes}]


def _includes(root: Path, fmt: str) -> list[str]:
    """Glob patterns (relative to ``root``) of a record format's data files."""
    patterns = {"tfrecord": ["*.tfrecord-*-of-*"], "webdataset": ["data/*.tar"],
                "parquet": ["*.parquet"]}.get(fmt, ["*_data_batch_*", "val_data*"])
    return [p for p in patterns if any(root.glob(p))] or patterns


def dataset_croissant(root: Path, info: DatasetInfo, fmt: str, splits: list[str],
                      description: str | None = None) -> dict:
    """The Croissant description of the dataset at ``root`` (files relative to it)."""
    root = Path(root)
    if fmt == "folder":
        resources, records = _folder_resources(splits)
    elif fmt == "parquet":
        resources, records = _parquet_resources(_includes(root, fmt))
    else:
        resources, records = _described_resources(fmt, _includes(root, fmt)), []
    return _document(info, description or _description(info, fmt, splits), resources,
                     [classes_record_set(info), *records])


def _description(info: DatasetInfo, fmt: str, splits: list[str]) -> str:
    readable = "" if fmt in RECORDS_READABLE else (
        f" Croissant readers cannot read {fmt} records; the files and the class table are "
        "described.")
    return (f"{info.name}: {len(info.classes)} ImageNet classes, splits {', '.join(splits)}, "
            f"as {fmt}, written by imgtools.{readable}")


def _document(info: DatasetInfo, description: str, resources: list[dict],
              record_sets: list[dict]) -> dict:
    return {
        "@context": CONTEXT, "@type": "sc:Dataset",
        "conformsTo": CONFORMS_TO,
        "name": re.sub(r"[^A-Za-z0-9_.-]+", "-", info.name) or "dataset",
        "description": description,
        "url": IMAGENET_URL,
        "version": "1.0.0",
        "license": IMAGENET_TERMS,
        "citeAs": _CITATION,
        "distribution": resources,
        "recordSet": record_sets,
    }


def write_croissant(root: Path, info: DatasetInfo, fmt: str, splits: list[str]) -> Path:
    """Write ``croissant.json`` beside the dataset at ``root``."""
    path = Path(root) / CROISSANT
    doc = dataset_croissant(root, info, fmt, splits)
    atomic_write_text(path, json.dumps(doc, indent=2, ensure_ascii=False) + "\n")
    return path


def hub_croissant(info: DatasetInfo, configs: dict[str, dict[str, list[str]]],
                  description: str | None = None) -> dict:
    """The Croissant description of a Hub repository in ``push-hub``'s layout: ``configs``
    maps each config (``320px``) to its splits and their Parquet files (paths in the repo);
    one ``FileSet`` and one ``images`` record set per config, all sharing the class table."""
    resources: list[dict] = []
    records: list[dict] = [classes_record_set(info)]
    for config, splits in configs.items():
        files = sorted(f for paths in splits.values() for f in paths)
        res, recs = _parquet_resources(files, name=f"{config}-parquet")
        rec = recs[0]
        rec["@id"] = rec["name"] = config
        for field in rec["field"]:
            field["@id"] = field["name"] = field["@id"].replace("images/", f"{config}/", 1)
        rec["description"] = f"Config {config}: " + rec["description"]
        resources += res
        records.append(rec)
    text = description or (f"{info.name}: {len(info.classes)} ImageNet classes, configs "
                           f"{', '.join(configs)}, Parquet shards as datasets.push_to_hub "
                           "writes them.")
    return _document(info, text, resources, records)
