#!/usr/bin/env python
"""Benchmark ``imgtools build`` against a plain single-process Pillow loop, in one run.

What it measures (issue 2, item 12), on two trees - real photos (the corpus replicated by
``make_corpus_tree.py``) and the generated demo tree - with the same files for every contender:

* ``imgtools build <recipe> --size 320`` vs a plain loop doing the same work at 320
  (target: >= 1.8x the loop's images/s on 2 cores);
* the same at 160 (target: >= 2.5x);
* ``--size 160 --size 320`` in one build vs the two single-size builds run one after the other
  (target: >= 1.5x faster);
* the same builds with ``--exact`` when ``imgtools build --help`` offers it.

The plain loop is what a user would write: one process; for each image ``Image.open``,
``convert("RGB")``, shortest side to N with imgtools' default filter, ``save`` at imgtools'
default JPEG quality (both read from ``imgtools.transforms.jpeg``), never upscaling (an image
already at
or under N is written unchanged, as imgtools does). To prove it does the same work, its output is
compared byte for byte with ``imgtools build --exact`` when that option exists.

``--psnr`` also reports how far the default (fast: DCT-scaled decode, SIMD resize) output is
from ``--exact``.

imgtools is timed as a subprocess from start to exit (imports and planning included: that is what
a user waits for). Source files are read once before timing so every contender sees a warm page
cache; runs are interleaved and the median of ``--repeats`` is reported. The machine (CPU model,
cores, load average before and after, Python, Pillow, libjpeg-turbo) is recorded with the
numbers, because a shared machine makes any single number suspect.

    python scripts/bench_build.py --images 3000            # full size: the README table
    python scripts/bench_build.py --images 500 --repeats 1  # quick check while developing
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "scripts"))

from make_corpus_tree import DEFAULT_CORPUS, make_corpus_tree, recipe_wnids  # noqa: E402

from imgtools.transforms import jpeg as transform  # noqa: E402
from imgtools.transforms import resample  # noqa: E402

IMAGE_SUFFIXES = {".jpeg", ".jpg", ".png"}
TARGETS = {"320": 1.8, "160": 2.5, "160+320": 1.5}


# --------------------------------------------------------------------------- the plain loop


@dataclass
class LoopResult:
    seconds: float
    images: int
    failed: list[str] = field(default_factory=list)


def source_images(tree: Path) -> list[Path]:
    """Every train and val image of the tree (Kaggle's unlabelled test/ left out), sorted."""
    data = tree / "ILSVRC" / "Data" / "CLS-LOC"
    base = data if data.is_dir() else tree
    paths = []
    for split in ("train", "val"):
        folder = base / split
        if folder.is_dir():
            paths += [p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES]
    return sorted(paths)


def plain_resize(path: Path, size: int, filter_name: str, quality: int) -> bytes:
    """One image the way a straightforward script does it: open, RGB, resize, save."""
    with Image.open(path) as im:
        w, h = im.size
        if min(w, h) <= size and im.format == "JPEG" and im.mode == "RGB":
            return path.read_bytes()  # never upscale; already an RGB JPEG: keep the bytes
        rgb = im.convert("RGB")
    if min(w, h) > size:
        rgb = rgb.resize(transform.target_size(w, h, size), transform.FILTERS[filter_name])
    buf = io.BytesIO()
    rgb.save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def plain_loop(paths: list[Path], size: int, out_dir: Path,
               filter_name: str = transform.DEFAULT_FILTER,
               quality: int = transform.DEFAULT_QUALITY) -> LoopResult:
    """Resize every image to ``size`` into ``out_dir/<name>`` in one process; timed.

    ``out_dir`` starts empty, as every imgtools build's does: rewriting the files of a
    previous repeat would spare the loop the file creations that imgtools pays for."""
    shutil.rmtree(out_dir, ignore_errors=True)
    out_dir.mkdir(parents=True)
    failed = []
    os.sync()  # no contender pays for another's write-back
    start = time.perf_counter()
    for path in paths:
        try:
            data = plain_resize(path, size, filter_name, quality)
        except OSError as e:  # broken files: skipped, and counted
            failed.append(f"{path}: {e}")
            continue
        (out_dir / path.name).write_bytes(data)
    return LoopResult(time.perf_counter() - start, len(paths) - len(failed), failed)


# --------------------------------------------------------------------------- imgtools runs


def imgtools_command() -> list[str]:
    script = Path(sys.executable).with_name("imgtools")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "import sys; from imgtools.cli import main; sys.exit(main())"]


