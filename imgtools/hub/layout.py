"""What goes into a Hub dataset repository, and where.

A repository holds one or more *configs* (``full``, ``320px``, ``160px``, ``32px`` ...), each a
folder of Parquet shards named as ``datasets.push_to_hub`` names them::

    320px/train-00000-of-00004.parquet
    320px/validation-00000-of-00002.parquet
    assets/preview-320px.png, assets/histogram-320px.png     (shown by the card)
    320px/noisy_imagenette.csv                               (when the build wrote one)
    README.md

Our split ``val`` is published as ``validation`` (the name ``datasets`` and the viewer expect);
Imagewang's ``unsup`` stays a split of its own named ``unsup`` whose rows carry no class (the
Parquet writer stores what it stores for an unlabelled record; the card says which).

The Parquet files are written by :func:`imgtools.convert.convert` (``to="parquet"``) into a
staging folder and hard-linked into the tree, so the bytes uploaded are exactly the bytes a
conversion writes - and a conversion is deterministic, so a re-run after an interruption
produces the same files with the same sha256 and uploads nothing twice.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from imgtools.atomic import atomic_write_text
from imgtools.convert import convert
from imgtools.errors import UserError
from imgtools.formats import check_finished, detect_format, get_format
from imgtools.pipeline.output import RUN_PREFIX, pending_run_for, pending_runs
from imgtools.pipeline.report import BUILD_INFO, load_build_info
from imgtools.records import DATASET_META, DatasetInfo

HF_SPLIT_NAMES = {"train": "train", "val": "validation", "unsup": "unsup", "test": "test"}
SPLIT_ORDER = ("train", "validation", "test", "unsup")
ASSETS_DIR = "assets"
STAGE_MARKER = "imgtools-stage.json"
DEFAULT_MAX_SHARD_BYTES = "500MB"
"""Upper bound of a Parquet shard's image bytes: the ``datasets.push_to_hub`` default, which
keeps each file small enough for the dataset viewer and for resumable uploads."""

_CONFIG_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}")
_SIZE_IN_NAME = re.compile(r"-(\d{1,4})(?:px)?(?=-|$)")
_SHARD_NAME = re.compile(r"^(?P<split>[A-Za-z]+)(?P<rest>-\d{5}-of-\d{5}\.parquet)$")


@dataclass(frozen=True)
class ConfigSource:
    """One built dataset to publish as config ``name`` (``fmt``: the format it is stored in)."""

    name: str
    path: Path
    fmt: str = ""


def built_size(build_info: dict) -> int | None:
    """The ``--size`` of a build (``"320"`` at the top of build-info.json); None for full size."""
    size = build_info.get("size", (build_info.get("options") or {}).get("size"))
    if isinstance(size, str) and size.isdigit():
        size = int(size)
    return int(size) if isinstance(size, int | float) and size > 0 else None


def validate_config_name(name: str) -> str:
    reserved = {"data", ASSETS_DIR, "readme.md", ".gitattributes"}
    if not _CONFIG_NAME.fullmatch(name) or name.lower() in reserved:
        raise UserError(f"invalid config name {name!r}",
                        fix="use letters, digits, '.', '_' or '-' (at most 64), such as 320px, "
                            f"full or 32px; 'data', '{ASSETS_DIR}' and README.md are reserved")
    return name


def default_config_name(path: Path, build_info: dict | None = None) -> str:
    """``320px`` for a dataset built with ``--size 320``, ``full`` for one built without; for
    anything else the size in the folder name (``imagenette2-160-wds`` -> ``160px``), else
    ``default`` (the name ``datasets`` gives a repository's only config)."""
    build_info = build_info if build_info is not None else load_build_info(path)
    size = built_size(build_info)
    if size:
        return f"{size}px"
    if build_info:
        return "full"
    m = _SIZE_IN_NAME.search(path.name)
    if m:
        return f"{int(m.group(1))}px"
    return "default"


def _is_own_dataset(path: Path) -> bool:
    """Whether ``path`` is a dataset imgtools built or converted (it carries our sidecar or
    build report); an unfinished one is an error here rather than a folder quietly left out of
    (or published into) the repository."""
    check_finished(path)
    return (path / DATASET_META).is_file() or (path / BUILD_INFO).is_file()


def _is_dataset_root(path: Path) -> bool:
    """Whether ``path`` holds one dataset, ours or any other a format reader recognises."""
    if _is_own_dataset(path):
        return True
    try:
        detect_format(path)
    except UserError:
        return False
    return True


def _format_of(path: Path) -> str:
    return detect_format(path).name


def _child_folders(src: Path) -> list[Path]:
    return sorted(c for c in src.iterdir() if c.is_dir() and not c.name.startswith("."))


def find_configs(src: Path, config: str | None = None,
                 prefer_formats: tuple[str, ...] | list[str] = ()) -> list[ConfigSource]:
    """The datasets to publish: ``src`` itself, or every dataset folder directly inside it
    (``out/`` holding ``imagenette2-160``, ``imagenette2-320-parquet`` ...), one config per size.

    A folder holding our builds is a collection even though a format reader would accept it
    (``detect_format`` finds the shards of ``out/imagenette2-160-tfrecord`` from ``out/``,
    which once published one build, without class names, as the only config). Builds of one
    size in different formats hold the same images: one is chosen with ``prefer_formats``
    (``--prefer-format``), or the push stops naming them - never a merge of the two."""
    prefer_formats = _format_names(prefer_formats)
    if not src.exists():
        raise UserError("no such file or directory", path=src,
                        fix="give the folder of a dataset imgtools built or converted")
    if not src.is_dir():
        raise UserError("not a folder", path=src,
                        fix="give the folder of a dataset imgtools built or converted (or a "
                            "folder holding several, such as out/)")
    for run in pending_runs(src):  # its outputs would be missing from the publication
        raise UserError(f"an imgtools run writing {run.name.removeprefix(RUN_PREFIX)} here "
                        "did not finish", path=run,
                        fix="finish it by running the same command again with --resume, or "
                            "delete that folder")
    if _is_own_dataset(src):
        return [_single(src, config)]
    children = [c for c in _child_folders(src) if _is_own_dataset(c)]
    if not children:
        if _is_dataset_root(src):
            return [_single(src, config)]
        children = [c for c in _child_folders(src) if _is_dataset_root(c)]
    if not children:
        raise UserError("not a dataset, and no dataset folder inside it", path=src,
                        fix="give the output folder of `imgtools build` (out/imagenette2-320) "
                            "or a folder holding several of them (out/)")
    if config is not None:
        raise UserError(f"--config {config} names one config, but this folder holds "
                        f"{len(children)} datasets", path=src,
                        fix="give one dataset folder with --config, or drop --config to publish "
                            "each dataset under its own config name")
    _check_same_dataset(children)
    groups: dict[str, list[ConfigSource]] = {}
    for child in children:
        name = validate_config_name(default_config_name(child))
        groups.setdefault(name, []).append(ConfigSource(name, child, _format_of(child)))
    return [_choose_build(src, group, prefer_formats) for group in groups.values()]


def _format_names(names: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """``--prefer-format`` values as the registry names them (``wds`` -> ``webdataset``); an
    unknown name is an error before any work."""
    return tuple(get_format(n).name for n in names)


def _single(path: Path, config: str | None) -> ConfigSource:
    return ConfigSource(validate_config_name(config or default_config_name(path)), path,
                        _format_of(path))


def _choose_build(src: Path, group: list[ConfigSource],
                  prefer_formats: tuple[str, ...] | list[str]) -> ConfigSource:
    """The one build of a config: alone, or the first of ``prefer_formats`` present."""
    if len(group) == 1:
        return group[0]
    name = group[0].name
    listing = ", ".join(f"{c.path.name} ({c.fmt})" for c in group)
    formats = [c.fmt for c in group]
    duplicated = sorted({f for f in formats if formats.count(f) > 1})
    for fmt in prefer_formats:
        matching = [c for c in group if c.fmt == fmt]
        if len(matching) == 1:
            return matching[0]
        if matching:
            break
    if duplicated:
        raise UserError(
            f"config name clash: {listing} would all be published as config {name!r}",
            path=src, fix="publish them one at a time with distinct --config names, or move "
                          "all but one away")
    raise UserError(
        f"{len(group)} builds of config {name!r} in different formats: {listing}", path=src,
        fix=f"choose one with --prefer-format ({' or '.join(formats)}; repeat the option to "
            "give an order for every size), or publish one folder with --config")


def _check_same_dataset(children: list[Path]) -> None:
    """Configs of one repository are sizes of one dataset: refuse to mix Imagenette and
    Imagewoof under one name, which ``datasets`` would happily load as one."""
    names: dict[str, Path] = {}
    for child in children:
        info = DatasetInfo.load(child)
        if info is not None:
            names.setdefault(info.name, child)
    if len(names) > 1:
        listing = ", ".join(f"{n} ({p.name})" for n, p in names.items())
        raise UserError(f"this folder holds different datasets: {listing}",
                        fix="publish each dataset to its own repository, one folder at a time")


# ----------------------------------------------------------------------------------------------
# Staging: the Parquet conversion, reused when the source has not changed
# ----------------------------------------------------------------------------------------------


def source_fingerprint(root: Path) -> str:
    """Names, sizes and modification times of every file of a dataset: cheap to compute, and
    changes whenever a rebuild or an edit could change the Parquet output."""
    digest = hashlib.sha256()
    for dirpath, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if name.startswith("."):
                continue
            st = os.stat(os.path.join(dirpath, name))
            rel = os.path.relpath(os.path.join(dirpath, name), root)
            digest.update(f"{rel}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def stage_parquet(source: ConfigSource, stage_root: Path, *, n_jobs: int | None,
                  quiet: bool, max_shard_bytes: str | int = DEFAULT_MAX_SHARD_BYTES) -> Path:
    """Convert ``source`` to Parquet under ``stage_root/<config>``; an earlier complete staging
    of the same source is reused, an interrupted one is resumed."""
    dst = stage_root / source.name
    marker = stage_root / f"{source.name}.{STAGE_MARKER}"
    wanted = {"source": str(source.path.resolve()), "fingerprint": source_fingerprint(source.path),
              "max_shard_bytes": str(max_shard_bytes)}
    if marker.is_file() and dst.is_dir():
        with contextlib.suppress(OSError, ValueError):
            if json.loads(marker.read_text()) == wanted:
                return dst
    marker.unlink(missing_ok=True)
    earlier = dst.exists() or pending_run_for(dst) is not None
    try:  # continues an interrupted staging; does nothing if one of this input is complete
        convert(source.path, dst, to="parquet", n_jobs=n_jobs, quiet=quiet, resume=True,
                max_shard_bytes=max_shard_bytes)
    except UserError:
        if not earlier:
            raise
        # the earlier staging was of other input or settings: start over
        convert(source.path, dst, to="parquet", n_jobs=n_jobs, quiet=quiet, overwrite=True,
                max_shard_bytes=max_shard_bytes)
    atomic_write_text(marker, json.dumps(wanted, indent=2))
    return dst


# ----------------------------------------------------------------------------------------------
# What a staged config holds (read from the Parquet metadata, never from what we meant to write)
# ----------------------------------------------------------------------------------------------


@dataclass
class SplitSummary:
    name: str  # HF split name
    files: list[tuple[Path, str]] = field(default_factory=list)  # (staged file, name in repo)
    num_examples: int = 0
    num_bytes: int = 0  # uncompressed Arrow bytes, as datasets reports num_bytes
    download_size: int = 0  # bytes of the Parquet files
    class_counts: list[int] = field(default_factory=list)
    unlabelled: int = 0  # rows with no class (null or -1)


@dataclass
class ConfigSummary:
    name: str
    source: Path
    staged: Path
    info: DatasetInfo
    features: dict  # the ``huggingface`` features JSON of the Parquet schema
    splits: dict[str, SplitSummary]
    build_info: dict = field(default_factory=dict)
    source_format: str = ""
    extra_files: list[tuple[Path, str]] = field(default_factory=list)  # noisy-label CSVs
    asset_files: list[tuple[Path, str]] = field(default_factory=list)  # preview PNGs
    stats: dict | None = None
    assets: dict[str, str] = field(default_factory=dict)  # kind -> path in repo
    example: dict | None = None  # the first row, as the card's Data Instances shows it

    @property
    def class_names(self) -> list[str]:
        return self.features.get("label", {}).get("names") or self.info.class_names


def hf_split_name(split: str) -> str:
    return HF_SPLIT_NAMES.get(split, split)


def _features_of(schema) -> dict:
    meta = (schema.metadata or {}).get(b"huggingface")
    if meta is None:
        return {}
    return json.loads(meta).get("info", {}).get("features", {})


def summarize_staged(source: ConfigSource, staged: Path, source_format: str) -> ConfigSummary:
    """Counts, byte sizes and features of the staged Parquet shards of one config."""
    import numpy as np
    import pyarrow.parquet as pq

    info = DatasetInfo.load(staged) or DatasetInfo.load(source.path)
    if info is None:
        raise UserError("the Parquet staging has no class list", path=staged / DATASET_META,
                        fix="report this as a bug: the parquet writer must write the sidecar")
    splits: dict[str, SplitSummary] = {}
    features: dict = {}
    for path in sorted(staged.glob("*.parquet")):
        m = _SHARD_NAME.match(path.name)
        if not m:
            raise UserError("unexpected file name in the Parquet staging", path=path,
                            fix="delete the staging folder and run the command again")
        split = hf_split_name(m.group("split"))
        summary = splits.setdefault(split, SplitSummary(split, class_counts=[0] * len(
            info.classes)))
        pf = pq.ParquetFile(path)
        features = features or _features_of(pf.schema_arrow)
        summary.files.append((path, f"{source.name}/{split}{m.group('rest')}"))
        summary.num_examples += pf.metadata.num_rows
        summary.num_bytes += sum(pf.metadata.row_group(i).total_byte_size
                                 for i in range(pf.metadata.num_row_groups))
        summary.download_size += path.stat().st_size
        labels = pf.read(columns=["label"]).column("label").to_numpy(zero_copy_only=False)
        labels = np.asarray([-1 if v is None else v for v in labels] if labels.dtype == object
                            else labels, dtype=np.int64)
        known = labels[(labels >= 0) & (labels < len(info.classes))]
        summary.unlabelled += int((labels < 0).sum())
        if len(known) + int((labels < 0).sum()) != len(labels):
            raise UserError("labels outside the class list in the Parquet staging", path=path,
                            fix="run `imgtools verify` on the source dataset")
        summary.class_counts = list(np.asarray(summary.class_counts) + np.bincount(
            known, minlength=len(info.classes)))
    if not splits:
        raise UserError("the conversion wrote no Parquet files", path=staged,
                        fix="run `imgtools verify` on the source dataset")
    ordered = {s: splits[s] for s in sorted(splits, key=lambda s: (
        SPLIT_ORDER.index(s) if s in SPLIT_ORDER else len(SPLIT_ORDER), s))}
    for s in ordered.values():
        s.class_counts = [int(c) for c in s.class_counts]
    return ConfigSummary(name=source.name, source=source.path, staged=staged, info=info,
                         features=features, splits=ordered, example=first_row(ordered),
                         build_info=load_build_info(source.path), source_format=source_format,
                         extra_files=[(p, f"{source.name}/{p.name}")
                                      for p in sorted(source.path.glob("noisy_*.csv"))])


def first_row(splits: dict[str, SplitSummary]) -> dict | None:
    """The first row of the first split, described as ``datasets`` shows it: the PIL class,
    mode and size of the decoded image (after the EXIF rotation ``datasets`` applies) and the
    label."""
    import io

    import pyarrow.parquet as pq
    from PIL import Image, ImageOps

    for split in splits.values():
        for path, _ in split.files:
            parquet = pq.ParquetFile(path)
            if parquet.metadata.num_row_groups == 0:
                continue
            table = parquet.read_row_group(0, columns=["image", "label"])
            if table.num_rows == 0:
                continue
            row = table.slice(0, 1).to_pylist()[0]
            data = (row["image"] or {}).get("bytes")
            if not data:
                continue
            try:
                with Image.open(io.BytesIO(data)) as im:
                    kind = f"{type(im).__module__}.{type(im).__name__}"
                    width, height = im.size
                    mode = im.mode
                    if im.getexif().get(0x0112, 1) != 1:  # datasets applies the rotation
                        turned = ImageOps.exif_transpose(im)
                        kind, (width, height) = "PIL.Image.Image", turned.size
            except OSError:
                continue
            label = row.get("label")
            return {"split": split.name, "image_class": kind, "mode": mode, "width": width,
                    "height": height, "label": -1 if label is None else int(label)}
    return None


def link_or_copy(src: Path, dst: Path) -> None:
    """Put ``src`` at ``dst`` without copying bytes when the filesystem allows (hard link)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.exists() and os.path.samefile(src, dst):
        return  # already there (a re-push): renaming a link onto itself would keep the temp
    tmp = dst.with_name(f".tmp-{os.getpid()}-{dst.name}")
    tmp.unlink(missing_ok=True)
    try:
        try:
            os.link(src, tmp)
        except OSError:
            shutil.copyfile(src, tmp)
        os.replace(tmp, dst)
    finally:
        tmp.unlink(missing_ok=True)


def repo_files(summary: ConfigSummary) -> dict[str, Path]:
    """Every file of one config in the repository: path in repo -> local file."""
    files = {name: path for split in summary.splits.values() for path, name in split.files}
    files.update({name: path for path, name in summary.extra_files})
    files.update({name: path for path, name in summary.asset_files})
    return files
