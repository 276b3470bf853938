"""One Imagewang build in every format, read by the readers people use: for every labelled
image, the integer each reader returns is the index of the image's wnid in sorted wnid order,
and the class name that reader gives for that integer is the image's class.

Imagewang is the hard case: its recipe lists Imagenette before Imagewoof (not wnid order), and
its val holds only Imagewoof's 10 classes, so ImageFolder-style readers number val differently
unless given the class list (README "Labels"). The truth comes from the plan (the source tree),
not from any output. Readers that must not share our process (TensorFlow, torch, fastai) run in
``IMGTOOLS_CLIENTS_PYTHON`` (see .ci/run) and skip when it lacks them.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO

from imgtools.build import BuildOptions, build
from imgtools.manifests import imagenet_names
from imgtools.plan import make_plan
from imgtools.recipes import load_recipe
from imgtools.sources import open_source

FORMATS = ("folder", "parquet", "webdataset", "tfrecord")


@pytest.fixture(scope="module")
def wang(kaggle_tree, tmp_path_factory) -> dict:
    """Imagewang at 64 px in every format from one plan, and the truth:
    ``(split, file name) -> wnid`` for every labelled image, and the sorted wnids."""
    out = tmp_path_factory.mktemp("wang")
    plan = make_plan(load_recipe("imagewang"), open_source(kaggle_tree.src),
                     split_mode="random", seed=0)
    roots, skipped = {}, set()
    for fmt in FORMATS:
        report = build(plan, BuildOptions(out=out, sizes=[64], fmt=fmt, quiet=True, n_jobs=1),
                       command="test")
        roots[fmt] = Path(report["outputs"][0])
        skipped |= {s["path"] for s in report["skipped"]}  # the tree's broken files
    truth = {(split, it.out_name): it.wnid for split in ("train", "val")
             for it in plan.items[split] if it.src not in skipped}
    wnids = sorted({c.wnid for c in load_recipe("imagewang").classes})
    recipe_order = [c.wnid for c in load_recipe("imagewang").classes]
    assert recipe_order != wnids, "the test needs a recipe whose order is not sorted"
    return {"roots": roots, "truth": truth, "wnids": wnids, "names": imagenet_names()}


def _check(wang: dict, seen: list[tuple[str, str, int, str]], reader: str) -> None:
    """``seen``: (split, file name, integer, class as that reader names it) for every
    labelled image a reader returned. Every image once, each integer = sorted-wnid index, each
    name = the image's class (a wnid or its ImageNet name)."""
    truth, wnids, names = wang["truth"], wang["wnids"], wang["names"]
    got = {(split, name): (label, cls) for split, name, label, cls in seen}
    assert len(got) == len(seen), f"{reader}: an image came twice"
    assert set(got) == set(truth), f"{reader}: not the images of the build"
    for key, (label, cls) in got.items():
        wnid = truth[key]
        assert label == wnids.index(wnid), f"{reader}: {key} has label {label}, not " \
                                           f"{wnids.index(wnid)} ({wnid})"
        assert cls in (wnid, names[wnid]), f"{reader}: {key} is {wnid}, named {cls!r}"


def run_client(module: str, script: str, *args: str):
    """Run ``script`` in IMGTOOLS_CLIENTS_PYTHON (or this Python); it prints one JSON line
    last. Skips when that Python lacks ``module`` (one interpreter start: importing torch or
    TensorFlow costs seconds, so there is no separate probe)."""
    python = os.environ.get("IMGTOOLS_CLIENTS_PYTHON", sys.executable)
    proc = subprocess.run([python, "-W", "ignore", "-c", script, *map(str, args)],
                          capture_output=True, text=True)
    top = module.split(".")[0]
    if proc.returncode and f"No module named '{top}" in proc.stderr:
        pytest.skip(f"{module} is not installed (set IMGTOOLS_CLIENTS_PYTHON to a Python that "
                    "has it; .ci/run does)")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------ metadata says it


