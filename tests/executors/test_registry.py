"""The executor registry and the CLI options, without a cluster: names, the missing scheduler,
and that the default local executor maps (order-free and ordered)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from imgtools.errors import UserError
from imgtools.executors.base import EXECUTOR_NAMES, executor_class, open_executor


def test_registry_names_and_unknown_name():
    assert EXECUTOR_NAMES == ("local", "dask")
    assert executor_class("local").remote is False
    with pytest.raises(UserError, match="(?s)unknown executor 'ray'.*local, dask"):
        open_executor("ray")


@pytest.mark.parametrize("jobs", [1, 2])
def test_local_executor_maps(jobs):
    with open_executor("local", n_jobs=jobs) as ex:
        pairs = sorted(ex.map_unordered(abs, [-3, -1, -2]))
        assert pairs == [(-3, 3), (-2, 2), (-1, 1)]
        assert list(ex.map(abs, range(-5, 0))) == [5, 4, 3, 2, 1]
        assert ex.call(max, 1, 7, 3) == 7


def test_dask_without_a_scheduler_is_a_clear_error(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "IMGTOOLS_SCHEDULER"}
    proc = subprocess.run([sys.executable, "-m", "imgtools.cli", "stats", str(tmp_path),
                           "--executor", "dask"], capture_output=True, text=True, env=env)
    assert proc.returncode == 2, proc.stderr
    assert "--executor dask needs the address of a Dask scheduler" in proc.stderr
    assert "IMGTOOLS_SCHEDULER" in proc.stderr


@pytest.mark.parametrize("command", ["build", "convert", "verify", "stats"])
def test_commands_take_executor_and_scheduler(command):
    proc = subprocess.run([sys.executable, "-m", "imgtools.cli", command, "--help"],
                          capture_output=True, text=True, check=True)
    assert "--executor [local|dask]" in proc.stdout
    assert "--scheduler ADDRESS" in proc.stdout and "IMGTOOLS_SCHEDULER" in proc.stdout
