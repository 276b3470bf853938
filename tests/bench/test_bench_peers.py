"""scripts/bench_peers.py feeds the README's table against other tools: a contender timed while
doing less work (fewer images, outputs not resized to the bound) would make that table lie, so
its output check must catch exactly that. No timings here: only what the check sees."""

from __future__ import annotations

import importlib
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"


@pytest.fixture(scope="module")
def bench_peers():
    if str(SCRIPTS) not in sys.path:
        sys.path.insert(0, str(SCRIPTS))
    return importlib.import_module("bench_peers")


def _photos(folder: Path) -> list[Path]:
    """Three class folders' worth of JPEGs: two larger than 320 px, one smaller (kept)."""
    rng = np.random.default_rng(5)
    paths = []
    for i, size in enumerate([(500, 400), (200, 150), (380, 700)]):
        pixels = rng.integers(0, 256, (size[1] // 8, size[0] // 8, 3), dtype=np.uint8)
        path = folder / f"n0000000{i}" / f"n0000000{i}_{i}.JPEG"
        path.parent.mkdir(parents=True)
        Image.fromarray(pixels).resize(size).save(path, quality=90)
        paths.append(path)
    return paths


def _pillow_output(tmp_path: Path, paths: list[Path]) -> Path:
    """The Pillow-loop contender, run as the benchmark runs it (two processes)."""
    listing = tmp_path / "paths.txt"
    listing.write_text("".join(f"{p}\n" for p in paths))
    out = tmp_path / "out"
    subprocess.run([sys.executable, str(SCRIPTS / "peer_runs.py"), "pillow", "--list",
                    str(listing), "--out", str(out), "--size", "320", "--jobs", "2"], check=True)
    return out


def _contender(bench_peers, out: Path, bound: str):
    return bench_peers.Contender("c", "c", [], out, "folder", Path(sys.executable), bound)


def test_check_passes_a_contender_that_did_the_whole_job(tmp_path, bench_peers):
    paths = _photos(tmp_path / "src")
    out = _pillow_output(tmp_path, paths)
    want = bench_peers.expected_shorts(paths, 320)
    assert want == [150, 320, 320]
    check = bench_peers.inspect_output(_contender(bench_peers, out, "short"), 3, want, 320)
    assert check["ok"], check
    assert check["images"] == 3 and check["formats"] == {"JPEG": 3}


def test_check_flags_a_missing_image(tmp_path, bench_peers):
    paths = _photos(tmp_path / "src")
    out = _pillow_output(tmp_path, paths)
    next(out.iterdir()).unlink()
    check = bench_peers.inspect_output(_contender(bench_peers, out, "short"), 3,
                                       bench_peers.expected_shorts(paths, 320), 320)
    assert not check["ok"]
    assert "2 images for 3 sources" in check["problems"]


def test_check_flags_an_image_left_unresized(tmp_path, bench_peers):
    paths = _photos(tmp_path / "src")
    out = _pillow_output(tmp_path, paths)
    shutil.copyfile(paths[0], out / paths[0].name)  # the 500x400 source, copied as it was
    check = bench_peers.inspect_output(_contender(bench_peers, out, "short"), 3,
                                       bench_peers.expected_shorts(paths, 320), 320)
    assert not check["ok"]
    assert "1 images without the expected shortest side" in check["problems"]


def test_longest_side_bound_catches_an_oversized_output(tmp_path, bench_peers):
    """fastai's bound is the longest side: a 320 px shortest side breaks it."""
    paths = _photos(tmp_path / "src")
    out = _pillow_output(tmp_path, paths)
    check = bench_peers.inspect_output(_contender(bench_peers, out, "long"), 3,
                                       bench_peers.expected_shorts(paths, 320), 320)
    assert not check["ok"]
    assert any("longest side up to" in p for p in check["problems"])