def test_every_output_states_the_label_order(wang):
    for fmt, root in wang["roots"].items():
        for meta in ("imgtools-dataset.json", "build-info.json"):
            obj = json.loads((root / meta).read_text())
            assert obj["label_order"].startswith("sorted wnid"), (fmt, meta)
            assert [c["wnid"] for c in obj["classes"]] == wang["wnids"], (fmt, meta)
    folder = wang["roots"]["folder"]
    assert (folder / "classes.txt").read_text().split() == wang["wnids"]
    assert json.loads((folder / "class_to_idx.json").read_text()) == {
        w: i for i, w in enumerate(wang["wnids"])}


# ------------------------------------------------------------------ in-process readers


def test_hf_imagefolder_on_the_folder_output(wang, tmp_path):
    datasets = pytest.importorskip("datasets")
    ds = datasets.load_dataset("imagefolder", data_dir=str(wang["roots"]["folder"]),
                               cache_dir=str(tmp_path / "cache"))
    assert set(ds) == {"train", "validation"}  # unsup/ is no split name: left out
    seen = []
    for hf_split, split in (("train", "train"), ("validation", "val")):
        names = ds[hf_split].features["label"].names
        raw = ds[hf_split].cast_column("image", datasets.Image(decode=False))
        seen += [(split, Path(row["image"]["path"]).name, row["label"], names[row["label"]])
                 for row in raw]
    _check(wang, seen, "HF imagefolder")


def test_our_parquet_through_datasets(wang, tmp_path):
    datasets = pytest.importorskip("datasets")
    root = wang["roots"]["parquet"]
    ds = datasets.load_dataset("parquet", data_files={
        s: str(root / f"{s}-*.parquet") for s in ("train", "val")},
        cache_dir=str(tmp_path / "cache"))
    seen = []
    for split in ("train", "val"):
        names = ds[split].features["label"].names
        raw = ds[split].cast_column("image", datasets.Image(decode=False))
        seen += [(split, row["image"]["path"], row["label"], names[row["label"]])
                 for row in raw]
    _check(wang, seen, "Parquet via datasets")


def test_our_tars_through_webdataset(wang):
    import webdataset as wds

    root = wang["roots"]["webdataset"]
    seen = []
    for split in ("train", "val"):
        urls = sorted(str(p) for p in root.rglob(f"{split}-*.tar"))
        for sample in wds.WebDataset(urls, shardshuffle=False, empty_check=False):
            meta = json.loads(sample["json"])
            label = int(sample["cls"])
            assert meta["wnid"] == wang["wnids"][label]
            seen.append((split, meta["filename"], label, meta["class_name"]))
    _check(wang, seen, "webdataset")


def test_our_tars_through_hf_webdataset_loader(wang, tmp_path):
    """HF's own ``load_dataset('webdataset', data_dir=...)``, as a user calls it, on the
    build's folder; class names from the features when it declares a ClassLabel, else from
    the sidecar."""
    datasets = pytest.importorskip("datasets")
    root = wang["roots"]["webdataset"]
    ds = datasets.load_dataset("webdataset", data_dir=str(root),
                               cache_dir=str(tmp_path / "cache"))
    sidecar = [c["name"] for c in json.loads((root / "imgtools-dataset.json").read_text())
               ["classes"]]
    seen = []
    labelled = [(h, {"validation": "val"}.get(h, h)) for h in ds if h != "unsup"]
    assert sorted(split for _h, split in labelled) == ["train", "val"]
    for hf_split, split in labelled:
        feature = ds[hf_split].features["cls"]
        names = feature.names if isinstance(feature, datasets.ClassLabel) else sidecar
        for row in ds[hf_split]:
            meta = row["json"] if isinstance(row["json"], dict) else json.loads(row["json"])
            seen.append((split, meta["filename"], int(row["cls"]), names[int(row["cls"])]))
    _check(wang, seen, "HF webdataset loader")


