"""Our outputs read by the libraries users run, and their outputs read by us; plus the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import FOLDER_WNIDS, make_folder, tree

from imgtools.convert import convert


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return make_folder(tmp_path_factory.mktemp("src") / "tiny")


def _folder_labels(folder: Path) -> dict[str, int | None]:
    """file name -> label (index into FOLDER_WNIDS; None for unsup) from the folder layout."""
    out = {}
    for path in folder.rglob("*.JPEG"):
        wnid = path.parent.name
        out[path.name] = FOLDER_WNIDS.index(wnid) if wnid in FOLDER_WNIDS else None
    return out


def test_datasets_load_dataset_reads_our_parquet(folder, tmp_path):
    import datasets

    convert(folder, tmp_path / "p", "parquet", quiet=True, n_jobs=1)
    files = {"train": str(tmp_path / "p" / "train-*.parquet"),
             "validation": str(tmp_path / "p" / "val-*.parquet"),
             "unsup": str(tmp_path / "p" / "unsup-*.parquet")}
    ds = datasets.load_dataset("parquet", data_files=files, cache_dir=str(tmp_path / "cache"))
    features = ds["train"].features
    assert isinstance(features["image"], datasets.Image)
    assert isinstance(features["label"], datasets.ClassLabel)
    assert features["label"].names == [f"class {w}" for w in FOLDER_WNIDS]
    labels = _folder_labels(folder)
    originals = {p.name: p.read_bytes() for p in folder.rglob("*.JPEG")}
    assert ds.num_rows == {"train": 13, "validation": 6, "unsup": 3}
    for split in ds:
        raw = ds[split].cast_column("image", datasets.Image(decode=False))
        for row in raw:
            name = row["image"]["path"]
            assert row["image"]["bytes"] == originals[name]
            assert row["label"] == (labels[name] if labels[name] is not None else -1)
    first = ds["train"][1]  # n01440764_train0.JPEG, 40x32 (index 0 is the PNG)
    assert first["image"].size == (40, 32) and first["label"] == 0  # decoded by datasets


def test_webdataset_reads_our_shards(folder, tmp_path):
    import webdataset as wds

    convert(folder, tmp_path / "w", "webdataset", quiet=True, shard_records=4, n_jobs=1)
    urls = sorted(str(p) for p in (tmp_path / "w").glob("data/train-*.tar"))
    labels = _folder_labels(folder)
    seen = []
    for sample in wds.WebDataset(urls, shardshuffle=False, empty_check=False).decode("pil"):
        image = sample.get("jpg") or sample.get("png")
        meta = sample["json"]
        assert "." not in sample["__key__"]
        assert sample["cls"] == labels[meta["filename"]] == meta["label"]
        assert image.size[0] >= 20
        seen.append(meta["filename"])
    assert sorted(seen) == sorted(n for n, lab in labels.items() if lab is not None
                                  and (folder / "train" / FOLDER_WNIDS[lab] / n).exists())


def test_tfrecord_package_reads_our_tfrecords_with_index(folder, tmp_path):
    from tfrecord.reader import tfrecord_loader

    convert(folder, tmp_path / "t", "tfrecord", quiet=True, n_jobs=1)
    path = tmp_path / "t" / "train.tfrecord-00000-of-00001"
    description = {"image": "byte", "label": "int", "file_name": "byte"}
    rows = list(tfrecord_loader(str(path), str(path) + ".index", description, shard=(0, 1)))
    originals = {p.name: p.read_bytes() for p in folder.rglob("*.JPEG")}
    labels = _folder_labels(folder)
    assert len(rows) == 13
    for row in rows:
        name = bytes(row["file_name"]).decode()
        assert bytes(row["image"]) == originals[name]
        assert int(row["label"][0]) == labels[name]
    second_half = list(tfrecord_loader(str(path), str(path) + ".index", description,
                                       shard=(1, 2)))
    assert 0 < len(second_half) < 13  # the index really splits the file


_TF_SCRIPT = """
import json, sys, tensorflow as tf
compression, files = sys.argv[1] or None, sys.argv[2:]
labels = []
for raw in tf.data.TFRecordDataset(files, compression_type=compression):
    ex = tf.train.Example.FromString(raw.numpy())
    img = tf.io.decode_image(ex.features.feature["image"].bytes_list.value[0])
    assert img.shape[-1] in (1, 3)
    labels.append(int(ex.features.feature["label"].int64_list.value[0]))
