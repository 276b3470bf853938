"""A JPEG folder holding a file whose name is not UTF-8: convert stops before writing with the
name shown escaped (it died with a traceback in the writer), info the same, verify reports it."""

from __future__ import annotations

from conftest import built_with_undecodable_name, run_cli


def test_convert_stops_naming_the_file(small_tree, tmp_path):
    ds = built_with_undecodable_name(small_tree, tmp_path)
    for to in ("parquet", "webdataset", "folder"):
        proc = run_cli("convert", ds, tmp_path / to, "--to", to, check=False)
        assert proc.returncode == 2, proc.stderr
        assert "Traceback" not in proc.stderr
        assert "n01440764/bad\\xffbyte.JPEG: file name is not valid UTF-8" in proc.stderr
        assert not (tmp_path / to).exists()
    assert run_cli("info", ds, check=False).returncode == 2
    verify = run_cli("verify", ds, "-q", check=False)
    assert verify.returncode == 1 and "bad\\xffbyte.JPEG" in verify.stdout
