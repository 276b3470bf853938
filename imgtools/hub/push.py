"""``imgtools push-hub``: stage, describe, and upload a dataset so that the Hub can serve it.

The order of the work is chosen so that a failure costs as little as possible:

1. everything that can be checked locally (repo id, dataset folders, config names, a token) is
   checked before anything is converted or sent;
2. the repository is created (or found) and its card read, so a config that would clash with
   what is published stops the push before any upload;
3. each config is converted to Parquet (staged, reused when the source is unchanged), measured
   (per-class counts, train mean/std) and previewed (JPEG contact sheet, PNG histogram), and
   the repository tree is assembled from hard links in the staging folder;
4. ``HfApi.upload_folder`` sends the tree without its README: it asks the Hub which files it
   already has (the preupload call), sends only the rest (LFS/Xet deduplicate by content, so
   what arrived before an interruption is not sent again), deletes the stale files of the
   configs pushed (``delete_patterns``) and, with ``hf_xet`` installed, commits in batches;
5. the card is committed last, merged into the README as it is *then*, with that commit as
   parent - so the README only announces data that is already there and a concurrent edit of
   the card is never overwritten silently.

``--local-dir`` stops after writing the exact tree of step 3, README included, to a folder: no
token, no network.

What is kept here beside ``huggingface_hub`` and why: the card merge (:mod:`imgtools.hub.card`),
committing the card last, one retry loop around the commit calls and the mapping of Hub errors
to messages that say what to do (both in :mod:`imgtools.hub.remote`).
"""

from __future__ import annotations

import io
import json
import os
import shutil
from pathlib import Path

from imgtools.atomic import atomic_write_bytes, atomic_write_text
from imgtools.errors import UserError
from imgtools.hub.card import (
    build_card,
    owned_asset_patterns,
    preview_asset_paths,
    split_front_matter,
)
from imgtools.hub.card_sections import CardContext
from imgtools.hub.card_yaml import published_class_names
from imgtools.hub.layout import (
    DEFAULT_MAX_SHARD_BYTES,
    ConfigSource,
    ConfigSummary,
    find_configs,
    link_or_copy,
    repo_files,
    stage_parquet,
    summarize_staged,
)
from imgtools.hub.remote import (
    hub_call,
    hub_endpoint,
    resolve_token,
    validate_repo_id,
    with_retries,
)
from imgtools.inspect.preview import preview
from imgtools.inspect.stats import channel_stats
from imgtools.metadata.croissant import hub_croissant

PREVIEW_MAX_BYTES = 300_000
"""Upper bound of the card's preview image: the contact sheet is a photo collage, so it goes
as JPEG, shrunk until it fits (a 1.7 MB PNG made the card slow to open)."""


# ----------------------------------------------------------------------------------------------
# Preparing configs (shared by --local-dir and real pushes)
# ----------------------------------------------------------------------------------------------


def prepare_config(source: ConfigSource, stage_root: Path, *, n_jobs: int | None, quiet: bool,
                   max_shard_bytes: str | int) -> ConfigSummary:
    """Stage one config as Parquet and measure it: counts, train mean/std, preview images."""
    staged = stage_parquet(source, stage_root, n_jobs=n_jobs, quiet=quiet,
                           max_shard_bytes=max_shard_bytes)
    summary = summarize_staged(source, staged, source.fmt)
    if "train" in summary.splits:
        summary.stats = channel_stats(source.path, split="train", n_jobs=n_jobs, quiet=quiet)
    counts = {s.name: s.class_counts for s in summary.splits.values()
              if s.num_examples > s.unlabelled}
    asset_dir = stage_root / f"{source.name}.assets"
    written = preview(source.path, asset_dir, counts=counts, n_jobs=n_jobs, quiet=quiet)
    targets = preview_asset_paths(source.name)
    preview_jpeg = asset_dir / Path(targets["preview"]).name
    save_small_jpeg(Path(written["preview"]), preview_jpeg, PREVIEW_MAX_BYTES)
    summary.asset_files.append((preview_jpeg, targets["preview"]))
    summary.asset_files.append((Path(written["histogram"]), targets["histogram"]))
    summary.assets = targets
    return summary


