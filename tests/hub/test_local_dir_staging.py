"""A killed ``push-hub --local-dir`` (kill -9: no cleanup runs) must not leave a copy of the
dataset in the temp folder each time: its staging has a fixed place per repository that the
next run resumes and removes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from conftest import run_cli

HOOK = '''
import os, time
import imgtools.hub.push as push
def stop_here(*args, **kwargs):  # after staging, before the tree is written
    open(os.environ["STAGED_FLAG"], "w").close()
    time.sleep(600)
push.write_tree = stop_here
'''


def test_killed_local_dir_run_leaves_nothing_in_tmp(small_tree, tmp_path):
    run_cli("build", "imagenette", "--src", small_tree, "--out", tmp_path / "out", "--split",
            "random", "--size", "64", "-q", "-j", "1")
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(HOOK)
    temp, cache, flag = tmp_path / "temp", tmp_path / "cache", tmp_path / "staged"
    temp.mkdir()
    env = dict(os.environ, TMPDIR=str(temp), XDG_CACHE_HOME=str(cache),
               STAGED_FLAG=str(flag), PYTHONPATH=str(hook))
    args = ["push-hub", str(tmp_path / "out" / "imagenette2-64"), "alice/nette",
            "--local-dir", str(tmp_path / "repo"), "-q", "-j", "1"]
    proc = subprocess.Popen([sys.executable, "-m", "imgtools.cli", *args], env=env,
                            start_new_session=True)
    try:
        for _ in range(1200):  # wait for the hook's flag (the run is inside it), at most 2 min
            if flag.exists() or proc.poll() is not None:
                break
            time.sleep(0.1)
        assert flag.exists(), "the run did not reach the end of staging"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert [p.name for p in temp.iterdir()] == []
    staged = list((cache / "imgtools" / "push-hub").iterdir())
    assert [p.name for p in staged] == ["alice--nette--local-dir"]
    env.pop("PYTHONPATH")
    done = subprocess.run([sys.executable, "-m", "imgtools.cli", *args], env=env,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "repo" / "README.md").is_file()
    assert not (cache / "imgtools" / "push-hub" / "alice--nette--local-dir").exists()
    assert [p.name for p in temp.iterdir()] == []
