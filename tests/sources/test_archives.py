"""The image-net.org archive trio as --src: same outputs as the tree, read in place, only the
needed bytes read, damage reported (never a traceback), parallel and resumable."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest
from conftest import RUN_RECORD

from imgtools.errors import UserError
from imgtools.plan import make_plan
from imgtools.recipes import load_recipe
from imgtools.sources import open_source
from imgtools.sources.base import cache_dir

pytestmark = pytest.mark.usefixtures("own_cache")


@pytest.mark.parametrize("split", ["official", "random"])
def test_archives_build_the_same_bytes_as_the_tree(demo, archives, helpers, tmp_path, split):
    kw = {}
    if split == "official":
        kw["split_csvs"] = [helpers.official_csv(demo, tmp_path / "list.csv")]
    _, want = helpers.build_digest("imagenette", demo.src, tmp_path / "tree", split, **dict(kw))
    report, got = helpers.build_digest("imagenette", archives, tmp_path / "tar", split, **kw)
    assert got == want
    assert len(want) > 60
    assert report["source_layout"] == "archives"
    # The broken quirks are skipped and listed with the member's name and offset.
    skipped = {s["path"] for s in report["skipped"]}
    assert skipped and all(p.startswith("tar:") and "@" in p for p in skipped)
    assert not any(archives.glob("n0*")), "nothing was extracted"


def test_src_may_be_the_train_tar_itself(archives):
    src = open_source(archives / "ILSVRC2012_img_train.tar")
    assert src.layout == "archives" and src.root == archives
    assert src.val_files("n01440764")


def test_the_index_is_cached_by_size_and_mtime(demo, archives):
    first = open_source(archives)
    first.train_files("n01440764")
    cached = sorted((cache_dir() / "index").glob("*.json"))
    assert len(cached) >= 3  # outer, val, devkit labels, one inner tar
    again = open_source(archives)
    assert again.train_files("n01440764") == first.train_files("n01440764")
    assert sorted((cache_dir() / "index").glob("*.json")) == cached  # nothing re-indexed
    train = archives / "ILSVRC2012_img_train.tar"
    st = train.stat()
    os.utime(train, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    try:
        open_source(archives)
        assert len(list((cache_dir() / "index").glob("*.json"))) == len(cached) + 1
    finally:
        os.utime(train, ns=(st.st_atime_ns, st.st_mtime_ns))


def _rchar() -> int:
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("rchar:"):
            return int(line.split()[1])
    raise AssertionError("no rchar")


@pytest.mark.skipif(not Path("/proc/self/io").exists(), reason="needs Linux /proc/self/io")
def test_a_two_class_build_reads_only_its_classes(demo, tmp_path, helpers):
    """Bytes read by the whole build (open the source, plan, render), counted by the kernel:
    no more than the two classes' inner tars, the headers, the devkit and the val images."""
    archives = helpers.pack_archives(demo, tmp_path / "archives")
    recipe = tmp_path / "two.toml"
    wanted = ["n01440764", "n02102040"]
    recipe.write_text(f'name = "two"\nclasses = {json.dumps(wanted)}\n')
    # Warm up imports and the image codecs on another copy, so only the build's reads count.
    helpers.build_digest("imagenette", demo.src, tmp_path / "warm")
    before = _rchar()
    report, digests = helpers.build_digest(str(recipe), archives, tmp_path / "out")
    read = _rchar() - before
    assert sum(report["totals"].values()) > 20
    train = archives / "ILSVRC2012_img_train.tar"
    with tarfile.open(train) as tar:
        inner = {m.name[:-4]: m.size for m in tar.getmembers()}
    with tarfile.open(archives / "ILSVRC2012_img_val.tar") as tar:
        val = {m.name: m.size for m in tar.getmembers()}
    labels = demo.val_label_of()
    needed_val = sum(size + 512 for name, size in val.items() if labels[name] in wanted)
    headers = 512 * (len(inner) + len(val) + 4)
    devkit = (archives / "ILSVRC2012_devkit_t12.tar.gz").stat().st_size
    small_files = 64 * 1024  # the recipe, the class manifest, cache files read back
    budget = sum(inner[w] for w in wanted) + needed_val + headers + devkit + small_files
    assert read <= budget, f"read {read} bytes, budget {budget}"
    assert read + min(v for k, v in inner.items() if k not in wanted) > budget, \
        "the test could not tell a third inner tar being read"


