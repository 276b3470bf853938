"""Writing downsampled ImageNet: the pickle format's part writer and its second pass.

The published files (Chrabaszcz et al. 2017, github PatrykChrabaszcz/Imagenet32_Scripts) are
made by scripts that hold the whole dataset in RAM (15+ GB for Imagenet64). They need a pass
over a whole split - the train mean, a seeded global shuffle, ``n // batches`` rows a file -
which a shard writer cannot do alone, so the format writes in two passes, both run by the
engine through the same executor, with done markers, in bounded memory:

1. **Parts** (:class:`RowPartWriter`, one per work shard): each row as it arrives, appended to
   ``<split>-<shard>.rows`` in the run's work folder, and its label to ``.labels``. A skipped
   image leaves no row, so parts are dense and their concatenation in shard order is the plan
   order of the images that made it.
2. **Batches** (:func:`make_batches`, the format's second pass): the mean of the train rows
   (summed in int64: sums of uint8 are exact in float64, so ``sum / n`` is bit for bit
   ``np.mean(x, axis=0)``), the seeded permutation of the train rows (val and unsup keep plan
   order, as the published val file does), then one task per output file that gathers its rows
   in that order with ``pread`` in fixed-size chunks and streams them into the file. Memory per
   task is one chunk plus one batch's labels, never a batch of pixels.
"""

from __future__ import annotations

import array
import bisect
import os
import pickle
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from imgtools.atomic import atomic_open, tmp_path_for
from imgtools.checksums import sha256_file
from imgtools.errors import UserError
from imgtools.formats.base import PassContext, ShardWriter
from imgtools.formats.pickle_codec import write_npz_batch, write_pickle_batch
from imgtools.records import DatasetInfo, Record
from imgtools.runner import ShardTask, run_shards, with_files

CONTAINERS = {"pickle": write_pickle_batch, "npz": write_npz_batch}
OUTPUT_SPLITS = ("train", "val", "unsup")
PUBLISHED_SIZES = (8, 16, 32, 64)
MIN_SIZE, MAX_SIZE = 8, 64  # the published Imagenet8..64; what --help promises
META_NAME = "batches.meta"
DEFAULT_BATCHES = 10
GATHER_CHUNK_BYTES = 4 << 20
"""Bytes of pixel rows a batch task holds at once (rounded to whole rows, at least one)."""
MEAN_CHUNK_BYTES = 4 << 20
"""Rows summed at once by the mean."""
ROWS, LABELS = ".rows", ".labels"


def output_dir_name(name: str, size: int) -> str:
    """``imagenet_32x32``: the per-size output folder (one folder per size, like the
    published ``Imagenet32_train`` / ``Imagenet32_val`` pairs but with both splits inside)."""
    return f"{name}_{size}x{size}"


def batch_file_names(split: str, batches: int, container: str) -> list[str]:
    """File names of one split: ``train_data_batch_1..N`` and ``val_data`` as published."""
    ext = ".npz" if container == "npz" else ""
    if split == "train":
        return [f"train_data_batch_{i}{ext}" for i in range(1, batches + 1)]
    return [f"{split}_data{ext}"]


def batch_bounds(n: int, batches: int) -> list[tuple[int, int]]:
    """The published split rule: ``n // batches`` rows per file, the last takes the rest."""
    size = n // batches
    bounds = [(i * size, (i + 1) * size) for i in range(batches - 1)]
    bounds.append(((batches - 1) * size, n))
    return bounds


def check_sizes(sizes: list[int]) -> tuple[int, ...]:
    """The requested square sides, sorted and unique; a clear error outside 8-64."""
    if not sizes:
        raise UserError("no --size given", fix="pass e.g. --size 32 (8, 16, 32, 64 published)")
    bad = [s for s in sizes if not MIN_SIZE <= int(s) <= MAX_SIZE]
    if bad:
        raise UserError(f"size {bad[0]} is out of range",
                        fix=f"sizes are square sides from {MIN_SIZE} to {MAX_SIZE} "
                            "(published: 8, 16, 32, 64)")
    return tuple(sorted({int(s) for s in sizes}))


