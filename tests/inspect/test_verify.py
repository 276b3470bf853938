"""`imgtools verify` bugs found in review: GZIP TFRecords without `.gz`, one shard file given
alone, and unlabelled `test` splits."""

from __future__ import annotations

import gzip
import io
import subprocess
import tarfile
from pathlib import Path

import pytest
from conftest import build_sample, run_cli
from PIL import Image

from imgtools.convert import convert
from imgtools.inspect.verify import verify


@pytest.fixture(scope="module")
def ds(tmp_path_factory) -> Path:
    return build_sample(tmp_path_factory.mktemp("verify-review"), sizes=(32,)) / "imagenette2-32"


def cli(*args) -> subprocess.CompletedProcess:
    """Run imgtools as a user would; the tests check exit codes themselves."""
    return run_cli(*args, check=False)


def whats(report: dict) -> list[str]:
    return [p["what"] for p in report["problems"]]


# ----------------------------------------------------------- GZIP TFRecords named without .gz


def test_gzip_tfrecords_without_suffix_verify(ds, tmp_path):
    tf = tmp_path / "tf"
    convert(ds, tf, to="tfrecord", n_jobs=1, quiet=True, compression="gzip")
    gz = sorted(tf.glob("*.gz"))
    assert gz
    for path in gz:  # as TensorFlow's GZIP writer names them
        path.rename(path.with_suffix(""))
    (tf / "SHA256SUMS").unlink()  # TensorFlow writes none (ours names the renamed files)
    r = verify(tf, n_jobs=1)
    assert r["ok"], r["problems"]
    assert r["decoded"] == r["records"] > 0
    out = cli("verify", tf, "-q", "-j", "1")
    assert out.returncode == 0 and out.stdout.startswith("OK")


def test_gzip_tfrecord_without_suffix_crcs_still_checked(ds, tmp_path):
    tf = tmp_path / "tf"
    convert(ds, tf, to="tfrecord", n_jobs=1, quiet=True, compression="gzip")
    shard = sorted(tf.glob("*train*.gz"))[0]
    data = bytearray(gzip.decompress(shard.read_bytes()))
    data[-1] ^= 0xFF  # the data CRC of the last record, inside an intact GZIP stream
    shard.unlink()
    bare = shard.with_suffix("")
    bare.write_bytes(gzip.compress(bytes(data)))
    r = verify(tf, n_jobs=1)
    assert not r["ok"]
    crc = [p for p in r["problems"] if "CRC mismatch" in p["what"]]
    assert crc and all(p["path"] == str(bare) for p in crc)
    assert not any("length CRC" in w for w in whats(r))


# ------------------------------------------------------------------------ one shard file alone


@pytest.mark.parametrize("fmt", ["webdataset", "parquet", "tfrecord"])
def test_single_shard_file_is_not_held_to_whole_dataset_counts(ds, tmp_path, fmt):
    out = tmp_path / fmt
    convert(ds, out, to=fmt, n_jobs=1, quiet=True)
    whole = verify(out, n_jobs=1)
    assert whole["ok"]
    shard = next(p for p in sorted(out.rglob("*")) if p.name.startswith("val")
                 and p.suffix not in (".json", ".index"))
    r = verify(shard, n_jobs=1)
    assert r["ok"], r["problems"]
    assert whole["counts_compared"] and not whole["notes"]
    assert r["counts_compared"] is False
    assert any("not compared" in n for n in r["notes"])
    assert set(r["splits"]) == {"val"} and r["records"] == whole["splits"]["val"]
    run = cli("verify", shard, "-q", "-j", "1")
    assert run.returncode == 0, run.stdout
    assert "not compared" in cli("verify", shard, "-q", "-j", "1", "--json").stdout


def test_single_shard_file_still_reports_its_own_damage(ds, tmp_path):
    out = tmp_path / "wds"
    convert(ds, out, to="webdataset", n_jobs=1, quiet=True)
    shard = sorted(out.glob("data/val-*.tar"))[0]
    with tarfile.open(shard) as tar:
        jpg = next(m for m in tar if m.name.endswith((".jpg", ".jpeg", ".JPEG")))
    data = bytearray(shard.read_bytes())
    data[jpg.offset_data + 2:jpg.offset_data + jpg.size] = bytes(jpg.size - 2)  # SOI, then 0s
    shard.write_bytes(bytes(data))
    r = verify(shard, n_jobs=1)
    assert [p["what"].split(":")[0] for p in r["problems"]] == [
        "image does not decode", "sha256 differs from the one recorded at build time"]
    assert not r["ok"] and r["decoded"] == r["records"] - 1
    assert r["counts_compared"] is False


def test_single_shard_file_checks_only_its_own_checksum(ds, tmp_path):
    from imgtools.checksums import sha256_file

    out = tmp_path / "pq"
    convert(ds, out, to="parquet", n_jobs=1, quiet=True)
    train, val = sorted(out.glob("train-*.parquet"))[0], sorted(out.glob("val-*.parquet"))[0]
    (out / "SHA256SUMS").write_text(f"{'0' * 64}  {train.name}\n"  # as if train were damaged
                                    f"{sha256_file(val)}  {val.name}\n")
    r = verify(val, n_jobs=1)
    assert r["ok"], r["problems"]
    assert r["checksums_checked"] == 1
    whole = verify(out, n_jobs=1)
    assert [p["path"] for p in whole["problems"]] == [str(train)]


# ------------------------------------------------------------------- unlabelled test / unsup


def _jpeg(seed: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (20, 16), (seed * 37 % 256, seed * 91 % 256, seed * 13 % 256)).save(
        buf, "JPEG", quality=90)
    return buf.getvalue()


def _tar(path: Path, members: dict[str, bytes]) -> None:
    with tarfile.open(path, "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


@pytest.fixture()
def with_test_split(tmp_path) -> Path:
    """WebDataset tars as the Kaggle flowers layout converts: labelled train, unlabelled test
    (one of whose images is broken) and unsup."""
    root = tmp_path / "wds"
    root.mkdir()
    train = {}
    for i in range(4):
        train[f"tr{i}.jpg"], train[f"tr{i}.cls"] = _jpeg(i), str(i % 2).encode()
    _tar(root / "train-000000.tar", train)
    test = {f"te{i}.jpg": _jpeg(10 + i) for i in range(3)}
    test["te3.jpg"] = _jpeg(13)[:60]  # cut inside its header
    _tar(root / "test-000000.tar", test)
    _tar(root / "unsup-000000.tar", {f"un{i}.jpg": _jpeg(20 + i) for i in range(2)})
    return root


def test_unlabelled_test_and_unsup_records_are_fine_and_all_decoded(with_test_split):
    r = verify(with_test_split, n_jobs=1)
    assert r["splits"] == {"train": 4, "unsup": 2, "test": 4}
    assert not any("no label" in w for w in whats(r))
    # every image is decoded: only the broken test image is a problem
    assert r["decoded"] == 9
    assert [(p["key"], p["what"].split(":")[0]) for p in r["problems"]] == [
        ("te3", "image does not decode")]


def test_missing_label_in_train_is_reported_and_the_image_still_decoded(with_test_split):
    _tar(with_test_split / "train-000001.tar", {"nolabel.jpg": _jpeg(30)})
    r = verify(with_test_split, n_jobs=1)
    assert r["records"] == 11 and r["decoded"] == 10  # all but the broken test image
    problems = {p["key"]: p["what"] for p in r["problems"]}
    assert problems["nolabel"] == "no label in split 'train'"
    assert problems["te3"].startswith("image does not decode")
    assert len(problems) == 2
