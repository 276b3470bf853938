"""``imgtools verify``: decode every image, check labels, each format's container integrity,
the counts in the dataset's metadata, the ``wids`` shard indexes and the sha256 checksums
recorded at build time. Damage found is listed (capped per shard, all counted), not raised."""

from __future__ import annotations

import io
import json
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from imgtools.errors import CorruptDataError, UserError
from imgtools.executors.base import Executor
from imgtools.formats import detect_format, get_format
from imgtools.formats.base import Format, InputShard
from imgtools.formats.common import dataset_root
from imgtools.formats.tar_codec import count_samples
from imgtools.formats.webdataset import WIDS_SUFFIX
from imgtools.inspect.checksums import (
    build_info_checksums_and_counts,
    check_checksums,
    checksum_scope,
)
from imgtools.inspect.dataset import Dataset, map_shards, open_dataset, split_order
from imgtools.records import DATASET_META, DatasetInfo, Record, load_sidecar

MAX_PROBLEMS_PER_SHARD = 50
UNLABELLED_SPLITS = ("test", "unsup")
"""Splits whose records may carry no label: Imagewang's ``unsup`` and held-out ``test`` sets
(the Kaggle flowers TFRecords have an unlabelled ``test`` folder)."""


def _container_problems(fmt: Format, path: Path) -> list[dict]:
    """Integrity checks of the container itself, beyond what decoding the records shows (each
    format knows its own: :meth:`Format.container_problems`)."""
    try:
        return fmt.container_problems(path) if path.is_file() else []
    except Exception as e:  # noqa: BLE001 - any failure here is a finding, reported with its path
        return [{"path": str(path), "what": f"{type(e).__name__}: {e}"}]


def _label_problem(record: Record, n_classes: int) -> str | None:
    """What is wrong with the record's label, if anything; a missing label is fine only in the
    splits meant to be unlabelled (:data:`UNLABELLED_SPLITS`)."""
    if record.label is None:
        if record.split not in UNLABELLED_SPLITS:
            return f"no label in split {record.split!r}"
    elif not 0 <= record.label < n_classes:
        return f"label {record.label} outside 0..{n_classes - 1}"
    return None


