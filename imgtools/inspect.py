"""Look inside any dataset imgtools reads: describe it, check it, measure it, show it.

Every function works through the format registry (``detect_format`` -> ``read_info`` ->
``input_shards`` -> ``read_shard``), so a new format gets inspection for free. Work is split by
input shard and run in parallel with joblib; workers return small summaries (counters, integer
sums, capped problem lists), so memory does not grow with the number of images. Pixel sums are
exact integers, so ``stats`` gives the same digits however many workers run it.
"""

from __future__ import annotations

import functools
import io
import json
import math
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from imgtools.atomic import atomic_open
from imgtools.checksums import parse_sha256sum_line, sha256_file
from imgtools.errors import CorruptDataError, UserError
from imgtools.executors.base import Executor
from imgtools.executors.local import LocalExecutor
from imgtools.formats import detect_format, get_format
from imgtools.formats.base import Format, InputShard
from imgtools.formats.common import dataset_root
from imgtools.formats.webdataset import WIDS_SUFFIX, count_samples
from imgtools.pipeline.report import BUILD_INFO, CHECKSUMS, load_build_info
from imgtools.records import DATASET_META, SPLITS, DatasetInfo, Record, load_sidecar

MAX_PROBLEMS_PER_SHARD = 50
MAX_DISTINCT_SIZES = 2000
SHA256SUMS = "SHA256SUMS"
"""Checksum file the build writes beside build-info.json (``sha256sum -c`` format)."""
SHORT_SIDE_EDGES = (32, 64, 128, 160, 224, 256, 320, 400, 500, 640, 1000, 2000)
UNLABELLED_SPLITS = ("test", "unsup")
"""Splits whose records may carry no label: Imagewang's ``unsup`` and held-out ``test`` sets
(the Kaggle flowers TFRecords have an unlabelled ``test`` folder)."""


@dataclass
class Dataset:
    path: Path
    fmt: Format
    info: DatasetInfo
    shards: list[InputShard]


def open_dataset(path: str | Path) -> Dataset:
    path = Path(path)
    fmt = detect_format(path)
    shards = fmt.input_shards(path)
    if not shards:
        raise UserError(f"no {fmt.name} files found", path=path,
                        fix="check the path; the dataset seems empty")
    return Dataset(path, fmt, fmt.read_info(path), shards)


def map_shards(worker: Callable, shards: list[InputShard], args: tuple, *,
               n_jobs: int | None, desc: str, quiet: bool,
               executor: Executor | None = None) -> Iterator[dict]:
    """``worker(fmt_name, shard, *args)`` on every shard in parallel (on ``executor``;
    default: this machine with ``n_jobs`` workers); summaries as they come."""
    from tqdm import tqdm

    executor = executor or LocalExecutor(n_jobs)
    call = functools.partial(_call_shard, worker, args)
    results = (summary for _shard, summary in
               executor.map_unordered(call, shards, tasks=len(shards)))
    yield from tqdm(results, total=len(shards), desc=desc, unit="shard", disable=quiet)


def _call_shard(worker: Callable, args: tuple, shard: InputShard) -> dict:
    return worker(*args[:1], shard, *args[1:])


def _image_size(data: bytes) -> tuple[int, int] | None:
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as img:
            return img.size
    except Exception:  # noqa: BLE001 - any undecodable header is just "unknown size" for info
        return None


# ----------------------------------------------------------------------------------------------
# info
# ----------------------------------------------------------------------------------------------


def _info_shard(fmt_name: str, shard: InputShard, info: DatasetInfo) -> dict:

    counts: Counter = Counter()
    sizes: Counter = Counter()
    short_hist = [0] * (len(SHORT_SIDE_EDGES) + 1)
    dims = {"min_w": None, "max_w": 0, "min_h": None, "max_h": 0, "sum_w": 0, "sum_h": 0, "n": 0}
    image_bytes = unreadable = 0
    for record in get_format(fmt_name).read_shard(shard, info):
        counts[(record.split, -1 if record.label is None else record.label)] += 1
        image_bytes += len(record.image)
        size = _image_size(record.image)
        if size is None:
            unreadable += 1
            continue
        w, h = size
        if (w, h) in sizes or len(sizes) < MAX_DISTINCT_SIZES:
            sizes[(w, h)] += 1
        short_hist[sum(1 for e in SHORT_SIDE_EDGES if min(w, h) >= e)] += 1
        dims["min_w"] = w if dims["min_w"] is None else min(dims["min_w"], w)
        dims["min_h"] = h if dims["min_h"] is None else min(dims["min_h"], h)
        dims["max_w"], dims["max_h"] = max(dims["max_w"], w), max(dims["max_h"], h)
        dims["sum_w"] += w
        dims["sum_h"] += h
        dims["n"] += 1
    return {"counts": counts, "sizes": sizes, "short_hist": short_hist, "dims": dims,
            "image_bytes": image_bytes, "unreadable": unreadable}


