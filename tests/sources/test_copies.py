"""ImageNet copies in training formats as --src (HF tar.gz and Parquet, TFDS TFRecords,
WebDataset), each written here with the library its publisher uses, built and compared with
the build from the tree."""

from __future__ import annotations

import io
import json
import tarfile

import pytest

from imgtools.errors import UserError
from imgtools.plan import make_plan
from imgtools.recipes import load_recipe
from imgtools.sources import open_source
from imgtools.sources.dataset_copy import sorted_wnids

pytestmark = pytest.mark.usefixtures("own_cache")


def _images(tree):
    """(pool, wnid, name, bytes) of every image of the tree, ImageNet's splits kept."""
    labels = tree.val_label_of()
    out = [("train", f.parent.name, f.name, f.read_bytes())
           for f in sorted((tree.root / "train").rglob("*")) if f.is_file()]
    out += [("val", labels[f.name], f.name, f.read_bytes())
            for f in sorted((tree.root / "val").iterdir())]
    return out


def pack_tfds(tree, root):
    """imagenet2012-{train,validation}.tfrecord-0000N-of-00002 with image, label, file_name
    (written by the tfrecord package), and label.labels.txt."""
    from tfrecord import TFRecordWriter

    root.mkdir(parents=True)
    wnids = sorted_wnids()
    (root / "label.labels.txt").write_text("\n".join(wnids) + "\n")
    for pool, split in (("train", "train"), ("val", "validation")):
        items = [i for i in _images(tree) if i[0] == pool]
        for shard in range(2):
            w = TFRecordWriter(str(root / f"imagenet2012-{split}.tfrecord-{shard:05d}-of-00002"))
            for _, wnid, name, data in items[shard::2]:
                w.write({"image": (data, "byte"), "label": (wnids.index(wnid), "int"),
                         "file_name": (name.encode(), "byte")})
            w.close()
    return root


def pack_hf_parquet(tree, root):
    """data/{train,validation}-0000N-of-00002.parquet written by `datasets`, image path
    <name>_<wnid>.JPEG as the HF loading script made it, label in sorted-wnid order."""
    import datasets

    wnids = sorted_wnids()
    features = datasets.Features({"image": datasets.Image(),
                                  "label": datasets.ClassLabel(names=wnids)})
    (root / "data").mkdir(parents=True)
    for pool, split in (("train", "train"), ("val", "validation")):
        items = [i for i in _images(tree) if i[0] == pool]
        for shard in range(2):
            part = items[shard::2]
            ds = datasets.Dataset.from_dict(
                {"image": [{"bytes": d, "path": f"{n.rsplit('.', 1)[0]}_{w}.JPEG"}
                           for _, w, n, d in part],
                 "label": [wnids.index(w) for _, w, _, _ in part]}, features=features)
            ds.to_parquet(str(root / "data" / f"{split}-{shard:05d}-of-00002.parquet"),
                          batch_size=7)
    return root


def pack_hf_targz(tree, root):
    """data/train_images_{0,1}.tar.gz and val_images.tar.gz, members <name>_<wnid>.JPEG."""
    (root / "data").mkdir(parents=True)
    items = _images(tree)
    groups = {"train_images_0": [i for i in items if i[0] == "train"][0::2],
              "train_images_1": [i for i in items if i[0] == "train"][1::2],
              "val_images": [i for i in items if i[0] == "val"]}
    for stem, part in groups.items():
        with tarfile.open(root / "data" / f"{stem}.tar.gz", "w:gz") as tar:
            for _, wnid, name, data in part:
                info = tarfile.TarInfo(f"{name.rsplit('.', 1)[0]}_{wnid}.JPEG")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return root


