#!/usr/bin/env python
"""Benchmark ``imgtools build`` against what users would pick instead, side by side in one run.

Contenders (issue 11, item 5), all on the same ImageNet-shaped tree of real photos
(``make_corpus_tree.py``), shortest side to ``--size`` unless said otherwise, JPEG q90:

* ``imgtools build`` (default ``--fast``; ``--exact``; and ``--format webdataset``,
  ``parquet`` and ``tfrecord`` to face the peers that write those);
* a plain Pillow loop in one process and in as many processes as imgtools uses (its output is
  compared byte for byte with ``build --exact``);
* fastai's ``resize_images`` (its ``max_size`` bounds the longest side: less work);
* img2dataset on a ``file://`` URL list, ``keep_ratio``, ``resize_only_if_bigger``, WebDataset
  and Parquet output;
* HF ``datasets``: ``load_dataset("imagefolder")``, a resize ``map``, ``to_parquet`` (the map
  returning PIL images, which ``datasets`` stores as PNG; and returning JPEG bytes);
* the ``tfrecord`` package's writer loop, one shard per process;
* the decode-only floor: every source JPEG fully decoded once, in as many processes. Its CPU
  time divided by the cores is the wall time no tool that decodes every photo can beat.

Each peer lives in its own venv, made here under ``<workdir>/venvs`` with pip's cache in
``<workdir>/pip-cache``; a peer that cannot be installed is reported as such, never faked.
Every run is a subprocess timed from start to exit (wall) and charged for the CPU time
(user + sys) of its whole process tree: this script makes itself a child subreaper, so
workers that outlive their parent are still reaped, and counted, before the next run starts.
Contenders run interleaved (A B C ... A B C ...) and medians are reported, so load from
other users of the machine hits all of them alike. Each contender's output is read back
after every run (``peer_runs.py inspect``): image count and pixel sizes
must match the job, or the row is marked.

    python scripts/bench_peers.py --images 600 --repeats 3          # quick, provisional
    python scripts/bench_peers.py --images 8000 --repeats 3 --workdir /var/tmp/bench-peers
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SCRIPTS = REPO / "scripts"
sys.path.insert(0, str(SCRIPTS))

from bench_build import (  # noqa: E402
    compare_outputs,
    imgtools_command,
    load_average,
    machine_info,
    source_images,
    warm_cache,
)
from make_corpus_tree import DEFAULT_CORPUS, make_corpus_tree, recipe_wnids  # noqa: E402
from PIL import Image  # noqa: E402

from imgtools.transforms import jpeg as transform  # noqa: E402

PEER_RUNS = SCRIPTS / "peer_runs.py"
PR_SET_CHILD_SUBREAPER = 36

# Each peer's venv: what pip installs into it. Versions pinned so a rerun measures the same
# code; Pillow pinned to imgtools' own so every Pillow-based contender decodes with the same
# libjpeg-turbo. fastai needs torch + torchvision: the CPU wheels, a matching pair.
PEER_REQUIREMENTS = {
    "fastai": ["fastai==2.8.12", "torch==2.13.0", "torchvision==0.28.0"],
    "img2dataset": ["img2dataset==1.47.0"],
    "datasets": ["datasets==5.2.0"],
    "tfrecord": ["tfrecord==1.14.6"],
}
PEER_KEYS = {"fastai": ["fastai"], "img2dataset": ["img2dataset-wds", "img2dataset-parquet"],
             "datasets": ["hf-parquet", "hf-parquet-jpeg"], "tfrecord": ["tfrecord"]}
"""Which contenders each venv serves (``--only`` makes only the venvs it needs)."""

# --------------------------------------------------------------------------- venvs


def ensure_venv(root: Path, name: str, requirements: list[str]) -> tuple[Path | None, str]:
    """The peer's venv python, made once (a marker records what was installed), or None and
    pip's last words when it cannot be installed here."""
    venv = root / "venvs" / name
    python = venv / "bin" / "python"
    wanted = [*requirements, f"pillow=={Image.__version__}"]
    marker = venv / ".bench-peers-installed"
    if marker.exists() and marker.read_text().split() == wanted:
        return python, "ok"
    print(f"[venv] {name}: pip install {' '.join(wanted)}", file=sys.stderr)
    made = subprocess.CompletedProcess([], 0)
    if not python.exists():
        made = subprocess.run([sys.executable, "-m", "venv", str(venv)], capture_output=True,
                              text=True)
    if made.returncode == 0:
        made = subprocess.run([str(python), "-m", "pip", "install", "-q", "--cache-dir",
                               str(root / "pip-cache"), *wanted], capture_output=True,
                              text=True)
    reap_orphans()
    if made.returncode != 0:
        errors = [line for line in (made.stderr or "").splitlines()
                  if line.strip() and not line.startswith("WARNING: Location")]
        return None, " | ".join(errors[-3:]) or f"exit {made.returncode}"
    marker.write_text("\n".join(wanted))
    return python, "ok"


