"""Shared fixtures: small generated ImageNet trees, one per layout (session-scoped: made once),
and real Dask clusters on 127.0.0.1 for tests/executors."""

from __future__ import annotations

import csv
import hashlib
import io
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from imgtools.build import BuildOptions, build
from imgtools.demo_tree import IMAGENETTE_WNIDS, IMAGEWOOF_WNIDS, make_imagenet_tree
from imgtools.formats.folder import CLASS_FILES
from imgtools.pipeline.output import INPUTS_COPY, MANIFEST, run_folder
from imgtools.plan import make_plan
from imgtools.recipes import load_recipe
from imgtools.records import ClassInfo, DatasetInfo
from imgtools.sources import open_source

REPO = Path(__file__).resolve().parent.parent
SHARED_REFERENCE = REPO.parent / "shared" / "reference"
WNIDS = list(IMAGENETTE_WNIDS + IMAGEWOOF_WNIDS)
RUN_RECORD = frozenset({"build-info.json", MANIFEST, INPUTS_COPY})
"""Files that record a run rather than hold data: the report (times, the command) and the
manifest and input list of the output protocol (the input's paths and mtimes)."""


def psnr(a, b) -> float:
    """PSNR in dB between two images or arrays of 0-255 values (inf when identical)."""
    x = np.asarray(a, dtype=np.float64)
    y = np.asarray(b, dtype=np.float64)
    mse = float(np.mean((x - y) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)


@pytest.fixture(scope="session")
def trees(tmp_path_factory) -> dict:
    """The same images in all three layouts (same seed), Imagenette + Imagewoof classes."""
    out = {}
    for layout in ("kaggle", "devkit", "valprep"):
        root = tmp_path_factory.mktemp(f"tree-{layout}")
        out[layout] = make_imagenet_tree(root / "imagenet", layout=layout, wnids=WNIDS,
                                         train_per_class=10, val_per_class=4, seed=0)
    return out


@pytest.fixture(scope="session")
def kaggle_tree(trees):
    return trees["kaggle"]


def run_cli(*args: str, cwd: Path | None = None, env: dict | None = None,
            check: bool = True) -> subprocess.CompletedProcess:
    """Run ``imgtools`` as a user would (a real process: exit codes, stderr)."""
    proc = subprocess.run([sys.executable, "-m", "imgtools.cli", *map(str, args)], cwd=cwd,
                          env=env, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"imgtools {' '.join(map(str, args))} exited {proc.returncode}:\n"
                             f"{proc.stdout}\n{proc.stderr}")
    return proc


def built_with_undecodable_name(src: Path, work: Path) -> Path:
    """A 64 px Imagenette folder built from ``src`` under ``work``, with a copy of one image
    under a name that is not UTF-8 (``train/n01440764/bad\\xffbyte.JPEG``)."""
    run_cli("build", "imagenette", "--src", src, "--out", work / "out", "--split",
            "random", "--size", "64", "-q", "-j", "1")
    ds = work / "out" / "imagenette2-64"
    folder = os.fsencode(ds / "train" / "n01440764")
    shutil.copy(os.path.join(folder, sorted(os.listdir(folder))[0]),
                os.path.join(folder, b"bad\xffbyte.JPEG"))
    return ds


def staging_of(output: Path) -> Path:
    """Where an unfinished run writes ``output`` (see :mod:`imgtools.pipeline.output`)."""
    return run_folder([output]) / output.name


# ---------------------------------------------------------------- sources (tests/sources)
# The demo tree packed into every form a user may hold ImageNet in (docs/sources.md), and a
# build helper; the tests build from each and compare with the build from the tree.

SMALL = ((120, 90), (320, 240))


@pytest.fixture
def own_cache(tmp_path, monkeypatch):
    """An empty index cache for the test (never the user's): tests/sources use it."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("IMGTOOLS_CACHE_DIR", raising=False)


@pytest.fixture(scope="session")
def demo(tmp_path_factory):
    """An Imagenette-classed tree in the devkit layout, quirks planted (an unreadable file,
    which no archive could hold, removed)."""
    root = tmp_path_factory.mktemp("sources-tree") / "imagenet"
    tree = make_imagenet_tree(root, layout="devkit", wnids=IMAGENETTE_WNIDS, train_per_class=8,
                              val_per_class=3, seed=3, size_range=SMALL, test_images=0)
    unreadable = tree.quirks.pop("unreadable", None)
    if unreadable:
        path = tree.root / unreadable
        path.chmod(0o644)
        path.unlink()
        tree.train_files[path.parent.name].remove(path.name)
    return tree


@pytest.fixture(scope="session")
def archives(demo, tmp_path_factory):
    """The demo tree as the image-net.org archive trio."""
    return pack_archives(demo, tmp_path_factory.mktemp("archives"))


@pytest.fixture(scope="session")
def kaggle_zip(demo, tmp_path_factory):
    """The demo tree as the Kaggle download."""
    return pack_kaggle_zip(demo, tmp_path_factory.mktemp("kaggle") / "download" /
                           "imagenet-object-localization-challenge.zip")


def official_csv(tree, path: Path) -> Path:
    """A small fastai-style membership list over the tree: most train files to train, two
    per class to val, and every val file to val; one train file per class left out."""
    lines = ["path,noisy_labels_0,noisy_labels_1,noisy_labels_5,noisy_labels_25,"
             "noisy_labels_50,is_valid"]
    for wnid in tree.wnids:
        names = sorted(n for n in tree.train_files[wnid] if n.startswith(wnid))
        for i, name in enumerate(names[:-1]):
            split = "val" if i < 2 else "train"
            lines.append(f"{split}/{wnid}/{name},{wnid},{wnid},{wnid},{wnid},{wnid},"
                         f"{split == 'val'}")
        for name in tree.val_files[wnid]:
            lines.append(f"val/{wnid}/{name},{wnid},{wnid},{wnid},{wnid},{wnid},True")
    path.write_text("\n".join(lines) + "\n")
    return path


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), 1_300_000_000, 0o644
    tar.addfile(info, io.BytesIO(data))


def inner_tar(folder: Path) -> bytes:
    """One class's tar, as in ILSVRC2012_img_train.tar: ``<wnid>_N.JPEG`` at its top."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for f in sorted(folder.iterdir()):
            _add(tar, f.name, f.read_bytes())
    return buf.getvalue()


def pack_archives(tree, out: Path, inner=inner_tar) -> Path:
    """The image-net.org trio: a tar of per-class tars, the flat val tar, the devkit .tar.gz."""
    out.mkdir(parents=True, exist_ok=True)
    with tarfile.open(out / "ILSVRC2012_img_train.tar", "w", format=tarfile.GNU_FORMAT) as tar:
        for folder in sorted((tree.root / "train").iterdir()):
            _add(tar, f"{folder.name}.tar", inner(folder))
    with tarfile.open(out / "ILSVRC2012_img_val.tar", "w", format=tarfile.GNU_FORMAT) as tar:
        for f in sorted((tree.root / "val").iterdir()):
            _add(tar, f.name, f.read_bytes())
    with tarfile.open(out / "ILSVRC2012_devkit_t12.tar.gz", "w:gz") as tar:
        for f in sorted((tree.root / "ILSVRC2012_devkit_t12").rglob("*")):
            if f.is_file():
                _add(tar, str(f.relative_to(tree.root)), f.read_bytes())
    return out


def pack_kaggle_zip(tree, path: Path) -> Path:
    """imagenet-object-localization-challenge.zip: ILSVRC/Data/CLS-LOC/{train,val} and the
    LOC_*.{txt,csv} files at its top (val labels from the tree's ground truth)."""
    from imgtools.demo_classmaps import write_kaggle_meta

    meta = path.parent / "kaggle-meta"
    meta.mkdir(parents=True, exist_ok=True)
    order = sorted(tree.val_label_of().items())
    write_kaggle_meta(meta, [wnid for _, wnid in order])
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for name in ("LOC_synset_mapping.txt", "LOC_val_solution.csv"):
            z.write(meta / name, name)
        for f in sorted((tree.root / "train").rglob("*")):
            if f.is_file():
                z.write(f, f"ILSVRC/Data/CLS-LOC/train/{f.relative_to(tree.root / 'train')}")
        for f in sorted((tree.root / "val").iterdir()):
            z.write(f, f"ILSVRC/Data/CLS-LOC/val/{f.name}")
    return path


def build_digest(recipe: str, src: Path, out: Path, split: str = "random", **kw) -> tuple:
    """Build and return (report, {relative path: sha256}) of every output file except
    build-info.json, which names the source."""
    plan = make_plan(load_recipe(recipe), open_source(src), split_mode=split, seed=0,
                     split_csvs=kw.pop("split_csvs", None))
    opts = BuildOptions(out=out, sizes=list(kw.pop("sizes", (64,))), quiet=True,
                        n_jobs=kw.pop("n_jobs", 1), shard_size=kw.pop("shard_size", 16), **kw)
    report = build(plan, opts, command="test")
    digests = {}
    for root in map(Path, report["outputs"]):
        for p in sorted(root.rglob("*")):
            if p.is_file() and p.name not in RUN_RECORD:
                digests[str(p.relative_to(out))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return report, digests


@pytest.fixture
def helpers():
    """The packers and the build helper, as one fixture for the tests/sources modules."""
    class H:
        pass

    h = H()
    h.official_csv, h.pack_archives, h.pack_kaggle_zip = official_csv, pack_archives, \
        pack_kaggle_zip
    h.inner_tar, h.build_digest, h.add = inner_tar, build_digest, _add
    return h


def build_dataset(recipe: str, src: Path, out: Path, *, sizes=(160,), split: str = "random",
                  seed: int = 0, n_jobs: int = 2, **opts) -> dict:
    """``imgtools build`` through the Python API (quiet); ``opts`` go to ``BuildOptions``
    (``fmt``, ``shard_size``, ``format_options``...). Returns the build report."""
    plan = make_plan(load_recipe(recipe), open_source(src), split_mode=split, seed=seed)
    return build(plan, BuildOptions(out=out, sizes=list(sizes), quiet=True, n_jobs=n_jobs,
                                    **opts), command="test")


def clients_python(module: str) -> str:
    """A Python that can import ``module``: IMGTOOLS_CLIENTS_PYTHON (CI installs TensorFlow,
    TFDS, torch, wids and mlcroissant there, apart from the project's process) or this one;
    skip if neither has it."""
    python = os.environ.get("IMGTOOLS_CLIENTS_PYTHON", sys.executable)
    if subprocess.run([python, "-c", f"import {module}"], capture_output=True).returncode:
        pytest.skip(f"{module} is not installed (set IMGTOOLS_CLIENTS_PYTHON to a Python that "
                    "has it; .ci/run does)")
    return python


# --------------------------------------------------------------------------- a real Dask cluster
# For tests/executors: ``dask scheduler`` and ``dask worker`` processes started from this venv's
# bin (the executables a user runs) on 127.0.0.1, one thread and a small memory limit each, so
# two of them fit CI's 2 cores.

DASK_BIN = Path(sys.executable).parent
CLUSTER_START_TIMEOUT = 90.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def dask_exe() -> str:
    pytest.importorskip("distributed", reason="pip install -e '.[test,dask]' for the cluster tests")
    exe = DASK_BIN / "dask"
    if not exe.exists():
        found = shutil.which("dask")
        if not found:
            pytest.skip("the `dask` command is not installed (pip install 'imgtools[dask]')")
        return found
    return str(exe)


class Cluster:
    """One scheduler and ``workers`` workers; ``wrap`` prefixes the worker command (e.g. to
    run workers in a mount namespace of their own); ``nanny`` runs them under a nanny (then
    ``workers[i]`` is the nanny's process) with ``memory`` as their limit;
    ``scheduler_env``/``worker_env`` add environment variables (Dask settings, PYTHONPATH).
    Logs go to ``logs/``."""

    def __init__(self, root: Path, workers: int = 2, wrap: list[str] | None = None, *,
                 nanny: bool = False, memory: str = "600MB",
                 scheduler_env: dict | None = None, worker_env: dict | None = None):
        self.root = root
        self.logs = root / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.address = f"tcp://127.0.0.1:{self.port}"
        self.wrap = wrap or []
        self.nanny = nanny
        self.memory = memory
        self.scheduler_env = scheduler_env or {}
        self.worker_env = worker_env or {}
        self.scheduler: subprocess.Popen | None = None
        self.workers: list[subprocess.Popen] = []
        self._start(workers)

    def _spawn(self, args: list[str], log: str, env: dict) -> subprocess.Popen:
        out = open(self.logs / log, "w")  # noqa: SIM115 - closed with the process
        env = dict(os.environ, PYTHONUNBUFFERED="1", **env)
        return subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env,
                                cwd=self.logs, start_new_session=True)

    def _start(self, workers: int) -> None:
        self.scheduler = self._spawn([dask_exe(), "scheduler", "--host", "127.0.0.1", "--port",
                                      str(self.port), "--no-dashboard"], "scheduler.log",
                                     self.scheduler_env)
        self._wait_for("scheduler.log", "Scheduler at")
        for i in range(workers):
            self.add_worker(i)
        for i in range(workers):
            self._wait_for(f"worker-{i}.log", "Registered to")

    def add_worker(self, i: int, env: dict | None = None) -> None:
        # --no-nanny (unless ``nanny``): the process a test kills is the worker itself, not a
        # nanny that would restart it; one thread and 600 MB, as on a small cluster node. With
        # a nanny (what `dask worker` runs by default), a worker over 95% of its memory limit
        # is killed and restarted by it.
        self.workers.append(self._spawn(
            [*self.wrap, dask_exe(), "worker", self.address, "--nthreads", "1",
             "--nanny" if self.nanny else "--no-nanny", "--memory-limit", self.memory,
             "--no-dashboard", "--name", f"w{i}"],
            f"worker-{i}.log", self.worker_env if env is None else env))

    def start_worker(self, env: dict | None = None) -> None:
        """One more worker (``env``: its environment variables, instead of the cluster's),
        registered when this returns."""
        i = len(self.workers)
        self.add_worker(i, env)
        self._wait_for(f"worker-{i}.log", "Registered to")

    def _wait_for(self, log: str, text: str) -> None:
        deadline = time.monotonic() + CLUSTER_START_TIMEOUT
        path = self.logs / log
        while time.monotonic() < deadline:
            if path.is_file() and text in path.read_text(errors="replace"):
                return
            time.sleep(0.2)
        raise AssertionError(f"{log} never said {text!r}:\n{path.read_text(errors='replace')}")

    def kill_worker(self, i: int) -> None:
        self.workers[i].send_signal(signal.SIGKILL)
        self.workers[i].wait()

    def kill_scheduler(self) -> None:
        assert self.scheduler is not None
        self.scheduler.send_signal(signal.SIGKILL)
        self.scheduler.wait()

    def stop(self) -> None:
        for proc in [*self.workers, self.scheduler]:
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in [*self.workers, self.scheduler]:
            if proc is None:
                continue
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.fixture
def make_cluster(tmp_path):
    """Start clusters on demand (``make_cluster(workers=2)``); all stopped at the end."""
    started: list[Cluster] = []

    def make(workers: int = 2, wrap: list[str] | None = None, **options) -> Cluster:
        cluster = Cluster(tmp_path / f"cluster-{len(started)}", workers, wrap, **options)
        started.append(cluster)
        return cluster

    yield make
    for cluster in started:
        cluster.stop()


@pytest.fixture
def free_address() -> str:
    """A scheduler address nobody listens on."""
    return f"tcp://127.0.0.1:{free_port()}"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A two-worker cluster shared by the tests of one module that do not kill it."""
    c = Cluster(tmp_path_factory.mktemp("cluster"), workers=2)
    yield c
    c.stop()


@pytest.fixture(scope="session")
def small_tree(tmp_path_factory) -> Path:
    """A tiny clean valprep tree (Imagenette's classes, 3 train + 2 val images each, no quirks)
    for tests that plant one fault in a copy of it (copy with shutil.copytree first)."""
    root = tmp_path_factory.mktemp("small-tree") / "imagenet"
    make_imagenet_tree(root, layout="valprep", train_per_class=3, val_per_class=2,
                       quirks=False, seed=0)
    return root


# --------------------------------------------------------------- builds (shared by tests)

def tree_digest(root: Path) -> dict[str, str]:
    """Relative path -> sha256 of every data file under ``root`` (the run's record excluded:
    the report, and the manifest that names the run's input files)."""
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file() and p.name not in RUN_RECORD:
            out[str(p.relative_to(root))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def do_build(recipe: str, src: Path, out: Path, *, sizes=(160,), split="random", seed=0,
             **kw) -> dict:
    plan = make_plan(load_recipe(recipe), open_source(src), split_mode=split, seed=seed,
                     split_csvs=kw.pop("split_csvs", None),
                     allow_missing=kw.pop("allow_missing", False),
                     valid_pct=kw.pop("valid_pct", None))
    opts = BuildOptions(out=out, sizes=list(sizes), quiet=True, n_jobs=kw.pop("n_jobs", 2), **kw)
    return build(plan, opts, command="test")


IMAGEWOOF = [c.wnid for c in load_recipe("imagewoof").classes]


def write_official_csv(path: Path, rows: list[tuple[str, str, str]]) -> None:
    """rows: (split, wnid, filename) in fastai's CSV format."""
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "noisy_labels_0", "noisy_labels_1", "noisy_labels_5",
                    "noisy_labels_25", "noisy_labels_50", "is_valid"])
        for split, wnid, name in rows:
            w.writerow([f"{split}/{wnid}/{name}", wnid, wnid, wnid, wnid, WNIDS[0],
                        str(split == "val")])


def official_rows(tree, classes) -> list[tuple[str, str, str]]:
    """An official-style list: each class's val images and every 3rd train image -> val."""
    rows = []
    broken = {Path(p).name for p in tree.quirks.values()}
    for wnid in classes:
        for i, name in enumerate(tree.train_files[wnid]):
            if name not in broken:
                rows.append(("val" if i % 3 == 0 else "train", wnid, name))
        rows += [("train", wnid, n) for n in tree.val_files[wnid]]
    return rows


# --------------------------------------------------------------- a small folder dataset

FOLDER_WNIDS = ("n01440764", "n02102040", "n02979186")


def random_jpeg(rng: np.random.Generator, w: int, h: int, mode: str = "RGB") -> bytes:
    pixels = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).convert(mode).save(buf, "JPEG", quality=85)
    return buf.getvalue()


def make_folder(root: Path, per_class: int = 4, seed: int = 0) -> Path:
    """A small imgtools-style folder dataset: 3 classes, train/val/unsup, a grayscale JPEG and a
    PNG named .JPEG (as ImageNet has), with the class-list sidecar."""
    rng = np.random.default_rng(seed)
    for split, n in (("train", per_class), ("val", max(1, per_class // 2))):
        for c, wnid in enumerate(FOLDER_WNIDS):
            d = root / split / wnid
            d.mkdir(parents=True)
            for i in range(n):
                name = f"{wnid}_{split}{i}.JPEG" if split == "train" else \
                    f"ILSVRC2012_val_{c * 100 + i:08d}.JPEG"
                (d / name).write_bytes(random_jpeg(rng, 40 + 7 * i, 32 + 5 * c,
                                             "L" if i == 1 else "RGB"))
    png = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (20, 24, 3), dtype=np.uint8)).save(png, "PNG")
    (root / "train" / FOLDER_WNIDS[0] / "n01440764_png.JPEG").write_bytes(png.getvalue())
    (root / "unsup").mkdir()
    for i in range(3):
        (root / "unsup" / f"n02086240_{i}.JPEG").write_bytes(random_jpeg(rng, 30, 30))
    DatasetInfo("tiny", [ClassInfo(w, f"class {w}") for w in FOLDER_WNIDS]).save(root)
    return root


def tree(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` (relative path -> bytes), metadata excluded (the sidecar,
    the folder format's class lists, SHA256SUMS and the run record:
    tests/formats/test_contract.py checks SHA256SUMS)."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.name not in ("imgtools-dataset.json", "SHA256SUMS", *CLASS_FILES)
            and p.name not in RUN_RECORD}


def fail_webdataset_write(monkeypatch, at: int):
    """Make the ``at``-th WebDataset record write raise OSError("disk full"), as a full disk
    would mid-run; returns the function that puts the real writer back."""
    from imgtools.formats import webdataset as wds

    real_write = wds.WebDatasetShardWriter.write
    calls = {"n": 0}

    def flaky(self, record):
        calls["n"] += 1
        if calls["n"] == at:
            raise OSError("disk full")
        real_write(self, record)

    monkeypatch.setattr(wds.WebDatasetShardWriter, "write", flaky)
    return lambda: monkeypatch.setattr(wds.WebDatasetShardWriter, "write", real_write)


# --------------------------------------------------------------- Hub helpers

REPO_ID = "tester/imagenette"


def build_sample(out: Path, dataset: str = "imagenette", sizes=(64, 32), train=6, val=3) -> Path:
    """Build ``dataset`` at ``sizes`` from a generated tree into ``out`` (as `imgtools demo`)."""
    from imgtools.build import BuildOptions, build
    from imgtools.demo_tree import IMAGENETTE_WNIDS, IMAGEWOOF_WNIDS, make_imagenet_tree
    from imgtools.plan import make_plan
    from imgtools.recipes import load_recipe
    from imgtools.sources import open_source

    wnids = list(IMAGENETTE_WNIDS + (IMAGEWOOF_WNIDS if dataset == "imagewang" else ()))
    tree = make_imagenet_tree(out / "imagenet", wnids=wnids, train_per_class=train,
                              val_per_class=val, seed=0)
    plan = make_plan(load_recipe(dataset), open_source(tree.src), split_mode="random", seed=0)
    build(plan, BuildOptions(out=out, sizes=list(sizes), n_jobs=1, overwrite=True, quiet=True),
          command=f"imgtools build {dataset} --src {tree.src} --split random --out {out}")
    shutil.rmtree(out / "imagenet")
    return out


def push(src, tmp_path, **kw) -> dict:
    from imgtools.hub import push_hub

    kw.setdefault("staging_dir", tmp_path / "staging")
    return push_hub(src, kw.pop("repo_id", REPO_ID), n_jobs=1, quiet=True, **kw)
