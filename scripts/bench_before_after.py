#!/usr/bin/env python
"""Run the engine's benchmarks of two checkouts interleaved and tabulate after / before.

Why this exists (issue 11, item 5: "every existing benchmark is rerun after the change and no
figure may get worse beyond noise"): on a shared machine a benchmark run before a change and one
run after it an hour later see different loads, so their difference says nothing. Here each
benchmark runs before, after, before, after... (``--rounds`` times each) so that the load falls
on both alike. A round's before and after ran back to back, so their ratio compares like with
like; a figure counts as worse only when every round's ratio is worse by more than
:data:`NOISE_FLOOR` (``--after-first`` runs rounds the other way round, to cancel a bias of
the second slot).

Each checkout runs its own copy of each script with its own venv (``<checkout>/.venv``), from
its own folder. Besides the figures each script reports (read from the JSON it writes), the
user + system CPU of the whole script run (itself and every process it waited for) is
recorded: the scripts' own baseline loops are the same code on both sides, so a change in it
comes from imgtools. The load average (1 min) is recorded before and after every run; the
table gives its range over each side's runs.

    python scripts/bench_before_after.py /work/wt/before . --work /var/tmp/ba --rounds 2
    python scripts/bench_before_after.py BEFORE AFTER --only overhead,codecs --rounds 3
    python scripts/bench_before_after.py BEFORE AFTER --work /var/tmp/ba --table-only
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

# name -> (script, arguments, where its JSON goes: "stdout" or the name of the file it writes).
# {work} is this benchmark's scratch folder (shared by both sides: same input trees),
# {json} the JSON file of this run, {corpus} the photos (--corpus).
BENCHMARKS: dict[str, tuple[str, list[str], str]] = {
    "overhead": ("bench_overhead.py", ["--images", "300", "--repeats", "2", "--json", "{json}"],
                 "file"),
    "build": ("bench_build.py", ["--images", "400", "--sources", "corpus", "--repeats", "1",
                                 "--no-check", "--workdir", "{work}", "--json-out", "{json}",
                                 "--corpus", "{corpus}"],
              "file"),
    "convert": ("bench_convert.py", ["--images", "800", "--jobs", "2", "--out", "{work}",
                                     "--json", "{json}", "--corpus", "{corpus}"], "file"),
    "downsample": ("bench_downsample.py", ["--images", "800", "--sizes", "32", "--jobs", "2",
                                           "--work", "{work}", "--json", "--corpus", "{corpus}"],
                   "stdout"),
    "sources": ("bench_sources.py", ["{work}", "--per-class", "1", "--nette-per-class", "20",
                                     "--repeat", "2", "--corpus", "{corpus}"], "stdout"),
    "codecs": ("bench_codecs.py", ["--repeats", "3", "--copies", "5", "--rows", "3000",
                                   "--json", "{json}"], "file"),
}

# Figures worth a row (a regex on the flattened key); the rest are settings and counts.
FIGURES = {
    "overhead": r"^summary\.",  # medians over rounds; builds already divided by the codec
    "build": r"^(fixed_cost_seconds|results\.0\.(timings|.*\.ratio$))",
    "convert": r"^(tar_cf_s|directions\..*\.(ours_s|loop_s))",
    "downsample": r"^rows\.0\.(baseline|ours|ours-fast)\.(seconds|peak_rss_mb)",
    "sources": r"^(archives|tree)\.(seconds|bytes_read)|^tar_x_then_build\.seconds",
    "codecs": r"(pickle|npz).*_(ms|mb)$",
}
# bench_overhead's CPU figures are [total, main process's work after imports] pairs.
LABELS = [(re.compile(r"^(build_s|convert_s)\.(.*)\.0\b"), r"\1 \2: total"),
          (re.compile(r"^(build_s|convert_s)\.(.*)\.1\b"), r"\1 \2: main process's work")]
NOISE_FLOOR = 0.03
"""A change smaller than this is never called worse or better, however tight the repeats."""
HIGHER_IS_BETTER = re.compile(r"per_s|speedup|psnr|\.ratio$")


def flatten(value: object, prefix: str = "") -> dict[str, float]:
    """Numeric leaves of a JSON value by dotted path; list items keyed by a name field when
    they have one (``direction``, ``codec``, ``name``...) so rows match across runs."""
    out: dict[str, float] = {}
    if isinstance(value, dict):
        for k, v in value.items():
            out.update(flatten(v, f"{prefix}{k}."))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            label = str(i)
            if isinstance(v, dict):
                names = [str(v[k]) for k in ("direction", "codec", "run", "name", "size_kb")
                         if k in v and not isinstance(v[k], (dict, list))]
                label = " ".join(names) or label
            out.update(flatten(v, f"{prefix}{label}."))
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        out[prefix.rstrip(".")] = float(value)
    return out


def with_derived(name: str, figures: dict[str, float]) -> dict[str, float]:
    """bench_overhead's build CPU divided by the codec CPU of the same run (issue 11, item 6
    bounds this quotient): the machine's state at that moment divides out."""
    if name != "overhead" or not figures.get("codec_s"):
        return figures
    derived = {f"{k} / codec_s": v / figures["codec_s"] for k, v in figures.items()
               if k.startswith("build_s")}
    return {**figures, **derived}


