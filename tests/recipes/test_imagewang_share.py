"""Imagewang's labelled Imagewoof images: per class, 10 % of the class's images counted on the
whole class (train + val), drawn seeded from its training part; the rest of the training part
in unsup/. fastai: "Only 10% of Imagewoof images are in the training set" (about 1,295 of
12,954), not 10 % of the training part (902)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from conftest import SHARED_REFERENCE

from imgtools.errors import UserError
from imgtools.plan import make_plan
from imgtools.recipes import load_recipe
from imgtools.sources import open_source

NETTE = [c.wnid for c in load_recipe("imagenette").classes]
WOOF = [c.wnid for c in load_recipe("imagewoof").classes]


def valprep_tree(root: Path, counts: dict[str, tuple[int, int]]) -> Path:
    """A val-sorted ImageNet tree of empty files (planning never opens an image):
    ``counts[wnid] = (train, val)``."""
    n_val = 0
    for wnid, (n_train, n_v) in counts.items():
        (root / "train" / wnid).mkdir(parents=True)
        (root / "val" / wnid).mkdir(parents=True)
        for i in range(n_train):
            (root / "train" / wnid / f"{wnid}_{i}.JPEG").touch()
        for _ in range(n_v):
            n_val += 1
            (root / "val" / wnid / f"ILSVRC2012_val_{n_val:08d}.JPEG").touch()
    return root


def per_class(table) -> dict[str, int]:
    counts: dict[str, int] = {}
    for it in table:
        counts[it.wnid] = counts.get(it.wnid, 0) + 1
    return counts


def test_the_share_is_counted_on_the_whole_class(tmp_path):
    """35 images a class, 10 of them in val: 10 % of the class is 4 (round(3.5)); 10 % of its
    25 training images would be 2. The kept ones come from the training part, seeded."""
    counts = {w: (25, 10) for w in NETTE + WOOF}
    counts[WOOF[3]] = (15, 6)  # a smaller class, as n02089973 (804 images) is
    src = open_source(valprep_tree(tmp_path / "in", counts))
    wang = make_plan(load_recipe("imagewang"), src, split_mode="source", seed=0)
    woof = make_plan(load_recipe("imagewoof"), src, split_mode="source", seed=0)
    train = per_class(wang.items["train"])
    for w in WOOF:
        n_train, n_val = counts[w]
        assert train[w] == round((n_train + n_val) * 0.1)  # 4, and 2 for the small class
    assert train[WOOF[3]] == 2 and train[WOOF[0]] == 4
    for w in NETTE:
        assert train[w] == sum(counts[w])  # every Imagenette image, val included
    woof_train = {it.src for it in woof.items["train"]}
    kept = {it.src for it in wang.items["train"] if it.wnid in WOOF}
    unsup = {it.src for it in wang.items["unsup"]}
    assert kept <= woof_train and unsup == woof_train - kept  # drawn from the training part
    assert {it.src for it in wang.items["val"]} == {it.src for it in woof.items["val"]}
    said = "\n".join(wang.info.extra["composition"])  # into every output's metadata
    assert "10% of each imagewoof class, counted on all of the class's images (train + val)" \
        in said and "seed 0" in said and "unsup: the rest of imagewoof's train split" in said
    again = make_plan(load_recipe("imagewang"), src, split_mode="source", seed=0)
    other = make_plan(load_recipe("imagewang"), src, split_mode="source", seed=1)
    assert again.items["train"] == wang.items["train"]
    assert other.items["train"] != wang.items["train"]


def test_a_share_never_takes_more_than_the_training_part_holds(tmp_path):
    counts = {w: (2, 1) for w in NETTE}
    counts.update({w: (1, 30) for w in WOOF})  # 10 % of 31 is 3, but only 1 is in train
    src = open_source(valprep_tree(tmp_path / "in", counts))
    wang = make_plan(load_recipe("imagewang"), src, split_mode="source", seed=0)
    assert all(per_class(wang.items["train"])[w] == 1 for w in WOOF)
    assert "unsup" not in wang.items


def test_a_part_counts_on_itself_unless_told(tmp_path):
    """``fraction_of`` defaults to the images taken (a user's composite recipe keeps its
    meaning); a wrong value is a clear error."""
    part = ('[[parts]]\nrecipe = "imagewoof"\ntake = { train = "train" }\nfraction = 0.1\n'
            'rest = "unsup"\n')
    mine = tmp_path / "mine.toml"
    mine.write_text('name = "mine"\n' + part)
    src = open_source(valprep_tree(tmp_path / "in", {w: (25, 10) for w in WOOF}))
    plan = make_plan(load_recipe(mine), src, split_mode="source", seed=0)
    assert all(n == 2 for n in per_class(plan.items["train"]).values())  # round(2.5)
    mine.write_text('name = "mine"\n' + part + 'fraction_of = "everything"\n')
    with pytest.raises(UserError, match="fraction_of"):
        load_recipe(mine)


@pytest.mark.skipif(not (SHARED_REFERENCE / "noisy_imagewoof.csv").is_file(),
                    reason="../shared/reference (fastai's CSVs) is not present")
def test_published_lists_give_1295_labelled_imagewoof_images(tmp_path):
    """From fastai's own Imagenette and Imagewoof lists: 1,295 labelled Imagewoof images
    (10 % of 12,954, per class), 7,730 in unsup, Imagewoof's 3,929 val images, and all
    13,394 Imagenette images in train."""
    from imgtools.splits import read_official_csv

    csvs = [SHARED_REFERENCE / "noisy_imagenette.csv", SHARED_REFERENCE / "noisy_imagewoof.csv"]
    root = tmp_path / "ILSVRC" / "Data" / "CLS-LOC"
    (root / "val").mkdir(parents=True)
    solution = ["ImageId,PredictionString"]
    for csv_path in csvs:
        for r in read_official_csv(csv_path):
            if r.filename.startswith("ILSVRC2012_val_"):
                (root / "val" / r.filename).touch()
                solution.append(f"{r.filename[:-5]},{r.wnid} 1 1 2 2")
            else:
                os.makedirs(root / "train" / r.wnid, exist_ok=True)
                (root / "train" / r.wnid / r.filename).touch()
    (tmp_path / "LOC_val_solution.csv").write_text("\n".join(solution) + "\n")
    plan = make_plan(load_recipe("imagewang"), open_source(tmp_path), split_mode="official",
                     seed=0, split_csvs=csvs)
    train = per_class(plan.items["train"])
    assert sum(train[w] for w in WOOF) == 1295
    assert sum(train[w] for w in NETTE) == 13394
    assert len(plan.items["unsup"]) == 9025 - 1295
    assert len(plan.items["val"]) == 3929
