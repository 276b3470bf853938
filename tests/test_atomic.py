"""imgtools.atomic: a folder output's images are written whole, under their own name, and
never over another record's file; what a killed attempt left is written again; a file is
read whole whatever its reads return."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import pytest

from imgtools import atomic
from imgtools.atomic import NameTaken, read_file, read_whole, write_new
from imgtools.errors import UserError
from imgtools.formats.folder import FolderWriter
from imgtools.records import Record

DATA = bytes(range(256)) * 200


def test_a_new_file_holds_the_bytes_with_the_usual_mode_and_nothing_else_is_left(tmp_path):
    write_new(str(tmp_path / "a.JPEG"), DATA)
    assert (tmp_path / "a.JPEG").read_bytes() == DATA
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE((tmp_path / "a.JPEG").stat().st_mode) == 0o666 & ~umask
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.JPEG"]


def test_a_taken_name_is_accepted_only_when_it_holds_the_same_bytes(tmp_path):
    path = str(tmp_path / "a.JPEG")
    write_new(path, DATA)
    write_new(path, DATA)  # a resumed shard rewriting its own file
    with pytest.raises(NameTaken):
        write_new(path, DATA[:-1] + b"x")
    with pytest.raises(NameTaken):
        write_new(path, DATA[:100])
    assert Path(path).read_bytes() == DATA
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.JPEG"]


@pytest.mark.parametrize("left", [0, 1, 100, len(DATA) - 1])
def test_what_a_killed_write_left_is_written_again(tmp_path, left):
    """A kill (or a power cut) in the middle of an image leaves its first bytes: the resumed
    shard recognises them as its own and writes the whole image."""
    path = tmp_path / "a.JPEG"
    path.write_bytes(DATA[:left])
    write_new(str(path), DATA)
    assert path.read_bytes() == DATA


def test_a_taken_name_holding_other_bytes_is_left_untouched(tmp_path):
    path = tmp_path / "a.JPEG"
    path.write_bytes(b"\xff\xd8 another image")
    with pytest.raises(NameTaken):
        write_new(str(path), DATA)
    assert path.read_bytes() == b"\xff\xd8 another image"


def test_a_failed_write_leaves_no_file_and_names_the_path(tmp_path, monkeypatch):
    def disk_full(*_args):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", disk_full)
    with pytest.raises(OSError) as e:
        write_new(str(tmp_path / "a.JPEG"), DATA)
    assert e.value.errno == errno.ENOSPC and e.value.filename == str(tmp_path / "a.JPEG")
    assert list(tmp_path.iterdir()) == []


def test_short_writes_are_continued_until_every_byte_is_written(tmp_path, monkeypatch):
    real_write = os.write
    monkeypatch.setattr(os, "write", lambda fd, data: real_write(fd, bytes(data[:1000])))
    write_new(str(tmp_path / "a.JPEG"), DATA)
    assert (tmp_path / "a.JPEG").read_bytes() == DATA


def test_two_shards_writing_one_name_with_other_bytes_is_a_clear_error(tmp_path):
    """Two records of one class with one file name (from two input shards) would silently
    become one image in a folder: the second writer refuses, and the first file is kept."""
    first, second = FolderWriter(tmp_path, "train"), FolderWriter(tmp_path, "train")
    record = Record("x", "train", 0, DATA, "x.JPEG", "n01440764", "tench")
    first.write(record)
    with pytest.raises(UserError, match="both named 'x.JPEG'"):
        second.write(Record("x", "train", 0, DATA[::-1], "x.JPEG", "n01440764", "tench"))
    assert (tmp_path / "train" / "n01440764" / "x.JPEG").read_bytes() == DATA


def test_read_file_gives_every_byte_of_empty_small_and_large_files(tmp_path):
    for name, data in (("empty", b""), ("small", b"x"), ("large", DATA * 50)):
        (tmp_path / name).write_bytes(data)
        assert read_file(str(tmp_path / name)) == data


def test_read_whole_reads_on_past_a_short_read_and_a_file_that_grew(tmp_path, monkeypatch):
    path = tmp_path / "a.JPEG"
    path.write_bytes(DATA)
    real_read = os.read
    monkeypatch.setattr(os, "read", lambda fd, n: real_read(fd, min(n, 1000)))  # a FUSE's
    assert read_file(str(path)) == DATA
    monkeypatch.undo()
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        with open(path, "ab") as grow:  # grows between the fstat and the read
            grow.write(b"more")
        assert read_whole(fd, size) == DATA + b"more"
    finally:
        os.close(fd)


def test_read_file_of_a_missing_file_names_it(tmp_path):
    with pytest.raises(FileNotFoundError) as caught:
        read_file(str(tmp_path / "gone.JPEG"))
    assert caught.value.filename == str(tmp_path / "gone.JPEG")


def test_an_error_while_reading_names_the_file(tmp_path, monkeypatch):
    (tmp_path / "a.JPEG").write_bytes(DATA)

    def failing_disk(*_args):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "read", failing_disk)
    with pytest.raises(OSError) as caught:
        read_file(str(tmp_path / "a.JPEG"))
    assert caught.value.errno == errno.EIO
    assert caught.value.filename == str(tmp_path / "a.JPEG")


# ------------------------------------------------------------------ syncing before a marker


def _never_gone_through():
    raise AssertionError("the paths were gone through")
    yield


def test_a_sync_told_the_folders_needs_no_path_where_syncfs_works(tmp_path, monkeypatch):
    """One ``syncfs`` per filesystem of the folders: an image's path is not looked at."""
    synced = []
    monkeypatch.setattr(atomic, "_syncfs", lambda fd: synced.append(fd) or 0)
    atomic.sync_files(_never_gone_through(), [str(tmp_path), str(tmp_path)])
    assert len(synced) == 1


