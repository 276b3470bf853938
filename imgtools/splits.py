"""Who goes where: the official fastai membership lists, seeded random splits, noisy labels.

The official lists (``noisy_imagenette.csv``, ``noisy_imagewoof.csv``) are not shipped: they are
fastai's, so the tool fetches them from the fastai/imagenette repository into a user cache and
checks the SHA-256 pinned in the recipe, or takes a copy the user already has (``--split-csv``,
e.g. the CSV inside a downloaded tarball).
"""

from __future__ import annotations

import csv
import hashlib
import os
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from imgtools.atomic import atomic_write_bytes
from imgtools.checksums import sha256_file
from imgtools.errors import UserError
from imgtools.recipes import Recipe

NOISE_LEVELS = (1, 5, 25, 50)
CSV_COLUMNS = ["path", "noisy_labels_0", "noisy_labels_1", "noisy_labels_5", "noisy_labels_25",
               "noisy_labels_50", "is_valid"]


@dataclass(frozen=True)
class OfficialRow:
    """One line of a fastai CSV: ``split`` is ``train`` or ``val`` (the dataset's split, not
    ImageNet's), ``noisy`` the labels at 0/1/5/25/50 % noise."""

    split: str
    wnid: str
    filename: str
    noisy: tuple[str, ...]


def cache_dir() -> Path:
    base = os.environ.get("IMGTOOLS_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "imgtools")
    return Path(base)


def official_csv_path(recipe: Recipe, given: list[Path]) -> tuple[Path, str]:
    """The official CSV for ``recipe``: one of ``given`` whose classes match, else the cached
    download (fetched when missing). Returns the path and where it came from."""
    wnids = {c.wnid for c in recipe.classes}
    for path in given:
        if _csv_wnids(path) <= wnids:
            return path, f"--split-csv {path}"
    if recipe.official is None:
        raise UserError(f"recipe {recipe.name!r} has no official split",
                        fix="use --split random")
    if given:
        raise UserError(
            f"none of the --split-csv files lists {recipe.name} classes "
            f"({', '.join(str(p) for p in given)})",
            fix=f"pass {recipe.csv_name} (from the fastai/imagenette repository or the tarball)")
    return fetch_official(recipe), recipe.official.url


def fetch_official(recipe: Recipe) -> Path:
    """Download the pinned CSV into the cache once; verify its SHA-256 every time."""
    assert recipe.official is not None
    target = cache_dir() / recipe.csv_name
    if target.is_file() and sha256_file(target) == recipe.official.sha256:
        return target
    url = os.environ.get(f"IMGTOOLS_SPLIT_URL_{recipe.name.upper()}", recipe.official.url)
    ways_out = (f"either connect to the internet so imgtools can fetch {url}, or pass "
                f"--split-csv PATH with a copy of {recipe.csv_name} (it is inside the fastai "
                f"tarball), or use --split random")
    if os.environ.get("IMGTOOLS_OFFLINE"):
        raise UserError(f"the official {recipe.name} membership list is not cached and "
                        "IMGTOOLS_OFFLINE is set", path=target, fix=ways_out)
    # lazy: urllib.request brings ssl, http.client and email (10 ms of every run's start-up),
    # for a download most runs never make
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=30) as resp:
            data = resp.read()
    except (urllib.error.URLError, OSError) as e:
        raise UserError(f"could not download the official {recipe.name} membership list: {e}",
                        path=url, fix=ways_out) from e
    got = hashlib.sha256(data).hexdigest()
    if got != recipe.official.sha256:
        raise UserError(
            f"downloaded {recipe.csv_name} has SHA-256 {got}, the recipe pins "
            f"{recipe.official.sha256}", path=url,
            fix="the published list changed or the download was altered; pass a trusted copy "
                "with --split-csv PATH")
    atomic_write_bytes(target, data)
    return target


def _csv_wnids(path: Path) -> set[str]:
    return {row.wnid for row in read_official_csv(path)}


