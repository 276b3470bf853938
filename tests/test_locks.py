"""The output lock: one run per output, released when the run ends or dies, and never kept
alive by a process the run forked (the local executor's workers)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time

import pytest

from imgtools.errors import UserError
from imgtools.locks import exclusive, lock_path

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="no flock on Windows")


def test_a_second_holder_is_refused_and_the_lock_is_free_after(tmp_path):
    out = tmp_path / "out"
    with exclusive([out]):
        assert lock_path(out).exists()
        with pytest.raises(UserError, match="another imgtools process is writing"), \
                exclusive([out]):
            pass
    assert not lock_path(out).exists()
    with exclusive([out]):
        pass


def test_a_forked_child_does_not_keep_the_lock_of_a_killed_parent(tmp_path):
    """The parent dies by kill -9 (no unwinding, the lock file stays) while a child it forked
    under the lock still runs: the next run must get the lock at once."""
    out = tmp_path / "out"
    started = tmp_path / "child-started"
    proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent("""
        import os, signal, sys, time
        from pathlib import Path
        from imgtools.locks import exclusive

        out, started = Path(sys.argv[1]), Path(sys.argv[2])
        with exclusive([out]):
            if os.fork() == 0:
                started.write_text(str(os.getpid()))
                time.sleep(30)
                os._exit(0)
            while not started.exists():
                time.sleep(0.01)
            os.kill(os.getpid(), signal.SIGKILL)
    """), str(out), str(started)])
    proc.wait(timeout=60)
    child = int(started.read_text())
    try:
        assert lock_path(out).exists()  # left by the killed parent
        with exclusive([out]):
            pass
    finally:
        subprocess.run(["kill", "-9", str(child)], check=False)
        time.sleep(0.1)
