"""Uploads through huggingface_hub's own machinery, against the local fake Hub.

The real CLI runs in a real process with ``HF_ENDPOINT`` pointing at :mod:`fake_hub`; the real
``huggingface_hub`` client does the preupload, LFS and commit calls. A push killed with SIGKILL
in the middle of its LFS uploads is run again and must not send again what arrived.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import run_cli
from fake_hub import FakeHub

from imgtools.demo_tree import IMAGENETTE_WNIDS, make_imagenet_tree

REPO_ID = "tester/imagenette"


@pytest.fixture(scope="module")
def out(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("up")
    tree = make_imagenet_tree(root / "imagenet", wnids=list(IMAGENETTE_WNIDS),
                              train_per_class=3, val_per_class=2, seed=0)
    run_cli("build", "imagenette", "--src", tree.src, "--out", root / "out", "--size", "32",
            "--size", "64", "--split", "random", "-j", "1", "-q")
    return root / "out"


def hub_env(hub: FakeHub, tmp_path: Path) -> dict:
    return {**os.environ, "HF_ENDPOINT": hub.url, "HF_TOKEN": hub.token,
            "HF_HUB_DISABLE_XET": "1", "HF_HOME": str(tmp_path / "hf"),
            "XDG_CACHE_HOME": str(tmp_path / "cache")}


def cli(*args) -> list[str]:
    return [sys.executable, "-m", "imgtools.cli", "push-hub", *map(str, args), "-j", "1", "-q"]


def tree_bytes(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes()
            for p in sorted(root.rglob("*")) if p.is_file()}


def lfs_puts(hub: FakeHub, since: int = 0) -> list[str]:
    return [p.rsplit("/", 1)[1] for m, p, s in hub.log[since:] if m == "PUT" and s == 200]


def test_push_killed_mid_upload_resumes_without_resending(out, tmp_path):
    with FakeHub() as hub:
        env = hub_env(hub, tmp_path)
        client: dict[str, subprocess.Popen] = {}
        # SIGKILL the client when its third LFS upload arrives: no clean-up code runs
        hub.on("PUT", r"^/_lfs/", lambda: os.kill(client["proc"].pid, signal.SIGKILL), skip=2)
        proc = client["proc"] = subprocess.Popen(cli(out, REPO_ID), env=env,
                                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        proc.communicate(timeout=600)
        assert proc.returncode == -signal.SIGKILL
        assert hub.files(REPO_ID) == {}  # nothing committed
        arrived = set(hub.lfs_store)
        assert arrived
        rerun_from = len(hub.log)
        again = subprocess.run(cli(out, REPO_ID, "--json"), env=env, capture_output=True,
                               text=True, timeout=600)
        assert again.returncode == 0, again.stderr
        sent = lfs_puts(hub, rerun_from)
        assert sent and arrived.isdisjoint(sent)  # only what had not arrived went up
        local = subprocess.run(cli(out, REPO_ID, "--local-dir", tmp_path / "local"), env=env,
                               capture_output=True, text=True, timeout=600)
        assert local.returncode == 0, local.stderr
        assert hub.files(REPO_ID) == tree_bytes(tmp_path / "local")
        report = json.loads(again.stdout)
        assert report["commits"] == 2 and report["deleted"] == []
        assert sorted(report["uploaded"]) == sorted(hub.files(REPO_ID))


def test_card_edited_on_the_hub_during_the_upload_is_kept(out, tmp_path):
    """The card is merged into the README as it is after the data commit, not as it was
    when the push started."""
    from huggingface_hub import HfApi

    with FakeHub() as hub:
        env = hub_env(hub, tmp_path)
        first = subprocess.run(cli(out / "imagenette2-64", REPO_ID), env=env,
                               capture_output=True, text=True, timeout=600)
        assert first.returncode == 0, first.stderr
        api = HfApi(endpoint=hub.url, token=hub.token)

        def edit_card():
            card = hub.files(REPO_ID)["README.md"].decode()
            api.upload_file(path_or_fileobj=card.replace(
                "<!-- imgtools:begin config:64px -->",
                "## Notes by hand\n\nWritten on the Hub.\n\n<!-- imgtools:begin config:64px -->"
            ).encode(), path_in_repo="README.md", repo_id=REPO_ID, repo_type="dataset")

        hub.on("POST", r"/commit/", edit_card)  # when the second push's data commit arrives
        second = subprocess.run(cli(out / "imagenette2-32", REPO_ID, "--gated", "auto"),
                                env=env, capture_output=True, text=True, timeout=600)
        assert second.returncode == 0, second.stderr
        assert not hub.hook_errors
        card = hub.files(REPO_ID)["README.md"].decode()
        assert "## Notes by hand\n\nWritten on the Hub." in card
        meta = yaml.safe_load(card.split("---\n")[1])
        assert [c["config_name"] for c in meta["configs"]] == ["64px", "32px"]
        assert hub.repos[("dataset", REPO_ID)].gated == "auto"
        summaries = [c["summary"] for c in hub.repos[("dataset", REPO_ID)].commits]
        assert summaries[-1].endswith(": dataset card")  # the card is the last commit


def test_a_second_push_sends_and_commits_nothing(out, tmp_path):
    with FakeHub() as hub:
        env = hub_env(hub, tmp_path)
        for _ in range(2):
            proc = subprocess.run(cli(out, REPO_ID, "--json"), env=env, capture_output=True,
                                  text=True, timeout=600)
            assert proc.returncode == 0, proc.stderr
        report = json.loads(proc.stdout)
        assert report["uploaded"] == [] and report["commits"] == 0
        assert len(report["skipped"]) == len(hub.files(REPO_ID))
        assert len(hub.repos[("dataset", REPO_ID)].commits) == 2


def test_gated_with_local_dir_is_refused(out, tmp_path):
    proc = run_cli("push-hub", out, REPO_ID, "--local-dir", tmp_path / "r", "--gated", "auto",
                   check=False)
    assert proc.returncode == 2 and "--gated" in proc.stderr and not (tmp_path / "r").exists()
