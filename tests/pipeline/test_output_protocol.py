"""The one output protocol (imgtools.pipeline.output), through build and convert: each test
plants one of the defects issue 11 lists and checks that it cannot happen any more."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import RUN_RECORD, run_cli, staging_of

import imgtools.pipeline.engine as engine_module
import imgtools.pipeline.output as output_module
from imgtools.build import BuildOptions, build
from imgtools.convert import convert
from imgtools.errors import UserError
from imgtools.locks import exclusive
from imgtools.pipeline.output import MANIFEST, run_folder
from imgtools.plan import make_plan
from imgtools.recipes import load_recipe
from imgtools.sources import open_source


def digest(root: Path, *, data_only: bool = False) -> dict[str, str]:
    """Relative path -> sha256 of every file under ``root`` (``data_only``: run record left
    out, for comparing two runs)."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*"))
            if p.is_file() and not (data_only and p.name in RUN_RECORD)}


def built(src: Path, out: Path, **kw) -> Path:
    plan = make_plan(load_recipe("imagenette"), open_source(src), split_mode="random", seed=0)
    opts = BuildOptions(out=out, sizes=[64], quiet=True, n_jobs=1, **kw)
    return Path(build(plan, opts, command="test")["outputs"][0])


@pytest.fixture(scope="module")
def folder(kaggle_tree, tmp_path_factory) -> Path:
    """A small finished folder dataset to convert."""
    return built(kaggle_tree.src, tmp_path_factory.mktemp("folder"))


class _Killed(BaseException):
    """Stands in for a kill inside a shard: the run folder stays behind."""


def _interrupted_convert(monkeypatch, src: Path, dst: Path, after: int, **kw) -> None:
    real = engine_module.run_shard
    calls = {"n": 0}

    def dying(task):
        calls["n"] += 1
        if calls["n"] > after:
            raise _Killed
        return real(task)

    monkeypatch.setattr(engine_module, "run_shard", dying)
    with pytest.raises(_Killed):
        convert(src, dst, "webdataset", quiet=True, n_jobs=1, shard_records=20, **kw)
    monkeypatch.setattr(engine_module, "run_shard", real)


# ------------------------------------------------------------------ a finished output is kept


def test_resume_into_a_finished_conversion_with_other_settings_changes_nothing(folder, tmp_path,
                                                                              kaggle_tree):
    dst = tmp_path / "tfr"
    convert(folder, dst, "tfrecord", quiet=True, n_jobs=1)
    before = digest(dst)
    with pytest.raises(UserError, match="to: 'tfrecord' then, 'parquet' now"):
        convert(folder, dst, "parquet", quiet=True, n_jobs=1, resume=True)
    with pytest.raises(UserError, match="size: None then, 32 now"):
        convert(folder, dst, "tfrecord", quiet=True, n_jobs=1, resume=True, size=32)
    other = built(kaggle_tree.src, tmp_path / "other", quality=70)
    with pytest.raises(UserError, match="src: "):
        convert(other, dst, "tfrecord", quiet=True, n_jobs=1, resume=True)
    assert digest(dst) == before
    again = convert(folder, dst, "tfrecord", quiet=True, n_jobs=1, resume=True)
    assert again["nothing_to_do"] and digest(dst) == before


def test_resume_refuses_an_input_file_whose_contents_changed(folder, tmp_path, monkeypatch):
    src = tmp_path / "src"
    shutil.copytree(folder, src)
    _interrupted_convert(monkeypatch, src, tmp_path / "wds", after=2)
    victim = sorted((src / "val").rglob("*.JPEG"))[-1]
    victim.write_bytes(victim.read_bytes()[:-100] + b"\xff\xd9")  # same name, other bytes
    with pytest.raises(UserError, match=f"input file {victim} changed"):
        convert(src, tmp_path / "wds", "webdataset", quiet=True, n_jobs=1, shard_records=20,
                resume=True)