def _decode_problem(record: Record) -> str | None:
    """Why the record's image does not decode, if it does not (labels are checked apart, so
    every image is decoded whatever its label says)."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(record.image)) as img:
            img.load()
    except Exception as e:  # noqa: BLE001 - every decode failure is a finding
        return f"image does not decode: {type(e).__name__}: {e}"
    return None


def _verify_shard(fmt_name: str, shard: InputShard, info: DatasetInfo) -> dict:

    problems = _container_problems(get_format(fmt_name), Path(shard.path))
    counts: Counter = Counter()
    decoded = 0
    try:
        for record in get_format(fmt_name).read_shard(shard, info):
            counts[(record.split, -1 if record.label is None else record.label)] += 1
            label_what = _label_problem(record, len(info.classes))
            if label_what is not None:
                problems.append({"path": shard.path, "key": record.key, "what": label_what})
            decode_what = _decode_problem(record)
            if decode_what is None:
                decoded += 1
            else:
                problems.append({"path": shard.path, "key": record.key, "what": decode_what})
    except Exception as e:  # noqa: BLE001 - a reader failure ends this shard, as a finding
        problems.append({"path": shard.path, "what": f"read failed: {type(e).__name__}: {e}"})
    return {"counts": counts, "decoded": decoded, "problems": problems[:MAX_PROBLEMS_PER_SHARD],
            "problem_count": len(problems)}


def _expected_counts(ds: Dataset) -> tuple[dict, dict]:
    """Per-split totals from the sidecar and per-class counts from build-info.json."""

    root = dataset_root(ds.path)
    sidecar = root / DATASET_META
    splits = load_sidecar(sidecar).get("splits") or {} if sidecar.is_file() else {}
    return splits, build_info_checksums_and_counts(root)[1]


def _whole_dataset(ds: Dataset) -> bool:
    """Whether ``ds.path`` is a whole dataset. A single shard file holds part of one split, so
    the sidecar and build-info.json counts (which describe the whole dataset) do not apply."""
    return not ds.path.is_file()


def _count_problems(ds: Dataset, counts: Counter, read_splits: dict[str, int]) -> list[dict]:
    """Records read per split and per class that differ from the sidecar and build-info.json."""
    problems = []
    expected_splits, expected_classes = _expected_counts(ds)
    for split in split_order([*expected_splits, *read_splits]):
        want, got = expected_splits.get(split), read_splits.get(split, 0)
        if want is not None and want != got:
            problems.append({"path": str(ds.path),
                             "what": f"split {split}: {got} records, the metadata says {want}"})
    wnid_label = {c.wnid: i for i, c in enumerate(ds.info.classes)}
    for split, per_class in expected_classes.items():
        for wnid, want in (per_class or {}).items():
            got = counts.get((split, wnid_label.get(wnid, -2)), 0)
            if got != want:
                problems.append({"path": str(ds.path), "what": f"split {split}, class {wnid}: "
                                 f"{got} records, build-info.json says {want}"})
    return problems


def verify(path: str | Path, *, n_jobs: int | None = None, quiet: bool = True,
           executor: Executor | None = None) -> dict:
    """Decode every image, check labels, container CRCs, counts and build-time checksums.

    Given one file of a dataset, only that file is checked: the whole-dataset split and class
    counts are not compared (``counts_compared`` is False and ``notes`` says so) and only its
    own build-time checksum is recomputed."""

    try:
        ds = open_dataset(path)
    except CorruptDataError as e:  # damage that stops reading (the class list, a shard)
        return _damaged_report(Path(path), e)
    counts: Counter = Counter()
    decoded = problem_count = 0
    problems: list[dict] = []
    for part in map_shards(_verify_shard, ds.shards, (ds.fmt.name, ds.info), n_jobs=n_jobs,
                           desc="verify", quiet=quiet, executor=executor):
        counts.update(part["counts"])
        decoded += part["decoded"]
        problem_count += part["problem_count"]
        problems.extend(part["problems"])
    shard_listed = len(problems)  # shard problems are capped; count the rest separately
    read_splits = {s: sum(n for (sp, _), n in counts.items() if sp == s)
                   for s in split_order(s for s, _ in counts)}
    whole = _whole_dataset(ds)
    notes = []
    if whole:
        problems.extend(_metadata_problems(lambda: _count_problems(ds, counts, read_splits)))
        if ds.fmt.name == "webdataset":
            problems.extend(_wids_problems(ds.path, read_splits))
    else:
        notes.append("one file of a dataset: split and class counts not compared with the "
                     "dataset's metadata (verify the dataset folder to compare them)")
    checked = 0

    def checksums() -> list[dict]:
        nonlocal checked
        root, only = checksum_scope(ds.path, whole)
        checked, found = check_checksums(root, n_jobs, only=only, executor=executor)
        return found

    for found in _metadata_problems(checksums):
        if found not in problems:  # a damaged build-info.json stops both checks that read it
            problems.append(found)
    problem_count += len(problems) - shard_listed
    total = sum(read_splits.values())
    return {"path": str(ds.path), "format": ds.fmt.name, "records": total, "decoded": decoded,
            "splits": read_splits, "checksums_checked": checked, "counts_compared": whole,
            "notes": notes, "ok": not problems, "problem_count": problem_count,
            "problems": problems}


def _metadata_problems(check: Callable[[], list[dict]]) -> list[dict]:
    """``check()``'s findings, or the damage that kept it from running (a sidecar,
    build-info.json or SHA256SUMS that cannot be read is itself damage found)."""
    try:
        return check()
    except CorruptDataError as e:
        return [{"path": e.path or "", "what": e.what}]


def _damaged_report(path: Path, error: CorruptDataError) -> dict:
    """verify's report when damage keeps the dataset from being opened at all."""
    try:
        fmt = detect_format(path).name
    except UserError:
        fmt = "unknown"
    return {"path": str(path), "format": fmt, "records": 0, "decoded": 0, "splits": {},
            "checksums_checked": 0, "counts_compared": False,
            "notes": ["verification stopped there: the dataset cannot be read past it"],
            "ok": False, "problem_count": 1,
            "problems": [{"path": error.path or str(path), "what": error.what}]}


def _wids_problems(root: Path, read_splits: dict[str, int]) -> list[dict]:
    """Each ``<split>.wids.json`` must be a wids index whose shard list is exactly the split's
    tars, with their real sample counts and sizes: ``wids`` trusts ``nsamples`` to map a
    sample index to a shard, so a wrong one gives wrong or missing samples."""
    problems = []
    for index in sorted(root.glob(f"*{WIDS_SUFFIX}")):
        split = index.name[:-len(WIDS_SUFFIX)]

        def bad(what: str, index: Path = index) -> None:
            problems.append({"path": str(index), "what": what})

        try:
            obj = json.loads(index.read_bytes())
            shardlist = obj["shardlist"]
            entries = [(e["url"], e["nsamples"], e["filesize"]) for e in shardlist]
        except (ValueError, KeyError, TypeError) as e:
            bad(f"not a wids shard index ({type(e).__name__}: {e})")
            continue
        tars = sorted(p.relative_to(root).as_posix() for p in root.rglob(f"{split}-[0-9]*.tar")
                      if not any(part.startswith(".") for part in p.relative_to(root).parts))
        if sorted(str(url) for url, _n, _s in entries) != tars:
            bad(f"lists {len(entries)} shards, the folder holds {len(tars)} {split} tars")
            continue
        for url, nsamples, filesize in entries:
            tar = root / url
            try:
                real = count_samples(tar)
            except CorruptDataError:  # the tar's own damage is reported with the tar
                continue
            if nsamples != real:
                bad(f"{url}: nsamples {nsamples}, the tar holds {real} samples")
            if filesize != tar.stat().st_size:
                bad(f"{url}: filesize {filesize}, the tar has {tar.stat().st_size} bytes")
        if split in read_splits and sum(n for _u, n, _s in entries
                                        if isinstance(n, int)) != read_splits[split]:
            bad(f"nsamples add up to {sum(n for _u, n, _s in entries if isinstance(n, int))}, "
                f"{read_splits[split]} {split} records were read")
    return problems