def test_without_syncfs_every_file_and_its_folder_is_fsynced(tmp_path, monkeypatch):
    files = [tmp_path / "a" / "x.jpg", tmp_path / "a" / "y.jpg", tmp_path / "b" / "z.jpg"]
    fsynced = []
    monkeypatch.setattr(atomic, "_syncfs", None)
    monkeypatch.setattr(atomic, "_fsync_path", fsynced.append)
    atomic.sync_files(iter(files), [str(tmp_path / "a"), str(tmp_path / "b")])
    told = sorted(fsynced)
    fsynced.clear()
    atomic.sync_files(files)  # the folders found from the paths: the same syncs
    assert told == sorted(fsynced) == sorted([*map(str, files), str(tmp_path / "a"),
                                               str(tmp_path / "b")])


@pytest.mark.parametrize("links_known", [True, False])
def test_walk_folders_lists_alike_with_or_without_the_link_count(tmp_path, monkeypatch,
                                                                links_known):
    """A folder with two links is listed without entry objects (ext4, tmpfs); btrfs gives
    every folder one link, and each entry's type is then looked at: the same walk."""
    for rel in ("a/x.jpg", "a/deep/y.jpg", "b/z.jpg", "top.txt"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    (tmp_path / "b" / "link").symlink_to(tmp_path / "a")  # a file: not followed
    if not links_known:
        real_stat = os.stat

        def one_link(path, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
            st = real_stat(path, *args, **kwargs)
            return os.stat_result((st.st_mode, st.st_ino, st.st_dev, 1, *tuple(st)[4:]))

        monkeypatch.setattr(os, "stat", one_link)
    walked = {rel: (sorted(names), sorted(dirs))
              for _path, rel, names, dirs in atomic.walk_folders(tmp_path)}
    assert walked == {".": (["top.txt"], ["a", "b"]), "a": (["x.jpg"], ["deep"]),
                      os.path.join("a", "deep"): (["y.jpg"], []), "b": (["link", "z.jpg"], [])}
