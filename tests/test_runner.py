"""imgtools.runner: what a done marker lists of its files, and the sync before it is written."""

from __future__ import annotations

import pytest

from imgtools import runner
from imgtools.runner import marker_files, with_files


def test_a_marker_lists_its_files_sizes_and_folders(tmp_path):
    (tmp_path / "a.jpg").write_bytes(b"12345")
    given = with_files({"n": 1}, [tmp_path / "a.jpg"], sizes=[5], folders={str(tmp_path)})
    stat_ed = with_files({"n": 1}, [tmp_path / "a.jpg"])
    assert list(marker_files(given)) == list(marker_files(stat_ed)) == [
        (str(tmp_path / "a.jpg"), 5)]
    assert given["file_folders"] == [str(tmp_path)]
    assert "file_folders" not in stat_ed
    with pytest.raises(ValueError, match="2 sizes for 1 files"):
        with_files({}, [tmp_path / "a.jpg"], sizes=[5, 5])


def test_the_sync_before_markers_uses_the_writers_folders_or_finds_them(tmp_path,
                                                                       monkeypatch):
    calls = []
    monkeypatch.setattr(runner, "sync_files",
                        lambda paths, folders=None: calls.append((sorted(paths), folders)))
    a, b = str(tmp_path / "a" / "x.jpg"), str(tmp_path / "b" / "y.jpg")
    told = [with_files({}, [a], sizes=[1], folders={str(tmp_path / "a")}),
            with_files({}, [b], sizes=[1], folders={str(tmp_path / "b")})]
    runner._synced_files(told)
    assert calls.pop() == ([a, b], {str(tmp_path / "a"), str(tmp_path / "b")})
    runner._synced_files([told[0], with_files({}, [b], sizes=[1])])  # one marker without
    assert calls.pop() == ([a, b], None)
