#!/usr/bin/env python
"""Memory of a build plan for all of ImageNet-1k, measured (tracemalloc), not assumed.

The plan is the only structure of a build that grows with the number of images. This script
plans the ``imagenet`` recipe over a stand-in source that lists ImageNet-1k's real shape
(1000 classes, --train-per-class train and --val-per-class val file names each, ImageNet's
naming) without touching a disk, then reports the memory the plan holds, the peak while
planning, and the time to cut it into shuffled shards.

    python scripts/plan_memory.py                 # 1,281 train + 50 val per class
"""

from __future__ import annotations

import argparse
import time
import tracemalloc
from pathlib import Path

from imgtools.plan import make_plan
from imgtools.recipes import load_recipe
from imgtools.sources.imagenet_tree import ImageNetSource


class ListingOnlySource(ImageNetSource):
    """ImageNet's names and layout, no files: planning needs only listings."""

    def __init__(self, train_per_class: int, val_per_class: int):
        root = Path("/imagenet")
        super().__init__(root, "valprep", root / "train", root / "val")
        self.n_train, self.n_val = train_per_class, val_per_class
        self.next_val = 0

    def has_class(self, wnid: str) -> bool:
        return True

    def train_files(self, wnid: str) -> list[str]:
        return [f"{wnid}_{i}.JPEG" for i in range(self.n_train)]

    def val_files(self, wnid: str) -> list[str]:
        first, self.next_val = self.next_val, self.next_val + self.n_val
        return [f"ILSVRC2012_val_{i + 1:08d}.JPEG" for i in range(first, self.next_val)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train-per-class", type=int, default=1281)
    ap.add_argument("--val-per-class", type=int, default=50)
    args = ap.parse_args()
    source = ListingOnlySource(args.train_per_class, args.val_per_class)
    tracemalloc.start()
    started = time.perf_counter()
    plan = make_plan(load_recipe("imagenet"), source, split_mode="source", seed=0)
    planned = time.perf_counter() - started
    held, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    started = time.perf_counter()
    n = sum(len(items) for _, items in plan.shards(256, shuffle=True))
    cut = time.perf_counter() - started
    print(f"{plan.total():,} images planned in {planned:.1f} s: the plan holds "
          f"{held / 1e6:.1f} MB ({held / plan.total():.0f} bytes an image), peak while planning "
          f"{peak / 1e6:.1f} MB; {n:,} images cut into shuffled shards in {cut:.1f} s")


if __name__ == "__main__":
    main()
