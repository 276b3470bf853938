"""WebDataset: POSIX tar shards that streaming PyTorch pipelines read sequentially.

One sample is a run of tar members sharing a key (the name up to the first dot):
``<key>.jpg`` (``.png`` for PNG bytes - the extension is what decoders dispatch on),
``<key>.cls`` (the 0-based label as ASCII digits; absent for unlabelled ``unsup`` images) and
``<key>.json`` (``label``, ``class_name``, ``wnid``, ``split``, ``filename``: everything needed to
rebuild the folder). Keys never contain dots, or ``webdataset`` would split them.

Shards are ``data/<split>-00000-of-00013.tar`` (brace notation
``data/train-{00000..00012}-of-00013.tar``), written as ``webdataset``'s own ``TarWriter``
writes them with a fixed ``mtime`` so that the same input gives the same bytes. The names are
the ones ``datasets.push_to_hub`` gives shards: ``datasets.load_dataset("webdataset",
data_dir=root)`` finds every split by them (a split named other than train/validation/test,
such as ``unsup``, is found by no other name) and reads nothing else. ``<split>.wids.json``
lists each split's shards with their sample counts in the ``wids`` shard-index format
(``wids-shard-index-v1``; no ``md5sum``, which ``wids`` treats as optional), for random access
with ``wids.ShardListDataset``; ``README.md`` carries the features for ``load_dataset(root)``
(:mod:`imgtools.metadata.huggingface`).

Reading is strict where tar readers are lenient: a member cut short, a missing end-of-archive
marker (a tar truncated exactly between members) or a sample without an image is an error that
names the shard and the byte offset, never a quietly shorter dataset. The tar headers are read
and written by :mod:`imgtools.formats.tar_codec` (hand-written, with the measurement that shows
why); this module is the format: samples, shard names, the ``wids`` index and the card.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from imgtools.atomic import atomic_write_text, naming_errors, tmp_path_for
from imgtools.errors import CorruptDataError
from imgtools.formats.base import (
    Format,
    InputShard,
    ShardWriter,
    files_with_suffix,
    listed_files,
)
from imgtools.formats.common import dataset_root, image_ext, info_from_labels, split_from_name
from imgtools.formats.gathered import GatheredFile
from imgtools.formats.tar_codec import (
    END_OF_ARCHIVE,
    MEMBER_NAME,
    Member,
    count_samples,
    member_header,
    read_member,
    walk_samples,
)
from imgtools.metadata.croissant import write_croissant
from imgtools.metadata.huggingface import write_webdataset_card
from imgtools.pipeline.packing import PackedParts
from imgtools.records import DatasetInfo, Record, plain_filename

IMAGE_FIELDS = ("jpg", "jpeg", "png", "webp", "bmp", "gif", "tif", "tiff", "ppm", "img",
                "image")
_KEY_UNSAFE = re.compile(r"[^A-Za-z0-9_\-]")
WIDS_SUFFIX = ".wids.json"


SHARD_FOLDER = "data"


def shard_name(split: str, index: int, num_shards: int) -> str:
    """``data/<split>-00000-of-00004.tar``: see the module docstring for why."""
    return f"{SHARD_FOLDER}/{split}-{index:05d}-of-{num_shards:05d}.tar"


def _image_member(path: Path, key: str, members: list[Member]) -> Member:
    by_field = {MEMBER_NAME.match(m.name).group(2).lower(): m for m in members}  # type: ignore
    for field in IMAGE_FIELDS:
        if field in by_field:
            return by_field[field]
    raise CorruptDataError(f"sample {key!r} has no image (its members: "
                           f"{[m.name for m in members]})", path=path,
                           offset=members[0].offset,
                           fix=f"each sample needs one of .{', .'.join(IMAGE_FIELDS[:4])}")



class WebDatasetFormat(PackedParts, Format):
    name = "webdataset"
    default_shard_records = 10_000
    default_shard_bytes = 500_000_000
    """At most 10,000 samples or 500 MB of images a shard: big enough for sequential reads,
    small enough that a few hundred shards spread over many workers and nodes."""

    # ------------------------------------------------------------------ reading
    def files(self, path: Path) -> list[Path]:
        return files_with_suffix(path, ".tar")

    def detect(self, path: Path) -> bool:
        return bool(self.files(Path(path)))

    def input_shards(self, path: Path) -> list[InputShard]:

        files, base = listed_files(self, path, ".tar shards",
                                   "data/train-00000-of-00004.tar …")
        return [InputShard(str(f), split_from_name(str(f.relative_to(base)))) for f in files]

    def read_info(self, path: Path) -> DatasetInfo:

        path = Path(path)
        info = DatasetInfo.load(dataset_root(path))
        if info is not None:
            return info
        return info_from_labels(path, self._labels_seen(path))

    def _labels_seen(self, path: Path) -> Iterator[tuple[object, str | None, str | None]]:
        """Foreign shards: labels from .cls/.json members (small; images are not read)."""
        for shard in self.input_shards(path):
            file = Path(shard.path)
            for f, key, members in walk_samples(file):
                meta = self._meta(file, f, key, members)
                yield meta.get("label"), meta.get("class_name"), meta.get("wnid")

    @staticmethod
    def _meta(path: Path, f: BinaryIO, key: str, members: list[Member]) -> dict:
        """``label`` (from ``.cls``, else the JSON), plus the JSON's fields."""
        meta: dict = {}
        by_field = {MEMBER_NAME.match(m.name).group(2).lower(): m for m in members}  # type: ignore
        if "json" in by_field:
            try:
                loaded = json.loads(read_member(path, f, by_field["json"]))
            except (ValueError, UnicodeDecodeError) as e:
                raise CorruptDataError(f"sample {key!r}: .json is not valid JSON: {e}",
                                       path=path, offset=by_field["json"].offset) from e
            if isinstance(loaded, dict):
                meta.update(loaded)
            _check_meta_types(path, key, meta, by_field["json"].offset)
        for field in ("cls", "label", "class", "cls2"):
            if field in by_field:
                text = read_member(path, f, by_field[field]).decode("ascii", "replace")
                try:
                    meta["label"] = int(text.strip())
                except ValueError as e:
                    raise CorruptDataError(f"sample {key!r}: .{field} is not an integer: "
                                           f"{text[:40]!r}", path=path,
                                           offset=by_field[field].offset) from e
                break
        return meta

    def scan_records(self, shard: InputShard, info: DatasetInfo, *, sizes: bool = True
                     ) -> tuple[list[int], list[int]]:
        """Image size and first-header offset of every sample, from the tar headers alone (no
        image is read): the offsets let each worker seek to its slice of a shard."""
        path = Path(shard.path)
        sizes, offsets = [], []
        for _f, key, members in walk_samples(path):
            sizes.append(_image_member(path, key, members).size)
            offsets.append(members[0].offset)
        return sizes, offsets

    def scan_shard(self, shard: InputShard, info: DatasetInfo) -> list[int]:
        """Image size of every sample from the tar headers alone (no image is read)."""
        return self.scan_records(shard, info)[0]

    def read_shard(self, shard: InputShard, info: DatasetInfo) -> Iterator[Record]:
        return self.read_range(shard, info, 0, None)

    def read_range(self, shard: InputShard, info: DatasetInfo, start: int,
                   stop: int | None, offset: int | None = None) -> Iterator[Record]:
        """Samples ``start:stop``; with ``offset`` (where sample ``start`` begins, from
        :meth:`scan_records`) reading seeks there instead of walking the headers before it."""

        path = Path(shard.path)
        split = shard.split or "train"
        walk = enumerate(walk_samples(path, offset), start) if offset is not None else \
            enumerate(walk_samples(path))
        for index, (f, key, members) in walk:
            if index < start:
                continue
            if stop is not None and index >= stop:
                return
            image = read_member(path, f, _image_member(path, key, members))
            meta = self._meta(path, f, key, members)
            label = meta.get("label")
            label = label if isinstance(label, int) and label >= 0 else None
            if label is not None and label >= len(info.classes):
                raise CorruptDataError(
                    f"sample {key!r}: label {label} but the dataset has "
                    f"{len(info.classes)} classes", path=path, offset=members[0].offset,
                    fix="fix the class list in imgtools-dataset.json next to the shards")
            cls = info.classes[label] if label is not None else None
            base = key.rsplit("/", 1)[-1]
            filename = plain_filename(meta.get("filename")) or f"{base}.{image_ext(image)}"
            yield Record(key=_KEY_UNSAFE.sub("_", base), split=split, label=label,
                         image=image, filename=str(filename),
                         wnid=cls.wnid if cls else meta.get("wnid"),
                         class_name=cls.name if cls else None)

    # ------------------------------------------------------------------ writing
    def container_problems(self, path: Path) -> list[dict]:
        """Tar header checksums and truncation, through the standard library's tar reader (a
        second opinion next to our own header parser)."""
        with tarfile.open(path) as tar:
            for _member in tar:
                pass
        return []

    def open_writer(self, root: Path, info: DatasetInfo, split: str, shard_index: int,
                    num_shards: int, *, digests: bool = False) -> ShardWriter:
        return WebDatasetShardWriter(Path(root) / shard_name(split, shard_index, num_shards),
                                     digests)

    def finalize(self, root: Path, info: DatasetInfo, counts: dict[str, int],
                 facts: dict[str, dict] | None = None) -> None:
        """Sidecar, one ``wids`` shard index per split, and the card YAML that gives
        ``datasets.load_dataset(root)`` the class names."""
        root = Path(root)
        fields: set[str] = set()
        shards: dict[str, list[str]] = {}
        for split in counts:
            shardlist = []
            for file in sorted((root / SHARD_FOLDER).glob(f"{split}-[0-9]*-of-[0-9]*.tar")):
                url = file.relative_to(root).as_posix()
                known = (facts or {}).get(url)
                if known is None:  # not written by this run's writers: read its headers
                    nsamples = count_samples(file, fields)
                else:
                    nsamples = known["records"]
                    fields.update(known["fields"])
                shardlist.append({"url": url, "nsamples": nsamples,
                                  "filesize": file.stat().st_size})
            shards[split] = [s["url"] for s in shardlist]
            index = {"__kind__": "wids-shard-index-v1", "wids_version": 1,
                     "name": f"{info.name}-{split}", "shardlist": shardlist}
            atomic_write_text(root / f"{split}{WIDS_SUFFIX}", json.dumps(index, indent=1) + "\n")
        images = [f for f in IMAGE_FIELDS if f in {x.lower() for x in fields}] or ["jpg"]
        write_webdataset_card(root, info, {s: v for s, v in shards.items() if v}, counts, images)
        super().finalize(root, info, counts)
        write_croissant(root, info, self.name, [s for s, n in counts.items() if n])


