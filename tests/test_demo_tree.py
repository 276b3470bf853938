"""The synthetic ImageNet tree must look like the real thing to the code that reads it.

Checked against the readers people use: torchvision's meta.mat parsing (reproduced below from
``torchvision.datasets.imagenet.parse_devkit_archive``), the Kaggle CSV's documented columns,
and Pillow for what each planted quirk really is.
"""

from __future__ import annotations

import csv
import os
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, UnidentifiedImageError

from imgtools import demo_tree
from imgtools.demo_tree import (
    BROKEN_QUIRKS,
    IMAGENETTE_WNIDS,
    QUIRK_KINDS,
    load_clsloc,
    make_imagenet_tree,
    tree_checksum,
)
from imgtools.errors import UserError

WNIDS = ["n01440764", "n02102040", "n03888257"]
VAL_NAME = re.compile(r"^ILSVRC2012_val_\d{8}\.JPEG$")


def _make(tmp_path: Path, layout: str, **kwargs) -> demo_tree.TreeSummary:
    args = dict(wnids=WNIDS, train_per_class=6, val_per_class=4, seed=0)
    args.update(kwargs)
    return make_imagenet_tree(tmp_path / layout, layout, **args)


def _torchvision_parse_meta_mat(devkit_root: Path):
    """torchvision.datasets.imagenet.parse_devkit_archive.parse_meta_mat, verbatim logic
    (its bare zip() calls kept, hence the noqa)."""
    import scipy.io as sio

    meta = sio.loadmat(os.path.join(devkit_root, "data", "meta.mat"), squeeze_me=True)["synsets"]
    nums_children = list(zip(*meta))[4]  # noqa: B905
    meta = [meta[idx] for idx, num_children in enumerate(nums_children) if num_children == 0]
    idcs, wnids, classes = list(zip(*meta))[:3]  # noqa: B905
    classes = [tuple(clss.split(", ")) for clss in classes]
    idx_to_wnid = {idx: wnid for idx, wnid in zip(idcs, wnids)}  # noqa: B905
    wnid_to_classes = {wnid: clss for wnid, clss in zip(wnids, classes)}  # noqa: B905
    return idx_to_wnid, wnid_to_classes