def test_resume_of_a_build_names_the_setting_that_differs(kaggle_tree, tmp_path):
    out = built(kaggle_tree.src, tmp_path)
    with pytest.raises(UserError, match="quality: 90 then, 75 now"):
        built(kaggle_tree.src, tmp_path, resume=True, quality=75)
    assert (out / MANIFEST).is_file()


# ------------------------------------------------------------------ --overwrite deletes only ours


def test_build_overwrite_refuses_a_folder_holding_a_users_file(kaggle_tree, tmp_path):
    out = built(kaggle_tree.src, tmp_path)
    (out / "notes.txt").write_text("my notes")
    before = digest(out)
    with pytest.raises(UserError, match="notes.txt"):
        built(kaggle_tree.src, tmp_path, overwrite=True)
    assert digest(out) == before
    (out / "notes.txt").unlink()
    built(kaggle_tree.src, tmp_path, overwrite=True)  # ours alone: replaced


def test_overwrite_decides_by_names_when_the_manifest_digested_otherwise(kaggle_tree,
                                                                          tmp_path):
    """Outputs written before folder digests left out sizes have other digests: names and
    counts still decide, so such an output is replaced and a user's file is still found."""
    out = built(kaggle_tree.src, tmp_path)
    manifest = json.loads((out / MANIFEST).read_text())
    for entry in manifest["folders"].values():
        entry["sha256"] = "0" * 64
    (out / MANIFEST).write_text(json.dumps(manifest))
    class_folder = next(p for p in (out / "train").iterdir() if p.is_dir())
    (class_folder / "mine.JPEG").write_bytes(b"a user's image")
    with pytest.raises(UserError, match="mine.JPEG"):
        built(kaggle_tree.src, tmp_path, overwrite=True)
    (class_folder / "mine.JPEG").unlink()
    built(kaggle_tree.src, tmp_path, overwrite=True)
    assert json.loads((out / MANIFEST).read_text())["folders"] != manifest["folders"]


def test_convert_overwrite_does_not_trust_a_bare_sidecar(folder, tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "imgtools-dataset.json").write_text("{}")
    (mine / "thesis.tex").write_text("precious")
    with pytest.raises(UserError, match="did not write"):
        convert(folder, mine, "webdataset", quiet=True, n_jobs=1, overwrite=True)
    assert (mine / "thesis.tex").read_text() == "precious"


def test_overwrite_keeps_the_old_output_until_the_new_one_is_complete(folder, tmp_path,
                                                                     monkeypatch):
    dst = tmp_path / "wds"
    convert(folder, dst, "webdataset", quiet=True, n_jobs=1, shard_records=20)
    before = digest(dst)
    _interrupted_convert(monkeypatch, folder, dst, after=1, overwrite=True)
    assert digest(dst) == before  # still the whole old dataset
    convert(folder, dst, "webdataset", quiet=True, n_jobs=1, shard_records=20, resume=True)
    assert digest(dst, data_only=True) == {k: v for k, v in before.items()
                                           if Path(k).name not in RUN_RECORD}


# ------------------------------------------------------------------ one writer at a time


def test_a_second_conversion_into_the_same_output_is_refused_while_one_runs(folder, tmp_path):
    dst = tmp_path / "out"
    with exclusive([dst]), pytest.raises(UserError, match="another imgtools process"):
        convert(folder, dst, "parquet", quiet=True, n_jobs=1, resume=True)
    convert(folder, dst, "parquet", quiet=True, n_jobs=1, resume=True)


# ------------------------------------------------------------------ markers and resume


def test_a_marker_whose_file_is_gone_is_redone(folder, tmp_path, monkeypatch):
    convert(folder, tmp_path / "clean", "webdataset", quiet=True, n_jobs=1, shard_records=20)
    dst = tmp_path / "wds"
    _interrupted_convert(monkeypatch, folder, dst, after=2)
    done = sorted(staging_of(dst).rglob("*.tar"))
    assert len(done) == 2
    done[0].unlink()
    done[1].write_bytes(done[1].read_bytes()[:512])  # wrong size: not the file it vouched for
    convert(folder, dst, "webdataset", quiet=True, n_jobs=1, shard_records=20, resume=True)
    assert digest(dst, data_only=True) == digest(tmp_path / "clean", data_only=True)
    assert not run_folder([dst]).exists()


