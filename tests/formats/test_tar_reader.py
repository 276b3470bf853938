"""The WebDataset reader parses tar headers itself (for speed): it must see exactly the members
Python's ``tarfile`` sees, on tars from every writer users have, and report damage by offset."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from imgtools.errors import CorruptDataError
from imgtools.formats.tar_codec import Member, _members, _tarfile_members, walk_samples

LONG_DIR = "d" * 60 + "/" + "e" * 60


def _members_by_tarfile(path: Path) -> list[Member]:
    with tarfile.open(path) as tar:
        return [Member(m.name, m.size, m.offset, m.offset_data) for m in tar if m.isfile()]


def _direct(path: Path) -> list[Member]:
    with open(path, "rb") as f:
        return list(_members(path, f, path.stat().st_size))


def _write(path: Path, fmt: int, names: list[str]) -> Path:
    with tarfile.open(path, "w", format=fmt) as tar:
        for i, name in enumerate(names):
            data = bytes([i % 251]) * (100 * i + 7)
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), 1_700_000_000.5  # a float mtime needs PAX
            tar.addfile(info, io.BytesIO(data))
        folder = tarfile.TarInfo("folder")
        folder.type = tarfile.DIRTYPE
        tar.addfile(folder)
    return path


@pytest.mark.parametrize("fmt", [tarfile.PAX_FORMAT, tarfile.GNU_FORMAT, tarfile.USTAR_FORMAT])
def test_direct_parser_sees_what_tarfile_sees(tmp_path, fmt):
    names = ["a.jpg", "a.cls", "b.jpg", f"{LONG_DIR}/c.jpg"]
    if fmt != tarfile.USTAR_FORMAT:  # ustar can hold neither of these
        names += ["x" * 150 + ".jpg", "caf\u00e9.jpg"]
    path = _write(tmp_path / "t.tar", fmt, names)
    assert _direct(path) == _members_by_tarfile(path)
    assert [m.name for m in _direct(path)] == names


def test_webdataset_tarwriter_shards_take_the_direct_path(tmp_path):
    import webdataset as wds

    path = tmp_path / "w.tar"
    with wds.TarWriter(str(path)) as sink:  # float mtimes: a PAX header before every member
        for i in range(5):
            sink.write({"__key__": f"s{i:03d}", "jpg": b"\xff\xd8" + bytes(300 * i), "cls": i})
    assert _direct(path) == _members_by_tarfile(path)
    assert len(list(walk_samples(path))) == 5


def test_headers_it_leaves_to_tarfile_still_read(tmp_path):
    path = tmp_path / "links.tar"
    with tarfile.open(path, "w") as tar:
        for name in ("a.jpg", "b.jpg"):
            info = tarfile.TarInfo(name)
            info.size = 3
            tar.addfile(info, io.BytesIO(b"abc"))
        link = tarfile.TarInfo("c.jpg")
        link.type, link.linkname = tarfile.SYMTYPE, "a.jpg"
        tar.addfile(link)
        info = tarfile.TarInfo("d.jpg")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"def"))
    walked = [(key, [m.name for m in members]) for _f, key, members in walk_samples(path)]
    assert walked == [("a", ["a.jpg"]), ("b", ["b.jpg"]), ("d", ["d.jpg"])]
    assert [m.name for m in _tarfile_members(path)] == ["a.jpg", "b.jpg", "d.jpg"]


def test_damaged_header_is_reported_with_its_offset(tmp_path):
    path = _write(tmp_path / "t.tar", tarfile.USTAR_FORMAT, ["a.jpg", "b.jpg", "c.jpg"])
    second = _members_by_tarfile(path)[1].offset
    data = bytearray(path.read_bytes())
    data[second + 10] ^= 0xFF  # inside b.jpg's name: the checksum no longer matches
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptDataError, match="checksum") as e:
        list(walk_samples(path))
    assert e.value.offset == second and e.value.path == str(path)


def test_reading_from_a_scanned_offset_equals_walking_there(tmp_path):
    import webdataset as wds

    from imgtools.formats.base import InputShard
    from imgtools.formats.webdataset import FORMAT
    from imgtools.records import ClassInfo, DatasetInfo

    path = tmp_path / "train-000000.tar"
    with wds.TarWriter(str(path)) as sink:  # PAX headers: a sample starts at its PAX header
        for i in range(9):
            sink.write({"__key__": f"s{i:03d}", "jpg": b"\xff\xd8\xff" + bytes(700 * i),
                        "cls": i % 3})
    info = DatasetInfo("t", [ClassInfo(f"c{i}", f"c{i}") for i in range(3)])
    shard = InputShard(str(path), "train")
    sizes, offsets = FORMAT.scan_records(shard, info)
    assert sizes == [3 + 700 * i for i in range(9)]
    for start in range(9):
        for stop in (start + 1, 9):
            walked = list(FORMAT.read_range(shard, info, start, stop))
            sought = list(FORMAT.read_range(shard, info, start, stop, offset=offsets[start]))
            assert sought == walked and [r.key for r in sought] == \
                [f"s{i:03d}" for i in range(start, stop)]


def test_sample_count_agrees_with_webdatasets_own_reader(tmp_path):
    """``count_samples`` (finalize's and verify's fast count) against webdataset's grouping."""
    import webdataset as wds

    from imgtools.formats.tar_codec import count_samples

    plain, long = tmp_path / "plain.tar", tmp_path / "long.tar"
    for path, stem in ((plain, "s"), (long, "x" * 120)):  # 120 bytes: a PAX header
        with wds.TarWriter(str(path), mtime=0) as sink:  # plain ustar headers, as ours
            for i in range(7):
                sample = {"__key__": f"{stem}{i:03d}", "jpg": b"j" * (300 * i + 1),
                          "cls": str(i).encode()}
                if i % 3 == 0:
                    sample["json"] = b"{}"
                sink.write(sample)
        fields: set[str] = set()
        expected = list(wds.WebDataset(str(path), shardshuffle=False))
        assert count_samples(path, fields) == len(expected) == 7
        assert fields == {"jpg", "cls", "json"}
    (tmp_path / "empty.tar").write_bytes(b"")
    assert count_samples(tmp_path / "empty.tar") == 0
