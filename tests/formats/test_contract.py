"""The format contract: every format the registry lists goes through the same checks, so a
new format is tested the day it is registered (img2dataset's tests/test_writer.py idea, with
resume and verify added)."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest
from conftest import RUN_RECORD, staging_of

import imgtools.formats.tfrecord as tfrecord_module
import imgtools.formats.webdataset as webdataset_module
import imgtools.pipeline.engine as engine_module
import imgtools.pipeline.units as units_module
from imgtools.build import BuildOptions, build
from imgtools.convert import convert
from imgtools.errors import UserError
from imgtools.formats import FORMAT_NAMES, LOSSLESS_TARGETS, ROWS_ONLY, detect_format, get_format
from imgtools.formats.base import Format
from imgtools.inspect.verify import verify
from imgtools.plan import make_plan
from imgtools.recipes import load_recipe
from imgtools.records import DATASET_META, Record
from imgtools.sources import open_source

SIDECARS = RUN_RECORD | {DATASET_META, "croissant.json"}


def data(root: Path) -> dict[str, str]:
    """Relative path -> sha256 of every file but the run record and the class-list sidecar."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and p.name not in SIDECARS}


@pytest.fixture(scope="module")
def folder(kaggle_tree, tmp_path_factory) -> Path:
    """A small finished JPEG-folder dataset (train and val, ten classes)."""
    plan = make_plan(load_recipe("imagenette"), open_source(kaggle_tree.src),
                     split_mode="random", seed=0)
    out = tmp_path_factory.mktemp("contract")
    report = build(plan, BuildOptions(out=out, sizes=[48], quiet=True, n_jobs=1),
                   command="test")
    return Path(report["outputs"][0])


def test_the_registry_declares_what_each_format_can_do():
    for name in FORMAT_NAMES:
        fmt = get_format(name)
        assert isinstance(fmt, Format) and fmt.name == name
        assert ("as-input" in fmt.takes) == (name not in ROWS_ONLY)
    assert set(LOSSLESS_TARGETS) == set(FORMAT_NAMES) - ROWS_ONLY


@pytest.mark.parametrize("fmt", LOSSLESS_TARGETS)
def test_round_trip_is_lossless(fmt, folder, tmp_path):
    convert(folder, tmp_path / fmt, fmt, quiet=True, n_jobs=1, shard_records=9)
    assert detect_format(tmp_path / fmt).name == fmt
    convert(tmp_path / fmt, tmp_path / "back", "folder", quiet=True, n_jobs=1)
    ours = {k: v for k, v in data(folder).items() if not k.endswith(".csv")
            and k != "SHA256SUMS"}
    back = data(tmp_path / "back")
    assert back.pop("SHA256SUMS") and back == ours
    listed = set((tmp_path / "back" / "SHA256SUMS").read_text().splitlines())
    assert listed == set((folder / "SHA256SUMS").read_text().splitlines())


@pytest.mark.parametrize("fmt", LOSSLESS_TARGETS)
def test_bytes_do_not_depend_on_the_worker_count(fmt, folder, tmp_path):
    convert(folder, tmp_path / "one", fmt, quiet=True, n_jobs=1, shard_records=9)
    convert(folder, tmp_path / "two", fmt, quiet=True, n_jobs=2, shard_records=9)
    assert data(tmp_path / "one") == data(tmp_path / "two")


@pytest.mark.parametrize("fmt", LOSSLESS_TARGETS)
def test_an_unknown_writer_option_is_an_error_before_any_work(fmt, folder, tmp_path):
    with pytest.raises(UserError, match="no option 'shcema'"):
        convert(folder, tmp_path / "x", fmt, quiet=True, n_jobs=1, shcema="tfds")
    assert not (tmp_path / "x").exists() and not list(tmp_path.iterdir())


@pytest.mark.parametrize("fmt", LOSSLESS_TARGETS)
def test_an_aborted_shard_leaves_nothing(fmt, folder, tmp_path):
    reader = detect_format(folder)
    info = reader.read_info(folder)
    records: list[Record] = []
    for shard in reader.input_shards(folder):
        records += list(reader.read_shard(shard, info))
        if len(records) >= 3:
            break
    writer = get_format(fmt).open_writer(tmp_path, info, records[0].split, 0, 1)
    for record in records[:3]:
        writer.write(record)
    writer.abort()
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


HASHED_WHILE_WRITING = {"folder", "tfrecord", "webdataset"}
"""Writers that hash their files as they write them (``known_digests``), so that
``SHA256SUMS`` does not read every output byte back; the others are read back after."""


@pytest.mark.parametrize("fmt", LOSSLESS_TARGETS)
def test_digests_known_while_writing_are_the_files_digests(fmt, folder, tmp_path):
    reader = detect_format(folder)
    info = reader.read_info(folder)
    records = [r for shard in reader.input_shards(folder) for r in reader.read_shard(shard, info)]
    train = [r for r in records if r.split == "train"][:5]
    writer = get_format(fmt).open_writer(tmp_path, info, "train", 0, 1, digests=True)
    for record in train:
        writer.write(record)
    files = writer.close()
    known = {Path(f): d for f, d in writer.known_digests.items()}
    assert bool(known) == (fmt in HASHED_WHILE_WRITING)
    assert set(known) <= {Path(f) for f in files}
    for f, digest in known.items():
        assert digest == hashlib.sha256(f.read_bytes()).hexdigest(), f
    for f in files:  # known while writing (folder) or stat'ed: the size on disk either way
        assert writer.size(f) == Path(f).stat().st_size, f
    assert bool(writer.known_sizes) == (fmt == "folder")
    # what a shard's marker lists: each file's size, and the folders a sync must reach
    assert writer.sizes(files) == [Path(f).stat().st_size for f in files]
    assert writer.folders(files) == {str(Path(f).parent) for f in files}