def build_help() -> str:
    done = subprocess.run([*imgtools_command(), "build", "--help"], capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"error: `imgtools build --help` failed:\n{done.stderr}")
    return done.stdout


@dataclass
class BuildResult:
    seconds: float
    outputs: int  # JPEG files written, all sizes together
    command: list[str]


def run_build(recipe: str, tree: Path, sizes: list[int], out: Path, exact: bool,
              extra: list[str]) -> BuildResult:
    shutil.rmtree(out, ignore_errors=True)
    cmd = [*imgtools_command(), "build", recipe, "--src", str(tree), "--split", "random",
           "--out", str(out), "--quiet"]
    for size in sizes:
        cmd += ["--size", str(size)]
    if exact:
        cmd.append("--exact")
    cmd += extra
    os.sync()
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"error: imgtools build failed (exit {done.returncode}):\n  {' '.join(cmd)}\n"
                 f"{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    return BuildResult(seconds, len(output_images(out)), cmd)


def output_images(out: Path) -> list[Path]:
    return [p for p in out.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES
            and not p.name.startswith(".")]


def outputs_by_name(out: Path, size: int) -> dict[str, Path]:
    """Output JPEGs of one size (folder name ends in ``-<size>``), by file name."""
    found: dict[str, Path] = {}
    for path in output_images(out):
        if any(part.endswith(f"-{size}") for part in path.relative_to(out).parts[:-1]):
            found[path.name] = path
    return found


# --------------------------------------------------------------------------- checks


def _pixels(image: Image.Image | Path) -> np.ndarray:
    if isinstance(image, Path):
        with Image.open(image) as im:
            return np.asarray(im.convert("RGB"), dtype=np.float64)
    return np.asarray(image.convert("RGB"), dtype=np.float64)


def psnr(a: Image.Image | Path, b: Image.Image | Path) -> float:
    """Peak signal-to-noise ratio in dB (inf: identical; -inf: different dimensions)."""
    x, y = _pixels(a), _pixels(b)
    if x.shape != y.shape:
        return float("-inf")
    mse = float(np.mean((x - y) ** 2))
    return float("inf") if mse == 0 else float(10 * np.log10(255.0 ** 2 / mse))


def ideal_resize(source: Path, size: int) -> Image.Image:
    """Full decode + Lanczos resize, never encoded: the reference both sides are measured
    against (as in ``psnr_fast_vs_exact.py``). Measured against the default (bilinear) filter
    instead, the exact path would win by construction."""
    with Image.open(source) as im:
        rgb = im.convert("RGB")
    w, h = rgb.size
    if min(w, h) <= size:
        return rgb
    return rgb.resize(transform.target_size(w, h, size), Image.Resampling.LANCZOS)


def _summary(values: list[float]) -> dict:
    finite = [v for v in values if np.isfinite(v)]
    return {"min_db": round(min(finite), 2) if finite else None,
            "mean_db": round(statistics.fmean(finite), 2) if finite else None}