# --------------------------------------------------------------------------- timing


def become_subreaper() -> bool:
    """Orphaned grandchildren (pool workers whose parent exited first) are re-parented to
    us instead of init, so their CPU time lands in our RUSAGE_CHILDREN when reaped."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def reap_orphans() -> None:
    """Wait for every remaining descendant (blocks until the last worker exits)."""
    while True:
        try:
            os.wait()
        except ChildProcessError:
            return


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


@dataclass
class Timing:
    wall: float
    cpu: float
    stdout: str


def timed_run(command: list[str], env: dict[str, str] | None = None) -> Timing:
    """Run ``command`` to completion: wall time to its exit, CPU of its whole tree."""
    os.sync()  # no contender pays for another's write-back
    cpu_before = children_cpu()
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True,
                          env={**os.environ, **(env or {})})
    wall = time.perf_counter() - start
    reap_orphans()
    cpu = children_cpu() - cpu_before
    if done.returncode != 0:
        raise RuntimeError(f"exit {done.returncode}: {' '.join(command)}\n"
                           f"{done.stdout[-1500:]}\n{done.stderr[-3000:]}")
    return Timing(wall, cpu, done.stdout)


# --------------------------------------------------------------------------- contenders


@dataclass
class Contender:
    key: str
    label: str
    command: list[str]
    output: Path
    kind: str  # how peer_runs.py inspect reads the output
    inspect_python: Path
    bound: str  # "short": shortest side = size (never upscaled); "long": longest side <= size
    env: dict[str, str] = field(default_factory=dict)
    times: list[Timing] = field(default_factory=list)
    check: dict = field(default_factory=dict)
    error: str = ""


def imgtools_contenders(tree: Path, work: Path, size: int, jobs: int,
                        inspector: dict[str, Path]) -> list[Contender]:
    out = []
    for key, extra, kind in (("imgtools", [], "folder"), ("imgtools-exact", ["--exact"], "folder"),
                             ("imgtools-wds", ["--format", "webdataset"], "tar"),
                             ("imgtools-parquet", ["--format", "parquet"], "parquet"),
                             ("imgtools-tfrecord", ["--format", "tfrecord"], "tfrecord")):
        dest = work / key
        command = [*imgtools_command(), "build", "imagenette", "--src", str(tree), "--split",
                   "random", "--size", str(size), "--out", str(dest), "--quiet", "--jobs",
                   str(jobs), *extra]
        label = "imgtools build " + " ".join(extra[-1:] or ["(folder, --fast)"])
        out.append(Contender(key, label, command, dest, kind, inspector[kind], "short"))
    return out


def peer_contenders(tree: Path, paths_file: Path, work: Path, size: int, jobs: int,
                    pythons: dict[str, Path | None], inspector: dict[str, Path]
                    ) -> tuple[list[Contender], dict[str, str]]:
    """Every peer contender whose venv exists; the others are returned as {key: reason}."""
    q = str(transform.DEFAULT_QUALITY)
    common = ["--size", str(size), "--quality", q]
    listed = ["--list", str(paths_file)]

    def run(python: Path, what: str, key: str, *args: str) -> tuple[list[str], Path]:
        dest = work / key
        return [str(python), str(PEER_RUNS), what, "--out", str(dest), *common, *args], dest

    wanted = [
        ("pillow-1", "Pillow loop, 1 process", "main", "pillow", "folder", "short",
         [*listed, "--jobs", "1", "--filter", transform.DEFAULT_FILTER]),
        (f"pillow-{jobs}", f"Pillow loop, {jobs} processes", "main", "pillow", "folder",
         "short", [*listed, "--jobs", str(jobs), "--filter", transform.DEFAULT_FILTER]),
        ("fastai", "fastai resize_images (max_size = longest side)", "fastai", "fastai",
         "folder", "long", ["--src", str(tree), "--jobs", str(jobs)]),
        ("img2dataset-wds", "img2dataset → webdataset", "img2dataset", "img2dataset", "tar",
         "short", [*listed, "--jobs", str(jobs), "--format", "webdataset"]),
        ("img2dataset-parquet", "img2dataset → parquet", "img2dataset", "img2dataset",
         "parquet", "short", [*listed, "--jobs", str(jobs), "--format", "parquet"]),
        ("hf-parquet", "HF datasets imagefolder → map → to_parquet (PIL out)", "datasets",
         "hf", "parquet", "short", ["--src", str(tree), "--jobs", str(jobs)]),
        ("hf-parquet-jpeg", "HF datasets imagefolder → map → to_parquet (JPEG bytes out)",
         "datasets", "hf", "parquet", "short",
         ["--src", str(tree), "--jobs", str(jobs), "--hf-jpeg"]),
        ("tfrecord", f"tfrecord package writer, {jobs} processes", "tfrecord", "tfrecord",
         "tfrecord", "short", [*listed, "--jobs", str(jobs)]),
        ("decode", f"decode only, {jobs} processes", "main", "decode", "none", "none",
         [*listed, "--jobs", str(jobs)]),
    ]
    contenders, missing = [], {}
    for key, label, venv, what, kind, bound, args in wanted:
        python = Path(sys.executable) if venv == "main" else pythons.get(venv)
        if python is None:
            missing[key] = venv
            continue
        command, dest = run(python, what, key, *args)
        env = {}
        if what == "hf":  # a fresh cache per run: no contender reuses an earlier run's Arrow
            env = {"HF_HOME": str(dest) + "-hf-home", "HF_DATASETS_OFFLINE": "1",
                   "HF_HUB_OFFLINE": "1"}
        contenders.append(Contender(key, label, command, dest, kind,
                                    inspector.get(kind, Path(sys.executable)), bound, env))
    return contenders, missing


# --------------------------------------------------------------------------- checks


def expected_shorts(paths: list[Path], size: int) -> list[int]:
    """The shortest side each source should come out with: ``size``, or its own if smaller."""
    shorts = []
    for p in paths:
        with Image.open(p) as im:
            shorts.append(min(min(im.size), size))
    return sorted(shorts)


def inspect_output(c: Contender, n: int, want_shorts: list[int], size: int) -> dict:
    """Read the contender's output back with its own venv's libraries and check the work."""
    if c.kind == "none":
        return {"ok": True, "note": "nothing written"}
    done = subprocess.run([str(c.inspect_python), str(PEER_RUNS), "inspect", "--kind", c.kind,
                           str(c.output)], capture_output=True, text=True)
    reap_orphans()
    if done.returncode != 0:
        return {"ok": False, "problems": [f"inspect failed: {done.stderr[-500:]}"]}
    seen = json.loads(done.stdout)
    problems = []
    if seen["images"] != n:
        problems.append(f"{seen['images']} images for {n} sources")
    if c.bound == "short" and sorted(seen["shorts"]) != want_shorts:
        off = sum(1 for a, b in zip(sorted(seen["shorts"]), want_shorts) if a != b)
        problems.append(f"{off} images without the expected shortest side")
    if c.bound == "long" and max(seen["longs"], default=0) > size:
        problems.append(f"longest side up to {max(seen['longs'])} > {size}")
    pixels = sum(a * b for a, b in zip(seen["shorts"], seen["longs"]))
    return {"ok": not problems, "problems": problems, "images": seen["images"],
            "formats": seen["formats"], "megapixels_out": round(pixels / 1e6, 2),
            "max_short": max(seen["shorts"], default=0),
            "max_long": max(seen["longs"], default=0)}


def flat_outputs(folder: Path) -> dict[str, Path]:
    return {p.name: p for p in folder.rglob("*")
            if p.suffix.lower() in (".jpeg", ".jpg") and not p.name.startswith(".")}


# --------------------------------------------------------------------------- report


def summarise(contenders: list[Contender], n: int, cores: int) -> tuple[list[dict], dict]:
    med = {c.key: (statistics.median(t.wall for t in c.times),
                   statistics.median(t.cpu for t in c.times)) for c in contenders if c.times}
    ref_wall, ref_cpu = med.get("imgtools", (float("nan"), float("nan")))
    floor = med["decode"][1] / cores if "decode" in med else float("nan")
    decode_cpu = med["decode"][1] if "decode" in med else float("nan")
    rows = []
    for c in contenders:
        if c.key not in med:
            rows.append({"key": c.key, "label": c.label, "error": c.error})
            continue
        wall, cpu = med[c.key]
        rows.append({"key": c.key, "label": c.label, "runs": len(c.times),
                     "wall_s": round(wall, 2), "cpu_s": round(cpu, 2),
                     "images_per_s": round(n / wall, 1),
                     "wall_vs_imgtools": round(wall / ref_wall, 2),
                     "cpu_vs_imgtools": round(cpu / ref_cpu, 2),
                     "wall_vs_floor": round(wall / floor, 2),
                     "cpu_vs_decode": round(cpu / decode_cpu, 2),
                     "all_walls": [round(t.wall, 2) for t in c.times],
                     "all_cpus": [round(t.cpu, 2) for t in c.times],
                     "check": c.check, "error": c.error})
    return rows, {"floor_wall_s": round(floor, 3), "decode_cpu_s": round(decode_cpu, 3)}


def markdown(rows: list[dict], missing: dict[str, str], reasons: dict[str, str]) -> str:
    lines = ["| contender | wall (s) | CPU (s) | images/s | wall ÷ imgtools | CPU ÷ imgtools "
             "| wall ÷ floor | CPU ÷ decode | output check |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        if "wall_s" not in r:
            lines.append(f"| {r['label']} | failed: {r['error'][:120]} | | | | | | | |")
            continue
        check = r["check"]
        verdict = "ok" if check.get("ok") else "; ".join(check.get("problems", ["?"]))
        verdict = " ".join(verdict.split())[-160:]  # one table cell: no newlines
        if check.get("formats"):
            verdict += " (" + ", ".join(f"{k} {v}" for k, v in check["formats"].items()) + ")"
        lines.append(f"| {r['label']} | {r['wall_s']} | {r['cpu_s']} | {r['images_per_s']} | "
                     f"{r['wall_vs_imgtools']}x | {r['cpu_vs_imgtools']}x | "
                     f"{r['wall_vs_floor']}x | {r['cpu_vs_decode']}x | {verdict} |")
    for key, venv in missing.items():
        lines.append(f"| {key} | not installed here ({venv}: {reasons.get(venv, '')[:160]}) "
                     "| | | | | | | |")
    return "\n".join(lines)


def write_report(report: dict, contenders: list[Contender], missing: dict[str, str],
                 reasons: dict[str, str], n: int, cores: int, path: Path) -> str:
    rows, floor = summarise(contenders, n, cores)
    report.update(floor)
    report["rows"] = rows
    report["not_installed"] = missing
    report["markdown"] = markdown(rows, missing, reasons)
    path.write_text(json.dumps(report, indent=2, default=str) + "\n")
    return report["markdown"]


def marginal_table(small: dict, large: dict) -> str:
    """Per-image cost with each contender's fixed cost (start-up, imports, workers) taken
    out: the difference between two runs of this script at two scales, divided by the
    difference in images. It is what a large run's ratios tend to; at a few hundred images
    the fixed costs (2 s of CPU for imgtools, 10 s for img2dataset) still dominate."""
    extra = large["images"] - small["images"]
    cores = large["cores"]
    rows_s = {r["key"]: r for r in small["rows"] if "wall_s" in r}
    per_image = {}
    for r in large["rows"]:
        if "wall_s" in r and r["key"] in rows_s:
            a = rows_s[r["key"]]
            per_image[r["key"]] = (r["label"], (r["wall_s"] - a["wall_s"]) / extra,
                                   (r["cpu_s"] - a["cpu_s"]) / extra,
                                   a["cpu_s"] - small["images"] * (r["cpu_s"] - a["cpu_s"]) / extra)
    ref_wall, ref_cpu = per_image["imgtools"][1:3]
    floor = per_image["decode"][2] / cores
    lines = [f"Per image, fixed costs taken out ({small['images']} and {large['images']} "
             "images):", "",
             "| contender | wall ms/image | CPU ms/image | images/s (wall) | wall ÷ imgtools "
             "| CPU ÷ imgtools | wall ÷ floor | CPU ÷ decode | fixed CPU (s) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for label, wall, cpu, fixed in per_image.values():
        rate = f"{1 / wall:.0f}" if wall > 0 else "-"
        lines.append(f"| {label} | {1000 * wall:.2f} | {1000 * cpu:.2f} | {rate} | "
                     f"{wall / ref_wall:.2f}x | {cpu / ref_cpu:.2f}x | {wall / floor:.2f}x | "
                     f"{cpu / per_image['decode'][2]:.2f}x | {fixed:.2f} |")
    return "\n".join(lines)


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("--images", type=int, default=600, help="images in the tree")
    parser.add_argument("--size", type=int, default=320)
    parser.add_argument("--repeats", type=int, default=3, help="median of this many rounds")
    parser.add_argument("--jobs", type=int, default=0,
                        help="processes for imgtools and every peer (0 = usable cores)")
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--workdir", type=Path, default=Path("/var/tmp/bench-peers"),
                        help="tree, outputs, peer venvs and pip cache (kept: venvs are reused)")
    parser.add_argument("--only", default="",
                        help="comma list of contender keys to run (default: all)")
    parser.add_argument("--json-out", type=Path, default=Path("bench_peers.json"))
    parser.add_argument("--combine", nargs=2, type=Path, metavar=("SMALL", "LARGE"),
                        help="print the per-image table from two earlier runs' JSON at two "
                             "scales (fixed costs taken out), and do nothing else")
    args = parser.parse_args(argv)
    if args.combine:
        small, large = (json.loads(p.read_text()) for p in args.combine)
        print(marginal_table(small, large))
        return 0

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    jobs = args.jobs or cores
    work = args.workdir
    work.mkdir(parents=True, exist_ok=True)
    subreaper = become_subreaper()

    keep = {k.strip() for k in args.only.split(",") if k.strip()}
    if keep:
        keep |= {"imgtools", "decode"}
    pythons, reasons = {}, {}
    for name, reqs in PEER_REQUIREMENTS.items():
        if keep and not keep & set(PEER_KEYS[name]):
            pythons[name], reasons[name] = None, "not selected (--only)"
            continue
        pythons[name], reasons[name] = ensure_venv(work, name, reqs)
        if pythons[name] is None:
            print(f"[venv] {name}: NOT installed: {reasons[name]}", file=sys.stderr)

    tree = work / f"tree-{args.images}"
    if not tree.exists():
        make_corpus_tree(tree, args.corpus, args.images, recipe_wnids("imagenette"), "valprep")
    paths = source_images(tree)
    n = len(paths)
    paths_file = work / f"paths-{args.images}.txt"
    paths_file.write_text("".join(f"{p}\n" for p in paths))
    want_shorts = expected_shorts(paths, args.size)
    warm_cache(paths)

    # Outputs are read back with libraries that read them: pyarrow from the datasets venv,
    # the tfrecord package from its venv; folders and tars with the standard library.
    main_python = Path(sys.executable)
    inspector = {"folder": main_python, "tar": main_python,
                 "parquet": pythons.get("datasets") or pythons.get("img2dataset") or main_python,
                 "tfrecord": pythons.get("tfrecord") or main_python}
    outputs = work / f"out-{args.images}"  # one folder per scale: two scales can run at once
    contenders = imgtools_contenders(tree, outputs, args.size, jobs, inspector)
    peers, missing = peer_contenders(tree, paths_file, outputs, args.size, jobs, pythons,
                                     inspector)
    contenders += peers
    if keep:
        contenders = [c for c in contenders if c.key in keep]
        missing = {k: v for k, v in missing.items() if k in keep}

    report = {"machine": machine_info(), "load_before": load_average(), "cores": cores,
              "jobs": jobs, "images": n, "size": args.size, "repeats": args.repeats,
              "subreaper": subreaper, "tree": str(tree),
              "peer_venvs": {k: (str(v) if v else None) for k, v in pythons.items()},
              "peer_install_problems": {k: r for k, r in reasons.items() if r != "ok"}}
    for round_no in range(args.repeats):
        for c in contenders:
            if c.error:
                continue
            shutil.rmtree(c.output, ignore_errors=True)
            for stale in c.output.parent.glob(c.output.name + "-*"):
                shutil.rmtree(stale) if stale.is_dir() else stale.unlink()
            c.output.parent.mkdir(parents=True, exist_ok=True)
            try:
                timing = timed_run(c.command, c.env)
            except RuntimeError as e:
                c.error = str(e)
                print(f"[{c.key}] FAILED: {e}", file=sys.stderr)
                continue
            c.times.append(timing)
            # Every round's output is checked (headers only: cheap); the first problem stays.
            check = inspect_output(c, n, want_shorts, args.size)
            if not c.check or (c.check.get("ok") and not check["ok"]):
                c.check = check
            print(f"[round {round_no + 1}] {c.key}: {timing.wall:.2f} s wall, "
                  f"{timing.cpu:.2f} s CPU {'' if c.check.get('ok') else c.check}",
                  file=sys.stderr)
        if round_no == 0:
            by_key = {c.key: c for c in contenders}
            if "imgtools-exact" in by_key and f"pillow-{jobs}" in by_key:
                report["pillow_vs_exact"] = compare_outputs(
                    flat_outputs(by_key[f"pillow-{jobs}"].output),
                    flat_outputs(by_key["imgtools-exact"].output))
        # Written after every round: a run cut short still leaves its medians so far.
        report["load_after"] = load_average()
        report["rounds_done"] = round_no + 1
        table = write_report(report, contenders, missing, reasons, n, cores, args.json_out)
    floor = {k: report[k] for k in ("floor_wall_s", "decode_cpu_s")}
    m = report["machine"]
    print(f"{n} images at {args.size} px, {jobs} processes each, {cores} cores "
          f"({m['cpu']}); median of {args.repeats} interleaved rounds; load average "
          f"{report['load_before']} before, {report['load_after']} after. Floor: decode CPU "
          f"{floor['decode_cpu_s']} s / {cores} cores = {floor['floor_wall_s']} s.\n")
    print(table)
    if "pillow_vs_exact" in report:
        print(f"\nPillow loop ({jobs} processes) vs imgtools --exact: "
              f"{report['pillow_vs_exact']['byte_identical']} of "
              f"{report['pillow_vs_exact']['compared']} byte-identical")
    print(f"\nAll numbers: {args.json_out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
