"""The one engine (:mod:`imgtools.pipeline.engine`): every command that writes a dataset is a
job run by the same loop and the same shard worker; a transform and a writer must agree on
what passes between them; a format's second pass runs through the same executor and markers."""

from __future__ import annotations

import functools
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from conftest import build_dataset, make_folder, random_jpeg, tree_digest

from imgtools.atomic import TMP_PREFIX
from imgtools.convert import convert
from imgtools.downsample import DownsampleItem, downsample_dataset
from imgtools.executors.local import LocalExecutor
from imgtools.formats import get_format
from imgtools.pipeline import engine, report
from imgtools.pipeline.engine import Job, RunOptions, run_job
from imgtools.pipeline.units import PlanUnit
from imgtools.records import ClassInfo, DatasetInfo
from imgtools.transforms.passthrough import Passthrough
from imgtools.transforms.square import SquareRows


@pytest.fixture
def counted_shards(monkeypatch):
    """Which kinds of work unit went through :func:`engine.run_shard`."""
    seen: Counter[str] = Counter()
    real = engine.run_shard

    def counting(task):
        seen[type(task.payload.unit).__name__ + "/" + task.payload.fmt.name] += 1
        return real(task)

    monkeypatch.setattr(engine, "run_shard", counting)
    return seen


def test_build_convert_and_downsampling_share_the_one_shard_worker(kaggle_tree, tmp_path,
                                                                   counted_shards):
    build_dataset("imagenette", kaggle_tree.src, tmp_path / "b", sizes=(64,), n_jobs=1)
    built = tmp_path / "b" / "imagenette2-64"
    convert(built, tmp_path / "c", "webdataset", quiet=True, n_jobs=1)
    build_dataset("imagenette", kaggle_tree.src, tmp_path / "p", sizes=(8,), n_jobs=1,
                  fmt="pickle", format_options={"batches": 2})
    images = sorted(built.rglob("*.JPEG"))[:6]
    info = DatasetInfo("six", [ClassInfo("n01440764", "tench")])
    downsample_dataset([[DownsampleItem(str(p), "train", 0) for p in images]], tmp_path / "d",
                       [8], info=info, batches=1, n_jobs=1, quiet=True)
    assert set(counted_shards) == {"PlanUnit/folder", "SliceUnit/webdataset",
                                   "PlanUnit/pickle"}
    assert (tmp_path / "p" / "imagenette2_8x8" / "train_data_batch_2").is_file()
    assert (tmp_path / "d" / "six_8x8" / "train_data_batch_1").is_file()


def test_a_transform_the_writer_cannot_take_is_refused_before_anything_is_written(tmp_path):
    info = DatasetInfo("x", [ClassInfo("n01440764", "tench")])
    for transform, fmt in ((SquareRows((8,)), "folder"), (Passthrough(), "pickle")):
        out = tmp_path / fmt
        job = Job(outputs=[out], settings={}, inputs=lambda: [], units=lambda: [],
                  transform=transform, fmt=get_format(fmt), info=info)
        with pytest.raises(ValueError, match="writer takes"):
            run_job(job, RunOptions(quiet=True), lambda outcome: [{}])
        assert not out.exists() and not list(tmp_path.glob(".imgtools-run-*"))


def test_a_skipped_image_is_listed_once_and_written_to_no_output(tmp_path):
    """One unusable file among good ones: the shard skips it for every output (three sizes
    here) and the summary lists it once, with its reason."""
    good = tmp_path / "good.JPEG"
    from PIL import Image

    Image.new("RGB", (40, 30), (200, 10, 10)).save(good)
    bad = tmp_path / "bad.JPEG"
    bad.write_bytes(b"not a jpeg")
    info = DatasetInfo("x", [ClassInfo("n01440764", "tench")])
    items = [DownsampleItem(str(p), "train", 0) for p in (good, bad, good)]
    unit = PlanUnit(items, "train", 0, 1)
    roots = [tmp_path / f"parts{s}" for s in (8, 16, 32)]
    spec = engine.ShardSpec(unit, SquareRows((8, 16, 32)), get_format("pickle"),
                            tuple(map(str, roots)), info, {}, strict=False, hash_files=False)
    summary = engine.run_shard(engine.ShardTask("train-00000", spec))
    assert summary["n"] == 3 and summary["counts"] == {"n01440764": 2}
    assert [s["path"] for s in summary["skipped"]] == [str(bad)]
    for root, side in zip(roots, (8, 16, 32)):
        assert (root / "train-00000.rows").stat().st_size == 2 * 3 * side * side


