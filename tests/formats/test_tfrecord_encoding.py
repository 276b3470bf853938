"""The TFRecord writer's ``tf.train.Example`` bytes must be protobuf's deterministic
serialization (map entries sorted), for every schema and value, so that the same records give
the same file on every run; and the framing must be TFRecord's."""

from __future__ import annotations

import io
import os

import crc32c
import pytest
from PIL import Image

from imgtools.formats.tfrecord import FORMAT
from imgtools.formats.tfrecord_example import SCHEMAS, example_features
from imgtools.formats.tfrecord_example import serialize_example as writer_serialization
from imgtools.formats.tfrecord_framing import frame_parts, iter_frames, masked_crc
from imgtools.records import ClassInfo, DatasetInfo, Record


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
    assert writer_serialization(datum) == serialize_example(datum)


def test_frame_crc_over_pieces_equals_crc_of_the_whole():
    whole = writer_serialization(example_features(RECORDS[2], "tfds"))
    framed = b"".join(frame_parts([whole[:100], whole[100:]]))
    assert framed[12:-4] == whole
    assert int.from_bytes(framed[-4:], "little") == masked_crc(whole)
    assert int.from_bytes(framed[8:12], "little") == masked_crc(framed[:8])
    assert crc32c.crc32c(whole) != 0


def _write_shard(root, schema: str) -> bytes:
    info = DatasetInfo("t", [ClassInfo(f"n{i:08d}", f"c{i}") for i in range(200)])
    writer = FORMAT.open_writer(root, info, "train", 0, 1, schema=schema)
    for record in RECORDS:
        writer.write(record)
    (path, *_index) = writer.close()
    return path


@pytest.mark.parametrize("schema", sorted(SCHEMAS))
def test_written_shard_holds_deterministic_examples_and_is_reproducible(tmp_path, schema):
    first = _write_shard(tmp_path / "a", schema)
    second = _write_shard(tmp_path / "b", schema)
    assert first.read_bytes() == second.read_bytes()
    payloads = [payload for _offset, payload in iter_frames(first)]
    assert payloads == [serialize_example(example_features(r, schema)) for r in RECORDS]