print(json.dumps(labels))
"""


def clients_python(module: str) -> str:
    """A Python that can import ``module``: IMGTOOLS_CLIENTS_PYTHON (CI installs TensorFlow,
    torch and wids there, apart from the project's process) or this one; skip if neither."""
    python = os.environ.get("IMGTOOLS_CLIENTS_PYTHON", sys.executable)
    if subprocess.run([python, "-c", f"import {module}"], capture_output=True).returncode:
        pytest.skip(f"{module} is not installed (set IMGTOOLS_CLIENTS_PYTHON to a Python that "
                    "has it; .ci/run does)")
    return python


def _tf_labels(python: str, files: list[str], compression: str = "") -> subprocess.CompletedProcess:
    return subprocess.run([python, "-c", _TF_SCRIPT, compression, *files], capture_output=True,
                          text=True)


@pytest.mark.parametrize("compression", ["", "gzip"])
def test_tensorflow_reads_our_tfrecords(folder, tmp_path, compression):
    """TensorFlow's own reader, in a subprocess (its example_pb2 clashes with tfrecord's):
    every record, its label, and a flipped byte reported as data loss."""
    python = clients_python("tensorflow")
    opts = {"compression": "gzip"} if compression else {}
    convert(folder, tmp_path / "t", "tfrecord", quiet=True, n_jobs=1, **opts)
    files = sorted(str(p) for p in (tmp_path / "t").glob("train.tfrecord-*"))
    files = [f for f in files if not f.endswith(".index")]
    out = _tf_labels(python, files, compression.upper())
    assert out.returncode == 0, out.stderr
    ours = [r.label for f in files for r in read_tfrecord_labels(f)]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == ours
    if not compression:
        data = bytearray(Path(files[0]).read_bytes())
        data[40] ^= 0xFF
        Path(files[0]).write_bytes(bytes(data))
        bad = _tf_labels(python, files[:1])
        assert bad.returncode != 0 and ("corrupted record" in bad.stderr
                                        or "DataLoss" in bad.stderr), bad.stderr[-2000:]


def read_tfrecord_labels(path: str):
    from imgtools.formats import get_format
    from imgtools.formats.base import InputShard

    fmt = get_format("tfrecord")
    root = Path(path).parent
    return list(fmt.read_shard(InputShard(path, "train"), fmt.read_info(root)))


_WIDS_SCRIPT = """
import json, sys, wids
ds = wids.ShardListDataset(sys.argv[1])
sample = ds[5]  # wids decodes: .json to a dict, images to PIL
print(json.dumps({"n": len(ds), "keys": sorted(sample), "json": sample[".json"],
                  "size": list(sample[".jpg"].size)}))
"""


def test_wids_reads_our_index(folder, tmp_path):
    """wids (it imports torch, so it runs in the clients' Python) opens our shard index."""
    python = clients_python("wids")
    convert(folder, tmp_path / "w", "webdataset", quiet=True, shard_records=4, n_jobs=1)
    out = subprocess.run([python, "-c", _WIDS_SCRIPT, str(tmp_path / "w" / "train.wids.json")],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["n"] == 13
    assert {".jpg", ".cls", ".json"} <= set(got["keys"])
    assert got["json"]["split"] == "train" and min(got["size"]) > 0


# ------------------------------------------------------------------- their files, our reader


def test_we_read_flowers_tfrecords_written_by_the_tfrecord_package(folder, tmp_path):
    from tfrecord.writer import TFRecordWriter

    jpegs = sorted(folder.rglob("*_train*.JPEG"))
    for split, chunk in (("train", jpegs[:8]), ("val", jpegs[8:])):
        d = tmp_path / "tfrecords-jpeg-224x224" / split
        d.mkdir(parents=True)
        writer = TFRecordWriter(str(d / f"00-224x224-{len(chunk)}.tfrec"))
        for i, path in enumerate(chunk):
            writer.write({"image": (path.read_bytes(), "byte"), "class": (i % 3 + 5, "int"),
                          "id": (f"id{i}{split}".encode(), "byte")})
        writer.close()
    summary = convert(tmp_path / "tfrecords-jpeg-224x224", tmp_path / "wds", "webdataset",
                      quiet=True, n_jobs=1)
    assert summary["splits"] == {"train": 8, "val": len(jpegs) - 8}
    info = json.loads((tmp_path / "wds" / "imgtools-dataset.json").read_text())
    assert len(info["classes"]) == 8  # labels 0..7 as stored (5..7 seen)
    convert(tmp_path / "wds", tmp_path / "f", "folder", quiet=True, n_jobs=1)
    got = tree(tmp_path / "f")
    assert sorted(got.values()) == sorted(p.read_bytes() for p in jpegs)
    assert "train/005/id0train.jpg" in got


def test_we_read_tars_written_by_webdataset_tarwriter(folder, tmp_path):
    import webdataset as wds

    jpegs = sorted(folder.rglob("*_train*.JPEG"))
    (tmp_path / "in").mkdir()
    with wds.TarWriter(str(tmp_path / "in" / "shard-000000.tar")) as sink:  # default mtime
        for i, path in enumerate(jpegs):
            sink.write({"__key__": f"sample{i:04d}", "jpg": path.read_bytes(), "cls": i % 2})
    convert(tmp_path / "in", tmp_path / "f", "folder", quiet=True)
    got = tree(tmp_path / "f")
    assert got["train/000/sample0000.jpg"] == jpegs[0].read_bytes()
    assert got["train/001/sample0001.jpg"] == jpegs[1].read_bytes()
    assert len(got) == len(jpegs)


def test_we_read_parquet_written_by_datasets(folder, tmp_path):
    import datasets

    jpegs = sorted(folder.rglob("*_train*.JPEG"))
    features = datasets.Features({"image": datasets.Image(),
                                  "label": datasets.ClassLabel(names=["cat", "dog"])})
    ds = datasets.Dataset.from_dict(
        {"image": [{"bytes": p.read_bytes(), "path": p.name} for p in jpegs],
         "label": [i % 2 for i in range(len(jpegs))]}, features=features)
    (tmp_path / "hf" / "data").mkdir(parents=True)
    ds.to_parquet(str(tmp_path / "hf" / "data" / "validation-00000-of-00001.parquet"))
    convert(tmp_path / "hf", tmp_path / "f", "folder", quiet=True)
    info = json.loads((tmp_path / "f" / "imgtools-dataset.json").read_text())
    assert [c["name"] for c in info["classes"]] == ["cat", "dog"]
    got = tree(tmp_path / "f")
    assert got[f"val/000/{jpegs[0].name}"] == jpegs[0].read_bytes()
    assert got[f"val/001/{jpegs[1].name}"] == jpegs[1].read_bytes()


# ------------------------------------------------------------------------------------- CLI


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "imgtools.cli", *args], capture_output=True,
                          text=True)


