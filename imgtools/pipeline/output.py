"""The one output protocol: how build, convert and downsampled builds claim, stage, resume,
replace and publish what they write.

While a run writes the outputs ``out/A`` (and ``out/B``, for a build of two sizes):

    out/.A.imgtools-lock            a kernel lock (flock) per output, held while the run writes
    out/.imgtools-run-A+B/          the run folder (hidden, so no reader takes it for data)
        run.json                    the fingerprint: every setting and a digest of the inputs
        inputs.jsonl                the identity of every input file: [locator, size, mtime_ns]
        markers/                    one done-marker per finished shard task
        work/                       scratch: parts of record formats and pickles, second-pass state
        A/  B/                      the outputs being written, under their final names

When the run is complete, each output gets ``.imgtools-output.json`` (the manifest: the
fingerprint, and per folder the names of the files imgtools wrote) and
``.imgtools-inputs.jsonl.gz``; everything is synced, and each output moves into place with one
rename. So an output folder exists only complete, and a later run never changes it:

* ``--resume`` continues an interrupted run only when every setting and every input file is
  the same (one error naming the setting or the file that differs); on a finished output with
  the same fingerprint it does nothing and says so;
* ``--overwrite`` replaces only a folder whose files are all listed in its manifest (a file
  anyone can create, such as an empty ``imgtools-dataset.json``, does not make a folder ours),
  and the old output stays readable until the new one is complete;
* without either, an existing output or an interrupted run is an error that says which to use.

Why not TFDS's or img2dataset's way: TFDS writes into a temporary folder too but cannot resume
a killed preparation; img2dataset resumes by skipping shards whose files exist, so a changed
input or changed settings silently mix into the old output.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import os
import shutil
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from imgtools import __version__
from imgtools.atomic import (
    atomic_write_text,
    remove_stale_tmp,
    sync_files,
    sync_folder,
    tmp_name,
    walk_folders,
)
from imgtools.errors import UserError
from imgtools.locks import exclusive
from imgtools.pipeline.identity import (
    InputEntry,
    InputsFile,
    first_input_change,
    write_inputs,
)

RUN_PREFIX = ".imgtools-run-"
MANIFEST = ".imgtools-output.json"
INPUTS_COPY = ".imgtools-inputs.jsonl.gz"
TRASH_PREFIX = ".imgtools-trash-"
PUBLISHING = "publishing"
NAMED_FILES_PER_FOLDER = 256
"""Folders with at most this many files list their names in the manifest, so that an extra
file is named in ``--overwrite``'s refusal; larger ones (a class folder of images) keep a
count and a digest, which keeps the manifest small for a million-file output."""

# ----------------------------------------------------------------------------------------------
# Fingerprints
# ----------------------------------------------------------------------------------------------


def normalised(settings: dict[str, Any]) -> dict[str, Any]:
    """Settings as they read back from JSON (tuples become lists), so a fingerprint made now
    compares equal to one saved by an earlier run."""
    return json.loads(json.dumps(settings, sort_keys=True, default=str))


def differences(before: dict, now: dict, inputs_then: Iterable[str] | None,
                inputs_now: Path) -> list[str]:
    """Each setting that differs, by name, and the first input file that differs."""
    found = [f"{key}: {before.get(key)!r} then, {now.get(key)!r} now"
             for key in sorted(set(before) | set(now) - {"inputs"})
             if before.get(key) != now.get(key)]
    if before.get("inputs") != now.get("inputs"):
        found.append(first_input_change(inputs_then, inputs_now))
    return found


# ----------------------------------------------------------------------------------------------
# Manifests: what makes a folder an imgtools output
# ----------------------------------------------------------------------------------------------


def _names_digest(names: list[str]) -> str:
    """A folder's digest in the manifest: of its file names alone, no sizes. What
    :func:`foreign_files` decides from a folder is which names are new (a listed folder) or
    whether there are more files (a counted one), and a size would change neither; it would
    cost a stat of every output file when a run publishes (3-4.6 us each on the development
    VM: ``scripts/bench_overhead.py``'s marker check, the same stat). Outputs written before
    this digested sizes too: their digests differ, and the same checks of names and counts
    then decide."""
    text = "\n".join(names) + "\n" if names else ""  # a line a name
    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()


def _walk_listed(root: Path) -> Iterator[tuple[str, list[str], list[str]]]:
    """``(folder relative to root, its file names, its sub-folders)``, both sorted, for every
    folder under ``root`` in ``os.walk``'s order (:func:`~imgtools.atomic.walk_folders`). The
    caller may prune the sub-folders in place."""
    for _path, rel, names, dirs in walk_folders(root):
        dirs.sort()
        yield rel, sorted(names), dirs


def _own_files(rel: str, names: list[str]) -> list[str]:
    """A folder's files as the manifest lists them: the manifest itself left out."""
    return [n for n in names if n != MANIFEST] if rel == "." else names


def folder_digests(root: Path) -> dict[str, dict]:
    """The manifest's record of every folder under ``root`` (see :data:`MANIFEST`)."""
    out = {}
    for rel, names, _dirs in _walk_listed(root):
        names = _own_files(rel, names)
        entry: dict[str, Any] = {"files": len(names), "sha256": _names_digest(names)}
        if len(names) <= NAMED_FILES_PER_FOLDER:
            entry["names"] = names
        out[rel] = entry
    return out


def read_manifest(root: Path) -> dict | None:
    """The manifest of an imgtools output, or None when there is none or it is unreadable."""
    try:
        manifest = json.loads((root / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    if (not isinstance(manifest, dict) or manifest.get("tool") != "imgtools"
            or not isinstance(manifest.get("fingerprint"), dict)
            or not isinstance(manifest.get("folders"), dict)):
        return None
    return manifest


def foreign_files(root: Path) -> list[str]:
    """What in ``root`` imgtools did not write (empty when every file is in the manifest).
    Files imgtools wrote that are now missing are not foreign: deleting the rest is safe."""
    manifest = read_manifest(root)
    if manifest is None:
        return [f"it has no readable {MANIFEST}, so imgtools did not write it (or an "
                "imgtools older than 0.2 did)"]
    expected = manifest["folders"]
    found = []
    for rel, names, dirs in _walk_listed(root):
        entry = expected.get(rel)
        if not isinstance(entry, dict):
            found.append(f"{rel}/ (a folder imgtools did not write)")
            dirs[:] = []
            continue
        names = _own_files(rel, names)
        if _names_digest(names) == entry.get("sha256"):
            continue
        if isinstance(entry.get("names"), list):
            extra = sorted(set(names) - set(entry["names"]))
            found += [os.path.normpath(os.path.join(rel, n)) for n in extra]
        elif len(names) > int(entry.get("files", 0)):
            found.append(f"{rel}/ ({len(names)} files where imgtools wrote {entry['files']})")
    return found


# ----------------------------------------------------------------------------------------------
# A run
# ----------------------------------------------------------------------------------------------


@dataclass
class OutputRun:
    """A claimed set of outputs. Writers write into :meth:`staging`; :meth:`publish` moves
    the finished outputs into place. ``complete`` means there is nothing to do: the outputs
    already exist with this run's fingerprint."""

    roots: list[Path]
    folder: Path
    fingerprint: dict
    complete: bool = False
    resumed: bool = False
    replace: list[Path] = field(default_factory=list)

    def staging(self, root: Path) -> Path:
        return self.folder / root.name

    @property
    def stagings(self) -> list[Path]:
        return [self.staging(r) for r in self.roots]

    @property
    def markers(self) -> Path:
        """Shard done-markers (see :mod:`imgtools.runner`)."""
        return self.folder / "markers"

    @property
    def work(self) -> Path:
        """Scratch space that is not part of any output."""
        return self.folder / "work"

    def publish(self) -> None:
        """Write each output's manifest, make everything durable, and move each output into
        place with one rename (replacing the old one for ``--overwrite``). A kill at any point
        leaves the run resumable: after the ``publishing`` flag, ``--resume`` only finishes the
        renames."""
        flag = self.folder / PUBLISHING
        if not flag.exists():
            for root in self.roots:
                self._write_manifest(self.staging(root))
            sync_files([self.staging(r) / MANIFEST for r in self.roots])
            atomic_write_text(flag, "")
            sync_folder(self.folder)
        for root in self.roots:
            staging = self.staging(root)
            if not staging.exists():
                continue  # moved into place before a kill
            _move_into_place(staging, root, replace=root in self.replace)
        sync_folder(self.folder.parent)
        shutil.rmtree(self.folder, ignore_errors=True)

    def _write_manifest(self, staging: Path) -> None:
        # Level 1: the copy is read only when a --resume of a finished output differs, to
        # name the input file that changed; level 6 would cost every run more CPU than that.
        with open(self.folder / "inputs.jsonl", "rb") as src, \
                gzip.GzipFile(staging / INPUTS_COPY, "wb", compresslevel=1, mtime=0) as dst:
            shutil.copyfileobj(src, dst)
        manifest = {"tool": "imgtools", "tool_version": __version__,
                    "fingerprint": self.fingerprint, "folders": folder_digests(staging)}
        atomic_write_text(staging / MANIFEST, json.dumps(manifest, indent=1) + "\n")


def _move_into_place(staging: Path, root: Path, *, replace: bool) -> None:
    if root.is_dir() and not any(root.iterdir()):
        root.rmdir()  # an empty folder the user made for the output
    trash = None
    if root.exists() and replace:
        trash = root.parent / f"{TRASH_PREFIX}{root.name}"
        shutil.rmtree(trash, ignore_errors=True)
        os.replace(root, trash)
    os.rename(staging, root)
    if trash is not None:
        shutil.rmtree(trash, ignore_errors=True)


def run_folder(roots: list[Path]) -> Path:
    return roots[0].parent / (RUN_PREFIX + "+".join(r.name for r in roots))


def pending_runs(folder: Path) -> list[Path]:
    """The unfinished runs whose outputs go into ``folder``."""
    with contextlib.suppress(OSError):
        return [entry for entry in sorted(Path(folder).iterdir())
                if entry.name.startswith(RUN_PREFIX) and (entry / "run.json").is_file()]
    return []


def pending_run_for(path: Path) -> Path | None:
    """The folder of an unfinished run that writes the output ``path``, if any."""
    for run in pending_runs(Path(path).parent):
        if Path(path).name in run.name.removeprefix(RUN_PREFIX).split("+"):
            return run
    return None


def check_output_paths(roots: list[Path]) -> None:
    """Output folders and their parent must be folders (or not exist yet)."""
    for path in (roots[0].parent, *roots):
        if path.exists() and not path.is_dir():
            raise UserError("not a folder, so output cannot go there", path=path,
                            fix="choose another output path, or move that file away")
    if len({r.parent for r in roots}) != 1:
        raise ValueError("all outputs of one run must share a parent folder")


@contextlib.contextmanager
def claim_outputs(roots: list[Path], settings: dict[str, Any],
                  inputs: Iterable[InputEntry] | InputsFile, *, resume: bool,
                  overwrite: bool) -> Iterator[OutputRun]:
    """Lock ``roots`` and open the run that writes them (see the module docstring).
    ``settings`` is everything that decides the output's bytes; ``inputs`` the identity of
    every input file, in a stable order (or already written, in the outputs' parent folder:
    it is moved into the run folder, or removed)."""
    roots = [Path(r) for r in roots]
    check_output_paths(roots)
    roots[0].parent.mkdir(parents=True, exist_ok=True)
    with exclusive(roots):
        tmp_inputs = (inputs.path if isinstance(inputs, InputsFile)
                      else roots[0].parent / tmp_name("inputs.jsonl"))
        try:
            if isinstance(inputs, InputsFile):
                count, digest = inputs.count, inputs.sha256
            else:
                count, digest = write_inputs(tmp_inputs, inputs)
            fingerprint = normalised({**settings, "inputs": {"files": count, "sha256": digest}})
            yield _open_run(roots, fingerprint, tmp_inputs, resume=resume, overwrite=overwrite)
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp_inputs.unlink()


def _open_run(roots: list[Path], fingerprint: dict, inputs: Path, *, resume: bool,
              overwrite: bool) -> OutputRun:
    folder = run_folder(roots)
    run = OutputRun(roots, folder, fingerprint)
    _check_other_runs(roots, folder, overwrite)
    if folder.exists() and overwrite:
        shutil.rmtree(folder)
    if folder.exists():
        return _continue_run(run, inputs, resume)
    existing = [r for r in roots if r.is_dir() and any(r.iterdir())]
    if existing and resume:
        return _check_finished(run, existing, inputs)
    if existing and not overwrite:
        raise UserError("the output already exists and is not empty: "
                        + ", ".join(map(str, existing)),
                        path=existing[0],
                        fix="add --overwrite to replace it, --resume to keep it if it was made "
                            "with the same settings and input, or choose another output")
    _refuse_foreign(existing)
    run.replace = existing
    _start(run, inputs)
    return run


def _refuse_foreign(roots: list[Path]) -> None:
    for root in roots:
        foreign = foreign_files(root)
        if foreign:
            shown = "; ".join(foreign[:5]) + (f"; and {len(foreign) - 5} more"
                                              if len(foreign) > 5 else "")
            raise UserError(f"--overwrite deletes only what imgtools wrote, and this folder "
                            f"holds more: {shown}", path=root,
                            fix="move those files away, or delete the folder yourself")


def _start(run: OutputRun, inputs: Path) -> None:
    run.folder.mkdir()
    for staging in run.stagings:
        staging.mkdir()
    run.markers.mkdir()
    os.replace(inputs, run.folder / "inputs.jsonl")
    atomic_write_text(run.folder / "run.json",
                      json.dumps({"fingerprint": run.fingerprint,
                                  "outputs": [r.name for r in run.roots],
                                  "replace": [r.name for r in run.replace]}, indent=1) + "\n")


def _continue_run(run: OutputRun, inputs: Path, resume: bool) -> OutputRun:
    if not resume:
        raise UserError("an interrupted imgtools run left this output unfinished",
                        path=run.roots[0],
                        fix="add --resume to finish it (same command), or --overwrite to "
                            "start over")
    try:
        state = json.loads((run.folder / "run.json").read_text())
        before, replace = state["fingerprint"], set(state.get("replace", []))
    except (OSError, ValueError, KeyError, TypeError):
        raise UserError("the interrupted run's state is unreadable", path=run.folder,
                        fix="start over with --overwrite") from None
    with _open_lines(run.folder / "inputs.jsonl") as then:
        changed = differences(before, run.fingerprint, then, inputs)
    if changed:
        raise UserError("--resume with different settings or input than the interrupted run: "
                        + "; ".join(changed), path=run.roots[0],
                        fix="rerun the interrupted run's command with --resume, or start over "
                            "with --overwrite")
    run.resumed = True
    # An interrupted --overwrite still replaces the old outputs, if they are still only ours.
    run.replace = [r for r in run.roots if r.name in replace and r.exists()]
    _refuse_foreign(run.replace)
    if (run.folder / PUBLISHING).exists():  # killed while moving outputs into place
        run.publish()
        run.complete = True
        return run
    for staging in run.stagings:
        staging.mkdir(exist_ok=True)
        remove_stale_tmp(staging)
    run.markers.mkdir(exist_ok=True)
    if run.work.exists():
        remove_stale_tmp(run.work)
    return run


def _check_finished(run: OutputRun, existing: list[Path], inputs: Path) -> OutputRun:
    """``--resume`` where the outputs exist and no run is pending."""
    for root in run.roots:
        manifest = read_manifest(root) if root in existing else None
        if manifest is None:
            raise UserError("--resume: there is no interrupted run to continue, and this is "
                            "not a complete imgtools output", path=root,
                            fix="use --overwrite to write it again (it deletes only what "
                                "imgtools wrote), or choose another output")
        with _open_lines(root / INPUTS_COPY) as then:
            changed = differences(manifest["fingerprint"], run.fingerprint, then, inputs)
        if changed:
            raise UserError("--resume: this output is complete but was made with other "
                            "settings or input: " + "; ".join(changed), path=root,
                            fix="add --overwrite instead to make it again with these, or "
                                "choose another output")
    run.complete = True
    return run


def _check_other_runs(roots: list[Path], folder: Path, overwrite: bool) -> None:
    """An interrupted run for another set of outputs that includes one of ours (a build of
    160+320 px resumed as 160 only) would be stranded: name it."""
    for root in roots:
        other = pending_run_for(root)
        if other is None or other == folder:
            continue
        if overwrite:
            shutil.rmtree(other)
            continue
        outputs = other.name.removeprefix(RUN_PREFIX).replace("+", ", ")
        raise UserError(f"an interrupted imgtools run writes {root.name} together with other "
                        f"outputs ({outputs})", path=other,
                        fix="resume it with the same sizes and --resume, or start over with "
                            "--overwrite")


@contextlib.contextmanager
def _open_lines(path: Path) -> Iterator[Iterable[str] | None]:
    """The lines of a plain or gzipped input list, or None when it cannot be read."""
    if not path.is_file():
        yield None
        return
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        yield f


def is_run_folder(path: Path) -> bool:
    """A run folder, or anything inside one: an unfinished output, never a dataset."""
    return any(p.name.startswith(RUN_PREFIX) for p in (Path(path), *Path(path).parents))