def save_small_jpeg(src: Path, dst: Path, max_bytes: int) -> None:
    """``src`` as a JPEG of at most ``max_bytes``: quality 85, then smaller until it fits."""
    from PIL import Image

    with Image.open(src) as im:
        image = im.convert("RGB")
    for _ in range(12):
        buf = io.BytesIO()
        image.save(buf, "JPEG", quality=85, optimize=True, progressive=True)
        if buf.tell() <= max_bytes:
            break
        image = image.resize((max(1, image.width * 4 // 5), max(1, image.height * 4 // 5)),
                             Image.Resampling.LANCZOS)
    atomic_write_bytes(dst, buf.getvalue())


def check_remote_configs(existing_card: str | None, summaries: list[ConfigSummary],
                         where: str) -> None:
    """A repository holds one dataset with one class list. A config name already published
    with other classes is a clash, not an update; other configs with other classes mean the
    repository (or --local-dir) holds another dataset, and merging would give a card that
    mixes the two."""
    meta, _ = split_front_matter(existing_card or "")
    published = published_class_names(meta)
    pushed = {s.name for s in summaries}
    for s in summaries:
        old = published.get(s.name)
        if old is not None and old != list(s.class_names):
            raise UserError(
                f"config name clash: config {s.name!r} is already published with other classes "
                f"({len(old)} classes, first {old[:3]}; this dataset has "
                f"{len(s.class_names)}, first {s.class_names[:3]})",
                fix="publish under another name with --config, or to another repository")
    new = list(summaries[0].class_names)
    for name, old in published.items():
        if name not in pushed and old != new:
            title = meta.get("pretty_name") or "another dataset"
            raise UserError(
                f"{where} already holds another dataset ({title}: config {name!r} has "
                f"{len(old)} classes, first {old[:3]}; this one has {len(new)}, first "
                f"{new[:3]}): publishing here would mix the two on one card",
                fix="publish to another repository (or an empty --local-dir), or remove the "
                    "other dataset's configs first")


def tree_files(summaries: list[ConfigSummary], stage_root: Path) -> dict[str, Path]:
    """Every file the push puts in the repository (path in repo -> staged file), the
    Croissant description of the pushed configs included."""
    files: dict[str, Path] = {}
    for s in summaries:
        files.update(repo_files(s))
    files["croissant.json"] = write_hub_croissant(stage_root, summaries)
    return files


def write_hub_croissant(stage_root: Path, summaries: list[ConfigSummary]) -> Path:
    """``croissant.json`` (MLCommons Croissant) for the configs pushed now, staged: the
    repository's Parquet shards per config and split, and the class table, so mlcroissant
    reads the published records with their labels."""
    configs = {s.name: {split.name: [name for _path, name in split.files]
                        for split in s.splits.values()} for s in summaries}
    path = stage_root / "croissant.json"
    atomic_write_text(path, json.dumps(hub_croissant(summaries[0].info, configs), indent=2)
                      + "\n")
    return path


def owned_patterns(summaries: list[ConfigSummary]) -> list[str]:
    """Files of the pushed configs that a new push replaces: its shards, noisy-label CSVs and
    assets. Old shards (``train-00003-of-00004`` after a rebuild into 3 shards) would
    otherwise still match the config's ``train-*`` pattern and be loaded as data."""
    patterns = []
    for s in summaries:
        patterns += [f"{s.name}/*.parquet", f"{s.name}/*.csv", *owned_asset_patterns(s.name)]
    return patterns


def write_tree(root: Path, files: dict[str, Path], summaries: list[ConfigSummary],
               card: str | None) -> list[str]:
    """Write the repository tree to ``root`` (hard links to the staged files); returns the
    stale files of the pushed configs it removed."""
    from fnmatch import fnmatch

    patterns = owned_patterns(summaries)
    removed = []
    if root.is_dir():
        for p in sorted(root.rglob("*")):
            rel = p.relative_to(root).as_posix()
            if p.is_file() and rel not in files and any(fnmatch(rel, pat) for pat in patterns):
                p.unlink()
                removed.append(rel)
    for rel, src in sorted(files.items()):
        link_or_copy(src, root / rel)
    if card is not None:
        atomic_write_text(root / "README.md", card)
    return removed


# ----------------------------------------------------------------------------------------------
# The remote repository
# ----------------------------------------------------------------------------------------------


def read_card(api, repo_id: str, revision: str) -> str | None:
    """The README.md at ``revision``, or None when there is none."""
    from huggingface_hub.errors import EntryNotFoundError

    try:
        path = api.hf_hub_download(repo_id, "README.md", repo_type="dataset", revision=revision)
    except EntryNotFoundError:
        return None
    return Path(path).read_text(encoding="utf-8")


def remote_blobs(api, repo_id: str, revision: str) -> dict[str, str]:
    """Path -> git blob id of every file at ``revision``: compared before and after the push
    to report what was sent, what was already there and what was deleted."""
    from huggingface_hub.hf_api import RepoFile

    return {e.path: e.blob_id for e in api.list_repo_tree(
        repo_id, repo_type="dataset", revision=revision, recursive=True)
        if isinstance(e, RepoFile)}


def count_commits(api, repo_id: str, revision: str, since: str) -> int:
    """Commits on ``revision`` after ``since`` (the head before the push)."""
    n = 0
    for commit in api.list_repo_commits(repo_id, repo_type="dataset", revision=revision):
        if commit.commit_id == since:
            break
        n += 1
    return n


def upload(api, repo_id: str, revision: str, tree: Path, summaries: list[ConfigSummary],
           ctx: CardContext, message: str, endpoint: str) -> tuple[str, str]:
    """Data, then the card; returns the head before and after."""
    from huggingface_hub import CommitOperationAdd

    with hub_call("reading the repository", repo_id, endpoint):
        before = api.repo_info(repo_id, repo_type="dataset", revision=revision).sha
    data = with_retries(lambda: api.upload_folder(
        repo_id=repo_id, repo_type="dataset", folder_path=tree, revision=revision,
        commit_message=message, ignore_patterns=["README.md"],
        delete_patterns=owned_patterns(summaries)), "uploading the data", repo_id, endpoint)
    head = data.oid
    with hub_call("reading the dataset card", repo_id, endpoint):
        existing = read_card(api, repo_id, head)
    check_remote_configs(existing, summaries, repo_id)
    card = build_card(existing, summaries, ctx)
    final = with_retries(lambda: api.create_commit(
        repo_id, [CommitOperationAdd("README.md", card.encode("utf-8"))],
        commit_message=f"{message}: dataset card", repo_type="dataset", revision=revision,
        parent_commit=head), "committing the dataset card", repo_id, endpoint)
    return before, final.oid


# ----------------------------------------------------------------------------------------------
# The entry point
# ----------------------------------------------------------------------------------------------


def default_staging_dir(repo_id: str) -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "imgtools" / "push-hub" / repo_id.replace("/", "--")


def push_hub(src: str | Path, repo_id: str, *, config: str | None = None,
             local_dir: str | Path | None = None, private: bool = False,
             revision: str | None = None, commit_message: str | None = None,
             n_jobs: int | None = None, quiet: bool = False,
             max_shard_bytes: str | int = DEFAULT_MAX_SHARD_BYTES,
             staging_dir: str | Path | None = None,
             prefer_formats: tuple[str, ...] | list[str] = (),
             gated: str | None = None) -> dict:
    """Publish the dataset(s) at ``src`` to ``repo_id`` (or write them to ``local_dir``)."""
    validate_repo_id(repo_id)
    sources = find_configs(Path(src), config, prefer_formats)
    revision = revision or "main"
    endpoint = hub_endpoint()
    ctx = CardContext(repo_id, revision, endpoint)
    if local_dir is not None:
        if gated:
            raise UserError("--gated changes the repository on the Hub, and --local-dir "
                            "publishes nothing", fix="drop --gated, or --local-dir")
        return _to_local_dir(sources, Path(local_dir), ctx, n_jobs, quiet, max_shard_bytes,
                             staging_dir)
    token = resolve_token()
    from huggingface_hub import HfApi
    from huggingface_hub.utils import disable_progress_bars, enable_progress_bars

    if quiet:
        disable_progress_bars()
    else:
        enable_progress_bars()

    api = HfApi(endpoint=endpoint, token=token)
    with hub_call("checking the token", repo_id, endpoint):
        api.whoami()
    with hub_call("creating the repository", repo_id, endpoint):
        api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
        if revision != "main":
            api.create_branch(repo_id, repo_type="dataset", branch=revision, exist_ok=True)
    with hub_call("reading the dataset card", repo_id, endpoint):
        existing = read_card(api, repo_id, revision)
    stage_root = Path(staging_dir) if staging_dir else default_staging_dir(repo_id)
    summaries = [prepare_config(s, stage_root, n_jobs=n_jobs, quiet=quiet,
                                max_shard_bytes=max_shard_bytes) for s in sources]
    check_remote_configs(existing, summaries, repo_id)
    files = tree_files(summaries, stage_root)
    tree = stage_root / "_tree"  # not a config name: those start with a letter or digit
    shutil.rmtree(tree, ignore_errors=True)
    write_tree(tree, files, summaries, card=None)
    message = commit_message or f"Upload {', '.join(s.name for s in summaries)} with imgtools"
    with hub_call("listing the repository", repo_id, endpoint):
        old = remote_blobs(api, repo_id, revision)
    before, after = upload(api, repo_id, revision, tree, summaries, ctx, message, endpoint)
    with hub_call("listing the repository", repo_id, endpoint):
        new = remote_blobs(api, repo_id, revision)
        commits = count_commits(api, repo_id, revision, before) if after != before else 0
    if gated:
        with hub_call("turning on access requests", repo_id, endpoint):
            api.update_repo_settings(repo_id, repo_type="dataset", gated=gated)
    shutil.rmtree(stage_root, ignore_errors=True)  # done: the staging is only for resuming
    published = [*files, "README.md"]
    return {"repo_id": repo_id, "revision": revision, "endpoint": endpoint,
            "url": f"{endpoint}/datasets/{repo_id}", "configs": [s.name for s in summaries],
            "sources": {s.name: str(s.source) for s in summaries},
            "uploaded": sorted(p for p in published if old.get(p) != new.get(p)),
            "skipped": sorted(p for p in published if p in old and old[p] == new.get(p)),
            "deleted": sorted(set(old) - set(new)), "commits": commits, "commit": after,
            "gated": gated or None}


def _to_local_dir(sources: list[ConfigSource], local_dir: Path, ctx: CardContext,
                  n_jobs: int | None, quiet: bool, max_shard_bytes: str | int,
                  staging_dir: str | Path | None) -> dict:
    if local_dir.exists() and not local_dir.is_dir():
        raise UserError("--local-dir exists and is not a folder", path=local_dir,
                        fix="choose a folder path")
    for s in sources:
        if local_dir.resolve() == s.path.resolve() or s.path.resolve() in local_dir.resolve(
                ).parents:
            raise UserError("--local-dir is inside the dataset being published", path=local_dir,
                            fix="choose a folder outside the dataset")
    readme = local_dir / "README.md"
    existing = readme.read_text(encoding="utf-8") if readme.is_file() else None
    # Not a TemporaryDirectory: a killed run (kill -9) would leave a copy of the dataset in
    # the temp folder every time. A fixed place per repository is resumed by the next run
    # and removed when one finishes, as for an upload.
    stage_root = Path(staging_dir) if staging_dir else default_staging_dir(
        ctx.repo_id).with_name(ctx.repo_id.replace("/", "--") + "--local-dir")
    summaries = [prepare_config(s, stage_root, n_jobs=n_jobs, quiet=quiet,
                                max_shard_bytes=max_shard_bytes) for s in sources]
    check_remote_configs(existing, summaries, str(local_dir))
    card = build_card(existing, summaries, ctx)
    files = tree_files(summaries, stage_root)
    local_dir.mkdir(parents=True, exist_ok=True)
    removed = write_tree(local_dir, files, summaries, card)
    if not staging_dir:
        shutil.rmtree(stage_root, ignore_errors=True)  # done: the staging is only for resuming
    return {"repo_id": ctx.repo_id, "local_dir": str(local_dir),
            "configs": [s.name for s in summaries],
            "sources": {s.name: str(s.source) for s in summaries},
            "files": sorted([*files, "README.md"]), "deleted": removed}