def run_one(checkout: Path, name: str, work: Path, results: Path, tag: str,
            corpus: Path, scripts: Path) -> dict:
    script, args, json_to = BENCHMARKS[name]
    json_path = results / f"{name}-{tag}.json"
    bench_work = work / name
    bench_work.mkdir(parents=True, exist_ok=True)
    argv = [a.format(work=bench_work, json=json_path, corpus=corpus) for a in args]
    cmd = [str(checkout / ".venv" / "bin" / "python"), str(scripts / script), *argv]
    env = {**os.environ, "IMGTOOLS_CORPUS": str(corpus)}
    load_before = os.getloadavg()[0]
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=checkout, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    (results / f"{name}-{tag}.log").write_text(
        f"$ {' '.join(cmd)}\n--- stdout\n{done.stdout}\n--- stderr\n{done.stderr}")
    if done.returncode != 0:
        sys.exit(f"error: {' '.join(cmd)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    if json_to == "stdout":
        json_path.write_text(done.stdout)
    return {"tag": tag, "load_before": load_before, "load_after": os.getloadavg()[0],
            "script_wall_s": wall,
            "script_cpu_s": (after.ru_utime - usage.ru_utime) + (after.ru_stime - usage.ru_stime),
            "figures": flatten(json.loads(json_path.read_text()))}


def verdict(key: str, before: list[float], after: list[float]) -> tuple[str, str]:
    """The after/before ratios of the rounds (each pair ran back to back, so under about the
    same load) as "min-max", and the judgement: worse only when every round is worse by more
    than :data:`NOISE_FLOOR`, and then by the median of the rounds."""
    if not all(before) or not all(after):
        return "-", "-"
    ratios = [a / b for b, a in zip(before, after)]
    worse = [1 / r if HIGHER_IS_BETTER.search(key) else r for r in ratios]  # > 1: worse
    rounds = f"{min(ratios):.2f}-{max(ratios):.2f}"
    if min(worse) > 1 + NOISE_FLOOR:
        return rounds, f"worse by {100 * (statistics.median(worse) - 1):.0f} % (every round)"
    if max(worse) < 1 - NOISE_FLOOR:
        return rounds, f"better by {100 * (1 - statistics.median(worse)):.0f} % (every round)"
    return rounds, "within noise"


def table(runs: dict[str, list[dict]], results: Path) -> str:
    lines = ["| benchmark | figure | before | after | after/before | per round | "
             "load, before runs | load, after runs | judgement |",
             "|---|---|---:|---:|---:|---|---|---|---|"]
    for name, entries in runs.items():
        for e in entries:  # flattened again, so that a better flatten applies to old runs
            e["figures"] = with_derived(name, flatten(json.loads(
                (results / f"{name}-{e['tag']}.json").read_text())))
        sides = {s: [e for e in entries if e["tag"].startswith(s)] for s in ("before", "after")}
        if not sides["before"] or not sides["after"]:
            continue
        loads = {s: "{:.1f}-{:.1f}".format(
            min(min(e["load_before"], e["load_after"]) for e in v),
            max(max(e["load_before"], e["load_after"]) for e in v)) for s, v in sides.items()}
        keys = ["script_cpu_s", "script_wall_s"] + sorted(
            k for k in sides["before"][0]["figures"] if re.search(FIGURES[name], k)
            and all(k in e["figures"] for e in entries))
        for key in keys:
            vals = {s: [e.get(key, e["figures"].get(key)) for e in v] for s, v in sides.items()}
            b, a = statistics.median(vals["before"]), statistics.median(vals["after"])
            ratio = f"{a / b:.3f}" if b else "-"
            label = key
            for pattern, replacement in LABELS:
                label = pattern.sub(replacement, label)
            rounds, judgement = verdict(key, vals["before"], vals["after"])
            lines.append(f"| {name} | {label} | {b:.4g} | {a:.4g} | {ratio} | {rounds} "
                         f"| {loads['before']} | {loads['after']} | {judgement} |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n\n", 1)[1])
    ap.add_argument("before", type=Path, help="checkout before the change (with .venv)")
    ap.add_argument("after", type=Path, help="checkout after the change (with .venv)")
    ap.add_argument("--work", type=Path, default=Path("/var/tmp/bench-before-after"),
                    help="scratch folders, and results/ (every run's log, JSON and runs.json)")
    ap.add_argument("--corpus", type=Path, default=Path("/work/shared/corpus"),
                    help="the real photos the benchmarks replicate")
    ap.add_argument("--rounds", type=int, default=2, help="runs of each side, interleaved")
    ap.add_argument("--only", default=",".join(BENCHMARKS),
                    help="comma list of: " + ", ".join(BENCHMARKS))
    ap.add_argument("--add", action="store_true",
                    help="add rounds to the runs recorded in --work instead of starting over")
    ap.add_argument("--shared-script", action="append", default=[], metavar="NAME",
                    help="run the AFTER checkout's copy of this benchmark's script on both "
                         "sides (each with its own venv and imgtools): for a script whose "
                         "own code was fixed after the change (repeatable)")
    ap.add_argument("--after-first", action="store_true",
                    help="run after, before in each round (added to rounds run the other way, "
                         "this cancels a bias of the second slot)")
    ap.add_argument("--table-only", action="store_true",
                    help="tabulate the runs recorded in --work without running anything")
    args = ap.parse_args()
    results = args.work / "results"
    results.mkdir(parents=True, exist_ok=True)
    record = results / "runs.json"
    runs: dict[str, list[dict]] = json.loads(record.read_text()) if record.exists() else {}
    names = [n.strip() for n in args.only.split(",") if n.strip()]
    if not args.table_only:
        for name in names:
            if not args.add:
                runs[name] = []
            first = len(runs.setdefault(name, [])) // 2
            for r in range(first, first + args.rounds):
                order = [("before", args.before), ("after", args.after)]
                for side, checkout in order[::-1] if args.after_first else order:
                    entry = run_one(checkout.resolve(), name, args.work / "scratch", results,
                                    f"{side}-{r}", args.corpus.resolve(),
                                    (args.after if name in args.shared_script
                                     else checkout).resolve() / "scripts")
                    runs[name].append(entry)
                    print(f"{name} {side} round {r}: script CPU {entry['script_cpu_s']:.1f} s, "
                          f"wall {entry['script_wall_s']:.1f} s, load "
                          f"{entry['load_before']:.1f}-{entry['load_after']:.1f}", flush=True)
                    record.write_text(json.dumps(runs, indent=1) + "\n")
            shutil.rmtree(args.work / "scratch" / name, ignore_errors=True)
    print(table({n: runs[n] for n in runs if n in names}, results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