def _disk_bytes(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def describe(path: str | Path, *, n_jobs: int | None = None, quiet: bool = True) -> dict:
    """Format, splits, classes with counts, image size distribution and bytes of a dataset."""
    ds = open_dataset(path)
    counts: Counter = Counter()
    sizes: Counter = Counter()
    short_hist = [0] * (len(SHORT_SIDE_EDGES) + 1)
    dims = {"min_w": None, "max_w": 0, "min_h": None, "max_h": 0, "sum_w": 0, "sum_h": 0, "n": 0}
    image_bytes = unreadable = 0
    for part in map_shards(_info_shard, ds.shards, (ds.fmt.name, ds.info), n_jobs=n_jobs,
                           desc="info", quiet=quiet):
        counts.update(part["counts"])
        for key, n in part["sizes"].items():
            if key in sizes or len(sizes) < MAX_DISTINCT_SIZES:
                sizes[key] += n
        short_hist = [a + b for a, b in zip(short_hist, part["short_hist"], strict=True)]
        d = part["dims"]
        for k, pick in (("min_w", min), ("min_h", min)):
            if d[k] is not None:
                dims[k] = d[k] if dims[k] is None else pick(dims[k], d[k])
        for k in ("max_w", "max_h"):
            dims[k] = max(dims[k], d[k])
        for k in ("sum_w", "sum_h", "n"):
            dims[k] += d[k]
        image_bytes += part["image_bytes"]
        unreadable += part["unreadable"]
    return _info_report(ds, counts, sizes, short_hist, dims, image_bytes, unreadable)


def _split_order(splits: Iterable[str]) -> list[str]:

    return sorted(set(splits), key=lambda s: (SPLITS.index(s) if s in SPLITS else 9, s))


def _info_report(ds: Dataset, counts: Counter, sizes: Counter, short_hist: list[int],
                 dims: dict, image_bytes: int, unreadable: int) -> dict:
    splits = _split_order(s for s, _ in counts)
    per_split = {s: sum(n for (sp, _), n in counts.items() if sp == s) for s in splits}
    classes = [{"label": i, "wnid": c.wnid, "name": c.name,
                "counts": {s: counts.get((s, i), 0) for s in splits}}
               for i, c in enumerate(ds.info.classes)]
    unlabelled = {s: counts.get((s, -1), 0) for s in splits if counts.get((s, -1), 0)}
    n = dims["n"]
    labels = [f"<{SHORT_SIDE_EDGES[0]}"] + [f">={e}" for e in SHORT_SIDE_EDGES]
    return {
        "path": str(ds.path), "format": ds.fmt.name, "name": ds.info.name,
        "label_order": ds.info.label_order, "num_classes": len(ds.info.classes),
        "splits": per_split, "total": sum(per_split.values()), "unlabelled": unlabelled,
        "classes": classes,
        "image_sizes": {
            "decoded_headers": n, "unreadable": unreadable,
            "width": {"min": dims["min_w"], "max": dims["max_w"],
                      "mean": round(dims["sum_w"] / n, 1) if n else None},
            "height": {"min": dims["min_h"], "max": dims["max_h"],
                       "mean": round(dims["sum_h"] / n, 1) if n else None},
            "shorter_side": {lab: c for lab, c in zip(labels, short_hist, strict=True) if c},
            "most_common": [[w, h, c] for (w, h), c in sizes.most_common(5)],
        },
        "bytes": {"images": image_bytes, "on_disk": _disk_bytes(ds.path)},
    }


# ----------------------------------------------------------------------------------------------
# verify
# ----------------------------------------------------------------------------------------------


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


def read_sha256sums(path: Path) -> dict[str, str]:
    """``sha256sum`` lines (``<hex>  <relative path>``, GNU escapes for names holding a
    newline or backslash) -> {path: hex}; {} when absent. Names are bytes to ``sha256sum``, so
    one that is not UTF-8 is kept as the OS would name it (surrogate escapes). A line of any
    other shape is damage: :class:`CorruptDataError`."""
    if not path.is_file():
        return {}
    sums = {}
    text = path.read_bytes().decode("utf-8", "surrogateescape")
    for n, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        parsed = parse_sha256sum_line(line)
        if parsed is None:
            raise CorruptDataError(f"line {n} is not `<sha256>  <path>`", path=path,
                                   fix="restore the file from the build (or delete it to skip "
                                       "checks)")
        digest, rel = parsed
        sums[rel] = digest
    return sums


def build_info_checksums_and_counts(root: Path) -> tuple[dict[str, str], dict]:
    """``checksums`` ({file: sha256}) and ``counts`` ({split: {wnid: n}}) of build-info.json,
    both {} when it is absent; a damaged file or wrong types are a :class:`CorruptDataError`
    (verify reports it as damage found)."""

    try:
        info = load_build_info(root)
    except UserError as e:
        raise CorruptDataError(e.what, path=root / BUILD_INFO, fix=e.fix) from e
    checksums, counts = info.get("checksums") or {}, info.get("counts") or {}
    if not (isinstance(checksums, dict) and all(
            isinstance(k, str) and isinstance(v, str) for k, v in checksums.items())):
        raise CorruptDataError("damaged 'checksums': expected {file: sha256}",
                               path=root / BUILD_INFO, fix=_BUILD_INFO_FIX)
    if not (isinstance(counts, dict) and all(
            isinstance(per, dict) and all(isinstance(w, str) and type(n) is int
                                          for w, n in per.items())
            for per in counts.values())):
        raise CorruptDataError("damaged 'counts': expected {split: {wnid: number}}",
                               path=root / BUILD_INFO, fix=_BUILD_INFO_FIX)
    return checksums, counts


_BUILD_INFO_FIX = "restore build-info.json from the build, or build the dataset again"


def _checksum_chunk(root: str, items: list[tuple[str, str]]) -> list[dict]:
    problems = []
    for rel, expected in items:
        path = Path(root) / rel
        if not path.is_file():
            problems.append({"path": str(path),
                             "what": "listed in the build checksums but missing"})
        elif sha256_file(path) != expected:
            problems.append({"path": str(path),
                             "what": "sha256 differs from the one recorded at build time"})
    return problems


def _checksum_scope(path: Path, whole: bool) -> tuple[Path, str | None]:
    """The folder whose SHA256SUMS covers ``path``, and which entry to check (None: all).
    One file of a dataset may sit a level down (WebDataset's ``data/``), so its list is looked
    for up to two folders above it."""
    root = dataset_root(path)
    if whole:
        return root, None
    for folder in (root, root.parent):
        if (folder / CHECKSUMS).is_file():
            return folder, path.relative_to(folder).as_posix()
    return root, path.name


def _check_checksums(root: Path, n_jobs: int | None, only: str | None = None,
                     executor: Executor | None = None) -> tuple[int, list[dict]]:
    """Recompute the build-time sha256 of every listed file, or of ``only`` (a path relative to
    ``root``) when one file is verified: the others are not what the user asked about."""

    checksums = dict(build_info_checksums_and_counts(root)[0])
    checksums.update(read_sha256sums(root / SHA256SUMS))
    items = sorted((rel, h) for rel, h in checksums.items() if only in (None, rel))
    chunks = [items[i:i + 256] for i in range(0, len(items), 256)]
    executor = executor or LocalExecutor(n_jobs)
    problems: list[dict] = []
    for part in executor.map(functools.partial(_checksum_chunk, str(root)), chunks,
                             tasks=len(chunks)):
        problems.extend(part)
    return len(items), problems


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
    for split in _split_order([*expected_splits, *read_splits]):
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
                   for s in _split_order(s for s, _ in counts)}
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
        root, only = _checksum_scope(ds.path, whole)
        checked, found = _check_checksums(root, n_jobs, only=only, executor=executor)
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


