"""push-hub: the tree `datasets` loads, the card, and real uploads to a local fake Hub.

Datasets are built with the real pipeline from a generated ImageNet-shaped tree (photo-like
JPEGs with ImageNet's quirks), converted by the real Parquet writer, loaded by the real
``datasets`` library and uploaded by the real ``huggingface_hub`` client through ``HF_ENDPOINT``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import REPO_ID, build_sample, push
from fake_hub import FakeHub
from PIL import Image

from imgtools.errors import EXIT_BAD_INPUT, EXIT_REMOTE, RemoteError, UserError


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    return build_sample(tmp_path_factory.mktemp("built"))


@pytest.fixture()
def hub_env(monkeypatch, tmp_path):
    """A fake Hub, and the environment a user would set to use it."""
    from huggingface_hub import constants

    with FakeHub() as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        monkeypatch.setenv("HF_TOKEN", hub.token)
        monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
        monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)  # the fake speaks LFS only
        monkeypatch.setattr(constants, "ENDPOINT", hub.url)
        # as in a process started with HF_ENDPOINT set: hf_hub_download builds its URLs from it
        monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE",
                            hub.url + "/{repo_id}/resolve/{revision}/{filename}")
        yield hub


def tree_bytes(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes()
            for p in sorted(root.rglob("*")) if p.is_file()}


# ----------------------------------------------------------------------------------------------
# --local-dir: the tree, loaded by datasets
# ----------------------------------------------------------------------------------------------


def test_local_dir_loads_with_datasets(built, tmp_path):
    import datasets

    report = push(built, tmp_path, local_dir=tmp_path / "repo")
    repo = tmp_path / "repo"
    assert report["configs"] == ["32px", "64px"]
    info32 = json.loads((built / "imagenette2-32" / "build-info.json").read_text())
    names = [c["name"] for c in info32["classes"]]
    assert names[0] == "tench"
    for config, folder in (("32px", "imagenette2-32"), ("64px", "imagenette2-64")):
        totals = json.loads((built / folder / "build-info.json").read_text())["totals"]
        ds = datasets.load_dataset(str(repo), config)
        assert sorted(ds) == ["train", "validation"]
        assert ds["train"].num_rows == totals["train"]
        assert ds["validation"].num_rows == totals["val"]
        assert ds["train"].features["label"].names == names
        img = ds["validation"][0]["image"]
        assert isinstance(img, Image.Image) and min(img.size) <= int(config[:-2])
        img.load()
        counts = json.loads((built / folder / "build-info.json").read_text())["counts"]["train"]
        labels = ds["train"]["label"]
        assert {w: labels.count(i) for i, w in enumerate(c["wnid"] for c in info32["classes"])
                } == counts
    # the default config loads without a name
    assert datasets.load_dataset(str(repo))["train"].num_rows > 0
    # card: YAML the Hub reads, body people read
    text = (repo / "README.md").read_text()
    meta = yaml.safe_load(text.split("---\n")[1])
    assert meta["pretty_name"] == "Imagenette" and meta["license"] == "other"
    assert meta["license_name"] == "imagenet-terms-of-access" and "ImageNet" in meta[
        "extra_gated_prompt"]  # the photos' terms; Imagenette's apache-2.0 is its selection
    assert meta["task_categories"] == ["image-classification"]
    assert meta["size_categories"] == ["n<1K"]
    assert [c["config_name"] for c in meta["configs"]] == ["32px", "64px"]
    info = {i["config_name"]: i for i in meta["dataset_info"]}
    assert info["64px"]["splits"][0]["num_examples"] == ds["train"].num_rows
    assert info["64px"]["features"][1]["dtype"]["class_label"]["names"]["0"] == "tench"
    for needle in ("imgtools build imagenette", "seed:** 0", "mean = [", "n01440764",
                   "@article{ILSVRC15", "Howard_Imagenette_2019", "noisy_imagenette.csv",
                   "assets/preview-64px.jpg", "`apache-2.0`"):
        assert needle in text, needle
    for name, fmt in (("assets/preview-32px.jpg", "JPEG"), ("assets/histogram-64px.png", "PNG")):
        with Image.open(repo / name) as im:
            assert im.format == fmt and im.size[0] > 100
        assert (repo / name).stat().st_size <= 300_000
    assert (repo / "64px" / "noisy_imagenette.csv").read_bytes() == (
        built / "imagenette2-64" / "noisy_imagenette.csv").read_bytes()


def test_unsup_split_is_unlabelled(tmp_path):
    import datasets

    out = build_sample(tmp_path / "wang", "imagewang", sizes=(32,), train=10, val=2)
    push(out / "imagewang-32", tmp_path, local_dir=tmp_path / "repo")
    ds = datasets.load_dataset(str(tmp_path / "repo"), "32px")
    assert sorted(ds) == ["train", "unsup", "validation"]
    assert set(ds["unsup"]["label"]) == {-1}
    assert min(ds["train"]["label"]) >= 0
    text = (tmp_path / "repo" / "README.md").read_text()
    assert "unlabelled images" in text


def test_repush_keeps_user_sections_and_other_configs(built, tmp_path):
    repo = tmp_path / "repo"
    push(built / "imagenette2-64", tmp_path, local_dir=repo)
    card = (repo / "README.md").read_text()
    head, body = card.split("---\n", 2)[1:]
    meta = yaml.safe_load(head)
    meta["license"] = "cc-by-4.0"
    meta["my_key"] = "kept"
    body = body.replace("<!-- imgtools:begin config:64px -->",
                        "## My notes\n\nWritten by hand.\n\n<!-- imgtools:begin config:64px -->")
    (repo / "README.md").write_text(f"---\n{yaml.safe_dump(meta, sort_keys=False)}---\n{body}")
    push(built / "imagenette2-32", tmp_path, local_dir=repo, config="small")
    card = (repo / "README.md").read_text()
    meta = yaml.safe_load(card.split("---\n")[1])
    assert meta["license"] == "cc-by-4.0" and meta["my_key"] == "kept"
    assert [c["config_name"] for c in meta["configs"]] == ["64px", "small"]
    assert "## My notes\n\nWritten by hand." in card
    assert card.count("<!-- imgtools:begin config:64px -->") == 1
    assert "## Config `small`" in card and "## Config `64px`" in card
    assert card.index("## My notes") < card.index("## Config `64px`") < card.index(
        "## Config `small`") < card.index("## Licensing")


def test_bad_input_is_refused_before_any_work(built, tmp_path):
    with pytest.raises(UserError, match="invalid repository id"):
        push(built, tmp_path, repo_id="not a repo", local_dir=tmp_path / "r")
    with pytest.raises(UserError, match="invalid repository id"):
        push(built, tmp_path, repo_id="a/b/c", local_dir=tmp_path / "r")
    (tmp_path / "empty" / "stuff").mkdir(parents=True)
    (tmp_path / "empty" / "notes.txt").write_text("hello")
    with pytest.raises(UserError, match="not a dataset"):
        push(tmp_path / "empty", tmp_path, local_dir=tmp_path / "r")
    with pytest.raises(UserError, match="invalid config name"):
        push(built / "imagenette2-32", tmp_path, config="a/b", local_dir=tmp_path / "r")
    with pytest.raises(UserError, match="names one config"):
        push(built, tmp_path, config="x", local_dir=tmp_path / "r")
    assert not (tmp_path / "r").exists() and not (tmp_path / "staging").exists()


def test_config_name_clash(built, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    shutil.copytree(built / "imagenette2-32", out / "imagenette2-32")
    shutil.copytree(built / "imagenette2-32", out / "imagenette2-32-copy")
    with pytest.raises(UserError, match="config name clash"):
        push(out, tmp_path, local_dir=tmp_path / "r")
    # a config already published with other classes
    repo = tmp_path / "repo"
    push(built / "imagenette2-32", tmp_path, local_dir=repo)
    readme = repo / "README.md"
    readme.write_text(readme.read_text().replace("'0': tench", "'0': goldfish"))
    with pytest.raises(UserError, match="config name clash"):
        push(built / "imagenette2-32", tmp_path, local_dir=repo)


def test_no_token_is_a_clear_error(built, tmp_path, monkeypatch):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "no-login"))
    with pytest.raises(UserError, match="no Hugging Face token") as e:
        push(built, tmp_path)
    assert "HF_TOKEN" in e.value.fix and not (tmp_path / "staging").exists()


# ----------------------------------------------------------------------------------------------
# Real uploads to the fake Hub
# ----------------------------------------------------------------------------------------------


def test_cli_push_equals_local_tree(built, tmp_path):
    """The real CLI in a real process, HF_ENDPOINT pointing at the fake Hub."""
    with FakeHub() as hub:
        env = {**os.environ, "HF_ENDPOINT": hub.url, "HF_TOKEN": hub.token,
               "HF_HUB_DISABLE_XET": "1", "HF_HOME": str(tmp_path / "hf"),
               "XDG_CACHE_HOME": str(tmp_path / "cache")}
        common = [sys.executable, "-m", "imgtools.cli", "push-hub", str(built), REPO_ID, "-j",
                  "1", "-q"]
        local = subprocess.run([*common, "--local-dir", str(tmp_path / "local")], env=env,
                               capture_output=True, text=True)
        assert local.returncode == 0, local.stderr
        pushed = subprocess.run([*common, "--json", "--private"], env=env, capture_output=True,
                                text=True)
        assert pushed.returncode == 0, pushed.stderr
        report = json.loads(pushed.stdout)
        assert hub.files(REPO_ID) == tree_bytes(tmp_path / "local")
        assert hub.repos[("dataset", REPO_ID)].private
        # the data (upload_folder: one commit without hf_xet), then the card
        assert report["commits"] == len(hub.repos[("dataset", REPO_ID)].commits) == 2
        assert not (tmp_path / "cache" / "imgtools" / "push-hub").joinpath(
            "tester--imagenette").exists()  # staging removed once published
        # a second push changes nothing and sends nothing
        puts = hub.count("PUT", "/_lfs/")
        again = subprocess.run([*common, "--json"], env=env, capture_output=True, text=True)
        assert again.returncode == 0, again.stderr
        assert json.loads(again.stdout)["uploaded"] == []
        assert hub.count("PUT", "/_lfs/") == puts
        assert len(hub.repos[("dataset", REPO_ID)].commits) == 2
        # a bad token: exit code 3 and a message that says what to do
        bad = subprocess.run(common, env={**env, "HF_TOKEN": "hf_wrong"}, capture_output=True,
                             text=True)
        assert bad.returncode == EXIT_REMOTE
        assert "refused the token" in bad.stderr and "what to do" in bad.stderr
        invalid = subprocess.run([*common[:5], "bad id!"], env=env, capture_output=True,
                                 text=True)
        assert invalid.returncode == EXIT_BAD_INPUT and "invalid repository id" in invalid.stderr


def test_interrupted_push_finishes_without_sending_twice(built, tmp_path, hub_env):
    hub = hub_env
    hub.fail("POST", r"/commit/", 409, skip=1)  # the 2nd commit fails: push stops half-way
    with pytest.raises(RemoteError, match="conflict") as e:
        push(built, tmp_path)
    assert "run the same command again" in e.value.fix
    first = hub.repos[("dataset", REPO_ID)].commits
    assert len(first) == 1 and "README.md" not in hub.files(REPO_ID)
    done_paths = set(first[0]["paths"])
    stored_before = {f"/_lfs/{oid}" for oid in hub.lfs_store}
    assert stored_before  # the first run did send data
    log_at_rerun = len(hub.log)
    report = push(built, tmp_path)
    assert done_paths.isdisjoint(report["uploaded"]) and done_paths <= set(report["skipped"])
    # no LFS object stored by the first run went up again: all data arrived with the first
    # commit, so the re-run sends only the card (a regular file, no LFS upload)
    puts = {p for m, p, s in hub.log[log_at_rerun:] if m == "PUT" and s == 200}
    assert puts.isdisjoint(stored_before) and not puts
    assert report["uploaded"] == ["README.md"]
    push(built, tmp_path, local_dir=tmp_path / "local")
    assert hub.files(REPO_ID) == tree_bytes(tmp_path / "local")


def test_transient_errors_are_retried(built, tmp_path, hub_env):
    hub = hub_env
    hub.fail("POST", r"/preupload/", 503)
    hub.fail("POST", r"/commit/", 502)
    push(built / "imagenette2-32", tmp_path)
    assert hub.count("POST", "/preupload/", 503) == 1 and hub.count("POST", "/commit/", 502) == 1
    assert "README.md" in hub.files(REPO_ID)


def test_hub_errors_are_explained(built, tmp_path, hub_env):
    hub = hub_env
    hub.fail("GET", r"/api/whoami-v2", 401)
    with pytest.raises(RemoteError, match="refused the token"):
        push(built, tmp_path)
    hub.fail("GET", r"/tree/", 404)
    with pytest.raises(RemoteError, match="not found"):
        push(built, tmp_path)
    hub.fail("POST", r"/api/repos/create", 403)
    with pytest.raises(RemoteError, match="403"):
        push(built, tmp_path)
    hub.fail("POST", r"/commit/", 500, times=10)
    with pytest.raises(RemoteError, match="failed \\(500\\)"):
        push(built / "imagenette2-32", tmp_path)
    assert not hub.files(REPO_ID)  # nothing half-published: no commit landed


def test_revision_and_stale_shards(built, tmp_path, hub_env):
    hub = hub_env
    src = built / "imagenette2-64"
    push(src, tmp_path, revision="dev", max_shard_bytes=20_000, commit_message="first")
    files = hub.files(REPO_ID, "dev")
    many = sorted(p for p in files if p.startswith("64px/train-"))
    assert len(many) > 1 and all(p.endswith(f"-of-{len(many):05d}.parquet") for p in many)
    assert hub.files(REPO_ID, "main") == {}
    assert all(c["summary"].startswith("first") for c in hub.repos[("dataset", REPO_ID)].commits)
    push(src, tmp_path, revision="dev")  # default shard size: one file per split
    files = hub.files(REPO_ID, "dev")
    assert sorted(p for p in files if p.startswith("64px/train-")) == [
        "64px/train-00000-of-00001.parquet"]
    meta = yaml.safe_load(files["README.md"].decode().split("---\n")[1])
    assert meta["dataset_info"][0]["splits"][0]["num_examples"] == json.loads(
        (src / "build-info.json").read_text())["totals"]["train"]
    digest = hashlib.sha256(files["64px/train-00000-of-00001.parquet"]).hexdigest()
    assert digest in hub.lfs_store
