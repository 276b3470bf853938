"""The ``tf.train.Example`` in each TFRecord: its three feature-key conventions (schemas), and
the codec between an Example and a :class:`~imgtools.records.Record`'s fields.

========  ===================  =====================  ================  =========================
schema    image                label                  file name         also written
========  ===================  =====================  ================  =========================
tfds      ``image``            ``label``              ``file_name``
slim      ``image/encoded``    ``image/class/label``  ``image/filename`` ``image/format``,
                                                                         ``image/height``/``width``,
                                                                         ``image/class/synset``,
                                                                         ``image/class/text``
flowers   ``image``            ``class``              ``id`` (the key)   ``file_name`` (the name)
========  ===================  =====================  ================  =========================

Labels are 0-based in every schema (slim's flowers converter does the same; Inception's ImageNet
converter used 1..1000 - name the key and subtract yourself if you read such files elsewhere).
Unlabelled records (``unsup``) get label -1, or no ``class`` feature in the flowers schema (as
the Kaggle test split has none). Examples are parsed and serialized by protobuf (the
``tfrecord`` package's ``example_pb2``), deterministically, so the same records give the same
bytes on every run.
"""

from __future__ import annotations

import functools
import io
import re
from pathlib import Path

from imgtools.errors import CorruptDataError, UserError
from imgtools.formats.common import image_ext
from imgtools.formats.tfrecord_framing import iter_frames
from imgtools.records import Record

SCHEMAS: dict[str, dict[str, str]] = {
    "tfds": {"image": "image", "label": "label", "filename": "file_name"},
    "slim": {"image": "image/encoded", "label": "image/class/label",
             "filename": "image/filename", "format": "image/format",
             "height": "image/height", "width": "image/width",
             "synset": "image/class/synset", "text": "image/class/text"},
    "flowers": {"image": "image", "label": "class", "filename": "id"},
}
DEFAULT_SCHEMA = "tfds"


@functools.cache
def _example_pb2():
    """The ``tfrecord`` package's protobuf module, imported at the first Example (protobuf is
    not needed by a run without TFRecords). Cached: this runs once per record, and a
    ``from package import module`` statement costs 4 us each time it runs (importlib's
    ``_handle_fromlist``, in Python), 6 % of a passthrough conversion's floor."""
    from tfrecord import example_pb2  # protobuf: imported at the first TFRecord record

    return example_pb2


def parse_example(payload: bytes, path: Path, offset: int) -> dict:
    """``{key: first value}`` of a serialized ``tf.train.Example`` (bytes or int)."""
    try:
        example = _example_pb2().Example.FromString(payload)
    except Exception as e:  # protobuf raises DecodeError, a plain Exception subclass
        raise CorruptDataError(f"record is not a tf.train.Example: {e}", path=path,
                               offset=offset, fix="is this a TFRecord of images?") from e
    out: dict = {}
    for key, feature in example.features.feature.items():
        kind = feature.WhichOneof("kind")
        values = getattr(feature, kind).value if kind else []
        out[key] = values[0] if len(values) else None
    return out


FLOWERS_NAME = "file_name"
"""The feature our flowers-schema records add beside ``id``: the original file name."""


def detect_schema(keys: set[str]) -> str | None:
    if "image/encoded" in keys:
        return "slim"
    if "image" in keys and "class" in keys and "label" not in keys:
        return "flowers"
    if "image" in keys:
        return "tfds" if "label" in keys or "id" not in keys else "flowers"
    return None


_LABEL_LIKE = re.compile(r"label|class|cls|target|categor", re.IGNORECASE)
_NOT_LABEL = re.compile(r"height|width|channel|size|shape|offset", re.IGNORECASE)


