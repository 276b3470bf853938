"""Shared fixtures: small generated ImageNet trees, one per layout (session-scoped: made once)."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from imgtools.demo_tree import IMAGENETTE_WNIDS, IMAGEWOOF_WNIDS, make_imagenet_tree

REPO = Path(__file__).resolve().parent.parent
SHARED_REFERENCE = REPO.parent / "shared" / "reference"
WNIDS = list(IMAGENETTE_WNIDS + IMAGEWOOF_WNIDS)


def psnr(a, b) -> float:
    """PSNR in dB between two images or arrays of 0-255 values (inf when identical)."""
    x = np.asarray(a, dtype=np.float64)
    y = np.asarray(b, dtype=np.float64)
    mse = float(np.mean((x - y) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)


@pytest.fixture(scope="session")
def trees(tmp_path_factory) -> dict:
    """The same images in all three layouts (same seed), Imagenette + Imagewoof classes."""
    out = {}
    for layout in ("kaggle", "devkit", "valprep"):
        root = tmp_path_factory.mktemp(f"tree-{layout}")
        out[layout] = make_imagenet_tree(root / "imagenet", layout=layout, wnids=WNIDS,
                                         train_per_class=10, val_per_class=4, seed=0)
    return out


@pytest.fixture(scope="session")
def kaggle_tree(trees):
    return trees["kaggle"]


def run_cli(*args: str, cwd: Path | None = None, env: dict | None = None,
            check: bool = True) -> subprocess.CompletedProcess:
    """Run ``imgtools`` as a user would (a real process: exit codes, stderr)."""
    proc = subprocess.run([sys.executable, "-m", "imgtools.cli", *map(str, args)], cwd=cwd,
                          env=env, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"imgtools {' '.join(map(str, args))} exited {proc.returncode}:\n"
                             f"{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture(scope="session")
def small_tree(tmp_path_factory) -> Path:
    """A tiny clean valprep tree (Imagenette's classes, 3 train + 2 val images each, no quirks)
    for tests that plant one fault in a copy of it (copy with shutil.copytree first)."""
    root = tmp_path_factory.mktemp("small-tree") / "imagenet"
    make_imagenet_tree(root, layout="valprep", train_per_class=3, val_per_class=2,
                       quirks=False, seed=0)
    return root
