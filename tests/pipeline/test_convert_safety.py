"""``imgtools convert`` on inputs that once lost, misplaced or deleted data (found in review).
Nothing may be dropped silently, written outside the output, or read as complete when a run
did not finish."""

from __future__ import annotations

import io
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import (
    RUN_RECORD,
    fail_webdataset_write,
    make_folder,
    staging_of,
    tree,
    tree_digest,
)
from PIL import Image

from imgtools.convert import convert
from imgtools.errors import UserError
from imgtools.formats import detect_format
from imgtools.formats.folder import CLASS_FILES
from imgtools.records import ClassInfo, DatasetInfo, plain_filename


def _jpeg(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (24, 32, 3), dtype=np.uint8)).save(buf, "JPEG")
    return buf.getvalue()


def _write_tfrecords(folder: Path, shards: dict[str, list[dict]]) -> Path:
    """TFRecord shards written by the tfrecord package (the reference writer), with a class
    list sidecar; each record: {"image": bytes, "label": int, optional "filename": str}."""
    from tfrecord.writer import TFRecordWriter

    folder.mkdir(parents=True)
    for name, records in shards.items():
        writer = TFRecordWriter(str(folder / name))
        for r in records:
            datum = {"image": (r["image"], "byte"), "label": (r["label"], "int")}
            if "filename" in r:
                datum["file_name"] = (r["filename"].encode(), "byte")  # the TFDS key
            writer.write(datum)
        writer.close()
    DatasetInfo("t", [ClassInfo("n01440764", "tench"), ClassInfo("n02102040", "springer")]
                ).save(folder)
    return folder


def test_plain_filename_keeps_only_the_last_component():
    assert plain_filename("train/n01440764/x.JPEG") == "x.JPEG"
    assert plain_filename("../../escaped.jpg") == "escaped.jpg"
    assert plain_filename("C:\\photos\\a.jpg") == "a.jpg"
    assert plain_filename("..") == plain_filename("a/") == plain_filename(None) == ""


def test_tfrecords_without_names_keep_every_record(tmp_path):
    """TFDS-style shards share a prefix up to the first dot: names made from it collided and
    the folder kept half of the images while reporting all."""
    shards = {f"imagenette-train.tfrecord-0000{i}-of-00002": [
        {"image": _jpeg(10 * i + j), "label": j % 2} for j in range(3)] for i in range(2)}
    src = _write_tfrecords(tmp_path / "tfds", shards)
    summary = convert(src, tmp_path / "out", "folder", quiet=True, n_jobs=1)
    files = list((tmp_path / "out").rglob("*.jpg"))
    assert summary["records"] == len(files) == 6


def test_stored_names_cannot_write_outside_the_output(tmp_path):
    names = ["../../escaped.jpg", str(tmp_path / "abs.jpg"), "train/n01440764/sub.JPEG"]
    src = _write_tfrecords(tmp_path / "in", {"train.tfrecord-00000-of-00001": [
        {"image": _jpeg(i), "label": 0, "filename": n} for i, n in enumerate(names)]})
    convert(src, tmp_path / "out", "folder", quiet=True, n_jobs=1)
    written = sorted(p.relative_to(tmp_path / "out").as_posix()
                     for p in (tmp_path / "out").rglob("*") if p.is_file())
    assert [w for w in written if not w.startswith("imgtools")
            and w not in RUN_RECORD | {"SHA256SUMS", *CLASS_FILES}] == [
        "train/n01440764/abs.jpg", "train/n01440764/escaped.jpg", "train/n01440764/sub.JPEG"]
    assert not (tmp_path / "abs.jpg").exists()


def test_two_records_with_one_name_are_an_error_not_one_file(tmp_path):
    src = _write_tfrecords(tmp_path / "in", {"train.tfrecord-00000-of-00001": [
        {"image": _jpeg(i), "label": 0, "filename": "same.jpg"} for i in range(2)]})
    with pytest.raises(UserError, match="same.jpg") as err:
        convert(src, tmp_path / "out", "folder", quiet=True, n_jobs=1)
    assert "webdataset" in err.value.fix


@pytest.mark.parametrize("images", [
    pytest.param(lambda: [_jpeg(0), _jpeg(0)], id="the same bytes"),
    pytest.param(lambda: [_jpeg(0)[:300], _jpeg(0)], id="one image the start of the other"),
])
def test_two_records_one_file_is_an_error_even_when_their_bytes_agree(tmp_path, images):
    """Records whose bytes the writer cannot tell from a resumed shard's own file (the same
    bytes; a record beginning with another's) still may not become one file silently: the
    folder format counts files against records before the output is published."""
    src = _write_tfrecords(tmp_path / "in", {
        f"train.tfrecord-0000{i}-of-00002": [{"image": image, "label": 0, "filename": "x.jpg"}]
        for i, image in enumerate(images())})
    with pytest.raises(UserError, match="1 image files for 2 records") as err:
        convert(src, tmp_path / "out", "folder", quiet=True, n_jobs=1)
    assert "webdataset" in err.value.fix
    assert not (tmp_path / "out").exists()


