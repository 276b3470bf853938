"""The dataset card push-hub writes, held to what the best image-dataset cards on the Hub say.

Datasets are built with the real CLI (an absolute ``--src``, as users give it), the card is
written with ``--local-dir``, its YAML read back with a YAML 1.2 parser (ruamel.yaml) and the
data with the real ``datasets`` library.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from conftest import run_cli
from PIL import Image
from ruamel.yaml import YAML

from imgtools.demo_tree import IMAGENETTE_WNIDS, IMAGEWOOF_WNIDS, make_imagenet_tree


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("card")
    return make_imagenet_tree(root / "imagenet", wnids=list(IMAGENETTE_WNIDS + IMAGEWOOF_WNIDS),
                              train_per_class=3, val_per_class=2, seed=0)


@pytest.fixture(scope="module")
def built(tree, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("built")
    run_cli("build", "imagenette", "--src", tree.src, "--out", out, "--size", "64", "--split",
            "random", "--seed", "3", "-j", "1", "-q")
    return out / "imagenette2-64"


@pytest.fixture(scope="module")
def card(built, tmp_path_factory) -> tuple[Path, str]:
    repo = tmp_path_factory.mktemp("repo") / "repo"
    run_cli("push-hub", built, "alice/imagenette", "--local-dir", repo, "-j", "1", "-q")
    return repo, (repo / "README.md").read_text(encoding="utf-8")


def front_matter_12(text: str) -> dict:
    """The card's YAML as a YAML 1.2 reader (ruamel.yaml, core schema) reads it."""
    head = text.split("---\n")[1]
    return YAML(typ="safe", pure=True).load(head)


def test_no_local_paths(built, tree, card):
    _, text = card
    assert str(tree.src) not in text and str(built.parent) not in text
    assert re.search(r"(?<![\w/])/(tmp|home|root|Users)/", text) is None
    assert "--src imagenet " in text  # only the folder name of --src


def test_licence_and_gating(card):
    _, text = card
    meta = front_matter_12(text)
    assert meta["license"] == "other"
    assert meta["license_name"] == "imagenet-terms-of-access"
    assert meta["license_link"].startswith("https://image-net.org/")
    assert "non-commercial research and educational purposes" in meta["extra_gated_prompt"]
    assert "Access requests" in text and "--gated" in text  # how to turn the gate on
    assert "`apache-2.0`" in text  # Imagenette's own licence covers the selection, not photos


def test_sections_of_a_good_card(card):
    _, text = card
    order = ["## Dataset Structure", "### Data Fields", "### Data Instances", "### Data Splits",
             "### Dataset Creation", "## Considerations for Using the Data",
             "## Licensing Information", "## Citation"]
    positions = [text.index(s) for s in order]
    assert positions == sorted(positions)
    considerations = text[text.index("## Considerations"):text.index("## Licensing")]
    assert "https://huggingface.co/datasets/ILSVRC/imagenet-1k" in considerations
    assert "People appear" in considerations and "biases" in considerations


def test_data_instance_is_the_real_first_row(card):
    import datasets

    repo, text = card
    row = datasets.load_dataset(str(repo), "64px")["train"][0]
    image = row["image"]
    shown = (f"{{'image': <{type(image).__module__}.{type(image).__name__} image "
             f"mode={image.mode} size={image.width}x{image.height}>, 'label': {row['label']}}}")
    assert shown in text


def test_creation_facts_come_from_the_build(built, card):
    _, text = card
    info = json.loads((built / "build-info.json").read_text())
    creation = text[text.index("### Dataset Creation"):text.index("### Normalization")]
    assert "imgtools build imagenette --src imagenet --out" in creation
    assert f"**resizer:** {info['resizer']}" in creation
    assert "**filter:** bilinear" in creation and "**seed:** 3" in creation
    assert "**JPEG quality of re-encoded images:** 90" in creation
    assert "Shortest side at most 64 pixels" in text
    assert "smaller images are kept as they are" in text
    assert "resized to 64" not in text


def test_non_official_split_is_said_at_the_top(card):
    _, text = card
    top = text[:text.index("## Configs")]
    assert "does not use fastai's published Imagenette split" in top
    assert "`valid_pct=0.3`" in top and "`seed=3`" in top and "not comparable" in top


def test_preview_is_a_small_jpeg_linked_relatively(card):
    repo, text = card
    assert "](assets/preview-64px.jpg)" in text and "](assets/histogram-64px.png)" in text
    assert "/resolve/" not in text
    with Image.open(repo / "assets" / "preview-64px.jpg") as im:
        assert im.format == "JPEG"
    assert (repo / "assets" / "preview-64px.jpg").stat().st_size <= 300_000


