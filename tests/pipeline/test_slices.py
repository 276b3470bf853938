"""imgtools.pipeline.slices: a JPEG folder's plan made from the identity's listing
(``plan_while_listing``, one stat per file) is the plan a scan makes (``plan_conversion``),
and the identity it writes is the one ``tree_inputs`` lists, whatever order the listing meets
the input's shards in (class folders, flat images beside them, a folder behind a symlink)."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import pytest
from conftest import built_with_undecodable_name, run_cli

import imgtools.formats.folder as folder_module
from imgtools.formats import get_format
from imgtools.pipeline.identity import tree_inputs, write_inputs
from imgtools.pipeline.slices import (
    ShardCutter,
    cut_shards,
    plan_conversion,
    plan_while_listing,
    read_slice,
)

WNIDS = ("n01440764", "n02102040", "n02979186")


@pytest.fixture(scope="module")
def folder_input(tmp_path_factory) -> Path:
    """A folder dataset with every shape of input shard: class folders, flat images beside
    class folders in one split (listed before them, planned after them), a flat split of more
    than one chunk of files, a class folder reached through a symlink (which the listing does
    not enter), hidden and non-image files, and images of many sizes."""
    base = tmp_path_factory.mktemp("slices")
    root = base / "in"
    sizes = iter(range(1, 10**6))

    def image(path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x" * (37 * next(sizes) % 500 + 1))

    for split, per_class in (("train", 7), ("val", 3)):
        for wnid in WNIDS[:2]:
            for i in range(per_class):
                image(root / split / wnid / f"{wnid}_{i}.JPEG")
    for i in range(4):
        image(root / "train" / f"flat_{i}.jpg")
    for i in range(1100):  # three chunks of 512
        image(root / "unsup" / f"u{i:05d}.JPEG")
    outside = base / "elsewhere" / WNIDS[2]
    for i in range(5):
        image(outside / f"{WNIDS[2]}_{i}.JPEG")
    (root / "train" / WNIDS[2]).symlink_to(outside, target_is_directory=True)
    (root / "train" / WNIDS[0] / "notes.txt").write_text("not an image")
    (root / "train" / WNIDS[0] / ".hidden.JPEG").write_bytes(b"hidden")
    return root


def described(plan, with_bytes: bool) -> list:
    """Every field of a plan, the input shard's file list included (input shards compare by
    path and split alone, and a flat folder's chunks share both)."""
    return [(o.split, o.index, o.num_shards, o.records, o.nbytes if with_bytes else None,
             [(s.shard.path, s.shard.split, s.shard.options.get("files"), s.start, s.stop,
               s.offset) for s in o.slices]) for o in plan]


@pytest.mark.parametrize("max_records, max_bytes", [
    (None, 700), (None, 10**9), (3, None), (1000, None), (2, 450), (512, 90_000)])
def test_the_listing_plan_is_the_scan_plan(folder_input, tmp_path, max_records, max_bytes):
    fmt = get_format("folder")
    info = fmt.read_info(folder_input)
    shards = fmt.input_shards(folder_input)
    assert any(s.path.endswith(WNIDS[2]) for s in shards)  # the shard behind the symlink
    scanned = plan_conversion(fmt, shards, info, max_records, max_bytes, 1)
    listed, inputs = plan_while_listing(fmt, folder_input, shards, info, max_records,
                                        max_bytes, tmp_path / "inputs.jsonl")
    # A plan by records alone gets the scan's zeros for sizes; the listing knows them.
    assert described(listed, bool(max_bytes)) == described(scanned, bool(max_bytes))
    assert sum(o.records for o in listed) == 2 * 7 + 2 * 3 + 5 + 4 + 1100
    count, digest = write_inputs(tmp_path / "reference.jsonl", tree_inputs(folder_input))
    assert (inputs.count, inputs.sha256) == (count, digest)
    data = (tmp_path / "inputs.jsonl").read_bytes()
    assert data == (tmp_path / "reference.jsonl").read_bytes()
    assert hashlib.sha256(data).hexdigest() == digest