# ------------------------------------------------------------------ clients' Python

_TF_SCRIPT = """
import json, sys
import tensorflow as tf
feats = {"label": tf.io.FixedLenFeature([], tf.int64),
         "file_name": tf.io.FixedLenFeature([], tf.string)}
out = []
for split, files in json.loads(sys.argv[1]).items():
    for raw in tf.data.TFRecordDataset(files):
        ex = tf.io.parse_single_example(raw, feats)
        out.append([split, ex["file_name"].numpy().decode(), int(ex["label"])])
print(json.dumps(out))
"""


def test_our_tfrecords_through_tensorflow(wang):
    """TensorFlow gives integers; the names are the sidecar's, which the files point to."""
    root = wang["roots"]["tfrecord"]
    files = {s: sorted(str(p) for p in root.glob(f"{s}.tfrecord-*") if p.suffix != ".index")
             for s in ("train", "val")}
    classes = json.loads((root / "imgtools-dataset.json").read_text())["classes"]
    rows = run_client("tensorflow", _TF_SCRIPT, json.dumps(files))
    _check(wang, [(s, n, lab, classes[lab]["wnid"]) for s, n, lab in rows], "TensorFlow")


_FASTAI_SCRIPT = """
import json, sys
from pathlib import Path
from fastai.vision.all import ImageDataLoaders, Resize
root = Path(sys.argv[1])
dls = ImageDataLoaders.from_csv(root, sys.argv[2], valid_col="is_valid", item_tfms=Resize(32),
                                bs=4, num_workers=0, device="cpu")
vocab = list(dls.vocab)
out = []
for split, dset in (("train", dls.train_ds), ("val", dls.valid_ds)):
    for i in range(len(dset)):
        path = Path(dset.items.iloc[i, 0])
        label = int(dset.tls[1][i])
        out.append([split, path.name, label, vocab[label]])
print(json.dumps(out))
"""


def test_fastai_from_the_csv(wang):
    """fastai's own ``ImageDataLoaders.from_csv`` on the CSV beside the folders (its default
    columns: file name first, label second, ``is_valid``)."""
    rows = run_client("fastai", _FASTAI_SCRIPT, wang["roots"]["folder"], "noisy_imagewang.csv")
    _check(wang, [tuple(r) for r in rows], "fastai")


def readme_snippet() -> str:
    """The README's torchvision snippet, run as printed (its two example lines dropped)."""
    text = (REPO / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    (snippet,) = [b for b in blocks if "class FixedClassesFolder" in b]
    return "\n".join(line for line in snippet.splitlines()
                     if not line.startswith(("train = ", "val = ")))


_TORCHVISION_CHECK = """
import json, sys
from torchvision.datasets import ImageFolder
root = sys.argv[1]
out = {"snippet": [], "plain": {}}
for split in ("train", "val"):
    ds = FixedClassesFolder(f"{root}/{split}")
    out["snippet"] += [[split, path.rsplit("/", 1)[1], target, ds.classes[target]]
                       for path, target in ds.samples]
    out["plain"][split] = ImageFolder(f"{root}/{split}").class_to_idx
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def torchvision_read(wang) -> dict:
    """torchvision's ImageFolder on train and val, with the README's snippet and without."""
    return run_client("torchvision", readme_snippet() + _TORCHVISION_CHECK,
                      wang["roots"]["folder"])


def test_torchvision_imagefolder_with_the_readme_snippet(wang, torchvision_read):
    _check(wang, [tuple(r) for r in torchvision_read["snippet"]],
           "torchvision ImageFolder + README snippet")


def test_plain_imagefolder_disagrees_between_splits(torchvision_read):
    """Why the snippet exists: without it, ``ImageFolder`` numbers val's 10 folders 0-9."""
    got = torchvision_read["plain"]
    shared = set(got["train"]) & set(got["val"])
    assert shared and any(got["train"][w] != got["val"][w] for w in shared)