def test_facts_other_parts_of_imgtools_add_are_shown(built, tmp_path):
    """A label convention and an orientation policy in build-info.json reach the card."""
    src = tmp_path / "imagenette2-64"
    shutil.copytree(built, src)
    info = json.loads((src / "build-info.json").read_text())
    info["label_convention"] = "index of the wnid in sorted order"
    info["orientation"] = "applied to the pixels, tag removed"
    (src / "build-info.json").write_text(json.dumps(info))
    run_cli("push-hub", src, "alice/imagenette", "--local-dir", tmp_path / "repo", "-j", "1",
            "-q")
    text = (tmp_path / "repo" / "README.md").read_text()
    assert "Labels: index of the wnid in sorted order." in text
    assert "**orientation:** applied to the pixels, tag removed" in text


def make_image_folder(root: Path, classes: list[str]) -> Path:
    for split, n in (("train", 2), ("val", 1)):
        for i, name in enumerate(classes):
            (root / split / name).mkdir(parents=True)
            for k in range(n):
                Image.new("RGB", (24, 20), (30 * i % 255, 90, 40 * k)).save(
                    root / split / name / f"{name}_{k}.jpg", quality=90)
    return root


TRICKY = ["000", "008", "010", "1e3", "0x1F", "0o7", "true", "null", "no", "1.5", "+12"]


def test_yaml_names_stay_strings_for_a_yaml_12_reader(tmp_path):
    import datasets

    src = make_image_folder(tmp_path / "numbers", TRICKY)
    run_cli("push-hub", src, "alice/numbers", "--local-dir", tmp_path / "repo", "-j", "1", "-q")
    text = (tmp_path / "repo" / "README.md").read_text()
    meta = front_matter_12(text)
    names = meta["dataset_info"][0]["features"][1]["dtype"]["class_label"]["names"]
    assert [names[str(i)] for i in range(len(TRICKY))] == sorted(TRICKY)
    assert all(isinstance(v, str) for v in names.values())
    ds = datasets.load_dataset(str(tmp_path / "repo"))
    assert ds["train"].features["label"].names == sorted(TRICKY)
    # not built from ImageNet by imgtools: no ImageNet terms claimed
    assert meta["license"] == "other" and "extra_gated_prompt" not in meta


def test_dump_yaml_quotes_what_yaml_12_would_misread():
    import yaml

    from imgtools.hub.card_yaml import dump_yaml

    more = ["tench", "a: b", "-1", ".inf", ".NaN", "~", "TRUE", "-2.5e-3"]
    data = {"names": {str(i): v for i, v in enumerate(TRICKY + more)}}
    text = dump_yaml(data)
    assert YAML(typ="safe", pure=True).load(text) == data
    assert yaml.safe_load(text) == data


def test_another_dataset_into_the_same_local_dir_is_refused(tree, built, card, tmp_path):
    """Once merged into one card (the header, classes and configs of two datasets)."""
    repo = tmp_path / "repo"
    shutil.copytree(card[0], repo)
    before = {p: p.read_bytes() for p in repo.rglob("*") if p.is_file()}
    run_cli("build", "imagewoof", "--src", tree.src, "--out", tmp_path / "woof", "--size", "32",
            "--split", "random", "-j", "1", "-q")
    proc = run_cli("push-hub", tmp_path / "woof" / "imagewoof2-32", "alice/imagenette",
                   "--local-dir", repo, "-j", "1", "-q", check=False)
    assert proc.returncode == 2 and "already holds another dataset" in proc.stderr
    assert "Imagenette" in proc.stderr
    assert {p: p.read_bytes() for p in repo.rglob("*") if p.is_file()} == before
    # the same dataset at another size is still added next to the first
    run_cli("build", "imagenette", "--src", tree.src, "--out", tmp_path / "nette", "--size",
            "32", "--split", "random", "--seed", "3", "-j", "1", "-q")
    run_cli("push-hub", tmp_path / "nette" / "imagenette2-32", "alice/imagenette",
            "--local-dir", repo, "-j", "1", "-q")
    meta = front_matter_12((repo / "README.md").read_text())
    assert [c["config_name"] for c in meta["configs"]] == ["64px", "32px"]


def test_the_licence_an_older_imgtools_wrote_is_replaced(built, card, tmp_path):
    """Older cards said ``license: apache-2.0`` (Imagenette's) for ImageNet photos; a licence
    a user chose is kept (tests/test_hub.py::test_repush_keeps_user_sections...)."""
    import yaml

    repo = tmp_path / "repo"
    shutil.copytree(card[0], repo)
    text = (repo / "README.md").read_text()
    head, body = text.split("---\n", 2)[1:]
    meta = yaml.safe_load(head)
    for key in ("license_name", "license_link", "extra_gated_prompt"):
        del meta[key]
    meta["license"] = "apache-2.0"
    (repo / "README.md").write_text(f"---\n{yaml.safe_dump(meta, sort_keys=False)}---\n{body}")
    run_cli("push-hub", built, "alice/imagenette", "--local-dir", repo, "-j", "1", "-q")
    meta = front_matter_12((repo / "README.md").read_text())
    assert meta["license"] == "other" and meta["license_name"] == "imagenet-terms-of-access"
