"""Shared fixtures: small generated ImageNet trees, one per layout (session-scoped: made once)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from imgtools.demo_tree import IMAGENETTE_WNIDS, IMAGEWOOF_WNIDS, make_imagenet_tree

REPO = Path(__file__).resolve().parent.parent
SHARED_REFERENCE = REPO.parent / "shared" / "reference"
WNIDS = list(IMAGENETTE_WNIDS + IMAGEWOOF_WNIDS)


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