def test_the_cutter_fed_shard_by_shard_cuts_as_one_pass(folder_input):
    fmt = get_format("folder")
    info = fmt.read_info(folder_input)
    shards = [s for s in fmt.input_shards(folder_input) if s.split == "unsup"]
    scans = [(s, *fmt.scan_records(s, info)) for s in shards]
    cutter = ShardCutter(None, 5000)
    for shard, sizes, offsets in scans:
        cutter.add(shard, sizes, offsets)
    assert cutter.finish() == cut_shards(scans, None, 5000)
    assert sum(n for _slices, n, _b in cutter.shards) == 1100
    assert all(b <= 5000 for _slices, _n, b in cutter.shards)


def test_a_conversion_refused_while_planning_leaves_nothing(small_tree, tmp_path):
    """The identity is written beside the output while planning: a conversion stopped by the
    plan (a name the output cannot store) removes it, and the folders made to hold it."""
    ds = built_with_undecodable_name(small_tree, tmp_path)
    proc = run_cli("convert", ds, tmp_path / "new" / "deeper" / "tf", "--to", "tfrecord",
                   check=False)
    assert proc.returncode == 2 and "not valid UTF-8" in proc.stderr, proc.stderr
    assert not (tmp_path / "new").exists()
    (tmp_path / "kept").mkdir()
    proc = run_cli("convert", ds, tmp_path / "kept" / "tf", "--to", "tfrecord", check=False)
    assert proc.returncode == 2
    assert os.listdir(tmp_path / "kept") == []  # a folder the user made stays, empty


@pytest.mark.parametrize("kept", ["none of the plan's listings kept", "the plan's listings"])
def test_a_class_folder_cut_into_many_slices_is_listed_once_a_run(folder_input, tmp_path,
                                                                   monkeypatch, kept):
    """Reading a slice lists its class folder; a folder cut into many output shards was
    listed once per slice (quadratic in its size). Now once per run and process - not at all
    where the run's plan listed it in this process and kept its names (PLANNED_NAMES) - and
    a new run lists again (an image added between runs is read)."""
    if kept.startswith("none"):
        monkeypatch.setattr(folder_module, "PLANNED_NAMES", 0)
    fmt = get_format("folder")
    info = fmt.read_info(folder_input)
    listed: list[str] = []
    real = folder_module._list_images
    monkeypatch.setattr(folder_module, "_list_images",
                        lambda folder: listed.append(folder) or real(folder))

    def read_all(root: Path) -> list[str]:
        shards = fmt.input_shards(root)
        plan, _inputs = plan_while_listing(fmt, root, shards, info, 2, None,
                                           tmp_path / f"inputs-{len(listed)}.jsonl")
        listed.clear()
        folder_module._listed_once.cache_clear()  # the plan's scan of the symlinked folder
        return [r.filename for o in plan for s in o.slices for r in read_slice(fmt, s, info)]

    names = read_all(folder_input)
    class_folders = [p for p in folder_input.glob("*/n*")]
    if kept.startswith("none"):
        assert sorted(listed) == sorted(map(str, class_folders))  # each once, 4 slices or more
    else:  # the plan's names, but for the folder behind a symlink, which it scanned
        assert listed == [str(folder_input / "train" / WNIDS[2])]
    assert sorted(names) == sorted(r.filename for s in fmt.input_shards(folder_input)
                                   for r in fmt.read_shard(s, info))  # the plan's split order
    copy = tmp_path / "copy"
    shutil.copytree(folder_input, copy, symlinks=True)
    shutil.copy(copy / "val" / WNIDS[0] / f"{WNIDS[0]}_0.JPEG",
                copy / "val" / WNIDS[0] / "added.JPEG")
    assert "added.JPEG" in read_all(copy)