# ----------------------------------------------------------------------------------------------
# stats
# ----------------------------------------------------------------------------------------------


def _stats_shard(fmt_name: str, shard: InputShard, info: DatasetInfo, split: str) -> dict:
    import numpy as np
    from PIL import Image


    total = np.zeros(3, dtype=np.uint64)
    squares = np.zeros(3, dtype=np.uint64)
    images = pixels = skipped = 0
    if shard.split not in (None, split):
        return {"sum": [0, 0, 0], "sq": [0, 0, 0], "images": 0, "pixels": 0, "skipped": 0}
    for record in get_format(fmt_name).read_shard(shard, info):
        if record.split != split:
            continue
        try:
            with Image.open(io.BytesIO(record.image)) as img:
                arr = np.asarray(img.convert("RGB")).reshape(-1, 3)
        except Exception:  # noqa: BLE001 - counted and reported; `verify` says which
            skipped += 1
            continue
        total += arr.sum(axis=0, dtype=np.uint64)
        wide = arr.astype(np.uint32)
        squares += (wide * wide).sum(axis=0, dtype=np.uint64)
        images += 1
        pixels += arr.shape[0]
    return {"sum": [int(v) for v in total], "sq": [int(v) for v in squares], "images": images,
            "pixels": pixels, "skipped": skipped}


