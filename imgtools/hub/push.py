"""``imgtools push-hub``: stage, describe, and upload a dataset so that the Hub can serve it.

The order of the work is chosen so that a failure costs as little as possible:

1. everything that can be checked locally (repo id, dataset folders, config names, a token) is
   checked before anything is converted or sent;
2. the repository is created (or found), and what it already holds is listed with the sha256 of
   every LFS file - so a re-run after an interruption uploads only what is missing;
3. each config is converted to Parquet (staged, reused when the source is unchanged), measured
   (per-class counts, train mean/std) and previewed (contact sheet and histogram PNGs);
4. data files go up in several commits (one per config and split, at most
   ``MAX_FILES_PER_COMMIT`` files each), the card, images and the deletion of stale shards in a
   last commit, so the README only announces data that is already there.

``--local-dir`` stops after writing the exact tree of step 4 to a folder: no token, no network.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import os
import re
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

from imgtools.atomic import atomic_write_text
from imgtools.checksums import sha256_file
from imgtools.errors import RemoteError, UserError
from imgtools.formats import detect_format
from imgtools.hub.card import CardContext, build_card, preview_asset_paths, split_front_matter
from imgtools.hub.layout import (
    ASSETS_DIR,
    DEFAULT_MAX_SHARD_BYTES,
    ConfigSource,
    ConfigSummary,
    find_configs,
    link_or_copy,
    repo_files,
    stage_parquet,
    summarize_staged,
)
from imgtools.inspect import channel_stats, preview

MAX_FILES_PER_COMMIT = 50
COMMIT_RETRIES = 3
_REPO_ID = re.compile(r"[A-Za-z0-9][\w.\-]{0,95}/[A-Za-z0-9][\w.\-]{0,95}")


@dataclass
class RemoteState:
    """What the repository already holds at the target revision: path -> oid to compare with
    (sha256 for LFS files, git blob sha1 for regular ones), and its README."""

    files: dict[str, tuple[str, str]] = field(default_factory=dict)  # path -> (kind, oid)
    readme: str | None = None


# ----------------------------------------------------------------------------------------------
# Local checks
# ----------------------------------------------------------------------------------------------


def validate_repo_id(repo_id: str) -> str:
    """``owner/name`` as the Hub accepts it; checked before any work."""
    if (not _REPO_ID.fullmatch(repo_id) or "--" in repo_id or ".." in repo_id
            or repo_id.endswith((".", "-", ".git"))):
        raise UserError(f"invalid repository id {repo_id!r}",
                        fix="write it as owner/name (your user or organization, a slash, a name "
                            "of letters, digits, '-', '_' or '.'), e.g. alice/imagenette")
    return repo_id


def resolve_token() -> str:
    """``HF_TOKEN`` or the token saved by ``hf auth login``; a clear error when neither."""
    from huggingface_hub import get_token

    token = get_token()
    if not token:
        raise UserError("no Hugging Face token found",
                        fix="create a token with write access at "
                            "https://huggingface.co/settings/tokens, then export HF_TOKEN=... "
                            "or run `hf auth login`; or use --local-dir to write the repository "
                            "to a folder without publishing")
    return token


def hub_endpoint() -> str:
    from huggingface_hub import constants

    return (os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")


# ----------------------------------------------------------------------------------------------
# Hub errors -> messages a user can act on
# ----------------------------------------------------------------------------------------------


def _in_chain(exc: BaseException | None, kinds) -> BaseException | None:
    """The first exception of type ``kinds`` in ``exc``'s cause/context chain, or None."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, kinds):
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


def _http_error(exc: BaseException):
    from huggingface_hub.errors import HfHubHTTPError

    return _in_chain(exc, HfHubHTTPError)


def _transport_errors() -> tuple[type[BaseException], ...]:
    """The HTTP client's "could not reach the server" errors: huggingface_hub 2.x uses httpx2,
    1.x httpx, older releases requests; whichever is installed."""
    kinds: list[type[BaseException]] = [ConnectionError, TimeoutError]
    for module, attr in (("httpx2", "TransportError"), ("httpx", "TransportError"),
                         ("requests", "ConnectionError")):
        try:
            kinds.append(getattr(importlib.import_module(module), attr))
        except (ImportError, AttributeError):
            continue
    return tuple(kinds)


def _network_error(exc: BaseException) -> bool:
    return _in_chain(exc, _transport_errors()) is not None


RERUN = "run the same command again: files already on the Hub are skipped, nothing is sent twice"