def check_label_key(files: list[Path], options: dict) -> None:
    """Refuse to read labelled records as unlabelled: when the first record lacks the label
    key (the schema's, or tfds' ``label`` after ``--image-key``) but holds an integer feature
    that looks like a label, every label would silently become "none"."""
    label_key = keys_for(options)["label"]
    for file in files:
        for offset, payload in iter_frames(file):
            feats = parse_example(payload, file, offset)
            if label_key in feats:
                return
            ints = sorted(k for k, v in feats.items() if type(v) is int and (
                _LABEL_LIKE.search(k) or ("image_key" in options and not _NOT_LABEL.search(k))))
            if ints:
                raise UserError(
                    f"the records have no label feature {label_key!r}, but integer features "
                    f"{', '.join(ints)}: read as they are, every label would be lost",
                    path=file, fix=f"name the label with --label-key {ints[0]} (or "
                                   "--label-key none to read the records as unlabelled)")
            return


def keys_for(options: dict) -> dict[str, str]:
    keys = dict(SCHEMAS[options.get("schema", DEFAULT_SCHEMA)])
    for field in ("image", "label", "filename"):
        if options.get(f"{field}_key"):
            keys[field] = options[f"{field}_key"]
    return keys


def example_features(record: Record, schema: str) -> dict[str, tuple[object, str]]:
    """The ``tfrecord`` package's ``datum`` (``{key: (value, "byte"|"int")}``) of a record."""
    keys = SCHEMAS[schema]
    label = record.label if record.label is not None else -1
    if schema == "flowers":
        # ``id`` is the competition's extension-less id; ``file_name`` (the TFDS key, which
        # Kaggle's parsing spec ignores) keeps the real name, so nothing is dropped.
        datum: dict[str, tuple[object, str]] = {"image": (record.image, "byte"),
                                                "id": (record.key.encode(), "byte"),
                                                FLOWERS_NAME: (record.filename.encode(), "byte")}
        if record.label is not None:
            datum["class"] = (label, "int")
        return datum
    datum = {keys["image"]: (record.image, "byte"), keys["label"]: (label, "int"),
             keys["filename"]: (record.filename.encode(), "byte")}
    if schema == "slim":
        from PIL import Image


        try:
            width, height = Image.open(io.BytesIO(record.image)).size
        except (OSError, ValueError) as e:
            raise CorruptDataError(f"cannot read the size of image {record.filename!r}: {e}",
                                   fix="the slim schema stores image/height and image/width; "
                                       "use --schema tfds, or drop the damaged image") from e
        ext = image_ext(record.image, record.filename)
        datum["image/format"] = ({"jpg": b"jpeg"}.get(ext, ext.encode()), "byte")
        datum["image/height"] = (height, "int")
        datum["image/width"] = (width, "int")
        if record.wnid:
            datum["image/class/synset"] = (record.wnid.encode(), "byte")
        if record.class_name:
            datum["image/class/text"] = (record.class_name.encode(), "byte")
    return datum


def serialize_example(datum: dict[str, tuple[object, str]]) -> bytes:
    """The ``tf.train.Example`` holding ``datum`` (the ``tfrecord`` package's convention, one
    bytes or int64 value per feature), serialized by protobuf *deterministically* (map entries
    sorted by key), so the same records give the same bytes on every run.

    protobuf, not a hand-written encoder: ``scripts/bench_codecs.py`` measured imgtools' former
    zero-copy encoder (now kept in that script) against this, framed and written to a file, on
    the corpus photos with protobuf 7.36 (upb), CPU per image, best of 15 interleaved runs on 2
    shared cores: 0.051 vs 0.039 ms at 35 KB (the hand-written one 1.3x slower) and 0.094 vs
    0.088 ms at 110 KB (level). Copying the image once into upb's arena costs less than the
    Python-level encoding it saved.
    """
    example = _example_pb2().Example()
    features = example.features.feature
    for key, (value, kind) in datum.items():
        # Filled in place: passing submessages to constructors copies each (and the image)
        # once per level, which made protobuf 7x slower on a 110 KB image.
        if kind == "byte":
            features[key].bytes_list.value.append(value)
        elif kind == "int":
            features[key].int64_list.value.append(value)
        else:  # pragma: no cover - example_features only makes the two kinds above
            raise ValueError(kind)
    return example.SerializeToString(deterministic=True)
