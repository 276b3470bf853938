"""``imgtools convert``: lossless round trips, sharding, determinism, resume and bad input."""

from __future__ import annotations

import io
import json
import struct
import tarfile
from pathlib import Path

import pytest
from conftest import (
    FOLDER_WNIDS,
    fail_webdataset_write,
    make_folder,
    staging_of,
    tree,
)
from PIL import Image

from imgtools.convert import convert
from imgtools.errors import CorruptDataError, UserError
from imgtools.formats import get_format
from imgtools.formats.common import parse_size, split_from_name
from imgtools.pipeline.slices import cut_shards
from imgtools.records import DatasetInfo


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return make_folder(tmp_path_factory.mktemp("src") / "tiny")


def test_round_trip_through_every_format_is_byte_identical(folder, tmp_path):
    steps = [("tfrecord", {"shard_records": 5}), ("webdataset", {"shard_records": 4}),
             ("parquet", {"shard_bytes": 6000}), ("folder", {})]
    src = folder
    for fmt, opts in steps:
        dst = tmp_path / fmt
        summary = convert(src, dst, fmt, quiet=True, n_jobs=2, **opts)
        assert summary["splits"] == {"train": 13, "val": 6, "unsup": 3}
        assert summary["bytes_in"] == summary["bytes_out"]
        src = dst
    assert tree(tmp_path / "folder") == tree(folder)
    assert (tmp_path / "folder" / "classes.txt").read_text().split() == list(FOLDER_WNIDS)
    info = DatasetInfo.load(tmp_path / "folder")
    assert info.wnids == list(FOLDER_WNIDS)
    assert info.class_names == [f"class {w}" for w in FOLDER_WNIDS]
    # Several shards were really made along the way.
    assert len(list((tmp_path / "tfrecord").glob("train.tfrecord-*-of-00003"))) == 3
    assert len(list((tmp_path / "webdataset").glob("data/train-*.tar"))) == 4


def _records(path: Path) -> list[tuple]:
    fmt = get_format(json.loads((path / "imgtools-dataset.json").read_text())["format"])
    info = fmt.read_info(path)
    return [(r.split, r.label, r.filename, r.image, r.class_name)
            for s in fmt.input_shards(path) for r in fmt.read_shard(s, info)]


@pytest.mark.parametrize("schema", ["tfds", "slim", "flowers"])
def test_tfrecord_schemas_round_trip(folder, tmp_path, schema):
    convert(folder, tmp_path / "t", "tfrecord", schema=schema, quiet=True, n_jobs=1)
    convert(tmp_path / "t", tmp_path / "f", "folder", quiet=True, n_jobs=1)
    if schema == "flowers":  # the id feature holds the key: the extension is restored
        assert sorted(tree(tmp_path / "f").values()) == sorted(tree(folder).values())
    else:
        assert tree(tmp_path / "f") == tree(folder)


def test_slim_schema_has_the_tf_slim_keys(folder, tmp_path):
    from imgtools.formats.tfrecord_example import parse_example
    from imgtools.formats.tfrecord_framing import iter_frames

    convert(folder, tmp_path / "t", "tfrecord", schema="slim", quiet=True, n_jobs=1)
    _offset, payload = next(iter_frames(tmp_path / "t" / "train.tfrecord-00000-of-00001"))
    feats = parse_example(payload, Path("x"), 0)
    img = Image.open(io.BytesIO(feats["image/encoded"]))
    assert (feats["image/width"], feats["image/height"]) == img.size
    assert img.format == "PNG" and feats["image/format"] == b"png"  # the PNG named .JPEG
    assert feats["image/class/label"] == 0 and feats["image/class/text"] == b"class n01440764"
    assert feats["image/class/synset"] == FOLDER_WNIDS[0].encode()
    assert feats["image/filename"].endswith(b".JPEG")


