"""imgtools.pipeline.identity: the input's identity lists every file a reader sees, in the
order ``os.walk`` gives them sorted (the order earlier runs' ``inputs.jsonl`` files were
written in, which a resume compares against), whatever the speed-ups of the listing."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from imgtools.pipeline.identity import (
    first_input_change,
    folder_entries,
    folder_lines,
    path_inputs,
    tree_inputs,
    write_input_lines,
    write_inputs,
)


def walked(root: str):
    """The reference: ``os.walk`` sorted, hidden files and folders left out, a stat each."""
    for folder, dirs, names in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        yield from path_inputs(os.path.join(folder, n) for n in sorted(names)
                               if not n.startswith("."))


@pytest.fixture
def tree(tmp_path) -> Path:
    root = tmp_path / "in"
    for rel in ("x", "a/z", "a/b/w", "c/é.JPEG", "c/B.jpg", "c/a.jpg", ".hidden/q", "a/.y"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(rel.encode())
    (root / "c" / "to_a").symlink_to(root / "a")  # a folder link: listed by os.walk, not entered
    (root / "c" / "to_x").symlink_to(root / "x")  # a file link: its target's size
    (root / "c" / "gone").symlink_to(root / "nowhere")  # dangling: -1, -1
    return root


@pytest.mark.parametrize("form", ["plain", "trailing separator", "no folder descriptors"])
def test_every_visible_file_in_os_walk_order(tree, form, monkeypatch):
    if form == "no folder descriptors":  # a platform without listdir(fd) / stat(dir_fd=)
        monkeypatch.setattr(os, "supports_fd", set())
    root = str(tree) + (os.sep if form == "trailing separator" else "")
    assert list(tree_inputs(Path(root))) == list(walked(root))
    names = [os.path.relpath(p, tree) for p, _size, _mtime in tree_inputs(tree)]
    assert names == ["x", "a/z", "a/b/w", "c/B.jpg", "c/a.jpg", "c/gone", "c/to_x", "c/é.JPEG"]
    sizes = dict((os.path.relpath(p, tree), size) for p, size, _mtime in tree_inputs(tree))
    assert sizes["c/gone"] == -1 and sizes["c/to_x"] == len(b"x")


def test_a_single_file_is_its_own_identity(tree):
    assert list(tree_inputs(tree / "x")) == list(path_inputs([str(tree / "x")]))


def test_the_inputs_file_is_json_lines_and_its_digest(tree, tmp_path):
    count, digest = write_inputs(tmp_path / "inputs.jsonl", tree_inputs(tree))
    data = (tmp_path / "inputs.jsonl").read_bytes()
    assert count == 8 and digest == hashlib.sha256(data).hexdigest()
    lines = [json.loads(line) for line in data.decode().splitlines()]
    assert [tuple(x) for x in lines] == list(tree_inputs(tree))
    assert data.decode().splitlines()[0] == json.dumps(lines[0])  # json.dumps's spelling


@pytest.mark.parametrize("folder", ["/data/imagenette2-320/train/n01440764",
                                    '/data/with "quotes" and \\ back/', "/données/类/\udcff"])
def test_a_folders_lines_made_at_once_are_the_lines_of_its_entries(folder, tmp_path):
    """The plan writes each folder's identity lines with the folder's part escaped once
    (:func:`folder_lines`): the same bytes as :func:`write_inputs` of its entries, so a
    fingerprint made either way compares equal, whatever the names hold."""
    files = [(name, size, 1_700_000_000_123_456_789 + size, True) for size, name in enumerate(
        ["a.JPEG", 'q"uote.jpg', "back\\slash.png", "tab\tnew\nline.jpg", "ünï.jpg",
         "😀.jpeg", "\udcff\udc80raw.jpg", "\x7f\x01.jpg"])]
    expected = write_inputs(tmp_path / "entries.jsonl", folder_entries(folder, files))
    made = write_input_lines(tmp_path / "lines.jsonl", [folder_lines(folder, files)])
    assert made == expected and made[0] == len(files)
    assert (tmp_path / "lines.jsonl").read_bytes() == (tmp_path / "entries.jsonl").read_bytes()


def test_a_changed_file_is_named(tree, tmp_path):
    write_inputs(tmp_path / "then.jsonl", tree_inputs(tree))
    (tree / "a" / "z").write_bytes(b"longer than before")
    write_inputs(tmp_path / "now.jsonl", tree_inputs(tree))
    with open(tmp_path / "then.jsonl", encoding="utf-8") as then:
        assert first_input_change(then, tmp_path / "now.jsonl") == (
            f"input file {tree / 'a' / 'z'} changed (size 3 then, 18 now)")
