"""Downsampled ImageNet (issue 3): published format, published pixels, bounded memory, resume.

The reference for "published" is the code of github PatrykChrabaszcz/Imagenet32_Scripts, re-typed
below where a test needs it (resizer, image2numpy, load_databatch), not our own reader.
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import pickletools
import tracemalloc
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from conftest import RUN_RECORD, staging_of
from PIL import Image

from imgtools.demo_tree import make_imagenet_tree
from imgtools.downsample import DownsampleItem, downsample_dataset
from imgtools.errors import CorruptDataError, UserError
from imgtools.formats import detect_format, pickle_batches
from imgtools.formats.pickle import load_batch
from imgtools.formats.pickle_batches import batch_bounds
from imgtools.pipeline import engine
from imgtools.pipeline import report as report_module
from imgtools.pipeline.output import RUN_PREFIX
from imgtools.records import ClassInfo, DatasetInfo
from imgtools.transforms import square

WNIDS = ["n01440764", "n02102040", "n02979186"]
INFO = DatasetInfo("three", [ClassInfo(w, f"class {w}") for w in WNIDS])


# --------------------------------------------------------------------------- the published code


def published_resize_row(path: Path, size: int) -> np.ndarray:
    """image_resizer_imagent.py (open, convert non-RGB, BOX resize, save PNG) followed by
    image2numpy_imagenet_train.py (imread the PNG, r/g/b planes flattened and concatenated)."""
    im = Image.open(path)
    if im.mode != "RGB":
        im = im.convert(mode="RGB")
    im_resized = im.resize((size, size), Image.BOX)
    png = io.BytesIO()
    im_resized.save(png, "png")
    img = np.asarray(Image.open(io.BytesIO(png.getvalue())))
    r = img[:, :, 0].flatten()
    g = img[:, :, 1].flatten()
    b = img[:, :, 2].flatten()
    return np.array(list(r) + list(g) + list(b), dtype=np.uint8)


def unpickle(file):
    with open(file, "rb") as fo:
        dict = pickle.load(fo)  # noqa: A001 - verbatim from the published page
    return dict


def load_databatch(data_folder, idx, img_size="32x32"):
    """Verbatim from seeds/004 (the Imagenet32 page), except ``lasagne.utils.floatX(X_train)``
    became ``np.asarray(X_train, dtype=np.float32)`` (floatX casts to theano's floatX, float32)."""
    data_file = os.path.join(data_folder, "train_data_batch_")

    d = unpickle(data_file + str(idx))
    x = d["data"]
    y = d["labels"]
    mean_image = d["mean"]

    x = x / np.float32(255)
    mean_image = mean_image / np.float32(255)

    # Labels are indexed from 1, shift it so that indexes start at 0
    y = [i - 1 for i in y]
    data_size = x.shape[0]

    x -= mean_image
    if img_size == "32x32":
        x = np.dstack((x[:, :1024], x[:, 1024:2048], x[:, 2048:]))
        x = x.reshape((x.shape[0], 32, 32, 3)).transpose(0, 3, 1, 2)
    elif img_size == "64x64":
        x = np.dstack((x[:, :4096], x[:, 4096:8192], x[:, 8192:]))
        x = x.reshape((x.shape[0], 64, 64, 3)).transpose(0, 3, 1, 2)
    else:
        raise NotImplementedError

    # create mirrored images (optional)
    X_train = x[0:data_size, :, :, :]
    Y_train = y[0:data_size]
    X_train_flip = X_train[:, :, :, ::-1]
    Y_train_flip = Y_train
    X_train = np.concatenate((X_train, X_train_flip), axis=0)
    Y_train = np.concatenate((Y_train, Y_train_flip), axis=0)

    return dict(
        X_train=np.asarray(X_train, dtype=np.float32),
        Y_train=Y_train.astype("int32"),
        mean=mean_image)


# --------------------------------------------------------------------------- fixtures


def tree_items(root: Path) -> list[DownsampleItem]:
    """Items in plan order (class order, then file name), as the build planner lists them."""
    items = []
    for split in ("train", "val"):
        for label, wnid in enumerate(WNIDS):
            for path in sorted((root / split / wnid).iterdir()):
                items.append(DownsampleItem(str(path), split, label, wnid))
    return items


def shards_of(items: list, size: int = 8) -> list[list]:
    return [items[i:i + size] for i in range(0, len(items), size)]


def units_of(shards: list[list]) -> list[tuple[int, str]]:
    """The work units the engine makes of ``shards``: one per shard and split."""
    return sorted({(k, item.split) for k, shard in enumerate(shards) for item in shard})


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def output_hashes(out: Path) -> dict[str, str]:
    """The data files of an output (the sidecar and the run's own records aside)."""
    return {str(p.relative_to(out)): sha(p) for p in sorted(out.rglob("*")) if p.is_file()
            and p.name != "imgtools-dataset.json" and p.name not in RUN_RECORD}


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("tree")
    summary = make_imagenet_tree(root, layout="valprep", wnids=WNIDS, train_per_class=12,
                                 val_per_class=4, quirks=True, seed=3)
    return summary


@pytest.fixture(scope="module")
def built(tree, tmp_path_factory):
    out = tmp_path_factory.mktemp("out")
    summary = downsample_dataset(shards_of(tree_items(tree.root)), out, [32, 64, 8], info=INFO,
                                 seed=7, n_jobs=1, quiet=True)
    return out, summary


def read_all_train(folder: Path, batches: int = 10) -> tuple[np.ndarray, list[int]]:
    parts = [unpickle(folder / f"train_data_batch_{i}") for i in range(1, batches + 1)]
    return np.concatenate([p["data"] for p in parts]), [y for p in parts for y in p["labels"]]


def published_rows(tree, split: str, size: int) -> tuple[np.ndarray, list[int]]:
    rows, labels = [], []
    broken = set(tree.broken_paths.values())
    for item in tree_items(tree.root):
        if item.split == split and Path(item.src) not in broken:
            rows.append(published_resize_row(Path(item.src), size))
            labels.append(item.label + 1)
    return np.vstack(rows), labels


def pairs(rows: np.ndarray, labels: list[int]) -> Counter:
    return Counter((int(y), row.tobytes()) for y, row in zip(labels, rows, strict=True))


# --------------------------------------------------------------------------- format


def test_files_keys_dtypes_and_batch_split_rule(tree, built):
    out, summary = built
    n_train = tree.n_train_decodable
    assert summary["counts"] == {"train": n_train, "val": tree.n_val}
    for size in (8, 32, 64):
        folder = out / f"three_{size}x{size}"
        names = sorted(p.name for p in folder.iterdir() if p.name not in RUN_RECORD)
        assert names == sorted(["batches.meta", "imgtools-dataset.json", "val_data",
                                "SHA256SUMS", *(f"train_data_batch_{i}" for i in range(1, 11))])
        sizes = []
        for i in range(1, 11):
            d = unpickle(folder / f"train_data_batch_{i}")
            assert list(d) == ["data", "labels", "mean"]
            assert d["data"].dtype == np.uint8 and d["data"].shape[1] == 3 * size * size
            assert d["data"].flags.c_contiguous
            assert type(d["labels"]) is list and all(type(y) is int for y in d["labels"])
            assert all(1 <= y <= len(WNIDS) for y in d["labels"])
            assert d["mean"].dtype == np.float64 and d["mean"].shape == (3 * size * size,)
            sizes.append(len(d["labels"]))
        assert sizes == [n_train // 10] * 9 + [n_train - 9 * (n_train // 10)]
        val = unpickle(folder / "val_data")
        assert list(val) == ["data", "labels"]
        assert len(val["labels"]) == tree.n_val


def test_batch_bounds_match_published_rule():
    assert batch_bounds(1281167, 10)[0] == (0, 128116)
    assert batch_bounds(1281167, 10)[-1] == (9 * 128116, 1281167)
    assert [e - s for s, e in batch_bounds(7, 3)] == [2, 2, 3]


def test_mean_is_bit_identical_to_np_mean_and_same_in_every_file(built):
    out, _ = built
    for size in (8, 32, 64):
        folder = out / f"three_{size}x{size}"
        x, _ = read_all_train(folder)
        expected = np.mean(x, axis=0)
        for i in range(1, 11):
            assert unpickle(folder / f"train_data_batch_{i}")["mean"].tobytes() == \
                expected.tobytes()


def test_same_pixels_labels_and_mean_as_the_published_scripts(tree, built):
    out, _ = built
    for size in (8, 32, 64):
        folder = out / f"three_{size}x{size}"
        ours_x, ours_y = read_all_train(folder)
        ref_x, ref_y = published_rows(tree, "train", size)
        assert pairs(ours_x, ours_y) == pairs(ref_x, ref_y)
        assert np.mean(ref_x, axis=0).tobytes() == unpickle(
            folder / "train_data_batch_1")["mean"].tobytes()
        val = unpickle(folder / "val_data")
        ref_vx, ref_vy = published_rows(tree, "val", size)
        assert pairs(val["data"], val["labels"]) == pairs(ref_vx, ref_vy)


def test_published_load_databatch_reads_our_files(built):
    out, _ = built
    for size in (32, 64):
        folder = out / f"three_{size}x{size}"
        d = unpickle(folder / "train_data_batch_3")
        got = load_databatch(str(folder), 3, img_size=f"{size}x{size}")
        n = len(d["labels"])
        assert got["X_train"].shape == (2 * n, 3, size, size)
        assert got["X_train"].dtype == np.float32
        assert list(got["Y_train"][:n]) == [y - 1 for y in d["labels"]]
        # first image, red plane, top-left pixel: (x - mean) / 255 as the reader computes it
        expected = d["data"][0, 0] / np.float32(255) - d["mean"][0] / np.float32(255)
        assert got["X_train"][0, 0, 0, 0] == pytest.approx(expected, abs=1e-6)
        # channel-planar: the green plane starts at s*s
        np.testing.assert_allclose(
            got["X_train"][0, 1].reshape(-1),
            (d["data"][0, size * size:2 * size * size] / np.float32(255)
             - d["mean"][size * size:2 * size * size] / np.float32(255)), atol=1e-6)


def test_pickle_stream_names_numpy_1x_globals_and_loads_without_warnings(built):
    out, _ = built
    path = out / "three_32x32" / "train_data_batch_1"
    raw = path.read_bytes()
    ops = list(pickletools.genops(raw))
    assert ops[0][0].name == "PROTO" and ops[0][1] == 3
    globals_ = {arg for op, arg, _ in ops if op.name == "GLOBAL"}
    assert globals_ == {"numpy.core.multiarray _reconstruct", "numpy ndarray", "numpy dtype"}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        d = pickle.loads(raw)
    assert d["data"].shape[1] == 3072


def test_meta_and_sidecar_give_names_back(built):
    out, _ = built
    meta = unpickle(out / "three_32x32" / "batches.meta")
    assert meta["label_names"] == INFO.class_names
    assert meta["wnids"] == WNIDS
    assert meta["num_vis"] == 3072 and meta["label_base"] == 1
    d = unpickle(out / "three_32x32" / "val_data")
    assert {meta["wnids"][y - 1] for y in d["labels"]} == set(WNIDS)


# --------------------------------------------------------------------------- determinism, options


def test_same_seed_same_bytes_other_seed_other_order(tree, tmp_path, built):
    out, _ = built
    again = tmp_path / "again"
    downsample_dataset(shards_of(tree_items(tree.root), 5), again, [32], info=INFO, seed=7,
                       n_jobs=2, quiet=True)
    a, b = output_hashes(out / "three_32x32"), output_hashes(again / "three_32x32")
    assert a == b  # other shard size and 2 jobs: same bytes
    other = tmp_path / "other"
    downsample_dataset(shards_of(tree_items(tree.root)), other, [32], info=INFO, seed=8,
                       n_jobs=1, quiet=True)
    x7, y7 = read_all_train(out / "three_32x32")
    x8, y8 = read_all_train(other / "three_32x32")
    assert not np.array_equal(x7, x8)
    assert pairs(x7, y7) == pairs(x8, y8)
    assert sha(other / "three_32x32" / "val_data") == sha(out / "three_32x32" / "val_data")


def test_batches_option_and_npz_hold_the_same_arrays(tree, tmp_path):
    items = shards_of(tree_items(tree.root))
    pk, npz, npz2 = tmp_path / "pk", tmp_path / "npz", tmp_path / "npz2"
    downsample_dataset(items, pk, [16], info=INFO, seed=1, batches=3, n_jobs=1, quiet=True)
    downsample_dataset(items, npz, [16], info=INFO, seed=1, batches=3, fmt="npz", n_jobs=1,
                       quiet=True)
    downsample_dataset(items, npz2, [16], info=INFO, seed=1, batches=3, fmt="npz", n_jobs=1,
                       quiet=True)
    names = sorted(p.name for p in (npz / "three_16x16").iterdir() if p.name not in RUN_RECORD)
    assert names == ["SHA256SUMS", "batches.meta", "imgtools-dataset.json",
                     "train_data_batch_1.npz", "train_data_batch_2.npz",
                     "train_data_batch_3.npz", "val_data.npz"]
    for name in ("train_data_batch_1", "train_data_batch_3", "val_data"):
        d = unpickle(pk / "three_16x16" / name)
        with np.load(npz / "three_16x16" / f"{name}.npz", allow_pickle=False) as z:
            assert sorted(z.files) == sorted(d)
            np.testing.assert_array_equal(z["data"], d["data"])
            assert z["labels"].tolist() == d["labels"]
            if "mean" in d:
                assert z["mean"].tobytes() == d["mean"].tobytes()
    assert output_hashes(npz / "three_16x16") == output_hashes(npz2 / "three_16x16")


def test_crop_keeps_aspect_with_a_center_square(tree, tmp_path):
    photo = next(Path(i.src) for i in tree_items(tree.root)
                 if i.split == "val")  # a plain JPEG photo
    rows, _ = square.downsample_file(photo, [32], crop=True)
    im = Image.open(photo).convert("RGB")
    w, h = im.size
    side = min(w, h)
    box = ((w - side) // 2, (h - side) // 2, (w - side) // 2 + side, (h - side) // 2 + side)
    expected = np.asarray(im.crop(box).resize((32, 32), Image.BOX)).transpose(2, 0, 1).ravel()
    np.testing.assert_array_equal(rows[32], expected)
    assert not np.array_equal(rows[32], published_resize_row(photo, 32)) or w == h


def test_fast_mode_is_close_to_exact(tree):
    photos = [Path(i.src) for i in tree_items(tree.root) if i.split == "val"]
    for size in (8, 32):
        errs = []
        for p in photos:
            exact, _ = square.downsample_file(p, [size])
            fast, _ = square.downsample_file(p, [size], fast=True)
            errs.append(np.mean((exact[size].astype(float) - fast[size].astype(float)) ** 2))
        psnr = 10 * np.log10(255**2 / max(np.mean(errs), 1e-12))
        assert psnr > 30, f"--fast at {size}px: {psnr:.1f} dB"


# --------------------------------------------------------------------------- bad input, resume


def test_bad_files_are_skipped_and_listed_conversions_noted(tree, built):
    _, summary = built
    skipped = {Path(s["path"]): s["reason"] for s in summary["skipped"]}
    assert set(skipped) == set(tree.broken_paths.values())
    reasons = {kind: skipped[path] for kind, path in tree.broken_paths.items()}
    assert "truncated" in reasons["truncated"]
    assert "zero-byte" in reasons["zero_byte"]
    assert "not an image" in reasons["not_image"]
    repaired = {Path(r["path"]): r["what"] for r in summary["repaired"]}
    assert "CMYK->RGB" in repaired[tree.root / tree.quirks["cmyk"]]
    assert "L->RGB" in repaired[tree.root / tree.quirks["grayscale"]]
    assert "PNG" in repaired[tree.root / tree.quirks["png_named_jpeg"]]


def _no_tmp_files(root: Path) -> bool:
    return not [p for p in root.rglob(".tmp-*")]


def test_resume_after_a_kill_while_decoding(tree, tmp_path, monkeypatch, built):
    out = tmp_path / "out"
    shards = shards_of(tree_items(tree.root))
    real = engine.run_shard
    calls = []

    def dies_on_third(task):
        calls.append(task.shard_id)
        if len(calls) == 3:
            raise KeyboardInterrupt("simulated kill")
        return real(task)

    monkeypatch.setattr(engine, "run_shard", dies_on_third)
    with pytest.raises(KeyboardInterrupt):
        downsample_dataset(shards, out, [32, 64, 8], info=INFO, seed=7, n_jobs=1, quiet=True)
    assert not list(out.glob("three_*")) and _no_tmp_files(out)
    calls.clear()
    monkeypatch.setattr(engine, "run_shard", lambda task: calls.append(1) or real(task))
    downsample_dataset(shards, out, [32, 64, 8], info=INFO, seed=7, n_jobs=1, resume=True,
                       quiet=True)
    assert len(calls) == len(units_of(shards)) - 2  # the two finished ones were not redone
    ref_out, _ = built
    for size in (8, 32, 64):
        name = f"three_{size}x{size}"
        assert output_hashes(out / name) == output_hashes(ref_out / name)
    assert not list(out.glob(RUN_PREFIX + "*"))


def test_resume_after_a_kill_while_writing(tree, tmp_path, monkeypatch, built):
    out = tmp_path / "out"
    shards = shards_of(tree_items(tree.root))
    real = pickle_batches.write_batch
    written = []

    def dies_on_fourth(task):
        if len(written) == 3:
            raise KeyboardInterrupt("simulated kill")
        written.append(task.shard_id)
        return real(task)

    monkeypatch.setattr(pickle_batches, "write_batch", dies_on_fourth)
    with pytest.raises(KeyboardInterrupt):
        downsample_dataset(shards, out, [32], info=INFO, seed=7, n_jobs=1, quiet=True)
    assert not (out / "three_32x32").exists()  # nothing is published before the end
    files = sorted(staging_of(out / "three_32x32").glob("*_data*"))
    assert len(files) == 3 and _no_tmp_files(out)
    for f in files:  # what is there is complete
        assert len(unpickle(f)["labels"]) > 0
    with pytest.raises(UserError, match="different settings or input.*seed"):
        downsample_dataset(shards, out, [32], info=INFO, seed=99, n_jobs=1, resume=True,
                           quiet=True)
    monkeypatch.setattr(pickle_batches, "write_batch", real)
    downsample_dataset(shards, out, [32], info=INFO, seed=7, n_jobs=1, resume=True, quiet=True)
    ref_out, _ = built
    assert output_hashes(out / "three_32x32") == output_hashes(ref_out / "three_32x32")


def test_bad_arguments_are_user_errors(tree, tmp_path):
    shards = shards_of(tree_items(tree.root))
    for kwargs, words in (({"sizes": [0]}, "out of range"), ({"sizes": []}, "no --size"),
                          ({"sizes": [32], "fmt": "hdf5"}, "unknown"),
                          ({"sizes": [32], "batches": 0}, "at least 1")):
        with pytest.raises(UserError, match=words):
            downsample_dataset(shards, tmp_path, info=INFO, quiet=True, **kwargs)
    only_broken = [[DownsampleItem(str(p), "train", 0) for p in tree.broken_paths.values()]]
    with pytest.raises(UserError, match="every image failed"):
        downsample_dataset(only_broken, tmp_path / "b", [8], info=INFO, n_jobs=1, quiet=True,
                           batches=1)  # at most the train images (checked before decoding)


# --------------------------------------------------------------------------- memory


def test_peak_memory_is_about_one_batch_not_the_dataset(tmp_path, monkeypatch):
    """800 images at 64 px: 9.8 MB of rows. Holding the dataset (as the published scripts do)
    or even one batch of pixels would break the bound; streaming fixed-size chunks does not.
    The chunk sizes (4 MiB in production, a constant) are shrunk here so that they are small
    against this small dataset; everything else must not grow with the number of images."""
    monkeypatch.setattr(pickle_batches, "GATHER_CHUNK_BYTES", 64 * 1024)
    monkeypatch.setattr(pickle_batches, "MEAN_CHUNK_BYTES", 64 * 1024)
    rng = np.random.default_rng(0)
    src = tmp_path / "src"
    src.mkdir()
    items = []
    for i in range(800):
        pixels = rng.integers(0, 256, (36, 48, 3), dtype=np.uint8)
        path = src / f"img_{i:04d}.JPEG"
        Image.fromarray(pixels).save(path, quality=80)
        items.append(DownsampleItem(str(path), "train", i % 3))
    width, shard = 3 * 64 * 64, 16
    total = len(items) * width
    batch = (len(items) // 10) * width
    downsample_dataset(shards_of(items[:20], shard), tmp_path / "warm", [64], info=INFO,
                       n_jobs=1, quiet=True)  # imports and caches outside the measurement
    tracemalloc.start()
    try:
        downsample_dataset(shards_of(items, shard), tmp_path / "out", [64], info=INFO, n_jobs=1,
                           quiet=True)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    bound = shard * width + 4 * 64 * 1024 + 300_000
    assert bound < batch  # below one batch of pixels, let alone the dataset
    assert peak < bound, f"peak {peak} bytes, bound {bound}, dataset {total}"


# --------------------------------------------------------------------------- reader, CLI


def test_reader_yields_the_stored_pixels_with_names(built):
    out, _ = built
    folder = out / "three_32x32"
    fmt = detect_format(folder)
    assert fmt.name == "pickle"
    info = fmt.read_info(folder)
    assert info.wnids == WNIDS
    shards = fmt.input_shards(folder)
    assert [Path(s.path).name for s in shards][:2] == ["train_data_batch_1", "train_data_batch_2"]
    assert shards[-1].split == "val"
    d = unpickle(shards[0].path)
    records = list(fmt.read_shard(shards[0], info))
    assert [r.label for r in records] == [y - 1 for y in d["labels"]]
    assert records[0].wnid == WNIDS[records[0].label]
    pixels = np.asarray(Image.open(io.BytesIO(records[0].image)))
    np.testing.assert_array_equal(pixels.transpose(2, 0, 1).ravel(), d["data"][0])


def test_reader_without_sidecar_uses_the_imagenet_class_order(built, tmp_path):
    out, _ = built
    published = tmp_path / "Imagenet32_val"
    published.mkdir()
    with open(out / "three_32x32" / "val_data", "rb") as f:
        batch = pickle.load(f)
    # A published batch holds all 1000 classes; a subset's file alone (labels 1..3) is not
    # taken as ImageNet-1k any more (tests/formats/test_pickle_without_meta.py).
    batch["labels"] = [*batch["labels"][:-1], 1000]
    with open(published / "val_data", "wb") as f:
        pickle.dump(batch, f)
    fmt = detect_format(published)
    info = fmt.read_info(published)
    assert len(info.classes) == 1000 and info.classes[0].wnid == "n02119789"


def test_reader_refuses_code_and_names_damaged_files(tmp_path):
    evil = tmp_path / "train_data_batch_1"
    evil.write_bytes(pickle.dumps({"data": os.getcwd}))  # a global that is not numpy's
    with pytest.raises(CorruptDataError, match="refusing"):
        load_batch(evil)
    cut = tmp_path / "val_data"
    d = {"data": np.zeros((2, 12), np.uint8), "labels": [1, 2]}
    cut.write_bytes(pickle.dumps(d)[:-40])
    with pytest.raises(CorruptDataError, match="val_data"):
        load_batch(cut)


def test_build_command_makes_pickles(tree, tmp_path):
    from imgtools.cli import main

    recipe = tmp_path / "three.toml"
    recipe.write_text('name = "three"\nclasses = ["n01440764", "n02102040", "n02979186"]\n'
                      'pool = ["train", "val"]\ndefault_split = "source"\n')
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as e:
        main(["build", str(recipe), "--src", str(tree.root), "--size", "8", "--size", "16",
              "--format", "npz", "--batches", "2", "--out", str(out), "-j", "1", "--quiet"])
    assert e.value.code == 0
    for size in (8, 16):
        names = sorted(p.name for p in (out / f"three_{size}x{size}").iterdir())
        assert "train_data_batch_2.npz" in names and "build-info.json" in names
    with np.load(out / "three_8x8" / "val_data.npz") as z:
        assert z["data"].shape == (tree.n_val, 192)


def test_preview_writes_contact_sheet_and_histogram(built, tmp_path):
    inspect = pytest.importorskip("imgtools.commands.inspect")
    from click.testing import CliRunner

    out, _ = built
    dest = tmp_path / "preview"
    result = CliRunner().invoke(inspect.preview, [str(out / "three_32x32" / "train_data_batch_1"),
                                                  "--out", str(dest)])
    assert result.exit_code == 0, result.output
    pngs = sorted(dest.rglob("*.png"))
    assert len(pngs) >= 2
    for p in pngs:
        with Image.open(p) as im:
            assert im.format == "PNG"


# --------------------------------------------------------------------------- found in review


def _build_pickles(tree, out: Path, *sizes: int, **kw) -> dict:
    from imgtools.build import BuildOptions, build
    from imgtools.plan import make_plan
    from imgtools.recipes import load_recipe

    recipe = out.parent / "three.toml"
    recipe.write_text('name = "three"\nclasses = ["n01440764", "n02102040", "n02979186"]\n'
                      'pool = ["train", "val"]\ndefault_split = "source"\n')
    from imgtools.sources import open_source

    plan = make_plan(load_recipe(str(recipe)), open_source(tree.root), split_mode="source",
                     seed=0)
    return build(plan, BuildOptions(out=out, sizes=list(sizes), fmt="pickle", n_jobs=1,
                                    quiet=True, **kw), command="test")


def test_overwrite_with_bad_arguments_deletes_nothing(tree, tmp_path):
    _build_pickles(tree, tmp_path / "out", 8)
    before = output_hashes(tmp_path / "out" / "three_8x8")
    with pytest.raises(UserError, match="out of range"):
        _build_pickles(tree, tmp_path / "out", 8, 1000, overwrite=True)
    assert output_hashes(tmp_path / "out" / "three_8x8") == before


def test_no_state_folder_is_left_after_a_build(tree, tmp_path):
    _build_pickles(tree, tmp_path / "out", 8)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["three_8x8"]


def test_a_kill_while_writing_reports_leaves_a_resumable_build(tree, tmp_path, monkeypatch):
    class Killed(BaseException):
        pass

    real = report_module.atomic_write_text

    def dying(path, text):
        if Path(path).name == "build-info.json":
            raise Killed
        real(path, text)

    monkeypatch.setattr(report_module, "atomic_write_text", dying)
    with pytest.raises(Killed):
        _build_pickles(tree, tmp_path / "run", 8)
    monkeypatch.setattr(report_module, "atomic_write_text", real)
    (staging_of(tmp_path / "run" / "three_8x8") / ".tmp-1-1-train_data_batch_3").write_bytes(
        b"partial")
    _build_pickles(tree, tmp_path / "run", 8, resume=True)
    _build_pickles(tree, tmp_path / "ref", 8)
    # output_hashes leaves out build-info.json (timings differ) and the manifest (it lists
    # the reports' sizes); both are there
    run, ref = (output_hashes(tmp_path / d / "three_8x8") for d in ("run", "ref"))
    for d in ("run", "ref"):
        assert (tmp_path / d / "three_8x8" / "build-info.json").is_file()
    assert run == ref


def test_every_image_failing_names_them(tmp_path):
    from imgtools.demo_tree import make_imagenet_tree

    src = make_imagenet_tree(tmp_path / "imagenet", "valprep", wnids=WNIDS, train_per_class=2,
                             val_per_class=1, quirks=False).src
    for p in src.rglob("*.JPEG"):
        p.write_bytes(b"")
    tree_like = type("T", (), {"root": src})
    with pytest.raises(UserError, match="empty") as err:
        # --batches at most the 6 train images, or that is the error before any decoding
        _build_pickles(tree_like, tmp_path / "out", 8, format_options={"batches": 1})
    assert "every image failed" in str(err.value.message())
    assert not any((tmp_path / "out").rglob("*.rows"))  # no row files left taking disk space


def test_the_plan_walk_keeps_no_items(tmp_path):
    """The item list is walked as a stream: 200,000 items cost nothing that stays (a Python
    object each would be about 275 bytes: 55 MB here). Labels are not collected either: each
    work shard writes its own beside its rows."""
    import tracemalloc

    from imgtools.downsample import items_digest

    def shards():
        for k in range(800):
            yield [DownsampleItem(f"/data/train/n{k:08d}/img_{i}.JPEG", "train", k % 10, None)
                   for i in range(250)]

    tracemalloc.start()
    try:
        digest = items_digest(shards)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(digest) == 64
    assert peak < 2_000_000, peak


def test_a_shard_function_gives_the_same_files_as_lists(tree, tmp_path):
    items = tree_items(tree.root)
    downsample_dataset(shards_of(items), tmp_path / "a", [8], info=INFO, seed=7, n_jobs=1,
                       quiet=True)
    calls = []

    def source():
        calls.append(1)
        return iter(shards_of(items))

    downsample_dataset(source, tmp_path / "b", [8], info=INFO, seed=7, n_jobs=2, quiet=True)
    assert len(calls) == 3  # the fingerprint's digest, the inputs' identity, the work units
    assert output_hashes(tmp_path / "a") == output_hashes(tmp_path / "b")