def test_cli_direction_names_json_and_exit_codes(folder, tmp_path):
    out = _cli("convert", "folder-to-parquet", str(folder), str(tmp_path / "p"), "--json",
               "-j", "1")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["splits"] == {"train": 13, "val": 6, "unsup": 3}
    out = _cli("convert", str(tmp_path / "p"), str(tmp_path / "w"), "--to", "wds", "-q")
    assert out.returncode == 0 and out.stdout == ""
    assert (tmp_path / "w" / "data" / "train-00000-of-00001.tar").is_file()
    out = _cli("convert", str(tmp_path / "p"), str(tmp_path / "x"))
    assert out.returncode == 2 and "--to" in out.stderr
    out = _cli("convert", str(tmp_path / "p"), str(tmp_path / "w"), "--to", "parquet")
    assert out.returncode == 2 and "not empty" in out.stderr
    out = _cli("convert", str(tmp_path / "p"), str(tmp_path / "y"), "--to", "avro")
    assert out.returncode == 2 and "unknown format" in out.stderr
    out = _cli("convert", str(tmp_path / "nowhere"), str(tmp_path / "y"), "--to", "parquet")
    assert out.returncode == 2 and "no such file" in out.stderr
    bad = tmp_path / "w" / "data" / "val-00000-of-00001.tar"
    bad.write_bytes(bad.read_bytes()[:700])
    out = _cli("convert", str(tmp_path / "w"), str(tmp_path / "z"), "--to", "folder")
    assert out.returncode == 2 and "val-00000-of-00001.tar" in out.stderr and "offset" in out.stderr


def test_cli_help_explains_formats():
    out = _cli("convert", "--help")
    assert out.returncode == 0
    for word in ("--to", "--schema", "--shard-bytes", "--resume", "folder-to-tfrecord"):
        assert word in out.stdout


def test_our_tar_bytes_equal_webdatasets_own_tarwriter(folder, tmp_path):
    """The shard writer builds headers itself for speed; it must stay TarWriter's format."""
    import webdataset as wds

    from imgtools.formats import get_format

    convert(folder, tmp_path / "w", "webdataset", quiet=True, n_jobs=1)
    fmt = get_format("folder")
    info = fmt.read_info(folder)
    with open(tmp_path / "theirs.tar", "wb") as f, \
            wds.TarWriter(f, encoder=False, mtime=0) as sink:
        for shard in fmt.input_shards(folder):
            if shard.split != "train":
                continue
            for r in fmt.read_shard(shard, info):
                ext = "png" if r.image.startswith(b"\x89PNG") else "jpg"
                meta = {"label": r.label, "class_name": r.class_name, "wnid": r.wnid,
                        "split": r.split, "filename": r.filename}
                sink.write({"__key__": r.key, ext: r.image, "cls": str(r.label).encode(),
                            "json": json.dumps(meta, sort_keys=True).encode()})
    assert (tmp_path / "w" / "data" / "train-00000-of-00001.tar").read_bytes() == \
        (tmp_path / "theirs.tar").read_bytes()