@contextlib.contextmanager
def hub_call(action: str, repo_id: str, endpoint: str) -> Iterator[None]:
    """Turn huggingface_hub failures into a :class:`RemoteError` that says what to do."""
    from huggingface_hub.errors import RepositoryNotFoundError, RevisionNotFoundError

    try:
        yield
    except UserError:
        raise
    except RevisionNotFoundError as e:
        raise RemoteError(f"{action}: branch not found in {repo_id}",
                          fix="check --revision (imgtools creates a missing branch from main "
                              "only when it can create branches in this repository)") from e
    except RepositoryNotFoundError as e:
        raise RemoteError(f"{action}: repository {repo_id} not found or not accessible (404)",
                          fix="check the repository id and that your token can write to "
                              "its owner") from e
    except Exception as e:  # noqa: BLE001 - every other failure is mapped or re-raised below
        http = _http_error(e)
        if http is not None and http.response is not None:
            raise _status_error(action, repo_id, http.response.status_code, str(http)) from e
        if _network_error(e):
            raise RemoteError(f"{action}: could not reach {endpoint} ({e})",
                              fix=f"check your connection (and HF_ENDPOINT), then {RERUN}") from e
        if isinstance(e, ValueError) and "metadata" in str(e):
            raise RemoteError(f"{action}: the Hub rejected the README.md metadata: {e}",
                              fix="report this as a bug in imgtools") from e
        raise


def _status_error(action: str, repo_id: str, status: int, detail: str) -> RemoteError:
    first = detail.strip().splitlines()[0] if detail.strip() else ""
    if status == 401:
        return RemoteError(f"{action}: the Hub refused the token (401 Unauthorized)",
                           fix="your token is invalid or expired: create a new one with write "
                               "access and set HF_TOKEN (or `hf auth login`)")
    if status == 403:
        return RemoteError(f"{action}: no write access to {repo_id} (403 Forbidden)",
                           fix="use a token with write access to this user or organization")
    if status == 404:
        return RemoteError(f"{action}: {repo_id} not found (404)",
                           fix="check the repository id and --revision")
    if status == 409:
        return RemoteError(f"{action}: conflict on {repo_id} (409): {first}",
                           fix=f"someone else changed the repository meanwhile; {RERUN}")
    if status == 429 or status >= 500:
        return RemoteError(f"{action}: the Hub failed ({status}) even after retries: {first}",
                           fix=f"wait a moment, then {RERUN}")
    return RemoteError(f"{action}: the Hub answered {status}: {first}",
                       fix="check the repository id, your token and --revision")


# ----------------------------------------------------------------------------------------------
# Preparing configs (shared by --local-dir and real pushes)
# ----------------------------------------------------------------------------------------------


def prepare_config(source: ConfigSource, stage_root: Path, *, n_jobs: int | None, quiet: bool,
                   max_shard_bytes: str | int) -> ConfigSummary:
    """Stage one config as Parquet and measure it: counts, train mean/std, preview images."""

    source_format = detect_format(source.path).name
    staged = stage_parquet(source, stage_root, n_jobs=n_jobs, quiet=quiet,
                           max_shard_bytes=max_shard_bytes)
    summary = summarize_staged(source, staged, source_format)
    if "train" in summary.splits:
        summary.stats = channel_stats(source.path, split="train", n_jobs=n_jobs, quiet=quiet)
    counts = {s.name: s.class_counts for s in summary.splits.values()
              if s.num_examples > s.unlabelled}
    asset_dir = stage_root / f"{source.name}.assets"
    written = preview(source.path, asset_dir, counts=counts, n_jobs=n_jobs, quiet=quiet)
    targets = preview_asset_paths(source.name)
    for kind, repo_path in targets.items():
        summary.asset_files.append((Path(written[kind]), repo_path))
    summary.assets = targets
    return summary


def check_remote_configs(existing_card: str | None, summaries: list[ConfigSummary]) -> None:
    """A config name already published with other classes is a clash, not an update."""
    meta, _ = split_front_matter(existing_card or "")
    infos = meta.get("dataset_info") or []
    infos = [infos] if isinstance(infos, dict) else infos
    published = {}
    for info in infos:
        for feat in info.get("features") or []:
            names = (feat.get("dtype") or {}).get("class_label", {}).get("names") \
                if isinstance(feat.get("dtype"), dict) else None
            if feat.get("name") == "label" and names is not None:
                published[info.get("config_name", "default")] = [
                    names[k] for k in sorted(names, key=int)]
    for s in summaries:
        old = published.get(s.name)
        if old is not None and old != list(s.class_names):
            raise UserError(
                f"config name clash: config {s.name!r} is already published with other classes "
                f"({len(old)} classes, first {old[:3]}; this dataset has "
                f"{len(s.class_names)}, first {s.class_names[:3]})",
                fix="publish under another name with --config, or to another repository")


