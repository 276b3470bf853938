"""The build-time checksums ``verify`` recomputes: ``SHA256SUMS`` (``sha256sum -c`` format) and
the ``checksums`` of build-info.json, with its per-class ``counts``; a damaged list is itself
damage found (:class:`~imgtools.errors.CorruptDataError`)."""

from __future__ import annotations

import functools
from pathlib import Path

from imgtools.checksums import parse_sha256sum_line, sha256_file
from imgtools.errors import CorruptDataError, UserError
from imgtools.executors.base import Executor
from imgtools.executors.local import LocalExecutor
from imgtools.formats.common import dataset_root
from imgtools.pipeline.report import BUILD_INFO, CHECKSUMS, load_build_info

SHA256SUMS = "SHA256SUMS"
"""Checksum file the build writes beside build-info.json (``sha256sum -c`` format)."""


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


def checksum_scope(path: Path, whole: bool) -> tuple[Path, str | None]:
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


def check_checksums(root: Path, n_jobs: int | None, only: str | None = None,
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
