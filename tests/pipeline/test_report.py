"""build-info.json has the same keys whichever command and format wrote it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from imgtools.build import BuildOptions, build
from imgtools.convert import convert
from imgtools.pipeline.report import BUILD_INFO, REPORT_KEYS, run_report
from imgtools.plan import make_plan
from imgtools.recipes import load_recipe
from imgtools.sources import open_source


def _report(path: Path) -> dict:
    return json.loads((path / BUILD_INFO).read_text())


def test_every_command_and_format_writes_the_same_keys(kaggle_tree, tmp_path):
    plan = make_plan(load_recipe("imagenette"), open_source(kaggle_tree.src),
                     split_mode="random", seed=0)
    outputs = []
    for fmt, size in (("folder", 48), ("tfrecord", 48), ("pickle", 8)):
        opts = BuildOptions(out=tmp_path / fmt, sizes=[size], fmt=fmt, quiet=True, n_jobs=1,
                            format_options={"batches": 2} if fmt == "pickle" else {})
        outputs += [Path(p) for p in build(plan, opts, command="test")["outputs"]]
    convert(outputs[0], tmp_path / "pq", "parquet", quiet=True, n_jobs=1)
    outputs.append(tmp_path / "pq")
    reports = [_report(p) for p in outputs]
    for report in reports:
        assert tuple(report) == REPORT_KEYS
    assert [r["kind"] for r in reports] == ["build", "build", "build", "convert"]
    assert all(r["classes"] and r["totals"] for r in reports)
    assert reports[3]["from"] == "folder" and reports[3]["to"] == "parquet"


def test_an_unknown_report_key_is_refused():
    with pytest.raises(TypeError, match="sizez"):
        run_report(sizez=3)