def tree_files(summaries: list[ConfigSummary]) -> dict[str, Path]:
    files: dict[str, Path] = {}
    for s in summaries:
        files.update(repo_files(s))
    return files


def stale_paths(existing: list[str], summaries: list[ConfigSummary],
                new_files: dict[str, Path]) -> list[str]:
    """Files of the pushed configs that the new push does not contain: old shards
    (``train-00003-of-00004`` after a rebuild with 3 shards) would otherwise still match the
    config's ``train-*`` pattern and be loaded as data."""
    stale = []
    for s in summaries:
        owned = (f"{s.name}/", f"{ASSETS_DIR}/preview-{s.name}.png",
                 f"{ASSETS_DIR}/histogram-{s.name}.png")
        for path in existing:
            if path.startswith(owned) and path not in new_files and path.endswith(
                    (".parquet", ".png", ".csv")):
                stale.append(path)
    return sorted(stale)


# ----------------------------------------------------------------------------------------------
# --local-dir
# ----------------------------------------------------------------------------------------------


def write_local_tree(local_dir: Path, files: dict[str, Path], card: str,
                     summaries: list[ConfigSummary]) -> list[str]:
    """Write the repository tree to ``local_dir``; returns the stale files it removed."""

    existing = [p.relative_to(local_dir).as_posix() for p in local_dir.rglob("*") if p.is_file()]
    removed = stale_paths(existing, summaries, files)
    for rel in removed:
        (local_dir / rel).unlink()
    for rel, src in sorted(files.items()):
        link_or_copy(src, local_dir / rel)
    atomic_write_text(local_dir / "README.md", card)
    return removed


# ----------------------------------------------------------------------------------------------
# Remote state and uploads
# ----------------------------------------------------------------------------------------------


def remote_state(api, repo_id: str, revision: str) -> RemoteState:
    from huggingface_hub.utils import build_hf_headers, get_session, hf_raise_for_status

    state = RemoteState()
    for entry in api.list_repo_tree(repo_id, repo_type="dataset", revision=revision,
                                    recursive=True):
        if getattr(entry, "blob_id", None) is None or not hasattr(entry, "size"):
            continue  # a folder
        if entry.lfs is not None:
            state.files[entry.path] = ("sha256", entry.lfs.sha256)
        else:
            state.files[entry.path] = ("git", entry.blob_id)
    if "README.md" in state.files:
        # the resolve URL built from api.endpoint (hf_hub_url's template is fixed at import)
        url = f"{api.endpoint}/datasets/{repo_id}/resolve/{quote(revision, safe='')}/README.md"
        response = get_session().get(url, headers=build_hf_headers(token=api.token),
                                     follow_redirects=True)
        hf_raise_for_status(response)
        state.readme = response.content.decode("utf-8")
    return state


def _git_blob_sha1(path: Path) -> str:
    digest = hashlib.sha1(b"blob %d\0" % path.stat().st_size)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def already_there(path: Path, remote: tuple[str, str] | None) -> bool:
    if remote is None:
        return False
    kind, oid = remote
    return oid == (sha256_file(path) if kind == "sha256" else _git_blob_sha1(path))


def plan_commits(todo: dict[str, Path], last: set[str]) -> list[tuple[str, list[str]]]:
    """Data files grouped by config and split (at most MAX_FILES_PER_COMMIT each), then the
    README/images/noisy-label commit (``last``)."""
    groups: dict[str, list[str]] = {}
    for path in sorted(todo):
        if path in last:
            continue
        top, name = path.split("/", 1) if "/" in path else ("", path)
        groups.setdefault(f"{top}/{name.split('-', 1)[0]}", []).append(path)
    commits = []
    for group, paths in groups.items():
        for i in range(0, len(paths), MAX_FILES_PER_COMMIT):
            chunk = paths[i:i + MAX_FILES_PER_COMMIT]
            part = f" ({i // MAX_FILES_PER_COMMIT + 1}/"
            part += f"{-(-len(paths) // MAX_FILES_PER_COMMIT)})" if len(
                paths) > MAX_FILES_PER_COMMIT else ""
            commits.append((group + (part if len(paths) > MAX_FILES_PER_COMMIT else ""), chunk))
    return commits


