"""info / verify / stats / preview on datasets built and converted by the real pipeline."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from conftest import build_sample, run_cli
from PIL import Image

from imgtools.convert import convert
from imgtools.errors import EXIT_PROBLEMS
from imgtools.inspect.info import describe
from imgtools.inspect.preview import preview
from imgtools.inspect.stats import channel_stats
from imgtools.inspect.verify import verify


@pytest.fixture(scope="module")
def ds(tmp_path_factory) -> Path:
    return build_sample(tmp_path_factory.mktemp("inspect"), sizes=(48,)) / "imagenette2-48"


def cli(*args) -> subprocess.CompletedProcess:
    """Run imgtools as a user would; the tests check exit codes themselves."""
    return run_cli(*args, check=False)


def test_info_counts_match_the_build(ds):
    build = json.loads((ds / "build-info.json").read_text())
    r = describe(ds, n_jobs=2)
    assert r["format"] == "folder" and r["name"] == "imagenette"
    assert r["splits"] == {"train": build["totals"]["train"], "val": build["totals"]["val"]}
    for c in r["classes"]:
        assert c["counts"]["train"] == build["counts"]["train"][c["wnid"]]
    sizes = r["image_sizes"]
    assert sizes["decoded_headers"] == r["total"] and min(sizes["width"]["min"],
                                                          sizes["height"]["min"]) <= 48
    assert r["bytes"]["images"] == sum(p.stat().st_size for p in ds.rglob("*.JPEG"))
    out = cli("info", ds, "--json", "-j", "1")
    assert out.returncode == 0 and json.loads(out.stdout)["splits"] == r["splits"]


def test_verify_finds_what_is_wrong(ds, tmp_path):
    assert verify(ds, n_jobs=1)["ok"]
    bad = tmp_path / "bad"
    shutil.copytree(ds, bad)
    victim = sorted((bad / "train").rglob("*.JPEG"))[0]
    victim.write_bytes(victim.read_bytes()[:200])  # truncated JPEG
    r = verify(bad, n_jobs=2)
    whats = {p["what"].split(":")[0] for p in r["problems"]}
    assert not r["ok"] and "image does not decode" in whats
    assert any("sha256 differs" in p["what"] and p["path"].endswith(victim.name)
               for p in r["problems"])
    out = cli("verify", bad, "-q")
    assert out.returncode == EXIT_PROBLEMS and victim.name in out.stdout
    ok = cli("verify", ds, "-q")
    assert ok.returncode == 0 and ok.stdout.startswith("OK")


def test_verify_checks_tfrecord_crcs(ds, tmp_path):
    tf = tmp_path / "tf"
    convert(ds, tf, to="tfrecord", n_jobs=1, quiet=True)
    assert verify(tf, n_jobs=1)["ok"]
    shard = sorted(tf.glob("*train*"))[0]
    data = bytearray(shard.read_bytes())
    data[-1] ^= 0xFF  # last byte: the data CRC of the last record
    shard.write_bytes(bytes(data))
    r = verify(tf, n_jobs=1)
    assert not r["ok"]
    assert any("CRC mismatch" in p["what"] and p["path"] == str(shard) for p in r["problems"])


def _reference_stats(root: Path) -> tuple[np.ndarray, np.ndarray]:
    pixels = [np.asarray(Image.open(io.BytesIO(p.read_bytes())).convert("RGB"),
                         dtype=np.float64).reshape(-1, 3) / 255
              for p in sorted((root / "train").rglob("*.JPEG"))]
    allpx = np.concatenate(pixels)
    return allpx.mean(axis=0), allpx.std(axis=0)


def test_stats_exact_and_independent_of_format_and_workers(ds, tmp_path):
    mean, std = _reference_stats(ds)
    one = channel_stats(ds, n_jobs=1)
    assert np.allclose(one["mean"], mean, atol=1e-6) and np.allclose(one["std"], std, atol=1e-6)
    assert channel_stats(ds, n_jobs=2) == one
    pq = tmp_path / "pq"
    convert(ds, pq, to="parquet", n_jobs=1, quiet=True, shard_records=7)
    other = channel_stats(pq, n_jobs=2)
    assert other["mean"] == one["mean"] and other["std"] == one["std"]
    val = channel_stats(ds, split="val", n_jobs=1)
    assert val["images"] == json.loads((ds / "build-info.json").read_text())["totals"]["val"]
    out = cli("stats", ds, "--json", "-q")
    assert json.loads(out.stdout)["mean"] == one["mean"]


def test_preview_pngs(ds, tmp_path):
    r = preview(ds, tmp_path, per_class=3, side=40, n_jobs=1)
    assert r["classes_shown"] == 10
    with Image.open(r["preview"]) as sheet:
        assert sheet.format == "PNG" and sheet.height == 10 * (40 + 4) + 4
        # each row's first thumbnail is a real image, not the grey placeholder
        tile = np.asarray(sheet.convert("RGB").crop((198, 4, 238, 44)), dtype=np.int16)
        assert tile.std() > 5
    with Image.open(r["histogram"]) as hist:
        assert hist.format == "PNG" and hist.height > 10 * 24
    out = cli("preview", ds, "--out", tmp_path / "cli", "--per-class", "2", "-q")
    assert out.returncode == 0 and (tmp_path / "cli" / "preview.png").is_file()


def test_not_a_dataset(tmp_path):
    (tmp_path / "x.txt").write_text("hi")
    out = cli("info", tmp_path)
    assert out.returncode == 2 and "not a dataset" in out.stderr
