"""push-hub and CLI behaviour that once left junk files, crashed or stated wrong facts on the
card (found in review)."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import build_sample, push, run_cli

from imgtools.errors import UserError


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    return build_sample(tmp_path_factory.mktemp("built"), sizes=(64,))


def test_a_repush_leaves_no_temporary_files(built, tmp_path):
    for _ in range(2):
        push(built, tmp_path, local_dir=tmp_path / "repo")
    assert not [p for p in (tmp_path / "repo").rglob(".tmp-*")]
    assert not [p for p in (tmp_path / "staging").rglob(".tmp-*")]


@pytest.mark.parametrize("name", ["README.md", "readme.md", ".gitattributes"])
def test_config_names_that_are_repository_files_are_refused(built, tmp_path, name):
    with pytest.raises(UserError, match="invalid config name"):
        push(built / "imagenette2-64", tmp_path, local_dir=tmp_path / "repo", config=name)


def test_a_file_as_source_is_a_clear_error(tmp_path):
    (tmp_path / "f").write_text("x")
    proc = run_cli("push-hub", tmp_path / "f", "alice/x", "--local-dir", tmp_path / "r",
                   check=False)
    assert proc.returncode == 2 and "not a folder" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_an_unusable_output_path_is_exit_2_with_the_path(built, tmp_path):
    (tmp_path / "f").write_text("x")
    proc = run_cli("convert", built / "imagenette2-64", tmp_path / "f" / "sub", "--to",
                   "parquet", check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert str(tmp_path / "f") in proc.stderr


def test_the_card_says_how_downsampled_images_were_sized(tmp_path):
    from imgtools.build import BuildOptions, build
    from imgtools.demo_tree import IMAGENETTE_WNIDS, make_imagenet_tree
    from imgtools.plan import make_plan
    from imgtools.recipes import load_recipe
    from imgtools.sources import open_source

    tree = make_imagenet_tree(tmp_path / "imagenet", wnids=list(IMAGENETTE_WNIDS),
                              train_per_class=4, val_per_class=2, seed=0)
    plan = make_plan(load_recipe("imagenette"), open_source(tree.src), split_mode="random",
                     seed=0)
    build(plan, BuildOptions(out=tmp_path / "pk", sizes=[16], fmt="pickle", n_jobs=1,
                             quiet=True), command="test")
    push(tmp_path / "pk", tmp_path, local_dir=tmp_path / "repo")
    card = (tmp_path / "repo" / "README.md").read_text()
    assert "16x16 pixels (squashed" in card and "aspect ratio kept" not in card


def test_the_card_keeps_imagenet_capitalised(tmp_path):
    out = build_sample(tmp_path / "out", sizes=(None,))
    push(out, tmp_path, local_dir=tmp_path / "repo")
    card = (tmp_path / "repo" / "README.md").read_text()
    assert "original ImageNet size" in card and "original imagenet" not in card