def test_kaggle_layout(tmp_path):
    s = _make(tmp_path, "kaggle")
    data = tmp_path / "kaggle" / "ILSVRC" / "Data" / "CLS-LOC"
    assert s.train_dir() == data / "train" and s.src == tmp_path / "kaggle"
    assert sorted(p.name for p in (data / "train").iterdir()) == sorted(WNIDS)
    for wnid in WNIDS:
        names = sorted(p.name for p in (data / "train" / wnid).iterdir())
        assert names == s.train_files[wnid]
        assert all(re.fullmatch(rf"{wnid}_\d+\.JPEG", n) for n in names)
    val = sorted(p.name for p in (data / "val").iterdir())
    assert val == [f"ILSVRC2012_val_{i:08d}.JPEG" for i in range(1, 13)]
    assert len(list((data / "test").iterdir())) == 3

    mapping = (s.root / "LOC_synset_mapping.txt").read_text().splitlines()
    assert len(mapping) == 1000
    assert [m.split()[0] for m in mapping] == sorted(m.split()[0] for m in mapping)
    assert "n01440764 tench" in mapping

    with open(s.root / "LOC_val_solution.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 12
    truth = s.val_label_of()
    for row in rows:
        tokens = row["PredictionString"].split()
        assert len(tokens) % 5 == 0 and tokens
        assert set(tokens[::5]) == {truth[row["ImageId"] + ".JPEG"]}
        assert all(t.isdigit() for i, t in enumerate(tokens) if i % 5)
    # Rows are not in file order: a reader must key by ImageId, as with the real file.
    assert [r["ImageId"] for r in rows] != sorted(r["ImageId"] for r in rows)


def test_devkit_layout_reads_like_torchvision(tmp_path):
    s = _make(tmp_path, "devkit")
    root = tmp_path / "devkit"
    assert sorted(p.name for p in (root / "train").iterdir()) == sorted(WNIDS)
    val = sorted(p.name for p in (root / "val").iterdir())
    assert len(val) == 12 and all(VAL_NAME.match(n) for n in val)

    idx_to_wnid, wnid_to_classes = _torchvision_parse_meta_mat(root / "ILSVRC2012_devkit_t12")
    clsloc = load_clsloc()
    assert idx_to_wnid == {c.ilsvrc_id: c.wnid for c in clsloc}
    assert wnid_to_classes["n02102040"] == ("English springer",)

    gt_file = root / "ILSVRC2012_devkit_t12" / "data" / "ILSVRC2012_validation_ground_truth.txt"
    val_idcs = [int(line) for line in gt_file.read_text().splitlines()]
    assert len(val_idcs) == len(val)
    truth = s.val_label_of()
    assert [idx_to_wnid[i] for i in val_idcs] == [truth[name] for name in val]


def test_meta_mat_has_real_structure(tmp_path):
    import scipy.io as sio

    s = _make(tmp_path, "devkit")
    path = s.root / "ILSVRC2012_devkit_t12" / "data" / "meta.mat"
    assert b"Created on" not in path.read_bytes()[:116]  # scipy's timestamp would break determinism
    mat = sio.loadmat(path)
    synsets = mat["synsets"]
    assert synsets.dtype.names == ("ILSVRC2012_ID", "WNID", "words", "gloss", "num_children",
                                   "children", "wordnet_height", "num_train_images")
    assert synsets.shape[1] == 1 and synsets.shape[0] > 1000  # leaves plus internal nodes
    first = synsets[0, 0]
    assert int(first["ILSVRC2012_ID"][0, 0]) == 1 and str(first["WNID"][0]) == "n02119789"
    leaf = {str(r["WNID"][0]): r for r in synsets[:, 0]}
    assert int(leaf["n01440764"]["num_train_images"][0, 0]) == len(s.train_files["n01440764"])
    internal = [r for r in synsets[:, 0] if int(r["num_children"][0, 0]) > 0]
    assert internal and all(int(r["ILSVRC2012_ID"][0, 0]) > 1000 for r in internal)
    children = set()
    for r in internal:
        children.update(int(c) for c in r["children"].ravel())
    assert set(range(1, 1001)) <= children  # every leaf hangs somewhere in the tree


def test_valprep_layout(tmp_path):
    s = _make(tmp_path, "valprep")
    root = tmp_path / "valprep"
    for wnid in WNIDS:
        names = sorted(p.name for p in (root / "val" / wnid).iterdir())
        assert names == sorted(s.val_files[wnid]) and len(names) == 4
    assert not any(p.is_file() for p in (root / "val").iterdir())


def test_val_numbering_interleaves_classes(tmp_path):
    s = _make(tmp_path, "kaggle", val_per_class=10)
    truth = s.val_label_of()
    in_order = [truth[f"ILSVRC2012_val_{i:08d}.JPEG"] for i in range(1, 31)]
    assert in_order != sorted(in_order)  # not grouped by class
    assert sorted(in_order) == sorted(WNIDS * 10)


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path):
    a = _make(tmp_path / "a", "devkit")
    b = _make(tmp_path / "b", "devkit")
    c = _make(tmp_path / "c", "devkit", seed=1)
    assert tree_checksum(a.root) == tree_checksum(b.root)
    assert tree_checksum(a.root) != tree_checksum(c.root)


def test_class_images_do_not_depend_on_other_classes(tmp_path):
    """Adding a class must not change another class's train images (stable test fixtures)."""
    one = make_imagenet_tree(tmp_path / "one", "valprep", wnids=["n03888257"],
                             train_per_class=3, val_per_class=1, quirks=False)
    three = _make(tmp_path, "valprep", train_per_class=3, quirks=False)
    wnid = "n03888257"
    assert one.train_files[wnid] == three.train_files[wnid]
    for name in one.train_files[wnid]:
        assert ((one.root / "train" / wnid / name).read_bytes()
                == (three.root / "train" / wnid / name).read_bytes())


def test_photos_are_varied_rgb_jpegs(tmp_path):
    s = _make(tmp_path, "valprep", train_per_class=20, quirks=False)
    sizes, bits_per_pixel = [], []
    for wnid, names in s.train_files.items():
        for name in names:
            path = s.root / "train" / wnid / name
            with Image.open(path) as im:
                assert im.format == "JPEG" and im.mode == "RGB"
                im.load()
                pixels = np.asarray(im)
                sizes.append(im.size)
            assert pixels.std() > 15  # not flat
            bits_per_pixel.append(8 * path.stat().st_size / (im.size[0] * im.size[1]))
    assert len(set(sizes)) > 40
    assert any(w < h for w, h in sizes) and any(w > h for w, h in sizes)
    assert any(min(w, h) < 160 for w, h in sizes)
    assert all(max(w, h) <= 640 and min(w, h) >= 8 for w, h in sizes)
    # Real q75-96 photos compress to roughly 1-6 bits per pixel; noise would be far more,
    # flat colour far less.
    assert 1.0 < float(np.median(bits_per_pixel)) < 6.0


