"""The plan: which ImageNet files go to which split, with which label, in which shard.

Planning only lists folders and reads label files; no image is opened. The result is a list of
small :class:`PlanItem` tuples per split (paths and labels), from which shards (self-contained
tasks for :mod:`imgtools.runner`) are cut. Every decision is a pure function of the tree, the
recipe, the split mode and the seed, which is what makes builds reproducible.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from imgtools.checksums import sha256_file
from imgtools.errors import UserError
from imgtools.recipes import Part, Recipe
from imgtools.records import SPLITS, DatasetInfo
from imgtools.source import ImageNetSource
from imgtools.splits import (
    OfficialRow,
    noisy_labels,
    official_csv_path,
    random_split,
    read_official_csv,
    take_fraction,
)


class PlanItem(NamedTuple):
    """One image to produce. ``label`` is 0-based in the recipe's class order (None: unsup)."""

    src: str
    split: str
    label: int | None
    wnid: str
    out_name: str


class Candidate(NamedTuple):
    """An image of one class as found in the tree (``pool`` is ImageNet's split)."""

    pool: str
    filename: str


@dataclass
class BuildPlan:
    recipe: Recipe
    info: DatasetInfo
    source: ImageNetSource
    split_mode: str
    seed: int
    items: dict[str, list[PlanItem]]
    noisy: dict[tuple[str, str], tuple[str, ...]]  # (split, filename) -> noisy labels
    split_sources: list[dict] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # listed officially, absent in the tree
    unlisted: int = 0  # in the tree but not in the official list

    def counts(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for split, items in self.items.items():
            per = {c.wnid: 0 for c in self.info.classes} if split != "unsup" else {}
            for it in items:
                per[it.wnid] = per.get(it.wnid, 0) + 1
            out[split] = per
        return out

    def total(self) -> int:
        return sum(len(v) for v in self.items.values())

    def shards(self, shard_size: int, shuffle: bool) -> Iterator[tuple[str, list[PlanItem]]]:
        """``(shard_id, items)`` per shard; ``shuffle`` mixes classes (seeded) for record formats,
        where a shard of one class would starve a training stream of variety."""
        for split in SPLITS:
            items = self.items.get(split, [])
            if shuffle:
                items = list(items)
                random.Random(f"{self.seed}:shuffle:{split}").shuffle(items)
            for i in range(0, len(items), shard_size):
                yield f"{split}-{i // shard_size:05d}", items[i:i + shard_size]

    def num_shards(self, split: str, shard_size: int) -> int:
        return -(-len(self.items.get(split, [])) // shard_size)

    def csv_rows(self) -> Iterator[list[str]]:
        """Rows of the fastai CSV for the labelled images (unsup has no labels to give)."""
        for split in ("train", "val"):
            items = self.items.get(split, [])
            generated = {}
            if split == "train":
                todo = [it for it in items if (split, it.out_name) not in self.noisy]
                wnids = self.info.wnids
                rows = noisy_labels([it.wnid for it in todo], wnids, self.seed)
                generated = {it.out_name: row for it, row in zip(todo, rows)}
            for it in items:
                noisy = self.noisy.get((split, it.out_name)) or generated.get(it.out_name) or (
                    (it.wnid,) * 5)
                yield [f"{split}/{it.wnid}/{it.out_name}", *noisy, str(split == "val")]


def make_plan(recipe: Recipe, source: ImageNetSource, *, split_mode: str | None, seed: int,
              valid_pct: float | None = None, split_csvs: list[Path] | None = None,
              allow_missing: bool = False) -> BuildPlan:
    split_mode = split_mode or recipe.default_split
    _check_classes(recipe, source)
    info = DatasetInfo(recipe.name, list(recipe.classes), label_order=recipe.label_order)
    label_of = {c.wnid: i for i, c in enumerate(recipe.classes)}
    plan = BuildPlan(recipe, info, source, split_mode, seed, {s: [] for s in SPLITS}, {})
    parts = recipe.parts or [Part(recipe, {"train": "train", "val": "val"})]
    for part in parts:
        assigned = _assign(part.recipe, source, split_mode, seed, valid_pct, split_csvs or [],
                           plan)
        for (part_split, wnid), cands in assigned.items():
            target = part.take.get(part_split)
            if target is None:
                continue
            if part.fraction is not None:
                kept, rest = take_fraction(cands, part.fraction, seed, wnid)
                _add(plan, source, target, kept, wnid, label_of)
                if part.rest:
                    _add(plan, source, part.rest, rest, wnid, None)
            else:
                _add(plan, source, target, cands, wnid, label_of)
    if plan.missing and not allow_missing:
        shown = "\n    ".join(plan.missing[:20])
        more = f"\n    ... and {len(plan.missing) - 20} more" if len(plan.missing) > 20 else ""
        raise UserError(
            f"{len(plan.missing)} images of the official list are not in the ImageNet tree:\n"
            f"    {shown}{more}",
            path=source.root,
            fix="point --src at a complete ImageNet copy, or pass --allow-missing to build "
                "without them (they are listed in build-info.json)")
    for split in plan.items:
        plan.items[split].sort(key=lambda it: (it.label if it.label is not None else -1,
                                               it.wnid, it.out_name))
    plan.items["unsup"] = _anonymise(plan.items["unsup"], seed)
    plan.items = {s: v for s, v in plan.items.items() if v}
    return plan


def _anonymise(items: list[PlanItem], seed: int) -> list[PlanItem]:
    """Unlabelled images must not carry their label: ImageNet train names start with the wnid
    and a class-sorted numbering would leak class boundaries, so unsup images are numbered in
    a seeded shuffled order (``unsup_000017.JPEG``)."""
    order = list(items)
    random.Random(f"{seed}:unsup").shuffle(order)
    return [it._replace(out_name=f"unsup_{i:06d}.JPEG") for i, it in enumerate(order)]


def _check_classes(recipe: Recipe, source: ImageNetSource) -> None:
    """Every class must exist in the tree before any work starts."""
    if source.train_dir is None:
        raise UserError("the ImageNet tree has no train/ folder", path=source.root,
                        fix="point --src at the top of the ImageNet tree")
    absent = [c.wnid for c in recipe.classes if not source.has_class(c.wnid)]
    if absent:
        raise UserError(
            f"{len(absent)} of the recipe's {len(recipe.classes)} classes are not in the tree: "
            f"{', '.join(absent[:10])}{' ...' if len(absent) > 10 else ''}",
            path=source.train_dir,
            fix="check --src (it must hold train/<wnid>/ folders) and the recipe's class list")


def _assign(recipe: Recipe, source: ImageNetSource, split_mode: str, seed: int,
            valid_pct: float | None, split_csvs: list[Path],
            plan: BuildPlan) -> dict[tuple[str, str], list[Candidate]]:
    """(split, wnid) -> candidates, for a non-composite recipe."""
    out: dict[tuple[str, str], list[Candidate]] = {}
    if split_mode == "official":
        path, origin = official_csv_path(recipe, split_csvs)
        rows = read_official_csv(path)
        plan.split_sources.append(_describe_list(recipe, rows, path, origin))
        listed = set()
        for cls in recipe.classes:
            present = {("train", f) for f in source.train_files(cls.wnid)}
            if "val" in recipe.pool:
                present |= {("val", f) for f in source.val_files(cls.wnid)}
            for row in (r for r in rows if r.wnid == cls.wnid):
                pool = "val" if row.filename.startswith("ILSVRC2012_val_") else "train"
                listed.add((pool, row.filename))
                if (pool, row.filename) not in present:
                    plan.missing.append(f"{row.split}/{row.wnid}/{row.filename}")
                    continue
                out.setdefault((row.split, cls.wnid), []).append(Candidate(pool, row.filename))
                plan.noisy[(row.split, row.filename)] = row.noisy
            plan.unlisted += len(present - listed)
        return out
    for cls in recipe.classes:
        cands = [Candidate("train", f) for f in source.train_files(cls.wnid)]
        val = [Candidate("val", f) for f in source.val_files(cls.wnid)] if "val" in recipe.pool \
            else []
        if split_mode == "source":
            out[("train", cls.wnid)] = cands
            out[("val", cls.wnid)] = val
        elif split_mode == "random":
            pct = recipe.valid_pct if valid_pct is None else valid_pct
            train, valid = random_split(cands + val, pct, seed, cls.wnid)
            out[("train", cls.wnid)] = train
            out[("val", cls.wnid)] = valid
        else:
            raise UserError(f"unknown split mode {split_mode!r}",
                            fix="use official, random or source")
    return out


def _describe_list(recipe: Recipe, rows: list[OfficialRow], path: Path, origin: str) -> dict:
    """Where the membership list came from, its digest, and whether it is the published one
    (a user's own list is allowed; the report says it differs)."""
    counts = {s: sum(r.split == s for r in rows) for s in ("train", "val")}
    digest = sha256_file(path)
    published = recipe.official is not None and digest == recipe.official.sha256
    return {"recipe": recipe.name, "from": origin, "sha256": digest, "counts": counts,
            "is_published_list": published}


def _add(plan: BuildPlan, source: ImageNetSource, split: str, cands: list[Candidate], wnid: str,
         label_of: dict[str, int] | None) -> None:
    label = None if label_of is None else label_of[wnid]
    for c in cands:
        src = str(source.path_of(c.pool, wnid, c.filename))
        plan.items[split].append(PlanItem(src, split, label, wnid, c.filename))
