"""imgtools build: layouts, splits, sizes, bad input, resume and reproducibility."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import (
    IMAGEWOOF,
    SHARED_REFERENCE,
    WNIDS,
    do_build,
    official_rows,
    run_cli,
    tree_digest,
    write_official_csv,
)
from PIL import Image

from imgtools.errors import UserError
from imgtools.plan import make_plan
from imgtools.recipes import load_recipe
from imgtools.sources import open_source
from imgtools.transforms import resample

# ---------------------------------------------------------------- layouts


@pytest.mark.parametrize("layout", ["kaggle", "devkit", "valprep"])
def test_layout_detected(trees, layout):
    tree = trees[layout]
    src = open_source(tree.src)
    assert src.layout == layout
    for wnid in WNIDS[:3]:
        assert src.val_files(wnid) == sorted(tree.val_files[wnid])
        assert src.train_files(wnid) == sorted(tree.train_files[wnid])


def test_src_may_point_at_ilsvrc_folder(kaggle_tree):
    src = open_source(kaggle_tree.src / "ILSVRC")
    assert src.layout == "kaggle"
    assert src.val_files(WNIDS[0]) == sorted(kaggle_tree.val_files[WNIDS[0]])


def test_devkit_without_meta_mat_uses_map_clsloc(trees, tmp_path):
    """The devkit's ILSVRC2012_IDs are map_clsloc's ids, so meta.mat is optional."""
    tree = trees["devkit"]
    src_with = open_source(tree.src)
    meta = next(tree.src.rglob("meta.mat"))
    moved = tmp_path / "meta.mat"
    meta.rename(moved)
    try:
        src_without = open_source(tree.src)
    finally:
        moved.rename(meta)
    assert src_without.val_labels == src_with.val_labels


def test_unrecognised_layout_says_what_it_looked_for(tmp_path):
    (tmp_path / "photos").mkdir()
    with pytest.raises(UserError) as e:
        open_source(tmp_path)
    msg = e.value.message()
    assert "ILSVRC/Data/CLS-LOC" in msg and "ILSVRC2012_validation_ground_truth.txt" in msg
    assert "val/<wnid>/" in msg


def test_flat_val_without_labels_is_an_error(tmp_path):
    (tmp_path / "train" / "n01440764").mkdir(parents=True)
    (tmp_path / "val").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "val" / "ILSVRC2012_val_00000001.JPEG")
    with pytest.raises(UserError, match="no labels"):
        open_source(tmp_path)


def test_same_output_from_every_layout(trees, tmp_path):
    digests = []
    for layout, tree in trees.items():
        report = do_build("imagenette", tree.src, tmp_path / layout)
        digests.append(tree_digest(Path(report["outputs"][0])))
    assert digests[0] == digests[1] == digests[2]
    assert len(digests[0]) > 100


def test_missing_class_is_an_error_before_any_work(kaggle_tree, tmp_path):
    recipe = tmp_path / "mine.toml"
    recipe.write_text('name = "mine"\nclasses = ["n01440764", "n09999999"]\n')
    proc = run_cli("build", recipe, "--src", kaggle_tree.src, "--out", tmp_path / "o",
                   check=False)
    assert proc.returncode == 2
    assert "n09999999" in proc.stderr and "not in the tree" in proc.stderr
    assert not (tmp_path / "o").exists()


# ---------------------------------------------------------------- splits


def test_random_split_is_stratified_and_seeded(kaggle_tree, tmp_path):
    recipe = load_recipe("imagenette")
    src = open_source(kaggle_tree.src)
    a = make_plan(recipe, src, split_mode="random", seed=1, valid_pct=0.3)
    b = make_plan(recipe, src, split_mode="random", seed=1, valid_pct=0.3)
    c = make_plan(recipe, src, split_mode="random", seed=2, valid_pct=0.3)
    assert a.items == b.items
    assert a.items["val"] != c.items["val"]
    for wnid in recipe.wnids if hasattr(recipe, "wnids") else [x.wnid for x in recipe.classes]:
        n_train = sum(it.wnid == wnid for it in a.items["train"])
        n_val = sum(it.wnid == wnid for it in a.items["val"])
        assert n_val == round((n_train + n_val) * 0.3)


def test_imagewang_composition(kaggle_tree, tmp_path):
    src = open_source(kaggle_tree.src)
    nette = make_plan(load_recipe("imagenette"), src, split_mode="random", seed=0)
    woof = make_plan(load_recipe("imagewoof"), src, split_mode="random", seed=0)
    wang = make_plan(load_recipe("imagewang"), src, split_mode="random", seed=0)
    nette_all = {it.src for s in ("train", "val") for it in nette.items[s]}
    woof_train = {it.src for it in woof.items["train"]}
    wang_train = {it.src for it in wang.items["train"]}
    assert nette_all <= wang_train
    woof_in_train = wang_train - nette_all
    assert woof_in_train <= woof_train
    for cls in load_recipe("imagewoof").classes:  # 10 % of the whole class (train + val)
        n_class = sum(it.wnid == cls.wnid for s in ("train", "val") for it in woof.items[s])
        assert sum(it.wnid == cls.wnid for it in wang.items["train"]) == round(n_class * 0.1)
    assert {it.src for it in wang.items["unsup"]} == woof_train - woof_in_train
    assert {it.src for it in wang.items["val"]} == {it.src for it in woof.items["val"]}
    # unsup files carry no label in their names or paths
    assert all(it.out_name.startswith("unsup_") for it in wang.items["unsup"])


def test_imagewang_build_layout(kaggle_tree, tmp_path):
    report = do_build("imagewang", kaggle_tree.src, tmp_path, sizes=(160,))
    root = Path(report["outputs"][0])
    assert root.name == "imagewang-160"
    unsup = list((root / "unsup").iterdir())
    assert unsup and all(p.is_file() and not p.name.startswith("n0") for p in unsup)
    assert sorted(p.name for p in (root / "val").iterdir()) == sorted(IMAGEWOOF)
    assert report["totals"]["unsup"] == len(unsup)


def test_official_split_from_csv_reproduces_membership(trees, tmp_path):
    nette = [c.wnid for c in load_recipe("imagenette").classes]
    csv_path = tmp_path / "noisy_imagenette.csv"
    rows = official_rows(trees["devkit"], nette)
    write_official_csv(csv_path, rows)
    report = do_build("imagenette", trees["devkit"].src, tmp_path / "o", split="official",
                      split_csvs=[csv_path], sizes=(None,))
    root = Path(report["outputs"][0])
    assert root.name == "imagenette2"
    built = {str(p.relative_to(root)) for s in ("train", "val") for p in (root / s).rglob("*.*")}
    # the repaired PNG keeps its .JPEG name, so membership is exactly the list's
    assert built == {f"{s}/{w}/{n}" for s, w, n in rows}
    src_info = report["options"]["split_sources"][0]
    assert src_info["from"].startswith("--split-csv") and not src_info["is_published_list"]
    # the CSV beside the output carries the list's noisy columns
    with open(root / "noisy_imagenette.csv") as f:
        out_rows = list(csv.reader(f))
    assert out_rows[1][5] == WNIDS[0] and len(out_rows) == len(rows) + 1


def test_official_list_names_missing_files(trees, tmp_path):
    nette = [c.wnid for c in load_recipe("imagenette").classes]
    rows = official_rows(trees["kaggle"], nette) + [("train", nette[0], "n01440764_99999.JPEG")]
    csv_path = tmp_path / "noisy_imagenette.csv"
    write_official_csv(csv_path, rows)
    proc = run_cli("build", "imagenette", "--src", trees["kaggle"].src, "--split-csv", csv_path,
                   "--out", tmp_path / "o", check=False)
    assert proc.returncode == 2
    assert "train/n01440764/n01440764_99999.JPEG" in proc.stderr
    assert "--allow-missing" in proc.stderr
    report = do_build("imagenette", trees["kaggle"].src, tmp_path / "o2", split="official",
                      split_csvs=[csv_path], allow_missing=True)
    assert report["missing_from_tree"] == ["train/n01440764/n01440764_99999.JPEG"]


def test_offline_without_csv_explains_both_ways_out(kaggle_tree, tmp_path):
    env = dict(os.environ, IMGTOOLS_OFFLINE="1", IMGTOOLS_CACHE=str(tmp_path / "cache"))
    proc = run_cli("build", "imagewoof", "--src", kaggle_tree.src, "--out", tmp_path / "o",
                   env=env, check=False)
    assert proc.returncode == 2
    assert "--split-csv" in proc.stderr and "internet" in proc.stderr
    assert "--split random" in proc.stderr


def test_download_checks_pinned_sha256(tmp_path, monkeypatch):
    """Fetch from a loopback server: the good file is cached, a tampered one refused."""
    import http.server
    import threading

    from imgtools.recipes import OfficialSplit
    from imgtools.splits import fetch_official

    served = {"body": b"path,noisy_labels_0\n"}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            self.send_response(200)
            self.end_headers()
            self.wfile.write(served["body"])

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        recipe = load_recipe("imagenette")
        url = f"http://127.0.0.1:{server.server_port}/noisy_imagenette.csv"
        recipe.official = OfficialSplit(url, hashlib.sha256(served["body"]).hexdigest())
        monkeypatch.setenv("IMGTOOLS_CACHE", str(tmp_path / "cache"))
        path = fetch_official(recipe)
        assert path.read_bytes() == served["body"]
        assert path.parent == tmp_path / "cache"
        path.unlink()
        served["body"] = b"tampered"
        with pytest.raises(UserError, match="SHA-256"):
            fetch_official(recipe)
        assert not path.exists()
    finally:
        server.shutdown()


@pytest.mark.skipif(not (SHARED := SHARED_REFERENCE)
                    .is_dir(), reason="../shared/reference (fastai's CSVs) is not present")
@pytest.mark.parametrize("name,train,val", [("imagenette", 9469, 3925),
                                            ("imagewoof", 9025, 3929)])
def test_published_lists_reproduced_exactly(tmp_path, name, train, val):
    """A tree holding exactly the files fastai lists: the official build takes every one of
    them, in the published split, and the downloaded-list pin matches the published file."""
    from imgtools.checksums import sha256_file
    from imgtools.splits import read_official_csv

    csv_path = SHARED / f"noisy_{name}.csv"
    recipe = load_recipe(name)
    assert sha256_file(csv_path) == recipe.official.sha256
    rows = read_official_csv(csv_path)
    tiny = (tmp_path / "tiny.jpg")
    Image.new("RGB", (4, 4), (200, 10, 10)).save(tiny, quality=90)
    data = tiny.read_bytes()
    root = tmp_path / "ILSVRC" / "Data" / "CLS-LOC"
    (root / "val").mkdir(parents=True)
    solution = ["ImageId,PredictionString"]
    for r in rows:
        if r.filename.startswith("ILSVRC2012_val_"):
            (root / "val" / r.filename).write_bytes(data)
            solution.append(f"{r.filename[:-5]},{r.wnid} 1 1 2 2")
        else:
            d = root / "train" / r.wnid
            d.mkdir(parents=True, exist_ok=True)
            (d / r.filename).write_bytes(data)
    (tmp_path / "LOC_val_solution.csv").write_text("\n".join(solution) + "\n")
    plan = make_plan(recipe, open_source(tmp_path), split_mode="official", seed=0,
                     split_csvs=[csv_path])
    assert {s: len(v) for s, v in plan.items.items()} == {"train": train, "val": val}
    assert plan.split_sources[0]["is_published_list"]
    planned = {(it.split, it.wnid, it.out_name) for s in plan.items.values() for it in s}
    assert planned == {(r.split, r.wnid, r.filename) for r in rows}


# ---------------------------------------------------------------- sizes and pixels


def test_sizes_follow_the_tarball_rules(kaggle_tree, tmp_path):
    from imgtools.checksums import sha256_file

    report = do_build("imagenette", kaggle_tree.src, tmp_path, sizes=(None, 160, 320))
    full, r160, r320 = (Path(p) for p in report["outputs"])
    assert [p.name for p in (full, r160, r320)] == ["imagenette2", "imagenette2-160",
                                                      "imagenette2-320"]
    repaired = {Path(r["path"]).name for r in report["repaired"]}
    n_copied = 0
    for f in (full / "train").rglob("*.JPEG"):
        rel = f.relative_to(full)
        src = Path(open_source(kaggle_tree.src).path_of(
            "val" if f.name.startswith("ILSVRC") else "train", f.parent.name, f.name))
        with Image.open(src) as orig:
            w, h = orig.size
        for root, n in ((r160, 160), (r320, 320)):
            with Image.open(root / rel) as im:
                im.load()
            assert im.format == "JPEG" and im.mode == "RGB"
            if min(w, h) <= n:  # never upscale: the same bytes when nothing needed repair
                if f.name not in repaired:
                    assert (root / rel).read_bytes() == src.read_bytes()
                    n_copied += 1
                assert im.size == (w, h)
            else:
                short, long_ = (w, h) if w <= h else (h, w)
                expect_long = long_ * n // short
                assert im.size == ((n, expect_long) if w <= h else (expect_long, n))
        if f.name not in repaired:  # full size = original bytes
            assert f.read_bytes() == src.read_bytes()
    assert n_copied > 0
    for root in (full, r160, r320):  # each size's SHA256SUMS lists that size's files, right
        sums = dict(line.split("  ", 1)[::-1]
                    for line in (root / "SHA256SUMS").read_text().splitlines())
        assert set(sums) == {str(p.relative_to(root)) for p in root.rglob("*.JPEG")}
        assert all(sha256_file(root / rel) == digest for rel, digest in sums.items())


def test_bad_input_is_repaired_or_listed_never_fatal(kaggle_tree, tmp_path):
    report = do_build("imagenette", kaggle_tree.src, tmp_path, sizes=(160,))
    root = Path(report["outputs"][0])
    skipped = {Path(s["path"]).name: s["reason"] for s in report["skipped"]}
    repaired = {Path(r["path"]).name: r["what"] for r in report["repaired"]}
    q = {k: Path(v).name for k, v in kaggle_tree.quirks.items()}
    assert "CMYK" in repaired[q["cmyk"]]
    assert "PNG" in repaired[q["png_named_jpeg"]]
    assert "grayscale" in repaired[q["grayscale"]]
    assert "truncated" in skipped[q["truncated"]]
    assert "empty" in skipped[q["zero_byte"]]
    assert "not an image" in skipped[q["not_image"]]
    # nothing half-written, skipped files absent, repaired ones are RGB JPEGs
    assert not [p for p in root.rglob("*") if p.name.startswith(".tmp-")]
    built = {p.name: p for p in root.rglob("*.JPEG")}
    assert not set(skipped) & set(built)
    for name in repaired:
        with Image.open(built[name]) as im:
            assert (im.format, im.mode) == ("JPEG", "RGB")
    info = json.loads((root / "build-info.json").read_text())
    assert info["skipped"] == report["skipped"]
    assert sum(info["totals"].values()) == len(built)
    # which code made these pixels: the SIMD resizer wherever it is installed
    assert ("fast_image_resize" in info["resizer"]) == (resample.Resizer is not None)


def test_unreadable_files_are_listed(tmp_path):
    """chmod 000 where it bites (not as root), and a file whose read fails with an I/O error
    (a link to /proc/self/mem), which stops even root."""
    from imgtools.demo_tree import make_imagenet_tree

    tree = make_imagenet_tree(tmp_path / "t", wnids=WNIDS[:10], train_per_class=3,
                              val_per_class=1, quirks=False)
    folder = tree.src / "ILSVRC/Data/CLS-LOC/train" / WNIDS[0]
    io_error = folder / "n01440764_77777.JPEG"
    io_error.symlink_to("/proc/self/mem")
    locked = folder / tree.train_files[WNIDS[0]][0]
    os.chmod(locked, 0)
    try:
        report = do_build("imagenette", tree.src, tmp_path / "o")
    finally:
        os.chmod(locked, 0o644)
    skipped = {Path(s["path"]).name: s["reason"] for s in report["skipped"]}
    assert skipped[io_error.name].startswith("unreadable")
    if os.geteuid() != 0:
        assert "permission denied" in skipped[locked.name]
    else:
        assert locked.name not in skipped  # root can read it: it is built normally


def test_same_input_and_seed_give_identical_bytes(kaggle_tree, tmp_path):
    a = do_build("imagewang", kaggle_tree.src, tmp_path / "a", sizes=(160,), n_jobs=2)
    b = do_build("imagewang", kaggle_tree.src, tmp_path / "b", sizes=(160,), n_jobs=1,
                 shard_size=7)
    da, db = (tree_digest(Path(r["outputs"][0])) for r in (a, b))
    assert da == db


def test_existing_output_needs_resume_or_overwrite(kaggle_tree, tmp_path):
    do_build("imagenette", kaggle_tree.src, tmp_path)
    with pytest.raises(UserError, match="already exists"):
        do_build("imagenette", kaggle_tree.src, tmp_path)
    do_build("imagenette", kaggle_tree.src, tmp_path, overwrite=True)
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "imagenette2-160").rglob("*")}
    again = do_build("imagenette", kaggle_tree.src, tmp_path, resume=True)
    assert again["nothing_to_do"]  # complete with the same settings and input
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "imagenette2-160").rglob("*")} == before
    with pytest.raises(UserError, match="complete.*quality: 90 then, 80 now"):
        do_build("imagenette", kaggle_tree.src, tmp_path, resume=True, quality=80)


def test_resume_after_kill_matches_uninterrupted_run(kaggle_tree, tmp_path):
    ref = do_build("imagewang", kaggle_tree.src, tmp_path / "ref", sizes=(None, 160, 320))
    args = [sys.executable, "-m", "imgtools.cli", "build", "imagewang", "--src",
            str(kaggle_tree.src), "--split", "random", "--size", "full", "--size", "160",
            "--size", "320", "--out", str(tmp_path / "run"), "-j", "1", "--shard-size", "2",
            "-q"]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # One run folder per set of outputs (see imgtools.pipeline.output).
    state = tmp_path / "run" / ".imgtools-run-imagewang+imagewang-160+imagewang-320" / "markers"
    deadline = time.time() + 60
    while time.time() < deadline and len(list(state.glob("*-*.json"))) < 5:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = len(list(state.glob("*-*.json")))
    assert done_before >= 5, "the build finished before it could be killed"
    assert not (tmp_path / "run" / "imagewang-160" / "build-info.json").exists()
    resumed = run_cli(*args[3:], "--resume", "--json")
    report = json.loads(resumed.stdout)
    assert report["totals"] == ref["totals"]
    for a, b in zip(ref["outputs"], report["outputs"]):
        assert tree_digest(Path(a)) == tree_digest(Path(b))
    assert not state.parent.exists()


# ---------------------------------------------------------------- CLI and recipes


def test_custom_recipe_file(kaggle_tree, tmp_path):
    recipe = tmp_path / "dogs-vs-fish.toml"
    recipe.write_text(
        'name = "dogs-vs-fish"\n'
        'pool = ["train", "val"]\n'
        'classes = [{ wnid = "n01440764", name = "fish" }, "n02086240"]\n'
        "[random]\nvalid_pct = 0.5\n")
    proc = run_cli("build", recipe, "--src", kaggle_tree.src, "--size", "64", "--out",
                   tmp_path / "o", "--json")
    report = json.loads(proc.stdout)
    assert report["classes"] == [{"wnid": "n01440764", "name": "fish"},
                                 {"wnid": "n02086240", "name": "Shih-Tzu"}]
    root = tmp_path / "o" / "dogs-vs-fish-64"
    assert sorted(p.name for p in (root / "val").iterdir()) == ["n01440764", "n02086240"]
    meta = json.loads((root / "imgtools-dataset.json").read_text())
    assert meta["classes"][0]["name"] == "fish"


def test_bad_recipe_and_unknown_dataset_errors(kaggle_tree, tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("name = [unclosed\n")
    proc = run_cli("build", bad, "--src", kaggle_tree.src, check=False)
    assert proc.returncode == 2 and "not valid TOML" in proc.stderr
    proc = run_cli("build", "imagenotte", "--src", kaggle_tree.src, check=False)
    assert proc.returncode == 2 and "imagenette" in proc.stderr  # lists the built-in ones
    proc = run_cli("build", "imagenette", "--src", kaggle_tree.src, "--size", "big",
                   check=False)
    assert proc.returncode == 2 and "full" in proc.stderr


def test_strict_exit_code_and_json_report(kaggle_tree, tmp_path):
    proc = run_cli("build", "imagenette", "--src", kaggle_tree.src, "--split", "random",
                   "--out", tmp_path, "--strict", "--json", check=False)
    assert proc.returncode == 1  # the tree has broken files, which --strict refuses
    report = json.loads(proc.stdout)
    assert report["skipped"] and report["images_per_second"] > 0


def test_help_explains():
    proc = run_cli("build", "--help")
    for word in ("--split-csv", "--resume", "--exact", "imagewang", "Kaggle"):
        assert word in proc.stdout


def test_demo_runs_end_to_end(tmp_path):
    proc = run_cli("demo", "--out", tmp_path / "demo", "--train-per-class", "6",
                   "--val-per-class", "2", "-q")
    assert "imagewang-160" in proc.stdout
    root = tmp_path / "demo" / "imagewang-160"
    assert {p.name for p in root.iterdir()} >= {"train", "val", "unsup", "build-info.json",
                                                 "noisy_imagewang.csv"}


def test_verify_agrees_with_an_imagewang_build(kaggle_tree, tmp_path):
    """The build's own report must satisfy `imgtools verify` (unsup counted, not by class)."""
    report = do_build("imagewang", kaggle_tree.src, tmp_path, sizes=(160,))
    root = Path(report["outputs"][0])
    assert "unsup" not in report["counts"] and report["totals"]["unsup"] > 0
    proc = run_cli("verify", root, "-q", "--json", check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