def test_quirks_are_what_they_claim(tmp_path):
    s = _make(tmp_path, "kaggle")
    planted = set(s.quirks) | set(s.quirks_not_planted)
    assert planted == set(QUIRK_KINDS)
    for rel in s.quirks.values():
        path = s.root / rel
        wnid = path.parent.name
        assert path.parent.parent == s.train_dir() and path.name in s.train_files[wnid]
        assert re.fullmatch(rf"{wnid}_\d+\.JPEG", path.name), "quirks carry real-looking names"
    p = {kind: s.root / rel for kind, rel in s.quirks.items()}

    def opened(kind):
        return Image.open(p[kind])

    with opened("cmyk") as im:
        assert (im.format, im.mode) == ("JPEG", "CMYK")
    for kind, mode in (("png_named_jpeg", "RGB"), ("rgba_png", "RGBA"), ("palette_png", "P")):
        assert p[kind].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        with opened(kind) as im:
            assert (im.format, im.mode) == ("PNG", mode)
    with opened("grayscale") as im:
        assert (im.format, im.mode) == ("JPEG", "L")
    with opened("exif_rotated") as im:
        assert im.getexif()[0x0112] == 6 and im.size == (400, 300)
    with opened("tiny") as im:
        assert max(im.size) < 64
    with opened("truncated") as im, pytest.raises(OSError, match="truncated"):
        im.load()
    assert p["zero_byte"].stat().st_size == 0
    with pytest.raises(UnidentifiedImageError):
        Image.open(p["not_image"])
    assert b"<html>" in p["not_image"].read_bytes()
    if "unreadable" in s.quirks:
        with pytest.raises(PermissionError):
            p["unreadable"].read_bytes()
    else:  # root reads anything: the summary must say so instead of pretending
        assert "root" in s.quirks_not_planted["unreadable"]
    assert set(s.broken_paths) == set(BROKEN_QUIRKS) & set(s.quirks)
    assert s.n_train_decodable == 3 * 6 + len(s.quirks) - len(s.broken_paths)


def test_without_quirks_every_file_is_a_photo(tmp_path):
    s = _make(tmp_path, "devkit", quirks=False)
    assert s.quirks == {} and s.n_train_files == s.n_train_decodable == 18
    assert s.n_val == 12


def test_defaults_are_imagenette(tmp_path):
    s = make_imagenet_tree(tmp_path / "t", train_per_class=1, val_per_class=1, quirks=False)
    assert s.wnids == list(IMAGENETTE_WNIDS) and s.layout == "kaggle"


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(layout="tarball"), "unknown ImageNet layout"),
        (dict(wnids=["n99999999"]), "wnids must be distinct"),
        (dict(wnids=["n01440764", "n01440764"]), "wnids must be distinct"),
        (dict(size_range=((300, 200), (100, 100))), "bad size_range"),
    ],
)
def test_bad_arguments_are_user_errors(tmp_path, kwargs, message):
    with pytest.raises(UserError, match=message):
        make_imagenet_tree(tmp_path / "t", **kwargs)


def test_refuses_to_write_into_a_non_empty_folder(tmp_path):
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "keep.txt").write_text("mine")
    with pytest.raises(UserError, match="not empty") as err:
        make_imagenet_tree(tmp_path / "t")
    assert err.value.path == str(tmp_path / "t") and err.value.fix
    assert (tmp_path / "t" / "keep.txt").read_text() == "mine"


# --------------------------------------------------------------------------- benchmark helpers
# scripts/make_corpus_tree.py and scripts/bench_build.py feed the README's speed table; a wrong
# tree or a baseline doing less work than imgtools would make that table lie.


def _scripts():
    import importlib
    import sys

    scripts = str(Path(__file__).resolve().parent.parent / "scripts")
    if scripts not in sys.path:
        sys.path.insert(0, scripts)
    return importlib.import_module("make_corpus_tree"), importlib.import_module("bench_build")


