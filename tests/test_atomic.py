"""imgtools.atomic: a folder output's images are published whole, under their own name, and
never over another file - whether the kernel writes them unnamed (O_TMPFILE + linkat) or, where
it cannot, under a temporary name."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import pytest

from imgtools import atomic
from imgtools.atomic import NameTaken, atomic_write_new
from imgtools.errors import UserError
from imgtools.formats.folder import FolderWriter
from imgtools.records import Record

DATA = bytes(range(256)) * 200


@pytest.fixture(params=["unnamed", "temporary name"])
def how(request, monkeypatch) -> str:
    """Both ways of writing; the unnamed one only where this kernel and filesystem have it."""
    if request.param == "unnamed" and not atomic._unnamed_files:
        pytest.skip("no O_TMPFILE on this platform")
    monkeypatch.setattr(atomic, "_unnamed_files", request.param == "unnamed")
    return request.param


def test_a_new_file_holds_the_bytes_with_the_usual_mode_and_nothing_else_is_left(how, tmp_path):
    atomic_write_new(str(tmp_path / "a.JPEG"), DATA)
    assert (tmp_path / "a.JPEG").read_bytes() == DATA
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE((tmp_path / "a.JPEG").stat().st_mode) == 0o666 & ~umask
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.JPEG"]


def test_a_taken_name_is_accepted_only_when_it_holds_the_same_bytes(how, tmp_path):
    path = str(tmp_path / "a.JPEG")
    atomic_write_new(path, DATA)
    atomic_write_new(path, DATA)  # a resumed shard rewriting its own file
    with pytest.raises(NameTaken):
        atomic_write_new(path, DATA[:-1] + b"x")
    with pytest.raises(NameTaken):
        atomic_write_new(path, DATA[:100])
    assert Path(path).read_bytes() == DATA
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.JPEG"]


def test_a_failed_write_leaves_no_file_and_names_the_path(how, tmp_path, monkeypatch):
    def disk_full(*_args):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", disk_full)
    monkeypatch.setattr("builtins.open", lambda *a, **k: _FullFile())
    with pytest.raises(OSError) as e:
        atomic_write_new(str(tmp_path / "a.JPEG"), DATA)
    assert e.value.errno == errno.ENOSPC and e.value.filename == str(tmp_path / "a.JPEG")
    assert list(tmp_path.iterdir()) == []


def test_short_writes_are_continued_until_every_byte_is_written(tmp_path, monkeypatch):
    if not atomic._unnamed_files:
        pytest.skip("no O_TMPFILE on this platform")
    real_write = os.write
    monkeypatch.setattr(os, "write", lambda fd, data: real_write(fd, bytes(data[:1000])))
    atomic_write_new(str(tmp_path / "a.JPEG"), DATA)
    assert (tmp_path / "a.JPEG").read_bytes() == DATA


class _FullFile:
    """What ``open(tmp, "wb")`` gives on a full disk: writes fail."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def write(self, _data):
        raise OSError(errno.ENOSPC, "No space left on device")


def test_a_filesystem_without_unnamed_files_falls_back_to_a_temporary_name(tmp_path,
                                                                            monkeypatch):
    if not atomic._unnamed_files:
        pytest.skip("no O_TMPFILE on this platform")
    monkeypatch.setattr(atomic, "_unnamed_files", True)  # restored after the test
    real_open = os.open

    def no_tmpfile(path, flags, *args, **kw):
        if flags & os.O_TMPFILE == os.O_TMPFILE:
            raise OSError(errno.EOPNOTSUPP, "Operation not supported", path)
        return real_open(path, flags, *args, **kw)

    monkeypatch.setattr(os, "open", no_tmpfile)
    atomic_write_new(str(tmp_path / "a.JPEG"), DATA)
    assert (tmp_path / "a.JPEG").read_bytes() == DATA
    assert atomic._unnamed_files is False  # asked once per process, not once per image
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.JPEG"]


def test_two_shards_writing_one_name_with_other_bytes_is_a_clear_error(how, tmp_path):
    """Two records of one class with one file name (from two input shards) would silently
    become one image in a folder: the second writer refuses, and the first file is kept."""
    first, second = FolderWriter(tmp_path, "train"), FolderWriter(tmp_path, "train")
    record = Record("x", "train", 0, DATA, "x.JPEG", "n01440764", "tench")
    first.write(record)
    with pytest.raises(UserError, match="both named 'x.JPEG'"):
        second.write(Record("x", "train", 0, DATA[::-1], "x.JPEG", "n01440764", "tench"))
    assert (tmp_path / "train" / "n01440764" / "x.JPEG").read_bytes() == DATA
