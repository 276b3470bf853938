"""SHA256SUMS escapes names as GNU coreutils does, so the real ``sha256sum -c`` checks every
file, including names holding a newline or a backslash; ``imgtools verify`` reads them back."""

from __future__ import annotations

import shutil
import subprocess

import pytest
from conftest import run_cli

from imgtools.checksums import parse_sha256sum_line, sha256sum_line, sha256sum_lines

ODD_NAMES = ["new\nline.JPEG", "back\\slash.JPEG", "carriage\rreturn.JPEG"]


@pytest.mark.parametrize("name", ["plain.JPEG", *ODD_NAMES])
def test_lines_read_back(name):
    line = sha256sum_line("ab" * 32, name)
    assert line.count("\n") == 1 and line.endswith("\n")
    assert parse_sha256sum_line(line[:-1]) == ("ab" * 32, name)


@pytest.mark.parametrize("names", [["a.JPEG", "b.JPEG"], ["a.JPEG", *ODD_NAMES], ODD_NAMES, []])
def test_a_shards_lines_at_once_are_the_lines_one_by_one(names):
    entries = [(f"{i:064x}", name) for i, name in enumerate(names)]
    assert sha256sum_lines(iter(entries)) == "".join(sha256sum_line(d, n) for d, n in entries)


@pytest.mark.skipif(shutil.which("sha256sum") is None, reason="needs GNU sha256sum")
def test_sha256sum_checks_odd_names(small_tree, tmp_path):
    tree = tmp_path / "tree"
    shutil.copytree(small_tree, tree)
    folder = tree / "train" / "n01440764"
    some = sorted(folder.iterdir())[0]
    for name in ODD_NAMES:
        shutil.copy(some, folder / name)
    out = tmp_path / "out"
    run_cli("build", "imagenette", "--src", tree, "--out", out, "--split", "source", "--size",
            "64", "-j", "1", "-q")
    root = out / "imagenette2-64"
    sums = (root / "SHA256SUMS").read_text(encoding="utf-8")
    assert len(sums.splitlines()) == 30 + 3 + 20
    check = subprocess.run(["sha256sum", "--strict", "-c", "SHA256SUMS"], cwd=root,
                           capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "FAILED" not in check.stdout
    verify = run_cli("verify", root, "-q", check=False)
    assert verify.returncode == 0, verify.stdout
    assert "53 checksums checked" in verify.stdout


@pytest.mark.parametrize("root_suffix", ["", "/"])
def test_the_folder_writers_own_lines_are_the_generic_ones(tmp_path, root_suffix):
    """The folder writer makes its SHA256SUMS lines from the names it kept while writing; they
    are the lines any writer's are, from its files' paths and digests (odd names, an
    unlabelled image, a root given with a trailing separator)."""
    from imgtools.formats.base import ShardWriter
    from imgtools.formats.folder import FolderWriter
    from imgtools.records import Record

    writer = FolderWriter(tmp_path, "train", digests=True)
    for i, name in enumerate(["a.JPEG", *ODD_NAMES]):
        writer.write(Record(f"k{i}", "train", i % 2, bytes([i]) * 10, name, f"n0{i % 2}", "c"))
    writer.write(Record("u", "train", None, b"unlabelled", "u.JPEG"))
    paths = writer.close()
    root = str(tmp_path) + root_suffix
    own = writer.sha256sum_text(root, paths)
    assert own == ShardWriter.sha256sum_text(writer, root, paths)
    assert own.count("  train/n01/") == 2 and "  train/u.JPEG\n" in own
