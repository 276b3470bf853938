"""Entries of a class folder that cannot be images: each is skipped and listed with its path
and reason (or listed as ignored), never a traceback, never a silent loss."""

from __future__ import annotations

import json
import os
import shutil
import threading
from pathlib import Path

import pytest
from conftest import run_cli

CLASS = "n01440764"


@pytest.fixture()
def planted(small_tree, tmp_path) -> Path:
    """A copy of the small tree whose first class holds a non-UTF-8 name, a looping symlink
    pair, a FIFO named .JPEG, a sub-folder with an image and a non-UTF-8 non-image file."""
    tree = tmp_path / "tree"
    shutil.copytree(small_tree, tree)
    folder = os.fsencode(tree / "train" / CLASS)
    some = os.path.join(folder, sorted(os.listdir(folder))[0])
    shutil.copy(some, os.path.join(folder, b"bad\xffbyte.JPEG"))
    os.symlink(b"loop1.JPEG", os.path.join(folder, b"loop2.JPEG"))
    os.symlink(b"loop2.JPEG", os.path.join(folder, b"loop1.JPEG"))
    os.mkfifo(os.path.join(folder, b"fifo.JPEG"))
    os.mkdir(os.path.join(folder, b"nested"))
    shutil.copy(some, os.path.join(folder, b"nested", b"x.JPEG"))
    (Path(os.fsdecode(folder)) / os.fsdecode(b"notes\xfe.txt")).write_text("x")
    return tree


def _reasons(info: dict) -> dict[str, str]:
    return {os.path.basename(s["path"]): s["reason"] for s in info["skipped"]}


@pytest.mark.parametrize("fmt", ["folder", "pickle"])
def test_unusable_entries_are_skipped_and_listed(planted, tmp_path, fmt):
    fifo = str(planted / "train" / CLASS / "fifo.JPEG")
    # a FIFO that is opened for reading the normal way would block until a writer comes
    unblock = threading.Timer(60, lambda: open(fifo, "wb").close())  # noqa: SIM115
    unblock.daemon = True
    unblock.start()
    args = ["build", "imagenette", "--src", planted, "--out", tmp_path / "out", "--split",
            "random", "-j", "1", "--format", fmt, "--size", "64" if fmt == "folder" else "8"]
    proc = run_cli(*args, check=False)
    unblock.cancel()
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    out = next((tmp_path / "out").iterdir() if fmt == "folder" else
               (p for p in (tmp_path / "out").iterdir() if not p.name.startswith(".")))
    info = json.loads((out / "build-info.json").read_text())
    reasons = _reasons(info)
    assert "not valid UTF-8" in reasons[os.fsdecode(b"bad\xffbyte.JPEG")]
    assert reasons["fifo.JPEG"] == "not a regular file (a FIFO)"
    assert "Too many levels of symbolic links" in reasons["loop1.JPEG"]
    assert "Too many levels of symbolic links" in reasons["loop2.JPEG"]
    ignored = info["ignored_files"]
    assert any(p.endswith(f"{CLASS}/nested/") for p in ignored)
    assert any(p.endswith(os.fsdecode(b"notes\xfe.txt")) for p in ignored)
    # the summary shows the bad name escaped, never as a mangled or crashing string
    if fmt == "folder":
        assert "bad\\xffbyte.JPEG: file name is not valid UTF-8" in proc.stdout
        assert "--strict" not in proc.stdout
        strict = run_cli(*args, "--overwrite", "--strict", check=False)
        assert strict.returncode == 1


def test_build_with_a_non_utf8_name_writes_its_csv_and_checksums(planted, tmp_path):
    """The build used to die in the CSV writer after every image (so --resume could never
    finish it): now the name is skipped and the CSV and SHA256SUMS are written."""
    out = tmp_path / "out"
    run_cli("build", "imagenette", "--src", planted, "--out", out, "--split", "random",
            "--size", "64", "-j", "1", "-q")
    csv = (out / "imagenette2-64" / "noisy_imagenette.csv").read_text(encoding="utf-8")
    assert "bad" not in csv and "loop1" not in csv
    sums = (out / "imagenette2-64" / "SHA256SUMS").read_text(encoding="utf-8")
    assert len(sums.splitlines()) == 30 + 20