# ---------------------------------------------------------------- damaged archives


def _archives_with(demo, tmp_path, helpers, inner=None):
    return helpers.pack_archives(demo, tmp_path / "a", **({"inner": inner} if inner else {}))


def test_truncated_outer_tar_skips_and_lists_the_cut_images(demo, tmp_path, helpers):
    archives = _archives_with(demo, tmp_path, helpers)
    train = archives / "ILSVRC2012_img_train.tar"
    with tarfile.open(train) as tar:
        last = tar.getmembers()[-1]
    # Cut the outer tar in the middle of the last class's inner tar.
    os.truncate(train, last.offset_data + last.size // 2)
    recipe = tmp_path / "last.toml"
    wnid = last.name[:-4]
    recipe.write_text(f'name = "last"\nclasses = ["{wnid}", "n01440764"]\n')
    report, _ = helpers.build_digest(str(recipe), archives, tmp_path / "out")
    cut = [s for s in report["skipped"] if f"{wnid}.tar/" in s["path"]]
    assert cut and all("truncated archive" in s["reason"] for s in cut)
    assert all("@" in s["path"] for s in cut)  # member name and offset
    assert any("truncated" in i for i in report["ignored_files"])
    assert report["totals"]["train"] > 0


def test_truncated_inner_tar_is_confined_to_its_own_bytes(demo, tmp_path, helpers):
    def cut_first(folder):
        data = helpers.inner_tar(folder)
        return data[: len(data) // 2] if folder.name == "n01440764" else data

    archives = _archives_with(demo, tmp_path, helpers, cut_first)
    src = open_source(archives)
    names = src.train_files("n01440764")
    assert 0 < len(names) < len(demo.train_files["n01440764"])
    assert any("no end-of-archive marker" in i for i in src.ignored)
    report, _ = helpers.build_digest("imagenette", archives, tmp_path / "out")
    tree_report, _ = helpers.build_digest("imagenette", demo.src, tmp_path / "tree")

    def built(rep, wnid):
        return sum(per.get(wnid, 0) for per in rep["counts"].values())

    # The member the cut went through is skipped with its name and offset (never completed
    # with bytes of the next class's tar); the images before it are built; the next class is
    # untouched.
    cut = [s for s in report["skipped"] if "/n01440764.tar/" in s["path"]]
    assert cut and all("truncated archive" in s["reason"] and "@" in s["path"] for s in cut)
    listed = len(names) + len(src.val_files("n01440764"))
    broken_here = sum(1 for s in report["skipped"] if "/n01440764.tar/" in s["path"]
                      and "truncated archive" not in s["reason"])
    assert built(report, "n01440764") + len(cut) + broken_here == listed
    assert built(report, "n02102040") == built(tree_report, "n02102040")


def test_inner_member_that_is_not_a_tar_is_one_clear_error(demo, tmp_path, helpers):
    def garbage_first(folder):
        return b"<html>not a tar</html>" * 40 if folder.name == "n01440764" else \
            helpers.inner_tar(folder)

    archives = _archives_with(demo, tmp_path, helpers, garbage_first)
    proc = subprocess.run([sys.executable, "-m", "imgtools.cli", "build", "imagenette",
                           "--src", str(archives), "--split", "random",
                           "--out", str(tmp_path / "o"), "-q"],
                          capture_output=True, text=True,
                          env={**os.environ, "XDG_CACHE_HOME": str(tmp_path / "c")})
    assert proc.returncode == 2, proc.stderr
    assert "n01440764.tar" in proc.stderr and "not a tar archive" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "o").exists()


def test_missing_devkit_is_one_clear_error(demo, tmp_path, helpers):
    archives = _archives_with(demo, tmp_path, helpers)
    (archives / "ILSVRC2012_devkit_t12.tar.gz").unlink()
    with pytest.raises(UserError) as e:
        open_source(archives)
    assert "ILSVRC2012_devkit_t12.tar.gz" in e.value.message()
    proc = subprocess.run([sys.executable, "-m", "imgtools.cli", "build", "imagenette",
                           "--src", str(archives), "--split", "random",
                           "--out", str(tmp_path / "o")],
                          capture_output=True, text=True,
                          env={**os.environ, "XDG_CACHE_HOME": str(tmp_path / "c")})
    assert proc.returncode == 2 and "Traceback" not in proc.stderr


def test_a_folder_with_no_source_lists_what_was_looked_for(tmp_path):
    (tmp_path / "photos").mkdir()
    with pytest.raises(UserError) as e:
        open_source(tmp_path)
    msg = e.value.message()
    assert "ILSVRC2012_img_train.tar" in msg and "ILSVRC/Data/CLS-LOC" in msg


# ---------------------------------------------------------------- parallel and resumable


def test_parallel_build_from_archives_matches(demo, archives, helpers, tmp_path):
    _, want = helpers.build_digest("imagenette", demo.src, tmp_path / "tree")
    _, got = helpers.build_digest("imagenette", archives, tmp_path / "tar", n_jobs=2,
                                  shard_size=5)
    assert got == want


def test_resume_after_kill_from_archives(demo, archives, helpers, tmp_path):
    _, want = helpers.build_digest("imagenette", demo.src, tmp_path / "tree", shard_size=2)
    args = [sys.executable, "-m", "imgtools.cli", "build", "imagenette", "--src", str(archives),
            "--split", "random", "--size", "64", "--out", str(tmp_path / "run"), "-j", "1",
            "--shard-size", "2", "-q"]
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "c")}
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    state = tmp_path / "run" / ".imgtools-run-imagenette2-64" / "markers"
    deadline = time.time() + 120
    while time.time() < deadline and len(list(state.glob("*-*.json"))) < 5:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert len(list(state.glob("*-*.json"))) >= 5, "the build finished before it was killed"
    subprocess.run([*args, "--resume"], check=True, env=env)
    out = tmp_path / "run" / "imagenette2-64"
    got = {str(p.relative_to(tmp_path / "run")): hashlib.sha256(p.read_bytes()).hexdigest()
           for p in sorted(out.rglob("*")) if p.is_file() and p.name not in RUN_RECORD}
    assert got == want


def test_plan_of_archives_names_members_not_paths(archives):
    plan = make_plan(load_recipe("imagenette"), open_source(archives), split_mode="random",
                     seed=0)
    srcs = [it.src for it in plan.items["train"]]
    assert all(s.startswith(f"tar:{archives}/ILSVRC2012_img_") for s in srcs)
    assert any(s.startswith(f"tar:{archives}/ILSVRC2012_img_train.tar//n01440764.tar/n01440764_")
               for s in srcs)


def test_downsampled_build_from_archives_and_zip_matches_the_tree(demo, archives, kaggle_zip,
                                                                   helpers, tmp_path):
    """The downsampler reads through the same locators (--format pickle)."""
    _, want = helpers.build_digest("imagenette", demo.src, tmp_path / "tree", sizes=(16,),
                                   fmt="pickle")
    _, from_tar = helpers.build_digest("imagenette", archives, tmp_path / "tar", sizes=(16,),
                                       fmt="pickle")
    _, from_zip = helpers.build_digest("imagenette", kaggle_zip, tmp_path / "zip",
                                       sizes=(16,), fmt="pickle", n_jobs=2)
    assert from_tar == want and from_zip == want and want