def pack_wds(tree, root, keep_names=True):
    """imagenet1k-{train,validation}-000N.tar written by webdataset's TarWriter: jpg, cls
    (sorted-wnid label), json with the file name (as timm's imagenet-1k-wds)."""
    import webdataset as wds

    wnids = sorted_wnids()
    root.mkdir(parents=True)
    for pool, split in (("train", "train"), ("val", "validation")):
        items = [i for i in _images(tree) if i[0] == pool]
        for shard in range(2):
            with wds.TarWriter(str(root / f"imagenet1k-{split}-{shard:04d}.tar"),
                               mtime=0) as w:
                for k, (_, wnid, name, data) in enumerate(items[shard::2]):
                    meta = {"label": wnids.index(wnid)}
                    if keep_names:
                        meta["filename"] = name
                    w.write({"__key__": f"{split}{shard}_{k:06d}", "jpg": data,
                             "cls": wnids.index(wnid), "json": json.dumps(meta).encode()})
    return root


PACKERS = {"tfds": pack_tfds, "hf-parquet": pack_hf_parquet, "hf-targz": pack_hf_targz,
           "webdataset": pack_wds}


@pytest.fixture(scope="module")
def copies(demo, tmp_path_factory):
    base = tmp_path_factory.mktemp("copies")
    return {kind: pack(demo, base / kind) for kind, pack in PACKERS.items()}


@pytest.mark.parametrize("kind", list(PACKERS))
@pytest.mark.parametrize("split", ["official", "random"])
def test_copy_builds_the_same_bytes_as_the_tree(demo, copies, helpers, tmp_path, kind, split):
    kw = {}
    if split == "official":
        kw["split_csvs"] = [helpers.official_csv(demo, tmp_path / "list.csv")]
    _, want = helpers.build_digest("imagenette", demo.src, tmp_path / "tree", split, **dict(kw))
    report, got = helpers.build_digest("imagenette", copies[kind], tmp_path / kind, split,
                                       n_jobs=2, **kw)
    assert report["source_layout"] == f"copy:{kind}"
    assert got == want and len(want) > 60


def test_copy_without_names_refuses_official_and_builds_random(demo, helpers, tmp_path):
    copy = pack_wds(demo, tmp_path / "wds", keep_names=False)
    src = open_source(copy)
    assert not src.keeps_names
    with pytest.raises(UserError, match="does not keep them"):
        make_plan(load_recipe("imagenette"), src, split_mode="official", seed=0,
                  split_csvs=[helpers.official_csv(demo, tmp_path / "list.csv")])
    report, _ = helpers.build_digest("imagenette", copy, tmp_path / "out", "random")
    tree_report, _ = helpers.build_digest("imagenette", demo.src, tmp_path / "t", "random")
    assert sum(report["totals"].values()) == sum(tree_report["totals"].values())


def test_tar_gz_members_read_in_any_order(tmp_path, monkeypatch):
    """A .tar.gz is read forwards with saved inflater states: reads that go backwards (plan
    order is not the archive's) still give each member's bytes, in a multi-member gzip too."""
    import gzip
    import random

    from imgtools.sources import members

    monkeypatch.setattr(members, "_GZIP_CHECKPOINT_EVERY", 1 << 18)
    data = random.Random(0).randbytes(3_000_000) + bytes(1_000_000)
    path = tmp_path / "x.gz"
    path.write_bytes(gzip.compress(data[:2_500_000]) + gzip.compress(data[2_500_000:]))
    rng = random.Random(1)
    for _ in range(200):
        offset, size = rng.randrange(len(data) - 1), rng.randrange(1, 40_000)
        size = min(size, len(data) - offset)
        assert members.open_locator(f"targz:{path}//m@{offset}+{size}") == \
            data[offset:offset + size]
    assert len(members._GZIP.checkpoints) > 5


