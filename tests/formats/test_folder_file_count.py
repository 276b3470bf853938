"""The count behind the folder output's one-file-per-record check: the same whether a folder's
link count tells that it holds no sub-folder (ext4, tmpfs) or not (btrfs: one link)."""

from __future__ import annotations

import os

import pytest

from imgtools.formats import folder


def _tree(root):
    (root / "train" / "n01" / "deeper").mkdir(parents=True)
    (root / "train" / "n02").mkdir()
    (root / "unsup").mkdir()
    for rel in ("train/n01/a.JPEG", "train/n01/deeper/b.JPEG", "train/n02/c.JPEG",
                "train/n02/d.JPEG", "train/n02/.hidden", "unsup/e.JPEG"):
        (root / rel).write_bytes(b"x")
    (root / "train" / "n02" / "link").symlink_to(root / "unsup")  # a file: not followed


@pytest.mark.parametrize("links_known", [True, False])
def test_files_are_counted_alike_with_or_without_the_link_count(tmp_path, monkeypatch,
                                                               links_known):
    _tree(tmp_path)
    if not links_known:  # every folder one link, as btrfs has it
        real_stat = os.stat

        def one_link(path, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
            st = real_stat(path, *args, **kwargs)
            return os.stat_result((st.st_mode, st.st_ino, st.st_dev, 1, *tuple(st)[4:]))

        monkeypatch.setattr(os, "stat", one_link)
    assert folder._count_files(str(tmp_path / "train")) == 5  # a, b, c, d, link
    assert folder._count_files(str(tmp_path / "unsup")) == 1
    assert folder._count_files(str(tmp_path / "missing")) == 0
