"""Benchmark: imgtools' downsampled-ImageNet pipeline against the published two-step method.

Builds (once, cached under --work) an ImageNet-shaped tree of --images real-looking JPEGs made
from the real ImageNet photos in --corpus (each a different crop / flip / JPEG quality of one of
them), then, on that same tree and in the same run, for each size:

* baseline: a straightforward implementation of github PatrykChrabaszcz/Imagenet32_Scripts -
  step 1 resizes every image to a PNG file (image_resizer_imagent.py, a Pool over class folders
  with --jobs processes), step 2 reads all PNGs into one array, takes the mean, shuffles and
  pickles 10 train files and val_data (image2numpy_imagenet_{train,val}.py);
* ours: ``imgtools.downsample.downsample_dataset`` with --jobs workers (exact pixels, default);
* ours --fast, and ours with every size in one run (each image decoded once).

Each run is a child process; wall time and the peak of the summed RSS of its whole process tree
(workers included) are measured from outside by polling /proc. Both sides' means are compared
bit for bit. The PSNR of --fast against the exact path is measured on the corpus photos.

    python scripts/bench_downsample.py --images 500              # quick check
    python scripts/bench_downsample.py --images 20000 --sizes 32 64   # README numbers
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import shutil
import subprocess
import sys
import time
from multiprocessing import Pool
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
DEFAULT_CORPUS = REPO.parent / "shared" / "corpus"
VAL_FRACTION = 0.05
SHARD_SIZE = 256


# --------------------------------------------------------------------------- the test tree


def make_tree(corpus: Path, root: Path, n_images: int, jobs: int) -> Path:
    """``root/train/<wnid>/*.JPEG`` and ``root/val/<wnid>/*.JPEG``; reused when complete."""
    done = root / f"complete-{n_images}"
    if done.is_file():
        return root
    shutil.rmtree(root, ignore_errors=True)
    photos = sorted(corpus.glob("*.JPEG"))
    if not photos:
        sys.exit(f"error: no *.JPEG photos in {corpus} (pass --corpus)")
    n_val = int(n_images * VAL_FRACTION)
    work = [(i, str(photos[i % len(photos)]), str(root), i < n_val) for i in range(n_images)]
    with Pool(jobs) as pool:
        for _ in pool.imap_unordered(_make_variant, work, chunksize=64):
            pass
    done.write_text("ok\n")
    return root


def _make_variant(job: tuple[int, str, str, bool]) -> None:
    i, photo, root, is_val = job
    rng = np.random.default_rng(i)
    wnid = Path(photo).name.split("_")[0]
    im = Image.open(photo).convert("RGB")
    w, h = im.size
    scale = rng.uniform(0.7, 1.0)
    cw, ch = max(16, int(w * scale)), max(16, int(h * scale))
    left, top = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
    im = im.crop((left, top, left + cw, top + ch))
    if rng.random() < 0.5:
        im = im.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    split = "val" if is_val else "train"
    out = Path(root) / split / wnid / f"{wnid}_{i}.JPEG"
    out.parent.mkdir(parents=True, exist_ok=True)
    im.save(out, quality=int(rng.integers(75, 96)))


def tree_items(root: Path) -> tuple[list[str], list[tuple[str, str, int]]]:
    wnids = sorted(p.name for p in (root / "train").iterdir())
    items = []
    for split in ("train", "val"):
        for label, wnid in enumerate(wnids):
            folder = root / split / wnid
            if folder.is_dir():
                items += [(str(p), split, label) for p in sorted(folder.iterdir())]
    return wnids, items


# --------------------------------------------------------------------------- the two methods


def run_ours(tree: Path, out: Path, sizes: list[int], jobs: int, fast: bool) -> None:
    from imgtools.downsample import DownsampleItem, downsample_dataset
    from imgtools.records import ClassInfo, DatasetInfo

    wnids, items = tree_items(tree)
    info = DatasetInfo("bench", [ClassInfo(w, w) for w in wnids])
    plan = [DownsampleItem(src, split, label) for src, split, label in items]
    shards = [plan[i:i + SHARD_SIZE] for i in range(0, len(plan), SHARD_SIZE)]
    downsample_dataset(shards, out, sizes, info=info, seed=0, fast=fast, n_jobs=jobs, quiet=True)


def _resize_folder(job: tuple[str, str, int]) -> None:
    """image_resizer_imagent.py's resize_img_folder with alg box."""
    in_dir, out_dir, size = job
    os.makedirs(out_dir, exist_ok=True)
    for filename in os.listdir(in_dir):
        try:
            im = Image.open(os.path.join(in_dir, filename))
            if im.mode != "RGB":
                im = im.convert(mode="RGB")
            im_resized = im.resize((size, size), Image.BOX)
            im_resized.save(os.path.join(out_dir, os.path.splitext(filename)[0] + ".png"))
        except OSError:
            print(f"Couldn't resize: {os.path.join(in_dir, filename)}", file=sys.stderr)


def _read_planar(path: str) -> np.ndarray:
    img = np.asarray(Image.open(path))
    return np.concatenate([img[:, :, 0].ravel(), img[:, :, 1].ravel(), img[:, :, 2].ravel()])


def run_baseline(tree: Path, out: Path, size: int, jobs: int) -> None:
    """The published two steps, with numpy where they used Python lists per pixel."""
    wnids = sorted(p.name for p in (tree / "train").iterdir())
    pngs = out / "png"
    jobs_list = [(str(tree / split / w), str(pngs / split / w), size)
                 for split in ("train", "val") for w in wnids if (tree / split / w).is_dir()]
    with Pool(jobs) as pool:
        pool.map(_resize_folder, jobs_list)
    dest = out / f"bench_{size}x{size}"
    dest.mkdir(parents=True, exist_ok=True)
    data_list, labels = [], []
    for label, wnid in enumerate(wnids, 1):
        folder = pngs / "train" / wnid
        images = [_read_planar(str(folder / name)) for name in os.listdir(folder)]
        data_list.append(np.vstack(images))
        labels += [label] * len(images)
    x = np.concatenate(data_list, axis=0)
    del data_list
    x_mean = np.mean(x, axis=0)
    idx = np.random.default_rng(0).permutation(len(x))
    step = len(x) // 10
    y = np.array(labels)
    for i in range(10):
        part = idx[i * step:(i + 1) * step] if i < 9 else idx[9 * step:]
        d = {"data": x[part], "labels": y[part].tolist(), "mean": x_mean}
        with open(dest / f"train_data_batch_{i + 1}", "wb") as f:
            pickle.dump(d, f)
    del x
    val_images, val_labels = [], []
    for label, wnid in enumerate(wnids, 1):
        folder = pngs / "val" / wnid
        if folder.is_dir():
            for name in os.listdir(folder):
                val_images.append(_read_planar(str(folder / name)))
                val_labels.append(label)
    with open(dest / "val_data", "wb") as f:
        pickle.dump({"data": np.vstack(val_images), "labels": val_labels}, f)


# --------------------------------------------------------------------------- measuring


def _children_of() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        kids.setdefault(ppid, []).append(int(entry))
    return kids


def _tree_rss(pid: int) -> int:
    """Summed RSS (bytes) of ``pid`` and all its descendants."""
    kids = _children_of()
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        todo += kids.get(p, [])
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) * 1024
                        break
        except OSError:
            continue
    return total


def measure(argv: list[str]) -> dict:
    """Run a child; wall seconds and peak process-tree RSS, polled every 20 ms."""
    os.sync()  # no contender pays for another's write-back
    started = time.perf_counter()
    child = subprocess.Popen([sys.executable, __file__, *argv])
    peak = 0
    while child.poll() is None:
        peak = max(peak, _tree_rss(child.pid))
        time.sleep(0.02)
    seconds = time.perf_counter() - started
    if child.returncode != 0:
        sys.exit(f"error: child {' '.join(argv)} failed with exit code {child.returncode}")
    return {"seconds": round(seconds, 2), "peak_rss_mb": round(peak / 2**20, 1)}


def fast_psnr(corpus: Path, size: int) -> float:
    from imgtools.transforms.square import downsample_file

    err = []
    for photo in sorted(corpus.glob("*.JPEG")):
        exact, _ = downsample_file(photo, [size])
        fast, _ = downsample_file(photo, [size], fast=True)
        err.append(np.mean((exact[size].astype(np.float64) - fast[size]) ** 2))
    mse = float(np.mean(err))
    return float("inf") if mse == 0 else round(10 * np.log10(255**2 / mse), 1)


def same_mean(a: Path, b: Path) -> bool:
    with open(a, "rb") as fa, open(b, "rb") as fb:
        return pickle.load(fa)["mean"].tobytes() == pickle.load(fb)["mean"].tobytes()


# --------------------------------------------------------------------------- main


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS,
                    help="folder of real ImageNet *.JPEG photos [default: ../shared/corpus]")
    ap.add_argument("--images", type=int, default=20000, help="images in the test tree")
    ap.add_argument("--sizes", type=int, nargs="+", default=[32, 64])
    ap.add_argument("--jobs", type=int, default=2, help="processes for both methods")
    ap.add_argument("--work", type=Path, default=Path("/tmp/imgtools-bench-downsample"),
                    help="scratch folder (the tree is cached here between runs)")
    ap.add_argument("--json", action="store_true", help="print the results as JSON only")
    ap.add_argument("--run", choices=["ours", "ours-fast", "baseline"], help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    tree = args.work / "tree"
    if args.run:  # child process
        if args.run == "baseline":
            run_baseline(tree, args.out, args.sizes[0], args.jobs)
        else:
            run_ours(tree, args.out, args.sizes, args.jobs, fast=args.run == "ours-fast")
        return

    make_tree(args.corpus, tree, args.images, args.jobs)
    results = {"images": args.images, "jobs": args.jobs, "cores": os.cpu_count(), "rows": []}
    common = ["--work", str(args.work), "--jobs", str(args.jobs)]
    for size in args.sizes:
        row: dict = {"size": size}
        for method in ("baseline", "ours", "ours-fast"):
            out = args.work / f"out-{method}-{size}"
            shutil.rmtree(out, ignore_errors=True)
            row[method] = measure(["--run", method, "--out", str(out), "--sizes", str(size),
                                   *common])
        base, ours = row["baseline"], row["ours"]
        row["speedup"] = round(base["seconds"] / ours["seconds"], 2)
        row["rss_ratio"] = round(ours["peak_rss_mb"] / base["peak_rss_mb"], 3)
        row["mean_identical"] = same_mean(
            args.work / f"out-baseline-{size}" / f"bench_{size}x{size}" / "train_data_batch_1",
            args.work / f"out-ours-{size}" / f"bench_{size}x{size}" / "train_data_batch_1")
        row["fast_psnr_db"] = fast_psnr(args.corpus, size)
        results["rows"].append(row)
    if len(args.sizes) > 1:
        out = args.work / "out-ours-all"
        shutil.rmtree(out, ignore_errors=True)
        together = measure(["--run", "ours", "--out", str(out), "--sizes",
                            *map(str, args.sizes), *common])
        separate = sum(r["baseline"]["seconds"] for r in results["rows"])
        results["all_sizes_one_run"] = {**together, "baseline_seconds_sum": round(separate, 2),
                                        "speedup": round(separate / together["seconds"], 2)}
    for path in args.work.glob("out-*"):
        shutil.rmtree(path, ignore_errors=True)
    if args.json:
        print(json.dumps(results, indent=2))
        return
    print(f"{args.images} images, {args.jobs} jobs, {os.cpu_count()} cores")
    print("| size | baseline s | baseline peak RSS MB | ours s | ours peak RSS MB | speed-up "
          "| RSS ratio | ours --fast s | --fast PSNR dB | mean bit-identical |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in results["rows"]:
        print(f"| {r['size']} | {r['baseline']['seconds']} | {r['baseline']['peak_rss_mb']} | "
              f"{r['ours']['seconds']} | {r['ours']['peak_rss_mb']} | {r['speedup']}x | "
              f"{r['rss_ratio']} | {r['ours-fast']['seconds']} | {r['fast_psnr_db']} | "
              f"{r['mean_identical']} |")
    if "all_sizes_one_run" in results:
        a = results["all_sizes_one_run"]
        print(f"\nall sizes in one run: {a['seconds']} s, peak {a['peak_rss_mb']} MB "
              f"(baseline, one run per size: {a['baseline_seconds_sum']} s; {a['speedup']}x)")


if __name__ == "__main__":
    main()