def check_pass_options(options: dict, train_images: int) -> None:
    """``batches`` and ``container`` before any work: every train file must hold at least one
    image (more files than train images would write empty batches - and an absurd
    ``--batches``, millions of files until the disk is full)."""
    batches = options.get("batches", DEFAULT_BATCHES)
    if not isinstance(batches, int) or batches < 1:
        raise UserError(f"--batches {batches}: need at least 1 train file",
                        fix="e.g. --batches 10")
    if options.get("container", "pickle") not in CONTAINERS:
        raise UserError(f"unknown downsampled format {options['container']!r}",
                        fix="use --format pickle or npz")
    check_batches(batches, train_images)


def check_batches(batches: int, train_images: int) -> None:
    if train_images and batches > train_images:
        raise UserError(f"--batches {batches} is more than the {train_images} train images: "
                        "some train_data_batch files would be empty",
                        fix=f"pass --batches {min(10, train_images)} (at most {train_images})")


# --------------------------------------------------------------------------- pass 1: parts


class RowPartWriter(ShardWriter):
    """The rows of one work shard, streamed to ``<root>/<split>-<index>.rows`` as they come
    (nothing held in memory), labels to ``.labels`` (int64, -1 for unlabelled)."""

    def __init__(self, root: Path, split: str, index: int):
        root.mkdir(parents=True, exist_ok=True)
        self.split = split
        self.paths = [root / f"{split}-{index:05d}{ext}" for ext in (ROWS, LABELS)]
        self.tmps = [tmp_path_for(p) for p in self.paths]
        self.rows = open(self.tmps[0], "wb")  # noqa: SIM115 - closed in close()/abort()
        self.labels = array.array("q")

    def write(self, record: Record) -> None:
        if record.label is None and self.split != "unsup":
            raise UserError(f"{record.filename!r} (split {self.split}) has no label, and "
                            "downsampled-ImageNet files give every train and val image one",
                            fix="convert the labelled dataset, or name the unlabelled split "
                                "unsup")
        self.rows.write(record.image)
        self.labels.append(-1 if record.label is None else record.label)

    def close(self) -> list[Path]:
        self.rows.close()
        with open(self.tmps[1], "wb") as f:
            f.write(self.labels.tobytes())
        for tmp, path in zip(self.tmps, self.paths):
            os.replace(tmp, path)
        return list(self.paths)

    def abort(self) -> None:
        self.rows.close()
        for tmp in self.tmps:
            tmp.unlink(missing_ok=True)


# --------------------------------------------------------------------------- pass 2: batches


