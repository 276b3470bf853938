"""The TFRecord writer encodes ``tf.train.Example`` itself (to avoid copying images twice):
its bytes must be protobuf's own deterministic serialization, for every schema and value."""

from __future__ import annotations

import io
import os

import crc32c
import pytest
from PIL import Image

from imgtools.formats.tfrecord import (
    SCHEMAS,
    encode_example,
    example_features,
    frame_parts,
    masked_crc,
)
from imgtools.records import Record


def serialize_example(datum: dict[str, tuple[object, str]]) -> bytes:
    """The reference: protobuf itself builds the ``tf.train.Example`` from the ``tfrecord``
    package's ``datum`` convention and serializes it *deterministically* (map entries sorted)."""
    from tfrecord import example_pb2 as pb

    features = {}
    for key, (value, kind) in datum.items():
        if kind == "byte":
            features[key] = pb.Feature(bytes_list=pb.BytesList(value=[value]))
        elif kind == "int":
            features[key] = pb.Feature(int64_list=pb.Int64List(value=[value]))
        else:
            raise ValueError(kind)
    example = pb.Example(features=pb.Features(feature=features))
    return example.SerializeToString(deterministic=True)


def _jpeg(width: int, height: int, noise: bool) -> bytes:
    image = Image.frombytes("RGB", (width, height), os.urandom(width * height * 3)) if noise \
        else Image.new("RGB", (width, height), (200, 10, 40))
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=90)
    return buf.getvalue()


RECORDS = [
    Record("n01440764_10026", "train", 0, _jpeg(64, 48, noise=True), "n01440764_10026.JPEG",
           "n01440764", "tench"),
    Record("small", "val", 9, _jpeg(8, 8, noise=False), "small.JPEG", "n03888605", "parachute"),
    Record("unsup_000017", "unsup", None, _jpeg(300, 200, noise=True), "unsup_000017.JPEG"),
    Record("caf_", "train", 1_000_000_007, _jpeg(20, 30, noise=True), "caf\u00e9 \u732b.jpg",
           "n0000", "caf\u00e9 \u732b"),
    Record("empty_name", "train", 127, _jpeg(16, 16, noise=False), "", None, None),
    Record("label_128", "train", 128, _jpeg(16, 16, noise=True), "x.jpg", "w", "c"),
]


@pytest.mark.parametrize("schema", sorted(SCHEMAS))
@pytest.mark.parametrize("record", RECORDS, ids=[r.key for r in RECORDS])
def test_encoding_is_protobufs_deterministic_serialization(schema, record):
    datum = example_features(record, schema)
    pieces = encode_example(datum)
    assert b"".join(pieces) == serialize_example(datum)
    if len(record.image) >= 4096:  # the image is written from the record's own buffer
        assert any(piece is record.image for piece in pieces)


def test_frame_crc_over_pieces_equals_crc_of_the_whole():
    payload = encode_example(example_features(RECORDS[2], "tfds"))
    whole = b"".join(payload)
    framed = b"".join(frame_parts(payload))
    assert framed[12:-4] == whole
    assert int.from_bytes(framed[-4:], "little") == masked_crc(whole)
    assert int.from_bytes(framed[8:12], "little") == masked_crc(framed[:8])
    assert crc32c.crc32c(whole) != 0
