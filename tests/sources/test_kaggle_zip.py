"""The Kaggle zip as --src: read in place, same outputs as the tree, damaged members listed."""

from __future__ import annotations

import zipfile

import pytest

from imgtools.errors import UserError
from imgtools.sources import open_source

pytestmark = pytest.mark.usefixtures("own_cache")


@pytest.mark.parametrize("split", ["official", "random"])
def test_kaggle_zip_builds_the_same_bytes_as_the_tree(demo, kaggle_zip, helpers, tmp_path,
                                                      split):
    kw = {}
    if split == "official":
        kw["split_csvs"] = [helpers.official_csv(demo, tmp_path / "list.csv")]
    _, want = helpers.build_digest("imagenette", demo.src, tmp_path / "tree", split, **dict(kw))
    report, got = helpers.build_digest("imagenette", kaggle_zip.parent, tmp_path / "zip", split,
                                       n_jobs=2, **kw)
    assert got == want and len(want) > 60
    assert report["source_layout"] == "kaggle-zip"
    assert all(s["path"].startswith("zip:") for s in report["skipped"])


def test_a_member_with_a_bad_crc_is_skipped_and_listed(demo, kaggle_zip, helpers, tmp_path):
    damaged = tmp_path / "k.zip"
    damaged.write_bytes(kaggle_zip.read_bytes())
    with zipfile.ZipFile(damaged) as z:
        info = next(i for i in z.infolist() if i.filename.endswith("/n01440764/"
                    + sorted(demo.train_files["n01440764"])[0]))
        data_at = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    raw = bytearray(damaged.read_bytes())
    raw[data_at + info.compress_size // 2] ^= 0xFF
    damaged.write_bytes(bytes(raw))
    report, _ = helpers.build_digest("imagenette", damaged, tmp_path / "out")
    bad = [s for s in report["skipped"] if info.filename in s["path"]]
    assert len(bad) == 1 and f"@{info.header_offset}+" in bad[0]["path"]
    assert "damaged zip member" in bad[0]["reason"]


def test_a_zip_without_imagenet_is_a_clear_error(tmp_path):
    with zipfile.ZipFile(tmp_path / "x.zip", "w") as z:
        z.writestr("hello.txt", "hi")
    with pytest.raises(UserError, match="holds no ILSVRC/Data/CLS-LOC"):
        open_source(tmp_path / "x.zip")


@pytest.mark.parametrize("zip64", [False, True])
def test_central_directory_agrees_with_zipfile(tmp_path, zip64):
    """The streamed directory gives what zipfile's does, zip64 entries and UTF-8 names too."""
    from imgtools.sources.kaggle_zip import central_directory

    path = tmp_path / "x.zip"
    with zipfile.ZipFile(path, "w") as z:
        for i in range(300):
            info = zipfile.ZipInfo(f"ILSVRC/Data/CLS-LOC/train/n01440764/é_{i}.JPEG")
            info.compress_type = zipfile.ZIP_DEFLATED if i % 2 else zipfile.ZIP_STORED
            with z.open(info, "w", force_zip64=zip64) as f:
                f.write(bytes([i % 256]) * (i * 7))
    with zipfile.ZipFile(path) as z:
        want = [(i.filename, i.header_offset, i.compress_size, i.file_size, i.CRC,
                 i.compress_type) for i in z.infolist()]
    assert list(central_directory(path)) == want


def test_a_cut_zip_is_a_clear_error(kaggle_zip, tmp_path):
    cut = tmp_path / "cut.zip"
    cut.write_bytes(kaggle_zip.read_bytes()[:-5000])
    with pytest.raises(UserError, match="cannot read the zip"):
        open_source(cut)
