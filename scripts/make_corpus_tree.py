#!/usr/bin/env python
"""Replicate a folder of real photos into an ImageNet-shaped tree for benchmarks.

Why: speed numbers from synthetic images can mislead (decode and resize cost depend on real
content and sizes), but we cannot ship ImageNet. /work/shared/corpus holds 100 real ImageNet
photos; this script hard-links (or copies) them, bytes unchanged, under ImageNet names
(``<wnid>_<n>.JPEG``, ``ILSVRC2012_val_<8 digits>.JPEG``) into the classes of a recipe, so
``imgtools build`` sees a real-looking tree and every decode costs what a real one does.

Image i goes to class ``classes[i % len(classes)]`` and is a link to corpus photo
``i % len(corpus)``; every ``--val-every``-th image goes to ImageNet's val split instead of
train. The result is deterministic. Which photo lands in which class is meaningless: this tree is
for timing, not for training.

    python scripts/make_corpus_tree.py /tmp/corpus-tree --images 3000 --layout valprep
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_CORPUS = REPO.parent / "shared" / "corpus"
PHOTO_EXTENSIONS = {".jpeg", ".jpg"}


def corpus_photos(corpus: Path) -> list[Path]:
    """The corpus's JPEGs, sorted (so the tree is the same on every machine)."""
    if not corpus.is_dir():
        sys.exit(f"error: {corpus}: corpus folder not found\n"
                 "  what to do: pass --corpus the folder of real photos (../shared/corpus)")
    photos = sorted(p for p in corpus.iterdir() if p.suffix.lower() in PHOTO_EXTENSIONS)
    if not photos:
        sys.exit(f"error: {corpus}: no .JPEG/.jpg files in the corpus folder")
    return photos


def recipe_wnids(recipe: str) -> list[str]:
    from imgtools.recipes import load_recipe

    return [c.wnid for c in load_recipe(recipe).classes]


def place(source: Path, target: Path, copy: bool) -> None:
    """Hard link when possible (no disk use, same bytes); copy across file systems."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if not copy:
        try:
            os.link(source, target)
            return
        except OSError:
            pass
    shutil.copyfile(source, target)


def make_corpus_tree(out: Path, corpus: Path, images: int, wnids: list[str], layout: str,
                     val_every: int = 4, copy: bool = False) -> dict[str, int]:
    """Write the tree; returns {"train": n, "val": n}."""
    from imgtools.demo_classmaps import write_devkit_meta, write_kaggle_meta
    from imgtools.demo_tree import KAGGLE_DATA_DIR

    if out.exists() and any(out.iterdir()):
        sys.exit(f"error: {out}: output folder is not empty\n  what to do: pass a new folder")
    photos = corpus_photos(corpus)
    base = out / KAGGLE_DATA_DIR if layout == "kaggle" else out
    val_wnids: list[str] = []
    train_counts: dict[str, int] = {w: 0 for w in wnids}
    for i in range(images):
        wnid = wnids[i % len(wnids)]
        photo = photos[i % len(photos)]
        if val_every and i % val_every == val_every - 1:
            val_wnids.append(wnid)
            name = f"ILSVRC2012_val_{len(val_wnids):08d}.JPEG"
            target = base / "val" / wnid / name if layout == "valprep" else base / "val" / name
        else:
            train_counts[wnid] += 1
            target = base / "train" / wnid / f"{wnid}_{i + 1}.JPEG"
        place(photo, target, copy)
    if layout == "kaggle":
        write_kaggle_meta(out, val_wnids)
    elif layout == "devkit":
        write_devkit_meta(out, val_wnids, train_counts)
    return {"train": sum(train_counts.values()), "val": len(val_wnids)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path, help="new folder for the tree (pass it to --src)")
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS,
                        help="folder of real JPEG photos (default: %(default)s)")
    parser.add_argument("--images", type=int, default=3000, help="images in the tree")
    parser.add_argument("--recipe", default="imagenette",
                        help="recipe whose classes to fill (built-in name or .toml path)")
    parser.add_argument("--layout", choices=("kaggle", "devkit", "valprep"), default="valprep")
    parser.add_argument("--val-every", type=int, default=4,
                        help="every Nth image goes to ImageNet's val split (0: none)")
    parser.add_argument("--copy", action="store_true",
                        help="copy files instead of hard-linking them")
    args = parser.parse_args(argv)
    counts = make_corpus_tree(args.out, args.corpus, args.images, recipe_wnids(args.recipe),
                              args.layout, args.val_every, args.copy)
    print(f"{args.out}: {args.layout} layout, {counts['train']} train + {counts['val']} val "
          f"images from {args.corpus}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