def _jpeg_shard(tmp_path: Path, out: str, transform=None) -> engine.ShardSpec:  # noqa: ANN001
    """A build's shard of seven images at 16 px, the fourth one unusable (or the seven passed
    through by ``transform``)."""
    from imgtools.plan import PlanItem
    from imgtools.transforms.jpeg import RenderOptions, ResizeJPEG

    rng = np.random.default_rng(11)
    sources = []
    for i in range(7):
        src = tmp_path / f"src{i}.JPEG"
        if not src.exists():
            src.write_bytes(b"<html>not a jpeg</html>" if i == 3 else random_jpeg(rng, 40 + i, 30))
        sources.append(src)
    info = DatasetInfo("x", [ClassInfo("n01440764", "tench")])
    items = [PlanItem(str(p), "train", 0, "n01440764", f"{i:03d}.JPEG")
             for i, p in enumerate(sources)]
    return engine.ShardSpec(PlanUnit(items, "train", 0, 1),
                            transform or ResizeJPEG(RenderOptions((16,), "bilinear", 90,
                                                                  False)),
                            get_format("folder"), (str(tmp_path / out),), info, {},
                            strict=False, hash_files=True)


def test_records_in_flight_change_no_byte_and_no_order(tmp_path, monkeypatch):
    """A shard transforms several records before it writes them (the caches stay warm for
    the writes): one at a time, three, more than the shard holds, or a byte limit that
    writes after every record - the same files, checksums, order and skipped list."""
    results = []
    for n, limit in ((1, 16 << 20), (3, 16 << 20), (100, 16 << 20), (100, 1)):
        monkeypatch.setattr(engine, "RECORDS_IN_FLIGHT", n)
        monkeypatch.setattr(engine, "BYTES_IN_FLIGHT", limit)
        out = f"out-{n}-{limit}"
        summary = engine.run_shard(engine.ShardTask("train-00000", _jpeg_shard(tmp_path, out)))
        assert [s["path"] for s in summary["skipped"]] == [str(tmp_path / "src3.JPEG")]
        results.append((summary["sha256sums"], summary["counts"], tree_digest(tmp_path / out)))
    assert all(r == results[0] for r in results[1:])
    assert results[0][1] == {"n01440764": 6}


