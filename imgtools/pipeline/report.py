"""The run report every command writes beside its output (``build-info.json``), and what a
command answers when there is nothing to do.

May import: the standard library and ``imgtools.errors``.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterable, Mapping
from pathlib import Path

from imgtools.atomic import atomic_open, atomic_write_text
from imgtools.checksums import sha256sum_lines
from imgtools.errors import UserError
from imgtools.runner import load_done

BUILD_INFO = "build-info.json"
CHECKSUMS = "SHA256SUMS"

REPORT_KEYS = (
    # who made it, how
    "tool", "tool_version", "kind", "command",
    # what it was made from
    "recipe", "recipe_file", "source", "source_layout", "val_labels", "from", "to",
    # settings and the meaning of the data
    "options", "resizer", "pixels", "classes", "label_order", "labels",
    # what came out
    "planned", "counts", "totals", "splits", "records", "shards", "bytes_in", "bytes_out",
    "skipped", "repaired", "missing_from_tree", "not_in_official_list", "ignored_files",
    # how long
    "seconds", "images_per_second", "records_per_s", "mb_per_s",
    # this output
    "size", "path", "src", "dst", "files",
)
"""Every key of ``build-info.json``, for every format and command (a key that does not apply
is null): a reader never has to guess which command or format made a dataset to find a field.
``kind`` is "build" or "convert"."""


def run_report(**fields) -> dict:
    """A ``build-info.json`` dict with exactly :data:`REPORT_KEYS`, in that order; an unknown
    key is a programming error, caught by the tests of every command."""
    unknown = sorted(set(fields) - set(REPORT_KEYS))
    if unknown:
        raise TypeError(f"not a build-info.json key: {', '.join(unknown)}")
    return {key: fields.get(key) for key in REPORT_KEYS}


def write_report(folder: Path, report: dict) -> None:
    """Write ``build-info.json`` into an output (its staging folder, before publication)."""
    atomic_write_text(folder / BUILD_INFO, json.dumps(report, indent=2) + "\n")


def write_checksums(paths: list[Path], markers: Path, shard_ids: Iterable[str],
                    held: Mapping[str, list[str]] | None = None) -> None:
    """``SHA256SUMS`` (``sha256sum -c`` compatible), one file per output (``paths``), streamed
    from the shards' done markers in plan order: a shard summary's ``sha256sums`` holds the
    lines of each output's files, made while the shard wrote them. ``held``: those lines of
    the shards whose summaries the run still holds, by shard id (not read back)."""
    held = held or {}
    with contextlib.ExitStack() as stack:
        files = [stack.enter_context(atomic_open(p, "w")) for p in paths]
        for shard_id in shard_ids:
            sums = held.get(shard_id)
            if sums is None:
                done = load_done(markers, shard_id, check_files=False)  # checked by the run
                if done is None:
                    raise RuntimeError(f"shard {shard_id} has no summary after the run")
                sums = _checksum_lines(done)
            for f, lines in zip(files, sums):  # each in plan order
                f.write(lines)


def _checksum_lines(summary: dict) -> list[str]:
    """A shard summary's SHA256SUMS lines per output. A marker written before December 2026
    holds ``checksums``, one ``{relative path: sha256}`` per output: read as well, so that
    such a run resumes."""
    if "sha256sums" in summary:
        return summary["sha256sums"]
    return [sha256sum_lines((digest, rel) for rel, digest in sums.items())
            for sums in summary["checksums"]]


def already_complete(roots: list[Path]) -> dict:
    """The answer of ``--resume`` on outputs that are complete with the same settings and
    input: their own report (from the first output), marked as nothing done."""
    try:
        report = json.loads((Path(roots[0]) / BUILD_INFO).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        report = {}
    if not isinstance(report, dict):
        report = {}
    return {**report, "nothing_to_do": True, "outputs": [str(r) for r in roots],
            "message": "already complete with the same settings and input; nothing changed"}


def load_build_info(root: Path) -> dict:
    """``build-info.json`` written by ``imgtools build``; ``{}`` for datasets built otherwise
    (a conversion, a dataset from elsewhere) - the card then says less, but says nothing false."""
    path = root / BUILD_INFO
    if not path.is_file():
        return {}
    try:
        obj = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise UserError(f"cannot read the build report: {e}", path=path,
                        fix="restore the file from the build, or delete it to publish without "
                            "build details") from e
    if not isinstance(obj, dict):
        raise UserError("the build report is not a JSON object", path=path,
                        fix="restore the file from the build, or delete it")
    return obj