@pytest.mark.parametrize("fmt", LOSSLESS_TARGETS)
def test_finalize_from_the_writers_facts_writes_what_reading_the_files_back_writes(
        fmt, folder, tmp_path, monkeypatch):
    """The record counts (and tar fields) the writers report make the same indexes and cards
    as reading every output file back, and no file is read back when they are known."""
    real_add = engine_module.Totals.add
    read_back: list[str] = []
    for module, name in ((webdataset_module, "count_samples"),
                         (tfrecord_module, "scan_lengths")):
        real = getattr(module, name)
        monkeypatch.setattr(module, name, lambda path, *a, _real=real, **k: (
            read_back.append(Path(path).name), _real(path, *a, **k))[1])
    convert(folder, tmp_path / "known", fmt, quiet=True, n_jobs=1, shard_records=9)
    assert read_back == []

    def without_facts(totals, summary, *shard_id):
        real_add(totals, {k: v for k, v in summary.items() if k != "file_facts"}, *shard_id)

    monkeypatch.setattr(engine_module.Totals, "add", without_facts)
    convert(folder, tmp_path / "read", fmt, quiet=True, n_jobs=1, shard_records=9)
    assert bool(read_back) == (fmt in ("webdataset", "tfrecord"))
    assert data(tmp_path / "known") == data(tmp_path / "read")


def test_a_gzip_tfrecord_is_hashed_after_writing(folder, tmp_path):
    """The bytes written are the compressor's, not the records': none is claimed known."""
    reader = detect_format(folder)
    info = reader.read_info(folder)
    record = next(reader.read_shard(reader.input_shards(folder)[0], info))
    writer = get_format("tfrecord").open_writer(tmp_path, info, record.split, 0, 1,
                                                digests=True, compression="gzip")
    writer.write(record)
    writer.close()
    assert writer.known_digests == {}


def _largest_data_file(root: Path) -> Path:
    return max((p for p in root.rglob("*") if p.is_file() and p.name not in SIDECARS
                and p.suffix not in (".index", ".json", ".csv") and p.name != "SHA256SUMS"),
               key=lambda p: p.stat().st_size)


@pytest.mark.parametrize("fmt", LOSSLESS_TARGETS)
@pytest.mark.parametrize("damage", ["truncated", "corrupted"])
def test_verify_finds_a_damaged_file(fmt, damage, folder, tmp_path):
    dst = tmp_path / fmt
    convert(folder, dst, fmt, quiet=True, n_jobs=1, shard_records=9)
    assert verify(dst, n_jobs=1)["ok"]
    victim = _largest_data_file(dst)
    raw = bytearray(victim.read_bytes())
    if damage == "truncated":
        raw = raw[: len(raw) * 2 // 3]
    else:
        middle = len(raw) // 2
        raw[middle:middle + 64] = bytes(64)
    victim.write_bytes(bytes(raw))
    try:
        report = verify(dst, n_jobs=1)
    except UserError:  # a container too damaged to open is found too
        return
    assert not report["ok"]


class _Killed(BaseException):
    """A kill inside a shard, after some records were written."""


@pytest.mark.parametrize("fmt", LOSSLESS_TARGETS)
def test_a_kill_mid_shard_then_resume_gives_identical_bytes(fmt, folder, tmp_path,
                                                             monkeypatch):
    convert(folder, tmp_path / "clean", fmt, quiet=True, n_jobs=1, shard_records=9)
    real = units_module.read_slice
    calls = {"n": 0}

    def dying(src_fmt, piece, info):
        for record in real(src_fmt, piece, info):
            calls["n"] += 1
            if calls["n"] == 20:  # inside the third shard
                raise _Killed
            yield record

    monkeypatch.setattr(units_module, "read_slice", dying)
    with pytest.raises(_Killed):
        convert(folder, tmp_path / "run", fmt, quiet=True, n_jobs=1, shard_records=9)
    monkeypatch.setattr(units_module, "read_slice", real)
    assert not (tmp_path / "run").exists()
    assert not [p for p in staging_of(tmp_path / "run").rglob(".tmp-*")]  # aborted: no torso
    convert(folder, tmp_path / "run", fmt, quiet=True, n_jobs=1, shard_records=9, resume=True)
    assert data(tmp_path / "run") == data(tmp_path / "clean")


def test_build_bytes_do_not_depend_on_the_work_shard_size(kaggle_tree, tmp_path):
    plan = make_plan(load_recipe("imagenette"), open_source(kaggle_tree.src),
                     split_mode="random", seed=0)
    outs = []
    for shard_size, jobs in ((4, 1), (13, 2)):
        opts = BuildOptions(out=tmp_path / f"s{shard_size}", sizes=[48], quiet=True,
                            n_jobs=jobs, shard_size=shard_size)
        outs.append(Path(build(plan, opts, command="test")["outputs"][0]))
    assert data(outs[0]) == data(outs[1])
    shutil.rmtree(outs[0])