def channel_stats(path: str | Path, *, split: str = "train", n_jobs: int | None = None,
                  quiet: bool = True, executor: Executor | None = None) -> dict:
    """Per-channel mean and std (0-1 scale) over every pixel of ``split``, streamed."""
    ds = open_dataset(path)
    shards = [s for s in ds.shards if s.split in (None, split)]
    sums, squares = [0, 0, 0], [0, 0, 0]
    images = pixels = skipped = 0
    for part in map_shards(_stats_shard, shards, (ds.fmt.name, ds.info, split), n_jobs=n_jobs,
                           desc=f"stats {split}", quiet=quiet, executor=executor):
        sums = [a + b for a, b in zip(sums, part["sum"], strict=True)]
        squares = [a + b for a, b in zip(squares, part["sq"], strict=True)]
        images += part["images"]
        pixels += part["pixels"]
        skipped += part["skipped"]
    if not pixels:
        present = sorted({s.split for s in ds.shards if s.split})
        if images == 0 and split not in present and present:
            raise UserError(f"the dataset has no split {split!r}", path=ds.path,
                            fix=f"choose one it has: --split {' | '.join(present)}")
        raise UserError(f"no decodable image in split {split!r}", path=ds.path,
                        fix="choose a split the dataset has (--split val), or run "
                            "`imgtools verify`")
    mean = [s / pixels / 255 for s in sums]
    std = [math.sqrt(max(q / pixels / 255**2 - m * m, 0.0)) for q, m in
           zip(squares, mean, strict=True)]
    return {"path": str(ds.path), "split": split, "images": images, "pixels": pixels,
            "skipped": skipped, "mean": [round(m, 6) for m in mean],
            "std": [round(s, 6) for s in std],
            "mean_255": [round(m * 255, 3) for m in mean],
            "std_255": [round(s * 255, 3) for s in std]}


# ----------------------------------------------------------------------------------------------
# preview
# ----------------------------------------------------------------------------------------------


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def _thumbnail(data: bytes, side: int):
    from PIL import Image, ImageOps

    try:
        with Image.open(io.BytesIO(data)) as img:
            return ImageOps.fit(img.convert("RGB"), (side, side), Image.Resampling.BICUBIC)
    except Exception:  # noqa: BLE001 - an undecodable sample is shown as a grey tile
        return Image.new("RGB", (side, side), (128, 128, 128))


def collect_samples(ds: Dataset, per_class: int, max_classes: int, side: int) -> dict[int, list]:
    """The first ``per_class`` thumbnails of the first ``max_classes`` classes, in stored
    order (deterministic); reading stops as soon as every row is full."""
    wanted = min(max_classes, len(ds.info.classes))
    samples: dict[int, list] = {i: [] for i in range(wanted)}
    missing = wanted * per_class
    for shard in ds.shards:
        if shard.split == "unsup":
            continue
        for record in ds.fmt.read_shard(shard, ds.info):
            if record.label is None or record.label not in samples:
                continue
            row = samples[record.label]
            if len(row) < per_class:
                row.append(_thumbnail(record.image, side))
                missing -= 1
                if missing == 0:
                    return samples
    return samples


