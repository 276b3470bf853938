"""The label convention at the recipe level: sorted wnid order unless a recipe pins its own,
and the one published exception (downsampled ImageNet keeps map_clsloc ids)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import WNIDS

from imgtools.build import BuildOptions, build
from imgtools.errors import UserError
from imgtools.plan import make_plan
from imgtools.recipes import load_recipe
from imgtools.sources import open_source

UNSORTED = [WNIDS[12], WNIDS[3], WNIDS[0]]  # a Imagewoof class, then two Imagenette ones


def _recipe(tmp_path: Path, extra: str = "") -> Path:
    path = tmp_path / "mine.toml"
    path.write_text('name = "mine"\nclasses = [' + ", ".join(f'"{w}"' for w in UNSORTED)
                    + "]\n" + extra)
    return path


def _labels_by_wnid(root: Path) -> dict[str, set[int]]:
    """wnid -> labels seen, from a Parquet output (the file names start with their wnid)."""
    import pyarrow.parquet as pq

    table = pq.read_table(sorted(root.glob("train-*.parquet")))
    out: dict[str, set[int]] = {}
    for image, label in zip(table.column("image").to_pylist(), table.column("label").to_pylist()):
        out.setdefault(image["path"].split("_")[0], set()).add(label)
    return out


def test_a_recipe_lists_classes_in_any_order_and_labels_follow_wnid_order(kaggle_tree,
                                                                          tmp_path):
    plan = make_plan(load_recipe(_recipe(tmp_path)), open_source(kaggle_tree.src),
                     split_mode="random", seed=0)
    assert plan.info.wnids == sorted(UNSORTED)
    report = build(plan, BuildOptions(out=tmp_path / "o", sizes=[32], fmt="parquet",
                                      quiet=True, n_jobs=1))
    root = Path(report["outputs"][0])
    assert _labels_by_wnid(root) == {w: {i} for i, w in enumerate(sorted(UNSORTED))}
    assert json.loads((root / "imgtools-dataset.json").read_text())["label_order"] \
        .startswith("sorted wnid")


def test_a_pinned_order_is_kept_and_said(kaggle_tree, tmp_path):
    plan = make_plan(load_recipe(_recipe(tmp_path, 'label_order = "recipe"\n')),
                     open_source(kaggle_tree.src), split_mode="random", seed=0)
    assert plan.info.wnids == UNSORTED
    report = build(plan, BuildOptions(out=tmp_path / "o", sizes=[32], fmt="parquet",
                                      quiet=True, n_jobs=1))
    root = Path(report["outputs"][0])
    assert _labels_by_wnid(root) == {w: {i} for i, w in enumerate(UNSORTED)}
    for meta in ("imgtools-dataset.json", "build-info.json"):
        said = json.loads((root / meta).read_text())["label_order"]
        assert said.startswith("recipe order (pinned by the recipe)") and "not" in said


def test_an_unknown_label_order_is_a_clear_error(tmp_path):
    with pytest.raises(UserError, match="label_order must be one of wnid, recipe"):
        load_recipe(_recipe(tmp_path, 'label_order = "alphabetical"\n'))


def test_imagenet_pins_map_clsloc_for_pickles_only():
    recipe = load_recipe("imagenet")
    classes, said = recipe.labelled_classes()
    assert classes[0].wnid == "n01440764" and said.startswith("sorted wnid")
    classes, said = recipe.labelled_classes(downsampled=True)
    assert classes[0].wnid == "n02119789"  # map_clsloc id 1, kit fox
    assert "map_clsloc" in said
    for name in ("imagenette", "imagewoof", "imagewang"):  # the same order in every output
        assert load_recipe(name).labelled_classes(downsampled=True) == \
            load_recipe(name).labelled_classes()