def _small_corpus(folder: Path, n: int = 7) -> list[Path]:
    folder.mkdir()
    rng = np.random.default_rng(3)
    paths = []
    for i in range(n):
        size = (int(rng.integers(200, 500)), int(rng.integers(170, 400)))
        if i == 1:
            size = (150, 120)  # smaller than the target: must be kept, not upscaled
        pixels = rng.integers(0, 256, (size[1] // 8, size[0] // 8, 3), dtype=np.uint8)
        image = Image.fromarray(pixels).resize(size, Image.Resampling.BICUBIC)
        if i == 0:
            image = image.convert("L")  # like the corpus's one grayscale photo
        paths.append(folder / f"n0000000{i}_photo.JPEG")
        image.save(paths[-1], quality=90)
    return paths


@pytest.mark.parametrize("layout", ["kaggle", "devkit", "valprep"])
def test_corpus_tree_is_read_as_imagenet(tmp_path, layout):
    from imgtools.sources import open_source

    make_corpus_tree, _ = _scripts()
    photos = _small_corpus(tmp_path / "corpus")
    wnids = ["n01440764", "n02102040", "n03888257"]
    counts = make_corpus_tree.make_corpus_tree(tmp_path / "tree", tmp_path / "corpus", 30, wnids,
                                               layout, val_every=4)
    assert counts == {"train": 23, "val": 7}
    source = open_source(tmp_path / "tree")
    assert source.layout == layout
    train = {w: source.train_files(w) for w in wnids}
    val = {w: source.val_files(w) for w in wnids}
    assert sum(map(len, train.values())) == 23 and sum(map(len, val.values())) == 7
    # Image 0 is corpus photo 0 in class 0's train folder, bytes unchanged.
    first = Path(source.path_of("train", wnids[0], f"{wnids[0]}_1.JPEG"))
    assert first.read_bytes() == photos[0].read_bytes()
    # Image 3 (the first val image) is class 0's, photo 3.
    assert val[wnids[0]][0] == "ILSVRC2012_val_00000001.JPEG"
    first_val = Path(source.path_of("val", wnids[0], val[wnids[0]][0]))
    assert first_val.read_bytes() == photos[3].read_bytes()


def test_plain_loop_does_the_same_work_as_a_resize(tmp_path):
    _, bench = _scripts()
    photos = _small_corpus(tmp_path / "corpus")
    result = bench.plain_loop(photos, 160, tmp_path / "out")
    assert result.images == len(photos) and not result.failed
    assert (tmp_path / "out" / photos[1].name).read_bytes() == photos[1].read_bytes()
    for photo in photos:
        out = tmp_path / "out" / photo.name
        with Image.open(photo) as src, Image.open(out) as dst:
            assert dst.mode == "RGB" and dst.format == "JPEG"
            if min(src.size) <= 160 and src.mode == "RGB":
                assert out.read_bytes() == photo.read_bytes()  # never upscaled, never re-encoded
            else:
                expected = min(src.size) if min(src.size) <= 160 else 160
                assert min(dst.size) == expected


def test_two_size_ceiling_takes_out_the_resize_the_build_makes(tmp_path):
    """scripts/two_size_ceiling.py's "that resize free" column subtracts the 160 resize of a
    two-size render: it must be that very resize (same decode, filter and region), or the
    README's statement about what no 160 method can beat would rest on a different one."""
    import importlib

    from imgtools.transforms.jpeg import DEFAULT_QUALITY, RenderOptions, encode_jpeg, render

    _scripts()
    ceiling = importlib.import_module("two_size_ceiling")
    photos = _small_corpus(tmp_path / "corpus")
    for photo in photos:
        data = photo.read_bytes()
        for exact in (False, True):
            resize = ceiling.two_size_small_resize(data, exact)
            (small, _large), _note = render(data, RenderOptions((160, 320), exact=exact))
            with Image.open(photo) as im:
                if min(im.size) <= 160:
                    assert resize is None
                    continue
            assert encode_jpeg(resize(), DEFAULT_QUALITY) == small
    row = ceiling.measure([p.read_bytes() for p in photos], repeats=1, exact=False)
    assert row["photos"] == len(photos)
    assert row["two_runs_over_one_if_small_resize_free"] > row["two_runs_over_one"] > 1