def contact_sheet(samples: dict[int, list], info: DatasetInfo, per_class: int, side: int):
    from PIL import Image, ImageDraw

    label_w, pad = 190, 4
    rows = sorted(samples)
    sheet = Image.new("RGB", (label_w + per_class * (side + pad) + pad,
                              max(1, len(rows)) * (side + pad) + pad), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    font = _font(13)
    for r, label in enumerate(rows):
        y = pad + r * (side + pad)
        c = info.classes[label]
        draw.text((pad, y + side // 2 - 14), f"{label}: {c.name}"[:26], fill=(0, 0, 0), font=font)
        draw.text((pad, y + side // 2 + 2), c.wnid, fill=(90, 90, 90), font=font)
        for k, thumb in enumerate(samples[label]):
            sheet.paste(thumb, (label_w + pad + k * (side + pad), y))
    return sheet


def class_histogram(counts: dict[str, list[int]], info: DatasetInfo, max_classes: int = 100):
    """Horizontal bars: images per class, one bar per split (train dark, others light)."""
    from PIL import Image, ImageDraw

    palette = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (148, 103, 189)]
    splits = list(counts)
    n = min(len(info.classes), max_classes)
    bar_h, label_w, width, pad = 12, 200, 420, 6
    height = pad * 3 + 16 + n * (bar_h * len(splits) + 4)
    img = Image.new("RGB", (label_w + width + 90, max(height, 40)), (255, 255, 255))
    draw = ImageDraw.Draw(img)
    font = _font(11)
    top = max((max(v[:n], default=0) for v in counts.values()), default=0) or 1
    for k, split in enumerate(splits):
        x = label_w + k * 110
        draw.rectangle([x, pad, x + 10, pad + 10], fill=palette[k % len(palette)])
        draw.text((x + 14, pad - 1), split, fill=(0, 0, 0), font=font)
    y = pad * 2 + 16
    for i in range(n):
        draw.text((pad, y), f"{info.classes[i].name}"[:30], fill=(0, 0, 0), font=font)
        for k, split in enumerate(splits):
            value = counts[split][i] if i < len(counts[split]) else 0
            length = round(width * value / top)
            yy = y + k * bar_h
            draw.rectangle([label_w, yy, label_w + length, yy + bar_h - 2],
                           fill=palette[k % len(palette)])
            draw.text((label_w + length + 4, yy), str(value), fill=(0, 0, 0), font=font)
        y += bar_h * len(splits) + 4
    return img


def class_counts(path: str | Path, *, n_jobs: int | None = None, quiet: bool = True
                 ) -> dict[str, list[int]]:
    """Images per class per split (labelled splits only), from a scan of the dataset."""
    report = describe(path, n_jobs=n_jobs, quiet=quiet)
    splits = [s for s in report["splits"] if s != "unsup"]
    return {s: [c["counts"].get(s, 0) for c in report["classes"]] for s in splits}


def preview(path: str | Path, out_dir: str | Path, *, per_class: int = 8,
            max_classes: int = 50, side: int = 96, counts: dict[str, list[int]] | None = None,
            n_jobs: int | None = None, quiet: bool = True, prefix: str = "") -> dict:
    """Write ``<prefix>preview.png`` (samples per class) and ``<prefix>histogram.png``."""

    ds = open_dataset(path)
    out_dir = Path(out_dir)
    samples = collect_samples(ds, per_class, max_classes, side)
    sheet = contact_sheet(samples, ds.info, per_class, side)
    counts = counts if counts is not None else class_counts(path, n_jobs=n_jobs, quiet=quiet)
    hist = class_histogram(counts, ds.info)
    written = {}
    for kind, image in (("preview", sheet), ("histogram", hist)):
        target = out_dir / f"{prefix}{kind}.png"
        with atomic_open(target, "wb") as f:
            image.save(f, "PNG", optimize=False)
        written[kind] = str(target)
    return {"path": str(ds.path), "classes_shown": len(samples), "per_class": per_class,
            **written}