def _transforms_and_writes(monkeypatch, transform_cls) -> list[str]:  # noqa: ANN001
    """The events of the shards run after this: "t" for each record ``transform_cls``
    transforms, "w" for each record the folder format's writer writes, in order."""
    events: list[str] = []
    real_apply = transform_cls.apply

    def apply(self, record):  # noqa: ANN001, ANN202
        events.append("t")
        return real_apply(self, record)

    monkeypatch.setattr(transform_cls, "apply", apply)
    fmt_cls = type(get_format("folder"))
    real_writer = fmt_cls.open_writer

    def open_writer(self, *args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        writer = real_writer(self, *args, **kwargs)
        write = writer.write
        writer.write = lambda record: (events.append("w"), write(record))[1]
        return writer

    monkeypatch.setattr(fmt_cls, "open_writer", open_writer)
    return events


def test_records_are_written_in_flights_of_the_set_size(tmp_path, monkeypatch):
    """What the engine promises: RECORDS_IN_FLIGHT records transformed, then written
    (the last flight shorter); a byte limit reached first writes what is held at once."""
    from imgtools.transforms.jpeg import ResizeJPEG

    events = _transforms_and_writes(monkeypatch, ResizeJPEG)
    monkeypatch.setattr(engine, "RECORDS_IN_FLIGHT", 3)
    engine.run_shard(engine.ShardTask("train-00000", _jpeg_shard(tmp_path, "a")))
    # src3 is unusable: transformed, never written
    assert "".join(events) == "ttt" "www" "ttt" "ww" "t" "w"
    events.clear()
    monkeypatch.setattr(engine, "BYTES_IN_FLIGHT", 1)
    engine.run_shard(engine.ShardTask("train-00000", _jpeg_shard(tmp_path, "b")))
    assert "".join(events) == "tw" "tw" "tw" "t" "tw" "tw" "tw"


def test_a_record_that_passes_through_is_written_as_soon_as_it_is_read(tmp_path,
                                                                          monkeypatch):
    """A conversion's records are not held: their bytes, just read, are still in the caches
    (holding sixteen cost a TFRecord shard 1.17x its CPU); the engine's setting for rendering
    transforms does not apply to them."""
    from imgtools.transforms.passthrough import Passthrough

    events = _transforms_and_writes(monkeypatch, Passthrough)
    monkeypatch.setattr(engine, "RECORDS_IN_FLIGHT", 3)
    summary = engine.run_shard(engine.ShardTask("train-00000",
                                                _jpeg_shard(tmp_path, "a", Passthrough())))
    assert "".join(events) == "tw" * 7
    assert summary["counts"] == {"n01440764": 7}
    names = sorted(p.name for p in (tmp_path / "a").rglob("*.JPEG"))
    assert [(tmp_path / "a" / "train" / "n01440764" / n).read_bytes() for n in names] == [
        (tmp_path / f"src{i}.JPEG").read_bytes() for i in range(7)]


def test_the_pickle_second_pass_resumes_from_its_own_markers(tmp_path, monkeypatch):
    """A kill while the batch files are written: the finished files are kept (their markers
    in the run folder), only the others are written again."""
    from PIL import Image

    from imgtools.formats import pickle_batches

    paths = []
    for i in range(12):
        p = tmp_path / f"img{i}.JPEG"
        Image.new("RGB", (24 + i, 20), (i * 20, 0, 0)).save(p)
        paths.append(p)
    info = DatasetInfo("x", [ClassInfo("n01440764", "tench"), ClassInfo("n02102040", "dog")])
    shards = [[DownsampleItem(str(p), "train", i % 2) for i, p in enumerate(paths)]]
    run = functools.partial(downsample_dataset, shards, tmp_path / "out", [8], info=info,
                            batches=4, n_jobs=1, quiet=True)
    real = pickle_batches.write_batch
    written: list[str] = []

    def dies_on_third(task):
        if len(written) == 2:
            raise KeyboardInterrupt
        written.append(task.shard_id)
        return real(task)

    monkeypatch.setattr(pickle_batches, "write_batch", dies_on_third)
    with pytest.raises(KeyboardInterrupt):
        run()
    monkeypatch.setattr(pickle_batches, "write_batch",
                        lambda task: written.append(task.shard_id) or real(task))
    run(resume=True)
    assert len(written) == 4  # 2 before the kill, the 2 others after it
    assert sorted(p.name for p in (tmp_path / "out" / "x_8x8").glob("train_data_batch_*")) == \
        [f"train_data_batch_{i}" for i in range(1, 5)]


class _RetryingExecutor(LocalExecutor):
    """A cluster's way with a dead worker, on this machine: the first attempt at each shard
    task leaves a temporary file where its writer was writing and dies; the task runs again."""

    retries_tasks = True

    def map_unordered(self, fn, items, *, prefer=None, tasks=None):
        for item in items:
            payload = getattr(item, "payload", None)
            if isinstance(payload, engine.ShardSpec):
                dead = Path(payload.roots[0]) / f"{TMP_PREFIX}{item.shard_id}-dead-attempt"
                dead.write_bytes(b"torso")
            yield item, fn(item)


@pytest.mark.parametrize("fmt", ["folder", "webdataset"])
def test_a_retried_tasks_dead_attempt_leaves_no_temporary_in_the_output(tmp_path, fmt):
    src = make_folder(tmp_path / "src", per_class=2)
    convert(src, tmp_path / "clean", fmt, quiet=True, n_jobs=1, shard_records=2)
    convert(src, tmp_path / "out", fmt, quiet=True, shard_records=2,
            executor=_RetryingExecutor(1))
    assert not [p for p in (tmp_path / "out").rglob("*") if p.name.startswith(TMP_PREFIX)]
    assert tree_digest(tmp_path / "out") == tree_digest(tmp_path / "clean")


@pytest.mark.parametrize("held", ["all", "some", "none"])
def test_sha256sums_are_the_same_from_held_lines_or_read_back_markers(tmp_path, monkeypatch,
                                                                     held):
    """The run keeps its shards' SHA256SUMS lines up to SUMS_HELD_CHARS and reads the rest
    back from their markers: the file is the same either way."""
    src = make_folder(tmp_path / "src", per_class=6)
    convert(src, tmp_path / "reference", "folder", quiet=True, n_jobs=1, shard_records=3)
    read_back = []
    real_load = report.load_done

    def load_done(markers, shard_id, **kw):
        read_back.append(shard_id)
        return real_load(markers, shard_id, **kw)

    monkeypatch.setattr(report, "load_done", load_done)
    monkeypatch.setattr(engine, "SUMS_HELD_CHARS", {"all": 1 << 30, "some": 1, "none": 0}[held])
    shards = convert(src, tmp_path / "out", "folder", quiet=True, n_jobs=1,
                     shard_records=3)["shards"]
    assert shards > 2
    assert (tmp_path / "out" / "SHA256SUMS").read_bytes() == \
        (tmp_path / "reference" / "SHA256SUMS").read_bytes()
    assert len(read_back) == {"all": 0, "some": shards - 1, "none": shards}[held]
