"""The plan: which ImageNet files go to which split, with which label, in which shard.

Planning only lists folders and reads label files; no image is opened. The result is a list of
small :class:`PlanItem` tuples per split (paths and labels), from which shards (self-contained
tasks for :mod:`imgtools.runner`) are cut. Every decision is a pure function of the tree, the
recipe, the split mode and the seed, which is what makes builds reproducible.

The plan is the one structure that grows with the dataset, so it is stored in columns
(:class:`PlanTable`: numpy arrays of a few bytes per image plus the file name) rather than as
Python objects: about 40 bytes an image, 50 MB for all of ImageNet-1k instead of 400 MB, and
planning walks the tree one class at a time.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import NamedTuple

import numpy as np

from imgtools.checksums import sha256_file
from imgtools.errors import UserError
from imgtools.recipes import Part, Recipe
from imgtools.records import SPLITS, ClassInfo, DatasetInfo
from imgtools.sources.base import Source
from imgtools.splits import (
    OfficialRow,
    noisy_labels,
    official_csv_path,
    random_split,
    read_official_csv,
    take_fraction,
)


class PlanItem(NamedTuple):
    """One image to produce. ``label`` is 0-based in the plan's label order (sorted wnid
    unless the recipe pins another; None: unsup)."""

    src: str
    split: str
    label: int | None
    wnid: str
    out_name: str


def jpeg_name(name: str) -> str:
    """The output name of a source file: every output is a JPEG, so a name that does not end
    in .JPEG/.jpeg/.jpg gets ``.JPEG`` appended (``photo.png`` -> ``photo.png.JPEG``), whatever
    the bytes turn out to be. Decided here, in the plan, so the files, the CSV and the
    checksums all use the same name. ImageNet's own names are kept."""
    stem, dot, ext = name.rpartition(".")
    return name if dot and ext.lower() in ("jpeg", "jpg") else f"{name}.JPEG"


class Candidate(NamedTuple):
    """An image of one class as found in the tree (``pool`` is ImageNet's split)."""

    pool: str
    filename: str


POOLS = ("train", "val")  # ImageNet's own splits, coded 0 and 1 in a PlanTable
_CHUNK = 4096  # items materialised at once when a table is walked


def _encode(name: str) -> bytes:
    return name.encode("utf-8", "surrogateescape")  # any name os.listdir can return