def test_tfrecord_matches_the_tfrecord_package_writer_and_index(folder, tmp_path):
    """Same Examples and same framing/CRCs as the tfrecord package's own writer; same index as
    its tfrecord2idx."""
    from tfrecord import example_pb2
    from tfrecord.tools.tfrecord2idx import create_index
    from tfrecord.writer import TFRecordWriter

    from imgtools.formats.tfrecord_example import example_features

    convert(folder, tmp_path / "t", "tfrecord", quiet=True, n_jobs=1)
    ours = tmp_path / "t" / "val.tfrecord-00000-of-00001"
    theirs = tmp_path / "theirs.tfrecord"
    writer = TFRecordWriter(str(theirs))
    fmt = get_format("folder")
    info = fmt.read_info(folder)
    for shard in fmt.input_shards(folder):
        if shard.split == "val":
            for record in fmt.read_shard(shard, info):
                writer.write(example_features(record, "tfds"))
    writer.close()

    def frames(path: Path) -> list[tuple[bytes, bytes, bytes]]:
        data, out = path.read_bytes(), []
        for offset in _frame_offsets(path):
            length = struct.unpack("<Q", data[offset:offset + 8])[0]
            payload = data[offset + 12:offset + 12 + length]
            out.append((data[offset + 8:offset + 12], payload,
                        data[offset + 12 + length:offset + 16 + length]))
        return out

    mine, their = frames(ours), frames(theirs)
    assert len(mine) == len(their) == 6
    for (len_crc, payload, crc), (_lc, their_payload, _c) in zip(mine, their, strict=True):
        assert len_crc == TFRecordWriter.masked_crc(struct.pack("<Q", len(payload)))
        assert crc == TFRecordWriter.masked_crc(payload)
        assert example_pb2.Example.FromString(payload) == \
            example_pb2.Example.FromString(their_payload)
    create_index(str(ours), str(tmp_path / "their.index"))
    assert Path(str(ours) + ".index").read_text() == (tmp_path / "their.index").read_text()


def test_gzip_tfrecord_has_no_index_and_reads_back(folder, tmp_path):
    convert(folder, tmp_path / "t", "tfrecord", compression="gzip", quiet=True, n_jobs=1)
    files = sorted(p.name for p in (tmp_path / "t").iterdir())
    assert "train.tfrecord-00000-of-00001.gz" in files
    assert not [f for f in files if f.endswith(".index")]
    assert (tmp_path / "t" / files[-1]).read_bytes()[:2] == b"\x1f\x8b"
    convert(tmp_path / "t", tmp_path / "f", "folder", quiet=True, n_jobs=1)
    assert tree(tmp_path / "f") == tree(folder)


def test_output_is_deterministic_across_runs_and_job_counts(folder, tmp_path):
    for fmt in ("webdataset", "parquet", "tfrecord"):
        convert(folder, tmp_path / f"{fmt}1", fmt, quiet=True, n_jobs=1, shard_records=4)
        convert(folder, tmp_path / f"{fmt}2", fmt, quiet=True, n_jobs=2, shard_records=4)
        assert tree(tmp_path / f"{fmt}1") == tree(tmp_path / f"{fmt}2")
        assert len(tree(tmp_path / f"{fmt}1")) > 3


def test_webdataset_members_keys_headers_and_wids_index(folder, tmp_path):
    convert(folder, tmp_path / "w", "webdataset", quiet=True, shard_records=5, n_jobs=1)
    shard = tmp_path / "w" / "data" / "train-00000-of-00003.tar"
    with tarfile.open(shard) as tar:
        members = tar.getmembers()
        names = [m.name for m in members]
        assert all(m.mtime == 0 and m.type == tarfile.REGTYPE for m in members)
        assert not tar.pax_headers and all(not m.pax_headers for m in members)
        meta = json.loads(tar.extractfile(names[1]).read())
    assert names[:4] == ["n01440764_png.cls", "n01440764_png.json", "n01440764_png.png",
                         "n01440764_train0.cls"]
    assert meta == {"class_name": "class n01440764", "filename": "n01440764_png.JPEG",
                    "label": 0, "split": "train", "wnid": "n01440764"}
    index = json.loads((tmp_path / "w" / "train.wids.json").read_text())
    assert index["__kind__"] == "wids-shard-index-v1"
    assert [s["nsamples"] for s in index["shardlist"]] == [5, 5, 3]
    assert index["shardlist"][0]["url"] == "data/train-00000-of-00003.tar"
    with tarfile.open(tmp_path / "w" / "data" / "unsup-00000-of-00001.tar") as tar:
        unsup = tar.getnames()
    assert not [n for n in unsup if n.endswith(".cls")]


def test_shard_cutting_by_count_and_bytes():
    scans = [("a", [10, 10, 10]), ("b", [50, 10]), ("c", [])]
    cuts = cut_shards(scans, max_records=2, max_bytes=None)
    assert [(n, b) for _s, n, b in cuts] == [(2, 20), (2, 60), (1, 10)]
    cuts = cut_shards(scans, max_records=None, max_bytes=30)
    assert [(n, b) for _s, n, b in cuts] == [(3, 30), (1, 50), (1, 10)]  # 50 > 30 alone
    assert [(s.shard, s.start, s.stop) for s in cuts[0][0]] == [("a", 0, 3)]
    assert parse_size("500MB") == 500_000_000 and parse_size("2GiB") == 2 * 2**30
    with pytest.raises(UserError):
        parse_size("lots")