def compare_outputs(ours: dict[str, Path], theirs: dict[str, Path],
                    sources: dict[str, Path] | None = None, size: int | None = None,
                    labels: tuple[str, str] = ("first", "second")) -> dict:
    """Two output sets matched by file name: how many are byte-identical, PSNR between the
    ones that differ, and (given ``sources``) each side's PSNR against the ideal, unencoded
    resize - which tells a real quality loss apart from JPEG re-encoding noise."""
    common = sorted(set(ours) & set(theirs))
    differing = [n for n in common if ours[n].read_bytes() != theirs[n].read_bytes()]
    between = [psnr(ours[n], theirs[n]) for n in differing]
    result = {
        "compared": len(common), "only_one_side": len(set(ours) ^ set(theirs)),
        "byte_identical": len(common) - len(differing),
        "size_mismatch": sum(1 for v in between if v == float("-inf")),
        "psnr_between_differing": _summary(between),
    }
    if sources is not None and size is not None and differing:
        ideal = {n: ideal_resize(sources[n], size) for n in differing}
        result["psnr_vs_ideal_differing"] = {
            labels[0]: _summary([psnr(ours[n], ideal[n]) for n in differing]),
            labels[1]: _summary([psnr(theirs[n], ideal[n]) for n in differing]),
        }
    return result


# --------------------------------------------------------------------------- machine


def machine_info() -> dict:
    from PIL import features

    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import imgtools

    return {
        "cpu": cpu, "logical_cpus": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "python": platform.python_version(), "pillow": Image.__version__,
        "libjpeg_turbo": features.version("libjpeg_turbo"), "imgtools": imgtools.__version__,
        "platform": platform.platform(),
    }


def load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


# --------------------------------------------------------------------------- the benchmark


def warm_cache(paths: list[Path]) -> None:
    for path in paths:
        path.read_bytes()


def bench_tree(label: str, tree: Path, recipe: str, work: Path, repeats: int,
               exact_available: bool, extra: list[str], check: bool, want_psnr: bool) -> dict:
    paths = source_images(tree)
    warm_cache(paths)
    n = len(paths)
    times: dict[str, list[float]] = {}
    counts: dict[str, int] = {}

    def record(key: str, seconds: float, outputs: int) -> None:
        times.setdefault(key, []).append(seconds)
        counts[key] = outputs

    variants = [False, True] if exact_available else [False]
    for _ in range(repeats):
        for size in (320, 160):
            loop = plain_loop(paths, size, work / f"plain-{size}")
            record(f"plain {size}", loop.seconds, loop.images)
            for exact in variants:
                tag = " exact" if exact else ""
                res = run_build(recipe, tree, [size], work / f"build-{size}{tag.strip()}",
                                exact, extra)
                record(f"imgtools {size}{tag}", res.seconds, res.outputs)
        for exact in variants:
            tag = " exact" if exact else ""
            res = run_build(recipe, tree, [160, 320], work / f"build-both{tag.strip()}", exact,
                            extra)
            record(f"imgtools 160+320{tag}", res.seconds, res.outputs)

    med = {k: statistics.median(v) for k, v in times.items()}
    rows = []
    for exact in variants:
        tag = " exact" if exact else ""
        for size in ("320", "160"):
            ours, base = med[f"imgtools {size}{tag}"], med[f"plain {size}"]
            rows.append(dict(source=label, run=f"imgtools --size {size}{tag}", images=n,
                             seconds=ours, images_per_s=n / ours,
                             baseline=f"plain loop {size}", baseline_seconds=base,
                             ratio=base / ours, target=None if exact else TARGETS[size]))
        both = med[f"imgtools 160+320{tag}"]
        separate = med[f"imgtools 320{tag}"] + med[f"imgtools 160{tag}"]
        rows.append(dict(source=label, run=f"imgtools --size 160 --size 320{tag}", images=n,
                         seconds=both, images_per_s=n / both,
                         baseline=f"imgtools 320 then 160{tag}", baseline_seconds=separate,
                         ratio=separate / both, target=None if exact else TARGETS["160+320"]))
    for row in rows:
        row["met"] = None if row["target"] is None else row["ratio"] >= row["target"]

    result = {"source": label, "tree": str(tree), "images": n, "timings": times,
              "output_counts": counts, "rows": rows}
    problems = [f"{k}: wrote {c} images for {n} sources" for k, c in counts.items()
                if k.startswith("plain") and c != n]
    problems += [f"{k}: wrote {c} images, expected {n * (2 if '+' in k else 1)}"
                 for k, c in counts.items()
                 if k.startswith("imgtools") and c != n * (2 if "+" in k else 1)]
    result["count_problems"] = problems
    if check and exact_available:
        result["plain_vs_exact"] = {
            str(s): compare_outputs(_flat(work / f"plain-{s}"),
                                    outputs_by_name(work / f"build-{s}exact", s))
            for s in (320, 160)}
    if want_psnr and exact_available:
        # Single-size builds: in a two-size build the larger size limits DCT scaling.
        by_name = {p.name: p for p in paths}
        result["fast_vs_exact"] = {
            str(s): compare_outputs(outputs_by_name(work / f"build-{s}", s),
                                    outputs_by_name(work / f"build-{s}exact", s), by_name, s,
                                    ("fast", "exact"))
            for s in (320, 160)}
    return result


