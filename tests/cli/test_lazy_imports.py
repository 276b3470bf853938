"""Each command's module imports the pipeline only when the command runs: its imports of
imgtools modules inside functions say they are lazy so that `imgtools CMD --help` and a bad
argument answer at once. This holds them to it (and so to the import-cycle rule's exception)."""

from __future__ import annotations

import subprocess
import sys

import pytest

HEAVY = ("imgtools.executors.local", "tqdm")
"""Imported by every pipeline (the executor, the progress bar), never by a command's options."""


@pytest.mark.parametrize("module", ["build", "convert", "demo", "hub", "inspect"])
def test_a_command_module_does_not_import_the_pipeline(module):
    probe = (f"import sys, imgtools.commands.{module}; "
             f"print(' '.join(m for m in {HEAVY!r} if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          check=True)
    assert done.stdout.strip() == "", f"imgtools.commands.{module} imports {done.stdout}"