class PlanTable(Sequence):
    """The images of one split, in columns; indexing materialises a :class:`PlanItem`.

    ``cls`` indexes ``wnids`` (the recipe's classes), ``label`` is the 0-based label or -1 for
    unlabelled images, ``pool`` the ImageNet split the file lives in, ``alias`` the number of an
    anonymised unsup name (``unsup_000017.JPEG``) or -1 to keep the file's own name.
    """

    def __init__(self, split: str, source: Source, wnids: Sequence[str],
                 pool: np.ndarray, cls: np.ndarray, label: np.ndarray, name: np.ndarray,
                 alias: np.ndarray | None = None):
        self.split, self.source, self.wnids = split, source, wnids
        self.pool, self.cls, self.label, self.name = pool, cls, label, name
        self.alias = np.full(len(cls), -1, np.int32) if alias is None else alias

    def __len__(self) -> int:
        return len(self.cls)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return self.items_at(range(*index.indices(len(self))))
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(index)
        return self.item(index)

    def __iter__(self) -> Iterator[PlanItem]:
        for start in range(0, len(self), _CHUNK):
            yield from self.items_at(range(start, min(start + _CHUNK, len(self))))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, PlanTable):
            return NotImplemented
        return self.split == other.split and list(self.wnids) == list(other.wnids) and all(
            np.array_equal(a, b) for a, b in zip(self._columns(), other._columns()))

    __hash__ = None  # mutable-looking container: not hashable, like a list

    def _columns(self) -> tuple[np.ndarray, ...]:
        return self.pool, self.cls, self.label, self.name, self.alias

    def item(self, i: int) -> PlanItem:
        return self.items_at((i,))[0]

    def items_at(self, indices: Sequence[int] | range) -> list[PlanItem]:
        """The items at ``indices``, each column converted once for all of them rather than
        one numpy scalar at a time: a build walks its plan several times (shards, the inputs'
        fingerprint, the CSV), so this runs several times per image. Memory: ``indices``."""
        idx = np.asarray(indices, dtype=np.int64)
        wnids, locate, split = self.wnids, self.source.locate, self.split
        pools = [POOLS[p] for p in self.pool[idx].tolist()]
        classes = [wnids[c] for c in self.cls[idx].tolist()]
        names = [n.decode("utf-8", "surrogateescape") for n in self.name[idx].tolist()]
        return [PlanItem(locate(pool, wnid, name), split, None if label < 0 else label, wnid,
                         jpeg_name(name) if alias < 0 else f"unsup_{alias:06d}.JPEG")
                for pool, wnid, name, label, alias in zip(
                    pools, classes, names, self.label[idx].tolist(), self.alias[idx].tolist())]

    def take(self, order: np.ndarray | list[int]) -> PlanTable:
        """The same images in ``order`` (indices)."""
        idx = np.asarray(order, dtype=np.int64)
        return PlanTable(self.split, self.source, self.wnids,
                         *(column[idx] for column in self._columns()))

    def sorted(self) -> PlanTable:
        """Canonical order: by label (unlabelled first), class, file name."""
        return self.take(np.lexsort((self.name, self.cls, self.label)))

    def anonymised(self, seed: int) -> PlanTable:
        """Unlabelled images must not carry their label: ImageNet train names start with the
        wnid and a class-sorted numbering would leak class boundaries, so they are numbered in
        a seeded shuffled order (``unsup_000017.JPEG``)."""
        order = list(range(len(self)))
        random.Random(f"{seed}:unsup").shuffle(order)
        table = self.take(order)
        table.alias = np.arange(len(table), dtype=np.int32)
        return table

    def class_counts(self) -> np.ndarray:
        return np.bincount(self.cls, minlength=len(self.wnids))


class _TableBuilder:
    """Collects one split's images class by class, as small column chunks."""

    def __init__(self) -> None:
        self.chunks: list[tuple[np.ndarray, ...]] = []

    def add(self, cands: list[Candidate], cls: int, label: int | None) -> None:
        if not cands:
            return
        n = len(cands)
        self.chunks.append((
            np.array([POOLS.index(c.pool) for c in cands], dtype=np.uint8),
            np.full(n, cls, dtype=np.int32),
            np.full(n, -1 if label is None else label, dtype=np.int32),
            np.array([_encode(c.filename) for c in cands], dtype=np.bytes_)))

    def build(self, split: str, source: Source, wnids: list[str]) -> PlanTable:
        if not self.chunks:
            empty = np.zeros(0, np.int32)
            return PlanTable(split, source, wnids, np.zeros(0, np.uint8), empty, empty,
                             np.zeros(0, "S1"))
        columns = [np.concatenate(col) for col in zip(*self.chunks)]
        return PlanTable(split, source, wnids, *columns)


