"""Format registry: look formats up by name, or detect which one a path holds.

Format modules are imported lazily so that ``imgtools --help`` stays fast and a broken optional
library only affects the format that needs it.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from imgtools.errors import UserError
from imgtools.formats.base import Format
from imgtools.pipeline.output import is_run_folder, pending_run_for
from imgtools.records import DATASET_META, load_sidecar

# The one list of formats: name -> module path (each module defines ``FORMAT``, an instance
# of base.Format). The CLI's choices, detection, verify, push-hub and the contract tests all
# read it, so a new format is a new module and one line here.
_FORMAT_MODULES = {
    "folder": "imgtools.formats.folder",
    "tfrecord": "imgtools.formats.tfrecord",
    "webdataset": "imgtools.formats.webdataset",
    "parquet": "imgtools.formats.parquet",
    "pickle": "imgtools.formats.pickle",
}
FORMAT_NAMES = tuple(_FORMAT_MODULES)
ROWS_ONLY = frozenset({"pickle"})
"""Formats whose writer takes square pixel rows, not encoded images (``Format.takes``): made by
``build --format pickle|npz`` or ``convert --to pickle|npz --size N``, never losslessly."""
LOSSLESS_TARGETS = tuple(n for n in FORMAT_NAMES if n not in ROWS_ONLY)
"""Formats a conversion writes with every image's bytes untouched."""
CONVERT_TARGETS = (*FORMAT_NAMES, "npz")
BUILD_FORMATS = CONVERT_TARGETS
"""``build --format`` / ``convert --to`` choices: npz is the pickle format's NumPy container."""
ALIASES = {"wds": "webdataset", "tfrec": "tfrecord", "jpeg": "folder", "npz": "pickle",
           "hf": "parquet"}


def get_format(name: str) -> Format:
    key = ALIASES.get(name, name)
    if key not in _FORMAT_MODULES:
        raise UserError(f"unknown format {name!r}",
                        fix=f"use one of: {', '.join(FORMAT_NAMES)}")
    return importlib.import_module(_FORMAT_MODULES[key]).FORMAT


def unfinished(path: Path) -> str | None:
    """Why the dataset at ``path`` is known to be incomplete, or None. A run writes into a
    hidden run folder and moves each output into place only when it is complete (see
    :mod:`imgtools.pipeline.output`), so only paths inside a run folder, or an output whose
    run is still pending, are incomplete; they are refused rather than read, verified or
    published."""
    if is_run_folder(path):
        return "this is an unfinished imgtools run's working folder"
    if not Path(path).exists() and pending_run_for(Path(path)) is not None:
        return "an imgtools run writing this output did not finish"
    return None


def check_finished(path: Path) -> None:
    """Refuse a dataset :func:`unfinished` knows to be incomplete (for reading, verifying or
    publishing it)."""
    reason = unfinished(path)
    if reason:
        raise UserError(f"an incomplete dataset: {reason}", path=path,
                        fix="finish it by running the same command again with --resume, or "
                            "delete it and start over")


def _declared_format(path: Path) -> str | None:
    """The format the imgtools sidecar of the dataset at ``path`` names, if any."""
    sidecar = (path if path.is_dir() else path.parent) / DATASET_META
    if not sidecar.is_file():
        return None
    declared = load_sidecar(sidecar).get("format")
    return declared if isinstance(declared, str) else None


def detect_format(path: str | Path) -> Format:
    """The format of the dataset at ``path``; a clear error when it is none of ours."""
    path = Path(path)
    check_finished(path)
    if not path.exists():
        raise UserError("no such file or directory", path=path,
                        fix="check the path: it should hold a dataset in a format imgtools reads")
    try:
        declared = _declared_format(path)
    except UserError:  # a damaged sidecar: detect by the files (and say so if they disagree)
        declared = None
    if declared in FORMAT_NAMES and get_format(declared).detect(path):
        # What the loop below would choose too (alone, or among several by the sidecar),
        # without listing the folder once per other format: three walks of a million files.
        return get_format(declared)
    found = []
    for name in FORMAT_NAMES:
        try:
            fmt = get_format(name)
        except ImportError:  # pragma: no cover - format module not available
            continue
        if fmt.detect(path):
            found.append(fmt)
    if len(found) > 1:
        # A stray .tar in a class folder must not turn a JPEG folder into a WebDataset:
        # the sidecar imgtools writes says which format it is; otherwise ask.
        chosen = [f for f in found if f.name == _declared_format(path)]
        if chosen:
            return chosen[0]
        names = " and ".join(f.name for f in found)
        raise UserError(f"this holds files of several formats ({names})", path=path,
                        fix="move the stray files out of the dataset, or name its format: "
                            f"imgtools convert --from {' | '.join(f.name for f in found)} ...")
    if found:
        return found[0]
    raise UserError(
        "not a dataset in any format imgtools reads",
        path=path,
        fix="expected a JPEG folder (split/class/*.JPEG), TFRecord shards (*.tfrecord*, *.tfrec), "
            "WebDataset tars (*.tar), Parquet files (*.parquet) or CIFAR-style pickles/npz",
    )