class PartRows:
    """Rows ``order`` (indices into the concatenation of ``parts``, in that order), read back
    in chunks of about :data:`GATHER_CHUNK_BYTES` with one ``pread`` a row, in file order
    within a chunk (at most 64 part files open at once)."""

    def __init__(self, parts: list[str], starts: list[int], width: int, order: np.ndarray):
        self.parts, self.starts, self.width, self.order = parts, starts, width, order

    @property
    def n(self) -> int:
        return len(self.order)

    def chunks(self) -> Iterator[np.ndarray]:
        per_chunk = max(1, min(self.n, GATHER_CHUNK_BYTES // self.width))
        buf = np.empty((per_chunk, self.width), dtype=np.uint8)
        fds: dict[int, int] = {}
        try:
            for start in range(0, self.n, per_chunk):
                wanted = np.asarray(self.order[start:start + per_chunk], dtype=np.int64)
                out = buf[:len(wanted)]
                self._gather(wanted, out, fds)
                yield out
        finally:
            for fd in fds.values():
                os.close(fd)

    def _gather(self, wanted: np.ndarray, out: np.ndarray, fds: dict[int, int]) -> None:
        for pos in np.argsort(wanted, kind="stable"):
            index = int(wanted[pos])
            part = bisect.bisect_right(self.starts, index) - 1
            fd = fds.get(part)
            if fd is None:
                if len(fds) >= 64:  # a shuffled batch touches every part: bound the fds
                    os.close(fds.pop(next(iter(fds))))
                fd = fds[part] = os.open(self.parts[part], os.O_RDONLY)
            offset = (index - self.starts[part]) * self.width
            got = os.preadv(fd, [out[pos]], offset)
            if got != self.width:
                raise UserError(f"a row file ends early (read {got} of {self.width} bytes at "
                                f"{offset})", path=self.parts[part],
                                fix="the run's work folder is damaged: start over with "
                                    "--overwrite")


def _parts_of(parts: Path, width: int) -> dict[str, tuple[list[str], list[int]]]:
    """Per split: its row files in shard order, and the first row index of each."""
    found: dict[str, tuple[list[str], list[int]]] = {}
    if not parts.is_dir():
        return found
    for name in sorted(os.listdir(parts)):
        if not name.endswith(ROWS) or name.startswith("."):
            continue
        split = name.rsplit("-", 1)[0]
        paths, starts = found.setdefault(split, ([], [0]))
        paths.append(str(parts / name))
        starts.append(starts[-1] + os.path.getsize(parts / name) // width)
    return found


def train_mean(paths: list[str], width: int) -> np.ndarray:
    """``np.mean(all_train_rows, axis=0)`` bit for bit, reading the parts in chunks: numpy
    sums uint8 rows into float64 and divides by n; every partial sum is an integer below
    2**53, so it is exact in any order, and int64 sums converted once give the same bits."""
    total = np.zeros(width, dtype=np.int64)
    rows_per_chunk = max(1, MEAN_CHUNK_BYTES // width)
    n = 0
    for path in paths:
        with open(path, "rb") as f:
            while True:
                chunk = np.fromfile(f, dtype=np.uint8, count=rows_per_chunk * width)
                if not chunk.size:
                    break
                rows = chunk.reshape(-1, width)
                total += rows.sum(axis=0, dtype=np.int64)
                n += len(rows)
    return total.astype(np.float64) / n


def make_batches(ctx: PassContext) -> list[tuple[str, str]]:
    """The pickle format's second pass (module docstring); ``ctx.options``: ``size``, ``seed``,
    ``label_order``, ``batches``, ``container``. Writes the data files, ``batches.meta`` and the
    sidecar; returns ``(name, sha256)`` of the data files."""
    size, seed = int(ctx.options["size"]), int(ctx.options["seed"])
    batches = int(ctx.options.get("batches", DEFAULT_BATCHES))
    container = ctx.options.get("container", "pickle")
    width = 3 * size * size
    parts = _parts_of(ctx.parts, width)
    counts = {split: parts[split][1][-1] for split in OUTPUT_SPLITS if split in parts}
    if not counts.get("train") and not counts.get("val"):
        shutil.rmtree(ctx.parts, ignore_errors=True)  # nothing to resume: free the disk
        _every_image_failed(ctx.skipped)
    check_batches(batches, counts.get("train", 0))
    ctx.state.mkdir(parents=True, exist_ok=True)
    if counts.get("train"):  # where the rows are: a cluster's worker reads them, the mean returns
        call = ctx.executor.call if ctx.executor else _call
        np.save(ctx.state / "mean.npy", call(train_mean, parts["train"][0], width))
    for split, n in counts.items():
        order = np.arange(n, dtype=np.int64)
        if split == "train":
            order = order[np.random.default_rng(seed).permutation(n)]
        np.save(ctx.state / f"order-{split}.npy", order)
        if split != "unsup":
            labels = np.concatenate([np.fromfile(p[:-len(ROWS)] + LABELS, dtype="<i8")
                                     for p in parts[split][0]])
            np.save(ctx.state / f"labels-{split}.npy", labels[order] + 1)
    tasks = list(_batch_tasks(ctx, parts, counts, size, batches, container))
    digests = {task.shard_id: summary["sha256"] for task, summary in run_shards(
        tasks, write_batch, state_dir=ctx.state / "markers", n_jobs=ctx.n_jobs, resume=True,
        desc=f"write {ctx.output.name}", total_weight=len(tasks), quiet=ctx.quiet,
        unit="file", prefer="threads", executor=ctx.executor)}
    write_meta(ctx.output, ctx.info, size, counts, batches, ctx.options.get("label_order"))
    _save_sidecar(ctx, counts, size, batches, container)
    return [(Path(t.payload["out"]).name, digests[t.shard_id]) for t in tasks]


def _call(fn, *args):
    return fn(*args)


def _every_image_failed(skipped: list[dict]) -> None:
    shown = "\n    ".join(f"{s['path']}: {s['reason']}" for s in skipped[:10])
    more = f"\n    ... and {len(skipped) - 10} more" if len(skipped) > 10 else ""
    raise UserError(f"every image failed to decode ({len(skipped)} images); nothing to "
                    f"write:\n    {shown}{more}",
                    fix="check that --src points at the images and that they are readable")


def _batch_tasks(ctx: PassContext, parts: dict, counts: dict[str, int], size: int,
                 batches: int, container: str) -> Iterator[ShardTask]:
    for split in OUTPUT_SPLITS:
        n = counts.get(split, 0)
        if not n:
            continue
        n_files = batches if split == "train" else 1
        names = batch_file_names(split, n_files, container)
        for name, (start, end) in zip(names, batch_bounds(n, n_files), strict=True):
            yield ShardTask(f"write-{Path(name).stem}", {
                "state": str(ctx.state), "split": split, "size": size, "start": start,
                "end": end, "out": str(ctx.output / name), "container": container,
                "parts": parts[split]}, weight=1)


def write_batch(task: ShardTask) -> dict:
    """Worker: stream one output file (atomically) from the parts, in the saved order."""
    job = task.payload
    state, split = Path(job["state"]), job["split"]
    order = np.load(state / f"order-{split}.npy", mmap_mode="r")[job["start"]:job["end"]]
    paths, starts = job["parts"]
    rows = PartRows(paths, starts, 3 * job["size"] ** 2, order)
    labels = None
    if split != "unsup":
        labels = np.load(state / f"labels-{split}.npy", mmap_mode="r")[job["start"]:job["end"]]
    mean = np.load(state / "mean.npy") if split == "train" else None
    with atomic_open(job["out"], "wb") as f:
        CONTAINERS[job["container"]](f, rows, labels, mean)
    return with_files({"file": job["out"], "rows": job["end"] - job["start"],
                       "sha256": sha256_file(job["out"])}, [job["out"]])


def write_meta(out_dir: Path, info: DatasetInfo, size: int, counts: dict[str, int],
               batches: int, label_order: str | None) -> None:
    """``batches.meta`` like CIFAR-10's (``label_names``, ``num_cases_per_batch``,
    ``num_vis``) plus ``wnids``; label ``k`` in the data files is ``label_names[k - 1]``.
    Plain lists and ints only, so any Python 3 reads it without numpy."""
    meta = {
        "label_names": info.class_names,
        "wnids": info.wnids,
        "label_base": 1,
        "label_order": label_order or info.label_order,
        "num_cases_per_batch": counts.get("train", 0) // batches,
        "num_vis": 3 * size * size,
        "image_size": size,
        "counts": {k: v for k, v in counts.items() if v},
    }
    with atomic_open(out_dir / META_NAME, "wb") as f:
        pickle.dump(meta, f, protocol=3)


def _save_sidecar(ctx: PassContext, counts: dict[str, int], size: int, batches: int,
                  container: str) -> None:
    info = ctx.info
    settings = {k: ctx.options[k] for k in ("seed",) if k in ctx.options}
    extra = dict(info.extra, downsample={**settings, "size": size, "batches": batches,
                                         "fmt": container, "label_base": 1,
                                         "label_order": ctx.options.get("label_order")
                                         or info.label_order,
                                         "skipped": len(ctx.skipped)})
    DatasetInfo(info.name, info.classes, info.label_order, extra).save(
        ctx.output, dict(counts), fmt="pickle")  # an empty split is listed with 0