@dataclass
class BuildPlan:
    recipe: Recipe
    info: DatasetInfo
    source: Source
    split_mode: str
    seed: int
    items: dict[str, PlanTable]
    noisy: dict[tuple[str, str], tuple[str, ...]]  # (split, filename) -> noisy labels
    split_sources: list[dict] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # listed officially, absent in the tree
    unlisted: int = 0  # in the tree but not in the official list
    valid_pct: float | None = None  # the share sent to val, for --split random (else None)

    def counts(self) -> dict[str, dict[str, int]]:
        """Planned images per class of each labelled split."""
        return {split: dict(zip(self.info.wnids, map(int, table.class_counts())))
                for split, table in self.items.items() if split != "unsup"}

    def total(self) -> int:
        return sum(len(v) for v in self.items.values())

    def output_splits(self) -> list[str]:
        """Every split the recipe makes, empty or not (a 0 in the sidecar says "none", where
        a missing split would leave a reader guessing)."""
        made = {"train", "val"} if not self.recipe.parts else {
            s for part in self.recipe.parts for s in (*part.take.values(), part.rest) if s}
        return [s for s in SPLITS if s in made or s in self.items]

    def digest(self) -> str:
        """SHA-256 of what the plan makes: every split's images, classes, labels and names,
        and the noisy labels the CSV will carry. A resumed build compares it with the
        interrupted one's, so any change that moves an image (``--valid-pct``, another
        ``--src`` or ``--split-csv``, files added to the tree) is refused rather than mixed
        into the same output."""
        h = hashlib.sha256()
        h.update("\0".join(self.info.wnids).encode())
        for split in SPLITS:
            table = self.items.get(split)
            if table is None:
                continue
            h.update(f"\0split:{split}:{len(table)}\0".encode())
            for column in table._columns():
                h.update(np.ascontiguousarray(column).tobytes())
        for key in sorted(self.noisy):
            h.update(repr((key, self.noisy[key])).encode("utf-8", "surrogateescape"))
        return h.hexdigest()

    def shards(self, shard_size: int, shuffle: bool) -> Iterator[tuple[str, list[PlanItem]]]:
        """``(shard_id, items)`` per shard; ``shuffle`` mixes classes (seeded) for record formats,
        where a shard of one class would starve a training stream of variety."""
        for split in SPLITS:
            table = self.items.get(split)
            if table is None:
                continue
            order = list(range(len(table)))
            if shuffle:
                random.Random(f"{self.seed}:shuffle:{split}").shuffle(order)
            for i in range(0, len(order), shard_size):
                yield f"{split}-{i // shard_size:05d}", table.items_at(order[i:i + shard_size])

    def num_shards(self, split: str, shard_size: int) -> int:
        return -(-len(self.items.get(split, ())) // shard_size)

    def for_downsampled(self) -> BuildPlan:
        """This plan numbered as the recipe wants its pickle/npz outputs numbered: the same
        order as every other output, except where the recipe pins one (``imagenet`` keeps the
        published downsampled-ImageNet labels, map_clsloc ids)."""
        classes, label_order = self.recipe.labelled_classes(downsampled=True)
        return self.relabelled(classes, label_order)

    def relabelled(self, classes: list[ClassInfo], label_order: str) -> BuildPlan:
        """The same images with labels indexing ``classes`` (a reordering of this plan's)."""
        if [c.wnid for c in classes] == self.info.wnids:
            return replace(self, info=replace(self.info, label_order=label_order))
        index = {c.wnid: i for i, c in enumerate(classes)}
        new_of_old = np.array([index[w] for w in self.info.wnids], dtype=np.int32)
        wnids = [c.wnid for c in classes]
        items = {}
        for split, t in self.items.items():
            label = np.where(t.label >= 0, new_of_old[np.maximum(t.label, 0)], -1)
            table = PlanTable(split, t.source, wnids, t.pool, new_of_old[t.cls],
                              label.astype(np.int32), t.name, t.alias)
            items[split] = table if split == "unsup" else table.sorted()  # unsup: keep shuffle
        info = DatasetInfo(self.info.name, list(classes), label_order, dict(self.info.extra))
        return replace(self, info=info, items=items)

    def csv_rows(self) -> Iterator[tuple[PlanItem, list[str]]]:
        """``(item, row)`` of the fastai CSV for the labelled images (unsup has no labels to
        give): the published noisy columns where the list had them, else seeded ones."""
        for split in ("train", "val"):
            table = self.items.get(split)
            if table is None:
                continue
            generated: Iterator[tuple[str, ...]] = iter(())
            if split == "train":
                todo = [it.wnid for it in table if (split, it.out_name) not in self.noisy]
                generated = iter(noisy_labels(todo, self.info.wnids, self.seed))
            for it in table:
                noisy = self.noisy.get((split, it.out_name))
                if noisy is None:
                    noisy = next(generated) if split == "train" else (it.wnid,) * 5
                yield it, [f"{split}/{it.wnid}/{it.out_name}", *noisy, str(split == "val")]


def make_plan(recipe: Recipe, source: Source, *, split_mode: str | None, seed: int,
              valid_pct: float | None = None, split_csvs: list[Path] | None = None,
              allow_missing: bool = False) -> BuildPlan:
    """Decide every image's split and label. Labels index the classes in the recipe's label
    order: sorted wnid unless the recipe pins another (pickle/npz outputs may use their own,
    :meth:`BuildPlan.for_downsampled`)."""
    split_mode = split_mode or recipe.default_split
    _check_classes(recipe, source)
    classes, label_order = recipe.labelled_classes()
    info = DatasetInfo(recipe.name, classes, label_order=label_order)
    class_of = {c.wnid: i for i, c in enumerate(classes)}
    if recipe.parts:
        info.extra["composition"] = describe_parts(recipe.parts, seed)
    plan = BuildPlan(recipe, info, source, split_mode, seed, {}, {})
    if split_mode == "random":
        plan.valid_pct = recipe.valid_pct if valid_pct is None else valid_pct
    builders = {s: _TableBuilder() for s in SPLITS}
    parts = recipe.parts or [Part(recipe, {"train": "train", "val": "val"})]
    assigned: set[str] = set()
    for part in parts:
        # Imagewang takes Imagewoof twice (10% to train, the rest to unsup): the second pass
        # must not report its missing and unlisted files, or its list, a second time.
        bookkeeping = (list(plan.missing), plan.unlisted, list(plan.split_sources))
        repeat = part.recipe.name in assigned
        assigned.add(part.recipe.name)
        for wnid, by_split in _assign(part.recipe, source, split_mode, seed, valid_pct,
                                      split_csvs or [], plan):
            cls = class_of[wnid]
            class_total = sum(len(c) for c in by_split.values())
            for part_split, cands in by_split.items():
                target = part.take.get(part_split)
                if target is None:
                    continue
                if part.fraction is not None:
                    # Imagewang: 10 % of the whole class (train + val), drawn from its train part
                    of = class_total if part.fraction_of == "class" else None
                    kept, rest = take_fraction(cands, part.fraction, seed, wnid, of=of)
                    builders[target].add(kept, cls, cls)
                    if part.rest:
                        builders[part.rest].add(rest, cls, None)
                else:
                    builders[target].add(cands, cls, cls)
        if repeat:
            plan.missing, plan.unlisted, plan.split_sources = bookkeeping
    if plan.missing and not allow_missing:
        shown = "\n    ".join(plan.missing[:20])
        more = f"\n    ... and {len(plan.missing) - 20} more" if len(plan.missing) > 20 else ""
        raise UserError(
            f"{len(plan.missing)} images of the official list are not in the ImageNet tree:\n"
            f"    {shown}{more}",
            path=source.root,
            fix="point --src at a complete ImageNet copy, or pass --allow-missing to build "
                "without them (they are listed in build-info.json)")
    for split, builder in builders.items():
        table = builder.build(split, source, info.wnids).sorted()
        if len(table):
            plan.items[split] = table.anonymised(seed) if split == "unsup" else table
    return plan


def describe_parts(parts: list[Part], seed: int) -> list[str]:
    """How a composite dataset is made, one sentence a part, for its metadata (and so its
    card): which split of which dataset went where, and how a share was counted and drawn."""
    lines = []
    for part in parts:
        name = part.recipe.name
        for src, dst in part.take.items():
            if part.fraction is None:
                lines.append(f"{dst}: every image of {name}'s {src} split")
                continue
            counted = ("counted on all of the class's images (train + val)"
                       if part.fraction_of == "class" else f"of its {src} images")
            lines.append(f"{dst}: {part.fraction:.0%} of each {name} class, {counted}, drawn "
                         f"at random (seed {seed}) from its {src} split")
            if part.rest:
                lines.append(f"{part.rest}: the rest of {name}'s {src} split, without labels, "
                             "renamed in a seeded shuffled order")
    return lines


def _check_classes(recipe: Recipe, source: Source) -> None:
    """Every class must exist in the tree before any work starts."""
    if not source.has_train():
        raise UserError("the ImageNet source has no train split", path=source.root,
                        fix="point --src at the top of the ImageNet tree (or the folder of "
                            "the archives)")
    absent = [c.wnid for c in recipe.classes if not source.has_class(c.wnid)]
    if absent:
        raise UserError(
            f"{len(absent)} of the recipe's {len(recipe.classes)} classes are not in the tree: "
            f"{', '.join(absent[:10])}{' ...' if len(absent) > 10 else ''}",
            path=source.root,
            fix="check --src (it must hold every class's train images) and the recipe's "
                "class list")


def _assign(recipe: Recipe, source: Source, split_mode: str, seed: int,
            valid_pct: float | None, split_csvs: list[Path],
            plan: BuildPlan) -> Iterator[tuple[str, dict[str, list[Candidate]]]]:
    """``(wnid, {split: candidates})`` for a non-composite recipe, one class at a time (so
    only one class's file list is ever held as Python objects); both splits together, so a
    share of a class can be counted on the whole class."""
    if split_mode == "official":
        if not source.keeps_names:
            raise UserError(
                "--split official needs the images' ImageNet file names, and this copy does "
                "not keep them", path=source.root,
                fix="use --split random (seeded, stratified), or a copy that keeps file names")
        path, origin = official_csv_path(recipe, split_csvs)
        rows = read_official_csv(path)
        plan.split_sources.append(_describe_list(recipe, rows, path, origin))
        by_class: dict[str, list[OfficialRow]] = {}
        for r in rows:
            by_class.setdefault(r.wnid, []).append(r)
        for cls in recipe.classes:
            present = {("train", f) for f in source.train_files(cls.wnid)}
            if "val" in recipe.pool:
                present |= {("val", f) for f in source.val_files(cls.wnid)}
            listed = set()
            out: dict[str, list[Candidate]] = {"train": [], "val": []}
            for row in by_class.get(cls.wnid, []):
                pool = "val" if row.filename.startswith("ILSVRC2012_val_") else "train"
                listed.add((pool, row.filename))
                if (pool, row.filename) not in present:
                    plan.missing.append(f"{row.split}/{row.wnid}/{row.filename}")
                    continue
                out[row.split].append(Candidate(pool, row.filename))
                plan.noisy[(row.split, row.filename)] = row.noisy
            plan.unlisted += len(present - listed)
            yield cls.wnid, out
        return
    for cls in recipe.classes:
        cands = [Candidate("train", f) for f in source.train_files(cls.wnid)]
        val = [Candidate("val", f) for f in source.val_files(cls.wnid)] if "val" in recipe.pool \
            else []
        if split_mode == "source":
            yield cls.wnid, {"train": cands, "val": val}
        elif split_mode == "random":
            pct = recipe.valid_pct if valid_pct is None else valid_pct
            train, valid = random_split(cands + val, pct, seed, cls.wnid)
            yield cls.wnid, {"train": train, "val": valid}
        else:
            raise UserError(f"unknown split mode {split_mode!r}",
                            fix="use official, random or source")


def _describe_list(recipe: Recipe, rows: list[OfficialRow], path: Path, origin: str) -> dict:
    """Where the membership list came from, its digest, and whether it is the published one
    (a user's own list is allowed; the report says it differs)."""
    counts = {s: sum(r.split == s for r in rows) for s in ("train", "val")}
    digest = sha256_file(path)
    published = recipe.official is not None and digest == recipe.official.sha256
    return {"recipe": recipe.name, "from": origin, "sha256": digest, "counts": counts,
            "is_published_list": published}