def _commit(api, repo_id: str, revision: str, operations: list, message: str,
            endpoint: str) -> None:
    """One commit, retried on transient Hub failures (the data went up already, so a retry
    costs only the small commit request)."""
    from huggingface_hub import CommitOperationAdd

    for attempt in range(COMMIT_RETRIES):
        # operations are mutated by create_commit: rebuild them for each attempt
        ops = [CommitOperationAdd(op.path_in_repo, op.path_or_fileobj)
               if isinstance(op, CommitOperationAdd) else op for op in operations]
        try:
            with hub_call(f"committing {message!r}", repo_id, endpoint):
                api.create_commit(repo_id, ops, commit_message=message, repo_type="dataset",
                                  revision=revision)
            return
        except RemoteError as e:
            http = _http_error(e)
            status = http.response.status_code if http is not None and http.response else 0
            if attempt + 1 == COMMIT_RETRIES or not (status == 429 or status >= 500):
                raise
            time.sleep(2**attempt)


def upload(api, repo_id: str, revision: str, files: dict[str, Path], card: str,
           remote: RemoteState, summaries: list[ConfigSummary], message: str, endpoint: str,
           quiet: bool) -> dict:
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete

    todo = {p: f for p, f in files.items() if not already_there(f, remote.files.get(p))}
    skipped = sorted(set(files) - set(todo))
    last = {p for p in todo if not p.endswith(".parquet")}
    commits = plan_commits(todo, last)
    for n, (group, paths) in enumerate(commits, 1):
        if not quiet:
            print(f"commit {n}/{len(commits) + 1}: {group} ({len(paths)} files)")
        ops = [CommitOperationAdd(p, str(todo[p])) for p in paths]
        _commit(api, repo_id, revision, ops, f"{message}: {group}", endpoint)
    stale = stale_paths(list(remote.files), summaries, files)
    final = [CommitOperationAdd(p, str(todo[p])) for p in sorted(last)]
    final += [CommitOperationDelete(p) for p in stale]
    if remote.readme != card:
        final.append(CommitOperationAdd("README.md", card.encode("utf-8")))
    if final:
        if not quiet:
            print(f"commit {len(commits) + 1}/{len(commits) + 1}: card, images, clean-up")
        _commit(api, repo_id, revision, final, f"{message}: dataset card", endpoint)
    return {"uploaded": sorted(todo), "skipped": skipped, "deleted": stale,
            "commits": len(commits) + (1 if final else 0)}


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
             staging_dir: str | Path | None = None) -> dict:
    """Publish the dataset(s) at ``src`` to ``repo_id`` (or write them to ``local_dir``)."""
    validate_repo_id(repo_id)
    sources = find_configs(Path(src), config)
    revision = revision or "main"
    endpoint = hub_endpoint()
    ctx = CardContext(repo_id, revision, endpoint)
    if local_dir is not None:
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
    with hub_call("listing the repository", repo_id, endpoint):
        remote = remote_state(api, repo_id, revision)
    stage_root = Path(staging_dir) if staging_dir else default_staging_dir(repo_id)
    summaries = [prepare_config(s, stage_root, n_jobs=n_jobs, quiet=quiet,
                                max_shard_bytes=max_shard_bytes) for s in sources]
    check_remote_configs(remote.readme, summaries)
    card = build_card(remote.readme, summaries, ctx)
    files = tree_files(summaries)
    message = commit_message or f"Upload {', '.join(s.name for s in summaries)} with imgtools"
    report = upload(api, repo_id, revision, files, card, remote, summaries, message, endpoint,
                    quiet)
    shutil.rmtree(stage_root, ignore_errors=True)  # done: the staging is only for resuming
    return {"repo_id": repo_id, "revision": revision, "endpoint": endpoint,
            "url": f"{endpoint}/datasets/{repo_id}", "configs": [s.name for s in summaries],
            **report}


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
    check_remote_configs(existing, summaries)
    card = build_card(existing, summaries, ctx)
    files = tree_files(summaries)
    local_dir.mkdir(parents=True, exist_ok=True)
    removed = write_local_tree(local_dir, files, card, summaries)
    if not staging_dir:
        shutil.rmtree(stage_root, ignore_errors=True)  # done: the staging is only for resuming
    return {"repo_id": ctx.repo_id, "local_dir": str(local_dir),
            "configs": [s.name for s in summaries], "files": sorted([*files, "README.md"]),
            "deleted": removed}
