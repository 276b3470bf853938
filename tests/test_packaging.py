"""The wheel carries builders/ and manifests/ and works from a clean venv."""

from __future__ import annotations

import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest
from conftest import REPO, WNIDS

from imgtools.demo_tree import make_imagenet_tree


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    dist = tmp_path_factory.mktemp("dist")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "-q", "-w", str(dist), str(REPO)], check=True)
    (whl,) = dist.glob("imgtools-*.whl")
    return whl


def test_wheel_ships_recipes_and_manifests(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for recipe in ("imagenette", "imagewoof", "imagewang", "imagenet"):
        assert f"imgtools/_data/builders/{recipe}.toml" in names
    assert "imgtools/_data/manifests/imagenet1k_map_clsloc.txt" in names
    assert "imgtools/_data/manifests/imagenette.tsv" in names


def test_build_from_installed_wheel_in_clean_venv(wheel, tmp_path):
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    py = env_dir / "bin" / "python"
    subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install", "-q",
                    "--no-deps", str(wheel)], check=True)
    # Dependencies come from the test environment (no network needed); imgtools itself only
    # from the wheel: the outer site-packages is appended after the venv's own.
    site = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()"
                           "['purelib'])"], capture_output=True, text=True, check=True)
    Path(site.stdout.strip(), "outer-deps.pth").write_text(sysconfig.get_paths()["purelib"])
    tree = make_imagenet_tree(tmp_path / "tree", layout="valprep", wnids=WNIDS[:10],
                              train_per_class=4, val_per_class=2, quirks=False)
    where = subprocess.run([str(py), "-c", "import imgtools; print(imgtools.__file__)"],
                           cwd=tmp_path, capture_output=True, text=True, check=True)
    assert str(env_dir) in where.stdout
    proc = subprocess.run([str(env_dir / "bin" / "imgtools"), "build", "imagenette", "--src",
                           str(tree.src), "--split", "random", "--size", "64", "--out",
                           str(tmp_path / "out"), "-q"], cwd=tmp_path, capture_output=True,
                          text=True)
    assert proc.returncode == 0, proc.stderr
    built = list((tmp_path / "out" / "imagenette2-64" / "train").rglob("*.JPEG"))
    assert len(built) == 10 * 6 - round(6 * 0.3) * 10
