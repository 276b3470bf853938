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


def test_a_one_process_conversion_loads_neither_multiprocessing_nor_the_recipes(tmp_path):
    """What a ``-j 1`` conversion of a JPEG folder needs: not ``multiprocessing`` (tqdm's
    default lock would import it with the first bar, even a disabled one) nor the recipe
    machinery and its TOML parser (the folder reader needs only the class table)."""
    from imgtools.demo_tree import IMAGENETTE_WNIDS

    src = tmp_path / "in"
    for i, wnid in enumerate(IMAGENETTE_WNIDS[:2]):
        (src / "train" / wnid).mkdir(parents=True)
        (src / "train" / wnid / f"{wnid}_{i}.JPEG").write_bytes(b"\xff\xd8 not decoded \xff\xd9")
    probe = ("import sys, imgtools.cli\n"
             "try:\n"
             f"    imgtools.cli.main(['convert', {str(src)!r}, {str(tmp_path / 'out')!r}, "
             "'--to', 'tfrecord', '-j', '1'])\n"
             "except SystemExit as e:\n"
             "    assert not e.code, e.code\n"
             "print('loaded:', *(m for m in ('multiprocessing', 'imgtools.recipes', 'tomllib')"
             " if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "loaded:", done.stdout
    assert (tmp_path / "out" / "SHA256SUMS").is_file()