def test_markers_written_before_the_compact_file_list_are_still_trusted(folder, tmp_path,
                                                                       monkeypatch):
    """A run interrupted by an imgtools that wrote a marker's files as ``[path, size]`` pairs
    and its checksums as ``{path: sha256}``: a resume trusts those markers (it runs only the
    other shards) and ends with the same bytes, SHA256SUMS included."""
    convert(folder, tmp_path / "clean", "webdataset", quiet=True, n_jobs=1, shard_records=20)
    dst = tmp_path / "wds"
    _interrupted_convert(monkeypatch, folder, dst, after=2)

    def old_shape(summary: dict) -> None:
        paths, sizes = summary.pop("file_paths").split("\0"), summary.pop("file_sizes")
        summary["files"] = [[p, s] for p, s in zip(paths, sizes, strict=True)]
        summary["checksums"] = [dict(reversed(line.split("  ", 1))
                                     for line in text.splitlines())
                                for text in summary.pop("sha256sums")]

    assert _rewrite_markers(dst, [old_shape] * 2) == 2
    ran, report = _resume_counting_shards(monkeypatch, folder, dst)
    assert ran == report["shards"] - 2
    assert digest(dst, data_only=True) == digest(tmp_path / "clean", data_only=True)


def test_a_marker_whose_file_list_is_damaged_is_redone(folder, tmp_path, monkeypatch):
    convert(folder, tmp_path / "clean", "webdataset", quiet=True, n_jobs=1, shard_records=20)
    dst = tmp_path / "wds"
    _interrupted_convert(monkeypatch, folder, dst, after=3)
    damages = [lambda m: m.pop("file_sizes"), lambda m: m["file_sizes"].pop(),
               lambda m: m.update(file_paths=7)]
    assert _rewrite_markers(dst, damages) == 3
    ran, report = _resume_counting_shards(monkeypatch, folder, dst)
    assert ran == report["shards"]
    assert digest(dst, data_only=True) == digest(tmp_path / "clean", data_only=True)


def _rewrite_markers(dst: Path, changes: list) -> int:
    """Apply ``changes[i]`` to the summary in the i-th done marker of ``dst``'s run; how many
    markers there were (each must get a change)."""
    markers = sorted((run_folder([dst]) / "markers").glob("*.json"))
    for marker, change in zip(markers, changes, strict=True):
        summary = json.loads(marker.read_text())
        change(summary)
        marker.write_text(json.dumps(summary))
    return len(markers)


def _resume_counting_shards(monkeypatch, src: Path, dst: Path) -> tuple[int, dict]:
    """Resume :func:`_interrupted_convert`'s run: how many shards ran, and the report."""
    ran = []
    real = engine_module.run_shard
    monkeypatch.setattr(engine_module, "run_shard", lambda task: ran.append(task) or real(task))
    report = convert(src, dst, "webdataset", quiet=True, n_jobs=1, shard_records=20,
                     resume=True)
    return len(ran), report


def test_resume_on_a_complete_output_exits_0_and_says_so(kaggle_tree, tmp_path):
    args = ["build", "imagenette", "--src", kaggle_tree.src, "--out", tmp_path, "--size", "64",
            "--split", "random", "-j", "1"]
    run_cli(*args, "-q")
    out = tmp_path / "imagenette2-64"
    before = digest(out)
    again = run_cli(*args, "--resume")
    assert "already complete" in again.stdout
    assert digest(out) == before
    conv = ["convert", out, tmp_path / "pq", "--to", "parquet", "-j", "1"]
    run_cli(*conv, "-q")
    assert "already complete" in run_cli(*conv, "--resume").stdout
    refused = run_cli(*conv, check=False)
    assert refused.returncode == 2 and "--resume" in refused.stderr


# ------------------------------------------------------------------ signals