def _flat(folder: Path) -> dict[str, Path]:
    return {p.name: p for p in folder.iterdir()} if folder.is_dir() else {}


def markdown_table(results: list[dict]) -> str:
    lines = ["| source | run | images | time (s) | images/s | compared with | its time (s) "
             "| speed-up | target |",
             "|---|---|---:|---:|---:|---|---:|---:|---|"]
    for res in results:
        for r in res["rows"]:
            target = "-" if r["target"] is None else (
                f"≥ {r['target']}x {'met' if r['met'] else 'NOT met'}")
            lines.append(f"| {r['source']} | {r['run']} | {r['images']} | {r['seconds']:.2f} | "
                         f"{r['images_per_s']:.0f} | {r['baseline']} | "
                         f"{r['baseline_seconds']:.2f} | {r['ratio']:.2f}x | {target} |")
    return "\n".join(lines)


# ImageNet's photos average about 470x400 and few are under 160 px: size the demo photos alike
# (the demo tree's own defaults are smaller, to keep tests fast), so resize work is comparable.
BENCH_DEMO_SIZES = ((300, 225), (700, 525))
BENCH_DEMO_SMALL_FRACTION = 0.03


def demo_tree(path: Path, images: int) -> Path:
    """A demo tree of about ``images`` ImageNet-sized photos (3/4 train, 1/4 val), no quirks."""
    from imgtools.demo_tree import make_imagenet_tree

    per_class = max(1, images // 10)
    val = per_class // 4
    make_imagenet_tree(path, "valprep", train_per_class=per_class - val, val_per_class=val,
                       quirks=False, size_range=BENCH_DEMO_SIZES,
                       small_fraction=BENCH_DEMO_SMALL_FRACTION)
    return path


STARTUP_IMAGES = 20
CREATION_PROBE_FILES = 2000


def file_creation_ms(work: Path) -> float:
    """Milliseconds to create one small file in ``work``: every run here creates a file per
    image, so a slow folder (on one VM, /tmp cost 0.2-0.7 ms a file where /var/tmp on the same
    disk cost 0.02 ms) weighs on every row. Reported, not corrected for."""
    probe = work / "creation-probe"
    shutil.rmtree(probe, ignore_errors=True)
    probe.mkdir(parents=True)
    os.sync()
    start = time.perf_counter()
    for i in range(CREATION_PROBE_FILES):
        (probe / f"{i}.JPEG").write_bytes(b"\xff\xd8" * 1000)
    seconds = time.perf_counter() - start
    shutil.rmtree(probe, ignore_errors=True)
    return 1000 * seconds / CREATION_PROBE_FILES




def startup_seconds(work: Path, corpus: Path, recipe: str, extra: list[str]) -> float:
    """Wall time of a build of a few images: the per-run cost no image count amortises away
    (interpreter start, imports, planning, starting workers). Median of three."""
    tree = work / "tree-startup"
    if not tree.exists():
        make_corpus_tree(tree, corpus, STARTUP_IMAGES, recipe_wnids(recipe), "valprep")
    return statistics.median(
        run_build(recipe, tree, [320], work / "out-startup", False, extra).seconds
        for _ in range(3))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("--images", type=int, default=3000, help="images per tree")
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS,
                        help="folder of real photos to replicate (default: %(default)s)")
    parser.add_argument("--sources", default="corpus,demo",
                        help="comma list of trees to run on: corpus, demo")
    parser.add_argument("--recipe", default="imagenette", help="recipe to build")
    parser.add_argument("--repeats", type=int, default=1, help="median of this many runs")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="scratch folder (default: a new temp folder, deleted at the end)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder")
    parser.add_argument("--psnr", action="store_true",
                        help="also report PSNR of the default build vs --exact")
    parser.add_argument("--no-check", action="store_true",
                        help="skip comparing the plain loop's bytes with --exact's")
    parser.add_argument("--build-arg", action="append", default=[],
                        help="extra argument for every imgtools build (repeatable), e.g. --jobs=2")
    parser.add_argument("--json-out", type=Path, default=Path("bench_build.json"),
                        help="where to write all numbers (default: %(default)s)")
    args = parser.parse_args(argv)

    exact_available = "--exact" in build_help()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench-build-"))
    work.mkdir(parents=True, exist_ok=True)
    fixed_cost = startup_seconds(work, args.corpus, args.recipe, args.build_arg)
    creation_ms = file_creation_ms(work)
    report = {"machine": machine_info(), "load_before": load_average(),
              "settings": {"images": args.images, "recipe": args.recipe,
                           "repeats": args.repeats, "filter": transform.DEFAULT_FILTER,
                           "quality": transform.DEFAULT_QUALITY, "build_args": args.build_arg,
                           "exact_available": exact_available},
              "resizer": resample.resizer_name(exact=False),
              "fixed_cost_seconds": fixed_cost,
              "file_creation_ms": creation_ms, "workdir": str(work),
              "results": []}
    try:
        for source in [s.strip() for s in args.sources.split(",") if s.strip()]:
            tree = work / f"tree-{source}"
            if source == "corpus":
                if not tree.exists():
                    make_corpus_tree(tree, args.corpus, args.images, recipe_wnids(args.recipe),
                                     "valprep")
            elif source == "demo":
                if not tree.exists():
                    demo_tree(tree, args.images)
            else:
                parser.error(f"unknown source {source!r}: use corpus and/or demo")
            print(f"[{source}] benchmarking {tree} ...", file=sys.stderr)
            report["results"].append(bench_tree(
                source, tree, args.recipe, work / f"out-{source}", args.repeats,
                exact_available, args.build_arg, not args.no_check, args.psnr))
    finally:
        report["load_after"] = load_average()
        if not args.keep and args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    table = markdown_table(report["results"])
    report["markdown"] = table
    args.json_out.write_text(json.dumps(report, indent=2, default=_json_default))
    m = report["machine"]
    print(f"Machine: {m['cpu']}, {m['usable_cpus']} usable cores, Python {m['python']}, "
          f"Pillow {m['pillow']} (libjpeg-turbo {m['libjpeg_turbo']}); load average "
          f"{report['load_before']} before, {report['load_after']} after.\n")
    print(table)
    print(f"\nFixed cost of one imgtools build (start-up, planning, workers; "
          f"{STARTUP_IMAGES} images): {fixed_cost:.2f} s - included in every imgtools time above.")
    print(f"Creating one file in the scratch folder ({work}): {creation_ms:.3f} ms. "
          f"Default resizer: {report['resizer']}.")
    for res in report["results"]:
        for key in ("plain_vs_exact", "fast_vs_exact"):
            for size, cmp in res.get(key, {}).items():
                print(f"\n[{res['source']}] {key} at {size}: {cmp}")
        for problem in res["count_problems"]:
            print(f"\n[{res['source']}] WARNING: {problem}")
    print(f"\nAll numbers: {args.json_out}")
    return 0


def _json_default(obj):
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "__dataclass_fields__"):
        return asdict(obj)
    raise TypeError(type(obj))


if __name__ == "__main__":
    sys.exit(main())
