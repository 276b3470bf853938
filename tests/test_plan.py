"""The plan's columns become the same items however they are walked."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np
import pytest

from imgtools.plan import PlanItem, PlanTable
from imgtools.records import Record
from imgtools.sources.imagenet_tree import ImageNetSource


def _table(source: ImageNetSource, split: str = "train") -> PlanTable:
    names = [b"n01_1.JPEG", b"n01_2.jpg", b"photo.png", "caf\udce9.JPEG".encode(
        "utf-8", "surrogateescape"), b"ILSVRC2012_val_00000001.JPEG"]
    return PlanTable(split, source, ["n01", "n02"],
                     pool=np.array([0, 0, 0, 1, 1], np.uint8),
                     cls=np.array([0, 1, 1, 0, 1], np.int32),
                     label=np.array([0, 1, -1, 0, 1], np.int32),
                     name=np.array(names, dtype=np.bytes_),
                     alias=np.array([-1, -1, 17, -1, -1], np.int32))


def _expected(source: ImageNetSource, root: Path, split: str) -> list[PlanItem]:
    """Each item spelled out, path by ``os.path.join`` as the layouts define it."""
    val = (lambda w, n: os.path.join(root, "val", w, n)) if source.layout == "valprep" else \
        (lambda w, n: os.path.join(root, "val", n))
    return [
        PlanItem(os.path.join(root, "train", "n01", "n01_1.JPEG"), split, 0, "n01", "n01_1.JPEG"),
        PlanItem(os.path.join(root, "train", "n02", "n01_2.jpg"), split, 1, "n02", "n01_2.jpg"),
        PlanItem(os.path.join(root, "train", "n02", "photo.png"), split, None, "n02",
                 "unsup_000017.JPEG"),
        PlanItem(val("n01", "caf\udce9.JPEG"), split, 0, "n01", "caf\udce9.JPEG"),
        PlanItem(val("n02", "ILSVRC2012_val_00000001.JPEG"), split, 1, "n02",
                 "ILSVRC2012_val_00000001.JPEG"),
    ]


@pytest.mark.parametrize("layout", ["valprep", "devkit"])
def test_every_walk_of_a_table_gives_the_same_items(tmp_path, layout):
    source = ImageNetSource(tmp_path, layout, tmp_path / "train", tmp_path / "val")
    table = _table(source, "val")
    expected = _expected(source, tmp_path, "val")
    assert list(table) == expected
    assert [table[i] for i in range(len(table))] == expected
    assert [table[i] for i in range(-len(table), 0)] == expected
    assert table[1:4] == expected[1:4]
    assert table.items_at([4, 0, 2]) == [expected[4], expected[0], expected[2]]
    assert table.items_at([]) == []
    with pytest.raises(IndexError):
        table[len(table)]


def test_a_walk_longer_than_a_chunk_keeps_order(tmp_path, monkeypatch):
    import imgtools.plan as plan

    monkeypatch.setattr(plan, "_CHUNK", 2)  # the table is walked 2 items at a time
    source = ImageNetSource(tmp_path, "valprep", tmp_path / "train", tmp_path / "val")
    assert list(_table(source)) == _expected(source, tmp_path, "train")


def test_a_tree_without_the_pool_is_refused(tmp_path):
    source = ImageNetSource(tmp_path, "valprep", tmp_path / "train", None)
    with pytest.raises(AssertionError, match="no val folder"):
        source.path_of("val", "n01", "x.JPEG")


def test_a_record_with_other_bytes_keeps_every_other_field():
    values = {f.name: f"value of {f.name}" for f in dataclasses.fields(Record)}
    record = Record(**values)
    assert record.with_image(b"new") == dataclasses.replace(record, image=b"new")
    assert record.with_image(b"new", "x.jpg") == dataclasses.replace(
        record, image=b"new", filename="x.jpg")