def test_an_image_cut_short_by_a_kill_is_written_again_on_resume(tmp_path, monkeypatch):
    """A kill in the middle of an image leaves its first bytes in the staging folder; the
    resumed run writes it whole and ends as an uninterrupted run does."""
    src = make_folder(tmp_path / "src", 3)
    convert(src, tmp_path / "whole", "folder", quiet=True, n_jobs=1)
    real_write, writes = os.write, []

    def killed_halfway(fd, data):
        writes.append(fd)
        if len(writes) == 4:
            real_write(fd, bytes(data[:len(data) // 2]))
            raise KeyboardInterrupt
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", killed_halfway)
    with pytest.raises(KeyboardInterrupt):
        convert(src, tmp_path / "out", "folder", quiet=True, n_jobs=1, shard_records=2)
    monkeypatch.setattr(os, "write", real_write)
    torsos = [p for p in staging_of(tmp_path / "out").rglob("*.JPEG")
              if p.stat().st_size < (tmp_path / "whole" / p.relative_to(
                  staging_of(tmp_path / "out"))).stat().st_size]
    assert len(torsos) == 1
    convert(src, tmp_path / "out", "folder", quiet=True, n_jobs=1, shard_records=2,
            resume=True)
    assert tree_digest(tmp_path / "out") == tree_digest(tmp_path / "whole")


def test_same_file_names_in_two_classes_convert_to_webdataset_and_back(tmp_path):
    """cats/1.jpg and dogs/1.jpg (and names that become underscores) share a key."""
    src = tmp_path / "src"
    for i, (cls, name) in enumerate([("cats", "1.jpg"), ("dogs", "1.jpg"),
                                     ("cats", "日本.jpg"), ("cats", "中国.jpg")]):
        (src / "train" / cls).mkdir(parents=True, exist_ok=True)
        (src / "train" / cls / name).write_bytes(_jpeg(i))
    convert(src, tmp_path / "wds", "webdataset", quiet=True, n_jobs=1)
    import webdataset as wds

    shard = tmp_path / "wds" / "data" / "train-00000-of-00001.tar"
    keys = [s["__key__"] for s in wds.WebDataset(str(shard), shardshuffle=False)]
    assert len(keys) == len(set(keys)) == 4
    convert(tmp_path / "wds", tmp_path / "back", "folder", quiet=True, n_jobs=1)
    assert tree(tmp_path / "back") == tree(src)


def test_overwrite_never_deletes_the_input(tmp_path):
    src = make_folder(tmp_path / "data" / "tiny")
    convert(src, tmp_path / "pq", "parquet", quiet=True, n_jobs=1)
    shard = next((tmp_path / "pq").glob("train-*.parquet"))
    with pytest.raises(UserError, match="input is inside the output"):
        convert(shard, tmp_path / "pq", "folder", quiet=True, n_jobs=1, overwrite=True)
    assert shard.is_file()


def test_hidden_folders_are_not_classes(tmp_path):
    src = make_folder(tmp_path / "tiny")
    (src / "train" / ".ipynb_checkpoints").mkdir()
    info = detect_format(src).read_info(src)
    assert ".ipynb_checkpoints" not in info.wnids
    shutil.rmtree(tmp_path / "tiny" / "imgtools-dataset.json", ignore_errors=True)
    (src / "imgtools-dataset.json").unlink()
    assert ".ipynb_checkpoints" not in detect_format(src).read_info(src).wnids
    convert(src, tmp_path / "out", "webdataset", quiet=True, n_jobs=1)


def test_empty_images_survive_parquet_and_tfrecord_and_never_read_the_cwd(tmp_path,
                                                                         monkeypatch):
    src = make_folder(tmp_path / "tiny")
    empty = src / "train" / "n01440764" / "empty.JPEG"
    empty.write_bytes(b"")
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    (cwd / "empty.JPEG").write_bytes(b"UNRELATED FILE IN CWD")
    monkeypatch.chdir(cwd)
    for fmt in ("parquet", "tfrecord"):
        convert(src, tmp_path / fmt, fmt, quiet=True, n_jobs=1)
        convert(tmp_path / fmt, tmp_path / f"{fmt}-back", "folder", quiet=True, n_jobs=1)
        assert tree(tmp_path / f"{fmt}-back") == tree(src)


def test_an_unfinished_conversion_is_not_read_as_a_dataset(tmp_path, monkeypatch):
    src = make_folder(tmp_path / "tiny")
    restore = fail_webdataset_write(monkeypatch, at=8)
    with pytest.raises(OSError):
        convert(src, tmp_path / "out", "webdataset", quiet=True, n_jobs=1, shard_records=3)
    restore()
    with pytest.raises(UserError, match="incomplete") as err:
        detect_format(tmp_path / "out")
    assert "--resume" in err.value.fix
    # A leftover temporary file of the interrupted run is removed by --resume.
    (staging_of(tmp_path / "out") / ".tmp-1-1-train-000005.tar").write_bytes(b"partial")
    convert(src, tmp_path / "out", "webdataset", quiet=True, n_jobs=1, shard_records=3,
            resume=True)
    assert not list((tmp_path / "out").glob(".tmp-*"))
    assert not list(tmp_path.glob(".imgtools-run-*"))
    assert json.loads((tmp_path / "out" / "imgtools-dataset.json").read_text())
    detect_format(tmp_path / "out")


def test_an_unfinished_build_is_not_read_as_a_dataset(tmp_path):
    out = tmp_path / "imagenette2-160"
    run = tmp_path / ".imgtools-run-imagenette2-160+imagenette2-320"
    (run / "imagenette2-160" / "train" / "n01440764").mkdir(parents=True)
    (run / "imagenette2-160" / "train" / "n01440764" / "x.JPEG").write_bytes(_jpeg(0))
    (run / "run.json").write_text("{}")
    with pytest.raises(UserError, match="did not finish"):
        detect_format(out)
    with pytest.raises(UserError, match="unfinished"):  # its working copy is no dataset
        detect_format(run / "imagenette2-160")
    # A later build of this size alone finished: the interrupted two-size run's state stays.
    shutil.copytree(run / "imagenette2-160", out)
    detect_format(out)
    shutil.rmtree(run)
    detect_format(out)


def test_push_hub_refuses_an_unfinished_build_among_finished_ones(tmp_path):
    from imgtools.hub.layout import find_configs

    src = make_folder(tmp_path / "out" / "tiny-320")
    shutil.copytree(src, tmp_path / "out" / "tiny-160")
    assert len(find_configs(tmp_path / "out")) == 2
    (tmp_path / "out" / ".imgtools-run-tiny-160").mkdir(parents=True)
    (tmp_path / "out" / ".imgtools-run-tiny-160" / "run.json").write_text("{}")
    with pytest.raises(UserError, match="did not finish"):
        find_configs(tmp_path / "out")


def test_convert_to_pickle_without_a_size_asks_for_the_square_side(tmp_path):
    """Pickles were build-only; now convert makes them too (tests/formats/
    test_convert_to_pickle.py), and without --size it says which side to give."""
    from conftest import run_cli

    src = make_folder(tmp_path / "tiny")
    proc = run_cli("convert", src, tmp_path / "out", "--to", "pickle", check=False)
    assert proc.returncode == 2
    assert "--size 32" in proc.stderr and not (tmp_path / "out").exists()


def test_a_class_folder_cut_into_many_shards_is_read_once(tmp_path, monkeypatch):
    """Each output shard reads its own slice of the folder, not everything before it."""
    from imgtools.formats import folder as folder_module

    src = make_folder(tmp_path / "tiny", per_class=6)
    opened: list[str] = []

    real_read_file = folder_module.read_file

    def counting_read(path):
        if str(path).endswith(".JPEG"):
            opened.append(str(path))
        return real_read_file(path)

    monkeypatch.setattr(folder_module, "read_file", counting_read)
    summary = convert(src, tmp_path / "wds", "webdataset", quiet=True, n_jobs=1,
                      shard_records=1)
    assert len(opened) == len(set(opened)) == summary["records"]
    assert tree(tmp_path / "wds") == tree(convert_again(src, tmp_path / "wds2"))


def convert_again(src: Path, dst: Path) -> Path:
    convert(src, dst, "webdataset", quiet=True, n_jobs=2, shard_records=1)
    return dst


def test_stats_on_a_split_the_dataset_lacks_names_the_ones_it_has(tmp_path):
    from imgtools.inspect.stats import channel_stats

    src = make_folder(tmp_path / "tiny")
    with pytest.raises(UserError, match="no split 'nope'") as err:
        channel_stats(src, split="nope", n_jobs=1)
    assert "train" in err.value.fix and "val" in err.value.fix
