"""What the dataset card says about labels, pixels and Imagewang's derivation comes from the
build's metadata (``imgtools-dataset.json``, ``build-info.json``): the card of an Imagewang build
states the label order, the orientation and colour policy, and how its 10 % were drawn."""

from __future__ import annotations

from pathlib import Path

from imgtools.build import BuildOptions, build
from imgtools.hub import push_hub
from imgtools.plan import make_plan
from imgtools.recipes import load_recipe
from imgtools.sources import open_source


def test_the_card_states_label_order_pixels_and_composition(kaggle_tree, tmp_path):
    plan = make_plan(load_recipe("imagewang"), open_source(kaggle_tree.src),
                     split_mode="random", seed=3)
    report = build(plan, BuildOptions(out=tmp_path / "out", sizes=[32], quiet=True, n_jobs=1),
                   command="imgtools build imagewang --size 32")
    push_hub(Path(report["outputs"][0]), "tester/imagewang", n_jobs=1, quiet=True,
             local_dir=tmp_path / "repo", staging_dir=tmp_path / "staging")
    card = (tmp_path / "repo" / "README.md").read_text()
    assert "Label order: sorted wnid: label i is the i-th class in sorted WordNet-id order" in card
    assert "EXIF orientation applied to the pixels" in card
    assert "converted to sRGB" in card
    assert ("10% of each imagewoof class, counted on all of the class's images (train + val), "
            "drawn at random (seed 3) from its train split") in card
