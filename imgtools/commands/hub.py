"""``imgtools push-hub``: publish a built dataset to the Hugging Face Hub."""

from __future__ import annotations

import json
from pathlib import Path

import click


@click.command(context_settings={"show_default": True})
@click.argument("src", type=click.Path(path_type=Path))
@click.argument("repo_id")
@click.option("--config", default=None, metavar="NAME",
              help="Config name for SRC (default: 320px for a --size 320 build, full for a full "
                   "size one). Only with a single dataset folder.")
@click.option("--local-dir", type=click.Path(path_type=Path), default=None,
              help="Write the exact repository tree (Parquet shards, README.md, images) here "
                   "instead of uploading: no token, no network.")
@click.option("--private", is_flag=True, help="Create the repository private (if it is new).")
@click.option("--revision", default=None, metavar="BRANCH",
              help="Branch to commit to (created from main when missing). Default: main.")
@click.option("--commit-message", default=None, help="Summary of the commits made.")
@click.option("--max-shard-size", "max_shard_bytes", default="500MB",
              help="Upper bound of image bytes per Parquet shard (as datasets.push_to_hub).")
@click.option("--staging-dir", type=click.Path(path_type=Path), default=None,
              help="Where the Parquet conversion is staged and kept until the push completes "
                   "(default: ~/.cache/imgtools/push-hub/<owner>--<name>).")
@click.option("--prefer-format", "prefer_formats", multiple=True, metavar="FORMAT",
              help="When SRC holds builds of one size in several formats (folder, parquet, "
                   "webdataset, tfrecord, ...), publish the one in FORMAT; repeat to give an "
                   "order. Without it such a folder is refused, never merged.")
@click.option("--gated", type=click.Choice(["auto", "manual"]), default=None,
              help="Turn on access requests for the repository, so users accept the ImageNet "
                   "terms (the card's extra_gated_prompt) before downloading: auto approves "
                   "every request, manual lets you review them.")
@click.option("-j", "--jobs", "n_jobs", type=int, default=0, help="Parallel workers (0 = all).")
@click.option("-q", "--quiet", is_flag=True, help="No progress bars or commit log.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def push_hub(src: Path, repo_id: str, config: str | None, local_dir: Path | None,
             private: bool, revision: str | None, commit_message: str | None,
             max_shard_bytes: str, staging_dir: Path | None, prefer_formats: tuple[str, ...],
             gated: str | None, n_jobs: int, quiet: bool, as_json: bool) -> None:
    """Publish the dataset in SRC to the dataset repository REPO_ID (owner/name).

    SRC is a dataset folder (any format imgtools reads), or a folder holding several builds of
    one dataset (out/ with imagenette2, imagenette2-320, imagenette2-160-webdataset): each
    size becomes one config of the repository, from exactly one build. The result loads with
    datasets.load_dataset("owner/name", "320px") and shows images in the dataset viewer.

    \b
    imgtools push-hub out/imagenette2-320 alice/imagenette --config 320px
    imgtools push-hub out/ alice/imagenette              # every size found, one config each
    imgtools push-hub out/ alice/imagenette --prefer-format parquet --prefer-format folder
    imgtools push-hub out/imagenette2-320 alice/imagenette --local-dir hub-repo/

    The token comes from HF_TOKEN or `hf auth login`; HF_ENDPOINT selects another Hub. An
    interrupted push is finished by running the same command again: files already on the Hub
    are not sent twice. Sections you add to the README on the Hub are kept on re-push.
    Exit codes: 0 done, 2 bad input, 3 Hub or network failure.
    """
    # lazy: `imgtools push-hub --help` answers without importing the staging and the card
    # (numpy, Pillow, PyYAML)
    from imgtools.hub.push import push_hub as run

    report = run(src, repo_id, config=config, local_dir=local_dir, private=private,
                 revision=revision, commit_message=commit_message, n_jobs=n_jobs,
                 quiet=quiet or as_json, max_shard_bytes=max_shard_bytes,
                 staging_dir=staging_dir, prefer_formats=prefer_formats, gated=gated)
    if as_json:
        click.echo(json.dumps(report, indent=2))
    elif local_dir is not None:
        sources = ", ".join(f"{c} from {Path(p).name}" for c, p in report["sources"].items())
        click.echo(f"wrote {len(report['files'])} files for configs {sources} "
                   f"to {report['local_dir']}")
        click.echo(f"check it: python -c \"import datasets; print(datasets.load_dataset("
                   f"'{report['local_dir']}', '{report['configs'][0]}'))\"")
    else:
        sources = ", ".join(f"{c} from {Path(p).name}" for c, p in report["sources"].items())
        click.echo(f"published configs {sources}: "
                   f"{len(report['uploaded'])} files uploaded, {len(report['skipped'])} already "
                   f"there, {len(report['deleted'])} stale removed, {report['commits']} commits")
        click.echo(report["url"])