def test_damaged_copies_skip_or_fail_clearly(demo, helpers, tmp_path):
    """A flipped byte in a record's image: that image skipped and listed with its name and
    offset. A TFRecord cut short, or a .tar that is no tar: one clear error, exit 2."""
    import os
    import subprocess
    import sys

    copy = pack_tfds(demo, tmp_path / "tfds")
    first = sorted(copy.glob("imagenet2012-train.tfrecord-*"))[0]
    raw = bytearray(first.read_bytes())
    raw[12 + 400] ^= 0xFF  # inside the first record's JPEG bytes (image comes first)
    first.write_bytes(bytes(raw))
    report, _ = helpers.build_digest("imagenette", copy, tmp_path / "out")
    crc = [s for s in report["skipped"] if "fails its CRC" in s["reason"]]
    assert len(crc) == 1 and crc[0]["path"].startswith(f"tfrecord:{first}//") \
        and crc[0]["path"].endswith(f"@0+{crc[0]['path'].rsplit('+', 1)[1]}")
    os.truncate(first, len(raw) // 2)
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "c")}
    for src in (copy, pack_wds(demo, tmp_path / "wds")):
        if src.name == "wds":
            (src / "imagenet1k-train-0000.tar").write_bytes(b"no tar" * 1000)
        proc = subprocess.run([sys.executable, "-m", "imgtools.cli", "build", "imagenette",
                               "--src", str(src), "--split", "random", "--out",
                               str(tmp_path / "o")], capture_output=True, text=True, env=env)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
        assert "cannot index this file" in proc.stderr


@pytest.mark.parametrize("fmt", ["webdataset", "parquet"])
def test_labels_of_a_copy_in_its_own_class_order(demo, helpers, tmp_path, fmt):
    """A copy labelled in its own order (an imgtools build: Imagenette's 0..9) is read through
    its class list (imgtools-dataset.json, a sample's wnid), never as ImageNet-1k's sorted
    order, which would give every image another class."""
    from imgtools.build import BuildOptions, build

    plan = make_plan(load_recipe("imagenette"), open_source(demo.src), split_mode="random",
                     seed=0)
    report = build(plan, BuildOptions(out=tmp_path / "b", sizes=[None], fmt=fmt, quiet=True,
                                      n_jobs=1), command="test")
    copy = report["outputs"][0]
    src = open_source(copy)
    for wnid in demo.wnids:
        names = src.train_files(wnid) + src.val_files(wnid)
        assert names
        assert all(n.startswith(wnid) for n in names if not n.startswith("ILSVRC2012_val_"))


def test_split_of_a_copy_file_from_its_name_or_folder():
    from pathlib import Path

    from imgtools.sources.dataset_copy import pool_of

    assert pool_of(Path("data/train_images_3.tar.gz")) == "train"
    assert pool_of(Path("data/val_images.tar.gz")) == "val"
    assert pool_of(Path("data/test_images.tar.gz")) is None
    assert pool_of(Path("default/train/0000.parquet")) == "train"  # HF's Parquet conversion
    assert pool_of(Path("default/validation/0001.parquet")) == "val"
    assert pool_of(Path("imagenet2012-validation.tfrecord-00000-of-00064")) == "val"
    assert pool_of(Path("imagenet1k-train-0042.tar")) == "train"


@pytest.mark.skipif(not __import__("os").path.exists("/proc/self/io"), reason="needs /proc")
def test_indexing_a_parquet_copy_reads_no_image_bytes(copies):
    """Labels and names are columns of their own: the index pass reads those and the footers,
    not the image bytes (HF's Parquet imagenet-1k is 150 GB)."""
    from pathlib import Path

    def rchar() -> int:
        line = next(x for x in Path("/proc/self/io").read_text().splitlines()
                    if x.startswith("rchar:"))
        return int(line.split()[1])

    import shutil

    from imgtools.sources.base import cache_dir

    open_source(copies["hf-parquet"])  # warm the imports, then empty this test's own cache
    shutil.rmtree(cache_dir())
    before = rchar()
    src = open_source(copies["hf-parquet"])
    read = rchar() - before
    total = sum(p.stat().st_size for p in copies["hf-parquet"].rglob("*.parquet"))
    assert src.train_files("n01440764")
    assert read < total / 4, f"indexing read {read} of {total} bytes"