def test_split_names_of_common_layouts():
    assert split_from_name("imagenette-validation.tfrecord-00000-of-00004") == "val"
    assert split_from_name("val/00-224x224-232.tfrec") == "val"
    assert split_from_name("data/train-00000-of-00001.parquet") == "train"
    assert split_from_name("unsup-000001.tar") == "unsup"
    assert split_from_name("shard-0.tar") == "train"


def test_parquet_shards_by_bytes_with_row_groups_of_100(tmp_path):
    import pyarrow.parquet as pq

    make_folder(tmp_path / "src", per_class=40)
    convert(tmp_path / "src", tmp_path / "p", "parquet", max_shard_bytes="60kB", quiet=True)
    files = sorted((tmp_path / "p").glob("train-*.parquet"))
    assert len(files) > 1 and files[0].name == f"train-00000-of-{len(files):05d}.parquet"
    rows = [pq.ParquetFile(f).metadata.num_rows for f in files]
    assert sum(rows) == 121
    big = make_folder(tmp_path / "src2", per_class=70)
    convert(big, tmp_path / "p2", "parquet", quiet=True)
    meta = pq.ParquetFile(tmp_path / "p2" / "train-00000-of-00001.parquet").metadata
    assert [meta.row_group(i).num_rows for i in range(meta.num_row_groups)] == [100, 100, 11]


def test_size_resizes_during_conversion(folder, tmp_path):
    convert(folder, tmp_path / "w", "webdataset", size=20, quiet=True, n_jobs=1)
    convert(tmp_path / "w", tmp_path / "f", "folder", quiet=True, n_jobs=1)
    files = tree(tmp_path / "f")
    assert len(files) == len(tree(folder))
    for data in files.values():
        img = Image.open(io.BytesIO(data))
        assert min(img.size) == 20 and img.format == "JPEG" and img.mode == "RGB"


# ------------------------------------------------------------------------- output handling


def test_existing_output_is_refused_unless_overwrite_or_resume(folder, tmp_path):
    dst = tmp_path / "w"
    convert(folder, dst, "webdataset", quiet=True, n_jobs=1)
    with pytest.raises(UserError, match="not empty"):
        convert(folder, dst, "webdataset", quiet=True, n_jobs=1)
    convert(folder, dst, "webdataset", quiet=True, n_jobs=1, overwrite=True)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("precious")
    with pytest.raises(UserError, match="did not write"):
        convert(folder, mine, "webdataset", quiet=True, overwrite=True)
    assert (mine / "thesis.tex").read_text() == "precious"


def test_failure_leaves_no_partial_file_and_resume_finishes_identically(folder, tmp_path,
                                                                        monkeypatch):
    convert(folder, tmp_path / "clean", "webdataset", quiet=True, n_jobs=1, shard_records=3)
    restore = fail_webdataset_write(monkeypatch, at=8)
    dst = tmp_path / "resumed"
    with pytest.raises(OSError, match="disk full"):
        convert(folder, dst, "webdataset", quiet=True, n_jobs=1, shard_records=3)
    assert not dst.exists()  # the output appears only complete
    left = sorted(p.name for p in (staging_of(dst) / "data").iterdir() if p.is_file())
    # two whole shards, no temp
    assert left == ["train-00000-of-00005.tar", "train-00001-of-00005.tar"]
    restore()
    with pytest.raises(UserError, match="different"):
        convert(folder, dst, "webdataset", quiet=True, n_jobs=1, shard_records=4, resume=True)
    done_before = (staging_of(dst) / "data" / "train-00000-of-00005.tar").stat().st_mtime_ns
    convert(folder, dst, "webdataset", quiet=True, n_jobs=1, shard_records=3, resume=True)
    not_redone = (dst / "data" / "train-00000-of-00005.tar").stat().st_mtime_ns == done_before
    assert not_redone
    assert tree(dst) == tree(tmp_path / "clean")
    assert not staging_of(dst).parent.exists()


# ------------------------------------------------------------------------------ bad input


def _frame_offsets(path: Path) -> list[int]:
    data, offsets, pos = path.read_bytes(), [], 0
    while pos < len(data):
        offsets.append(pos)
        pos += 16 + struct.unpack("<Q", data[pos:pos + 8])[0]
    return offsets


@pytest.fixture()
def tfr(folder, tmp_path) -> Path:
    convert(folder, tmp_path / "t", "tfrecord", quiet=True, n_jobs=1)
    return tmp_path / "t"


