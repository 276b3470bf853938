"""The code base stays ruff clean (the project's lint config is in pyproject.toml)."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest
from conftest import REPO


def test_ruff_clean():
    ruff = shutil.which("ruff")
    if ruff is None:
        pytest.skip("ruff is not installed (pip install -e '.[test]' brings it)")
    proc = subprocess.run([ruff, "check", "--output-format", "concise", "imgtools", "tests",
                           "scripts"], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_cli_help_lists_every_command():
    proc = subprocess.run([sys.executable, "-m", "imgtools.cli", "--help"], capture_output=True,
                          text=True, check=True)
    for cmd in ("build", "demo", "convert", "push-hub", "info", "verify", "stats", "preview"):
        assert cmd in proc.stdout