def _processes_with(marker: str) -> list[int]:
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if marker.encode() in (proc / "environ").read_bytes():
                found.append(int(proc.name))
        except OSError:
            continue
    return found


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="needs Linux /proc")
def test_sigterm_ends_with_143_a_message_and_no_worker_left(kaggle_tree, tmp_path):
    marker = f"IMGTOOLS_SIGTERM_TEST={os.getpid()}-{time.time_ns()}"
    env = {**os.environ, marker.split("=")[0]: marker.split("=")[1]}
    args = [sys.executable, "-m", "imgtools.cli", "build", "imagewang", "--src",
            str(kaggle_tree.src), "--split", "random", "--size", "full", "--size", "320",
            "--out", str(tmp_path / "run"), "-j", "2", "--shard-size", "2", "-q"]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env,
                            text=True)
    markers = run_folder([tmp_path / "run" / "imagewang", tmp_path / "run" / "imagewang-320"]
                         ) / "markers"
    deadline = time.time() + 120
    while time.time() < deadline and len(list(markers.glob("*.json"))) < 3:
        time.sleep(0.01)
    assert len(list(markers.glob("*.json"))) >= 3, "the build never got going"
    proc.send_signal(signal.SIGTERM)
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert "interrupted" in err and "--resume" in err
    assert "Traceback" not in err
    deadline = time.time() + 10
    while time.time() < deadline and _processes_with(marker):
        time.sleep(0.1)
    assert not _processes_with(marker), "worker processes outlived the parent"
    assert not (tmp_path / "run" / "imagewang").exists()
    report = run_cli(*args[3:], "--resume", "--json", env=env)
    assert '"outputs"' in report.stdout


def reference_digests(root: Path) -> dict:
    """The manifest's folder record as ``os.walk`` and a second listing made it (until
    December 2026): the one-listing walk must write the same manifests."""
    out = {}
    for folder, dirs, _names in os.walk(root):
        dirs.sort()
        rel = os.path.relpath(folder, root)
        with os.scandir(folder) as it:
            names = sorted(e.name for e in it if not e.is_dir(follow_symlinks=False)
                           and not (rel == "." and e.name == MANIFEST))
        entry = {"files": len(names), "sha256": hashlib.sha256(
            "".join(f"{n}\n" for n in names).encode("utf-8", "surrogateescape")).hexdigest()}
        if len(names) <= output_module.NAMED_FILES_PER_FOLDER:
            entry["names"] = names
        out[rel] = entry
    return out


def test_the_manifest_lists_folders_as_os_walk_does(tmp_path):
    root = tmp_path / "out"
    for rel in ("a.txt", MANIFEST, "train/b/x.JPEG", "train/a/y.JPEG", "train/a/deep/z",
                "val/q", "zz/empty/.keep"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(rel)
    for i in range(output_module.NAMED_FILES_PER_FOLDER + 3):  # a counted folder
        (root / "train" / "b" / f"{i:04d}.JPEG").write_text("x")
    (root / "train" / "link_to_a").symlink_to(root / "train" / "a")  # a file to the manifest
    (root / "val" / "link_to_q").symlink_to(root / "val" / "q")
    (root / "zz" / "no_names").mkdir()
    digests = output_module.folder_digests(root)
    assert digests == reference_digests(root)
    assert list(digests) == list(reference_digests(root))  # the same order
    assert "link_to_a" in digests["train"]["names"]


def test_stale_temporaries_are_removed_at_every_depth_and_nothing_else(tmp_path):
    from imgtools.atomic import TMP_PREFIX, remove_stale_tmp

    kept = ["a.JPEG", "train/n1/b.JPEG", f"train/{TMP_PREFIX}dir/c.JPEG"]
    stale = [f"{TMP_PREFIX}x", f"train/n1/{TMP_PREFIX}y.JPEG",
             f"train/{TMP_PREFIX}dir/{TMP_PREFIX}z"]
    for rel in kept + stale:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(rel)
    assert remove_stale_tmp(tmp_path) == len(stale)
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file()) \
        == sorted(kept)