def _check_meta_types(path: Path, key: str, meta: dict, offset: int) -> None:
    """A sample's ``.json`` fields that imgtools reads must have their types: a label that is
    text would silently become "unlabelled", a file name that is a list would be stored as
    ``"['a']"``. Either stops the run, naming the sample."""
    label, filename = meta.get("label"), meta.get("filename")
    if label is not None and (type(label) is not int):
        raise CorruptDataError(f"sample {key!r}: .json label is {type(label).__name__} "
                               f"{label!r}, not an integer", path=path, offset=offset,
                               fix="write labels as integers (0-based), or leave them out of "
                                   "the .json for unlabelled images")
    if filename is not None and not isinstance(filename, str):
        raise CorruptDataError(f"sample {key!r}: .json filename is {type(filename).__name__} "
                               f"{filename!r}, not text", path=path, offset=offset,
                               fix="write the file name as a string, or leave it out (the key "
                                   "is used)")



_JOIN_BELOW = 4096
"""Members smaller than this are joined with their neighbours' headers before writing."""


class WebDatasetShardWriter(ShardWriter):
    """One tar shard, written as ``webdataset.TarWriter(fileobj, encoder=False, mtime=0)``
    writes it (same members in the same order, same headers, same end padding), into a
    temporary file renamed on close. With ``digests`` the shard is hashed as it is written
    (not read back for ``SHA256SUMS``)."""

    def __init__(self, path: Path, digests: bool = False):
        self.path = path
        self._hashed = digests
        path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = tmp_path_for(path)
        self._file = GatheredFile(self.tmp, digest=digests)
        self._keys: set[str] = set()
        self._fields: set[str] = set()
        self.nsamples = 0

    def _write_sample(self, members: list[tuple[str, bytes]]) -> None:
        """A sample's members, each a header, its bytes and the padding to a 512-byte block,
        handed to the file as pieces (:class:`GatheredFile`: no copy of the image). The small
        pieces around an image are joined first: three pieces a sample instead of nine."""
        pieces: list[bytes] = []
        small: list[bytes] = []
        for name, data in members:
            small.append(member_header(name, len(data)))
            if len(data) < _JOIN_BELOW:
                small.append(data)
            else:
                pieces += (b"".join(small), data)
                small.clear()
            if len(data) % tarfile.BLOCKSIZE:
                small.append(bytes(tarfile.BLOCKSIZE - len(data) % tarfile.BLOCKSIZE))
        if small:
            pieces.append(b"".join(small))
        self._file.write(pieces, sum(map(len, pieces)))

    def write(self, record: Record) -> None:

        key = self._unique(_KEY_UNSAFE.sub("_", record.key))
        self._keys.add(key)
        meta = {"label": record.label, "class_name": record.class_name, "wnid": record.wnid,
                "split": record.split, "filename": record.filename}
        fields = {image_ext(record.image, record.filename): record.image,
                  "json": json.dumps(meta, sort_keys=True, ensure_ascii=False).encode()}
        if record.label is not None:
            fields["cls"] = str(record.label).encode("ascii")
        with naming_errors(self.path):  # TarWriter writes a sample's fields in sorted order
            self._write_sample([(f"{key}.{field}", fields[field]) for field in sorted(fields)])
        self._fields.update(fields)
        self.nsamples += 1

    def _unique(self, key: str) -> str:
        """``key``, or ``key_1``, ``key_2``... if the shard already has it. Keys come from file
        names, and ``cats/1.jpg`` and ``dogs/1.jpg`` (or two names of non-Latin letters, which
        become underscores) would otherwise share one: WebDataset would merge them into one
        sample. The real file name travels in the sample's ``.json``. A key repeated in
        another shard is harmless: readers group members by key within a tar only."""
        if key not in self._keys:
            return key
        n = 1
        while f"{key}_{n}" in self._keys:
            n += 1
        return f"{key}_{n}"

    def close(self) -> list[Path]:
        try:  # a full disk may fail the last writes: the temporary file must not stay
            with naming_errors(self.path):
                # tarfile's close: two zero blocks, then zeros up to a multiple of 20 blocks.
                size = self._file.size + len(END_OF_ARCHIVE)
                end = END_OF_ARCHIVE + bytes(-size % tarfile.RECORDSIZE)
                self._file.write([end], len(end))
                self._file.close()
                os.replace(self.tmp, self.path)
        except BaseException:
            self.abort()
            raise
        if self._hashed:
            self.known_digests = {self.path: self._file.hexdigest()}
        self.file_facts = {self.path: {"records": self.nsamples, "fields": sorted(self._fields)}}
        return [self.path]

    def abort(self) -> None:
        with contextlib.suppress(OSError):
            self._file.abort()
        with contextlib.suppress(FileNotFoundError):
            self.tmp.unlink()


FORMAT = WebDatasetFormat()
