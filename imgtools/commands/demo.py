"""``imgtools demo``: the whole job on a generated ImageNet-shaped sample, no ImageNet needed."""

from __future__ import annotations

import shutil
from pathlib import Path

import click


@click.command(context_settings={"show_default": True})
@click.option("--out", default="imgtools-demo", type=click.Path(path_type=Path),
              help="Folder for the sample tree (imagenet-sample/) and the built datasets.")
@click.option("--dataset", default="imagewang",
              type=click.Choice(["imagenette", "imagewoof", "imagewang"]),
              help="Which recipe to build on the sample.")
@click.option("--layout", default="kaggle", type=click.Choice(["kaggle", "devkit", "valprep"]),
              help="ImageNet layout of the generated sample tree.")
@click.option("--size", "sizes", multiple=True, default=("160", "320"), metavar="full|N",
              help="Sizes to build (repeatable).")
@click.option("--train-per-class", default=40, type=click.IntRange(1),
              help="Generated ImageNet-train images per class.")
@click.option("--val-per-class", default=10, type=click.IntRange(0),
              help="Generated ImageNet-val images per class.")
@click.option("-j", "--jobs", "n_jobs", type=int, default=0, help="Parallel workers (0 = all).")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
def demo(out: Path, dataset: str, layout: str, sizes: tuple[str, ...], train_per_class: int,
         val_per_class: int, n_jobs: int, quiet: bool) -> None:
    """Generate a small ImageNet-shaped tree (photo-like JPEGs plus the quirks real ImageNet
    has: a CMYK JPEG, a PNG named .JPEG, grayscale, truncated, empty and non-image files)
    and build DATASET from it end to end, with a seeded random split (the official lists name
    real ImageNet files, which the sample does not have).
    """
    # lazy: `imgtools demo --help` answers without importing the pipeline and the generator
    # (numpy, Pillow, tqdm)
    from imgtools.build import BuildOptions, build
    from imgtools.commands.build import parse_size, print_summary
    from imgtools.demo_tree import IMAGENETTE_WNIDS, IMAGEWOOF_WNIDS, make_imagenet_tree
    from imgtools.plan import make_plan
    from imgtools.recipes import load_recipe
    from imgtools.sources import open_source

    requested = [parse_size(s) for s in sizes]  # a bad --size fails before any work
    tree_root = out / "imagenet-sample"
    if tree_root.exists():
        shutil.rmtree(tree_root)
    wnids = list(IMAGENETTE_WNIDS + IMAGEWOOF_WNIDS)
    click.echo(f"generating a {layout}-layout ImageNet sample in {tree_root} ...", err=True)
    tree = make_imagenet_tree(tree_root, layout=layout, wnids=wnids,
                              train_per_class=train_per_class, val_per_class=val_per_class)
    recipe = load_recipe(dataset)
    plan = make_plan(recipe, open_source(tree.src), split_mode="random", seed=0)
    opts = BuildOptions(out=out, sizes=requested, n_jobs=n_jobs,
                        overwrite=True, quiet=quiet)
    command = (f"imgtools build {dataset} --src {tree.src} --split random "
               + " ".join(f"--size {s}" for s in sizes) + f" --out {out} --overwrite")
    report = build(plan, opts, command=command)
    print_summary(report)
    click.echo(f"\nthe same build by hand: {command}")
    click.echo(f"look at it: imgtools info {report['outputs'][0]}")