def test_tfrecord_crc_mismatch_names_file_and_offset(tfr, tmp_path):
    path = tfr / "train.tfrecord-00000-of-00001"
    offset = _frame_offsets(path)[2]
    data = bytearray(path.read_bytes())
    data[offset + 40] ^= 0x01  # one bit inside record 2's payload
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptDataError, match="data CRC mismatch") as e:
        convert(tfr, tmp_path / "out", "webdataset", quiet=True, n_jobs=1)
    assert e.value.offset == offset and e.value.path == str(path)
    assert not [p for p in (tmp_path / "out").rglob("*") if p.suffix == ".tar"
                and p.name.startswith("train")]


def test_truncated_tfrecord_is_an_error(tfr, tmp_path):
    path = tfr / "val.tfrecord-00000-of-00001"
    data = path.read_bytes()
    path.write_bytes(data[:-10])
    with pytest.raises(CorruptDataError, match="truncated") as e:
        convert(tfr, tmp_path / "out", "parquet", quiet=True, n_jobs=1)
    assert e.value.offset == _frame_offsets(tfr / "train.tfrecord-00000-of-00001")[0] or \
        e.value.offset > 0


@pytest.mark.parametrize("cut", ["mid-member", "between-members"])
def test_truncated_tar_is_an_error(folder, tmp_path, cut):
    convert(folder, tmp_path / "w", "webdataset", quiet=True, n_jobs=1)
    shard = tmp_path / "w" / "data" / "val-00000-of-00001.tar"
    with tarfile.open(shard) as tar:
        members = tar.getmembers()
    end = members[3].offset_data + members[3].size
    end = end + (-end) % 512 if cut == "between-members" else end - 100
    shard.write_bytes(shard.read_bytes()[:end])
    with pytest.raises(CorruptDataError, match="truncated|cut short") as e:
        convert(tmp_path / "w", tmp_path / "out", "folder", quiet=True, n_jobs=1)
    assert e.value.path == str(shard)


def test_parquet_without_image_column(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "p").mkdir()
    pq.write_table(pa.table({"text": ["a", "b"], "label": [0, 1]}),
                   tmp_path / "p" / "train-00000-of-00001.parquet")
    with pytest.raises(UserError, match="no image column") as e:
        convert(tmp_path / "p", tmp_path / "out", "folder", quiet=True)
    assert e.value.path.endswith("train-00000-of-00001.parquet")
    assert not (tmp_path / "out").exists()


def test_mixed_schemas_are_refused(folder, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    convert(folder, tmp_path / "slim", "tfrecord", schema="slim", quiet=True, n_jobs=1)
    convert(folder, tmp_path / "tfds", "tfrecord", quiet=True, n_jobs=1)
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    (mixed / "a-train.tfrecord").write_bytes(
        (tmp_path / "slim" / "train.tfrecord-00000-of-00001").read_bytes())
    (mixed / "b-train.tfrecord").write_bytes(
        (tmp_path / "tfds" / "train.tfrecord-00000-of-00001").read_bytes())
    with pytest.raises(UserError, match="mixed schemas") as e:
        convert(mixed, tmp_path / "out", "folder", quiet=True, n_jobs=1)
    assert "b-train.tfrecord" in str(e.value)

    convert(folder, tmp_path / "pq", "parquet", quiet=True, n_jobs=1)
    table = pq.read_table(tmp_path / "pq" / "val-00000-of-00001.parquet")
    pq.write_table(table.append_column("extra", pa.array([1] * table.num_rows)),
                   tmp_path / "pq" / "val-00000-of-00001.parquet")
    with pytest.raises(UserError, match="mixed schemas"):
        convert(tmp_path / "pq", tmp_path / "out2", "folder", quiet=True, n_jobs=1)


def test_empty_and_unknown_inputs(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="not a dataset"):
        convert(tmp_path / "empty", tmp_path / "out", "parquet", quiet=True)
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "train.tfrecord").write_bytes(b"")
    with pytest.raises(UserError, match="no records"):
        convert(tmp_path / "t", tmp_path / "out", "parquet", quiet=True)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
    with pytest.raises(UserError, match="unknown format"):
        convert(tmp_path / "t", tmp_path / "out", "hdf5", quiet=True)
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "train-000000.tar").write_bytes(b"this is not a tar file" * 40)
    with pytest.raises(UserError, match="not an uncompressed tar"):
        convert(tmp_path / "junk", tmp_path / "out", "parquet", quiet=True)