def read_official_csv(path: Path) -> list[OfficialRow]:
    """Parse a fastai membership CSV; a clear error for anything else."""
    if not path.is_file():
        raise UserError("no such file", path=path, fix="check the --split-csv path")
    rows = []
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = set(CSV_COLUMNS) - set(reader.fieldnames or [])
        if missing:
            raise UserError(f"not a fastai membership CSV: missing columns {sorted(missing)}",
                            path=path, fix="pass noisy_imagenette.csv or noisy_imagewoof.csv")
        for lineno, row in enumerate(reader, 2):
            parts = row["path"].split("/")
            if len(parts) != 3 or parts[0] not in ("train", "val"):
                raise UserError(f"line {lineno}: path {row['path']!r} is not "
                                "train|val/<wnid>/<file>", path=path)
            is_valid = row["is_valid"].strip().lower() == "true"
            if is_valid != (parts[0] == "val"):
                raise UserError(f"line {lineno}: is_valid={row['is_valid']} contradicts "
                                f"{row['path']}", path=path)
            noisy = tuple(row[c] for c in CSV_COLUMNS[1:6])
            rows.append(OfficialRow(parts[0], parts[1], parts[2], noisy))
    return rows


def random_split(files: list[str], valid_pct: float, seed: int, wnid: str) -> tuple[list, list]:
    """Stratified (called per class), deterministic: same files + seed, same split anywhere."""
    rng = random.Random(f"{seed}:split:{wnid}")
    shuffled = sorted(files)
    rng.shuffle(shuffled)
    n_val = round(len(shuffled) * valid_pct)
    return sorted(shuffled[n_val:]), sorted(shuffled[:n_val])


def take_fraction(files: list, fraction: float, seed: int, wnid: str, of: int | None = None
                  ) -> tuple[list, list]:
    """Keep ``fraction`` of a class (seeded, per class); return (kept, rest).

    The share is counted on ``of`` images when given (Imagewang: 10 % of all the class's
    images, train + val, as fastai describes it: "only 10 % of Imagewoof images are in the
    training set"), else on ``files``; it is always drawn from ``files`` (never more than
    they hold)."""
    rng = random.Random(f"{seed}:fraction:{wnid}")
    order = sorted(files)
    rng.shuffle(order)
    k = min(len(order), round((len(order) if of is None else of) * fraction))
    return sorted(order[:k]), sorted(order[k:])


def noisy_labels(true: list[str], wnids: list[str], seed: int) -> Iterator[tuple[str, ...]]:
    """fastai-style noisy columns for training rows: for each P in 1/5/25/50, P% of the rows
    (seeded) get a different class. Yields one (label_0, label_1, ..., label_50) per row.
    With a single class there is no other class to pick: every column keeps the true label.

    Columns are class indices in numpy arrays (2 bytes a label) and rows are made as they are
    read: for ImageNet-1k a list of row tuples held 1.28 M tuples (about 120 MB at the end of
    a build). The other class is drawn exactly as ``rng.choice`` of the other classes would
    draw it (the same random numbers, so the same labels as before), without building that
    list of 999 classes for each of the 1 M rows that change."""
    n = len(wnids)
    index = {w: i for i, w in enumerate(wnids)}
    base = np.fromiter((index[w] for w in true), dtype=np.int16, count=len(true))
    columns = [base]
    if len(set(wnids)) < 2:
        columns = columns * (1 + len(NOISE_LEVELS))
    else:
        assert len(set(wnids)) == n, "class ids are distinct"
        for p in NOISE_LEVELS:
            rng = random.Random(f"{seed}:noise:{p}")
            col = base.copy()
            for i in rng.sample(range(len(true)), round(len(true) * p / 100)):
                k = rng.choice(range(n - 1))  # an index into the n - 1 other classes
                col[i] = k if k < base[i] else k + 1
            columns.append(col)
    for row in zip(*columns):
        yield tuple(wnids[c] for c in row)
