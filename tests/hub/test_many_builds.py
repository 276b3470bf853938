"""push-hub of a folder holding several builds of one dataset, in several formats and sizes.

The builds are made with the real CLI on a generated ImageNet-shaped tree: folder builds of 160
and 320, a WebDataset build of 160, a Parquet build of 320 and TFRecord builds of both sizes.
The published tree is read back with the real ``datasets`` library.
"""

from __future__ import annotations

import json
from io import BytesIO
from pathlib import Path

import pytest
from conftest import run_cli
from PIL import Image

from imgtools.demo_tree import IMAGENETTE_WNIDS, make_imagenet_tree

BUILDS = [  # (extra build arguments, output folders it makes)
    (["--size", "160", "--size", "320"], ["imagenette2-160", "imagenette2-320"]),
    (["--size", "160", "--format", "webdataset"], ["imagenette2-160-webdataset"]),
    (["--size", "320", "--format", "parquet"], ["imagenette2-320-parquet"]),
    (["--size", "160", "--size", "320", "--format", "tfrecord"],
     ["imagenette2-160-tfrecord", "imagenette2-320-tfrecord"]),
]


@pytest.fixture(scope="module")
def mix(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("mix")
    tree = make_imagenet_tree(root / "imagenet", wnids=list(IMAGENETTE_WNIDS),
                              train_per_class=3, val_per_class=2, seed=0)
    for args, _ in BUILDS:
        run_cli("build", "imagenette", "--src", tree.src, "--out", root / "out", "--split",
                "random", "-j", "1", "-q", *args)
    assert sorted(p.name for p in (root / "out").iterdir()) == sorted(
        n for _, names in BUILDS for n in names)
    return root / "out"


def push_local(src: Path, dest: Path, *args, check=True):
    return run_cli("push-hub", src, "tester/imagenette", "--local-dir", dest, "-j", "1", "-q",
                   "--staging-dir", dest.parent / f"{dest.name}-staging", *args, check=check)


def folder_rows(build: Path, split: str) -> list[tuple[str, str]]:
    """(file name, wnid) of every image of a folder build's split."""
    return sorted((p.name, p.parent.name) for p in (build / split).rglob("*") if p.is_file())


def test_two_formats_of_one_size_are_refused_naming_both(mix, tmp_path):
    proc = push_local(mix, tmp_path / "repo", check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "imagenette2-160 (folder)" in proc.stderr
    assert "imagenette2-160-tfrecord (tfrecord)" in proc.stderr
    assert "imagenette2-160-webdataset (webdataset)" in proc.stderr
    assert "--prefer-format" in proc.stderr
    assert not (tmp_path / "repo").exists()
    # a preference that leaves one size ambiguous is refused as well
    proc = push_local(mix, tmp_path / "repo", "--prefer-format", "parquet", check=False)
    assert proc.returncode == 2 and "config '160px'" in proc.stderr
    assert not (tmp_path / "repo").exists()


@pytest.mark.parametrize("prefer,expected", [
    (["tfrecord"], {"160px": "imagenette2-160-tfrecord", "320px": "imagenette2-320-tfrecord"}),
    (["parquet", "wds"], {"160px": "imagenette2-160-webdataset",
                          "320px": "imagenette2-320-parquet"}),
    (["folder"], {"160px": "imagenette2-160", "320px": "imagenette2-320"}),
])
def test_one_config_per_size_each_from_one_build(mix, tmp_path, prefer, expected):
    import datasets

    repo = tmp_path / "repo"
    args = [a for fmt in prefer for a in ("--prefer-format", fmt)]
    proc = push_local(mix, repo, *args, "--json")
    report = json.loads(proc.stdout)
    assert report["configs"] == ["160px", "320px"]
    assert {c: Path(p).name for c, p in report["sources"].items()} == expected
    names = [c["name"] for c in json.loads(
        (mix / "imagenette2-160" / "build-info.json").read_text())["classes"]]
    wnids = [c["wnid"] for c in json.loads(
        (mix / "imagenette2-160" / "build-info.json").read_text())["classes"]]
    for config in ("160px", "320px"):
        build = mix / expected[config]
        totals = json.loads((build / "build-info.json").read_text())["totals"]
        ds = datasets.load_dataset(str(repo), config)
        assert ds["train"].features["label"].names == names  # not '000'..'009'
        for split, hf_split in (("train", "train"), ("val", "validation")):
            rows = ds[hf_split].cast_column("image", datasets.Image(decode=False))
            assert rows.num_rows == totals[split]  # exactly one build: nothing doubled
            got = sorted((Path(r["image"]["path"]).name, wnids[r["label"]]) for r in rows)
            # the same images, each under its own class, as the folder build of that size
            assert got == folder_rows(mix / f"imagenette2-{config[:-2]}", split)
            for r in rows.select(range(3)):
                with Image.open(BytesIO(r["image"]["bytes"])) as im:
                    assert min(im.size) <= int(config[:-2])
    card = (repo / "README.md").read_text()
    for config, folder in expected.items():  # each config's card section names its own build
        section = card.split(f"<!-- imgtools:begin config:{config} -->")[1].split(
            "<!-- imgtools:end")[0]
        fmt = json.loads((mix / folder / "build-info.json").read_text())["options"]["format"]
        assert (f"--format {fmt}" in section) == (fmt != "folder")
