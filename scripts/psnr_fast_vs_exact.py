#!/usr/bin/env python
"""How far is ``--fast`` (JPEG DCT-scaled decode) from ``--exact``? Measured, not assumed.

For each photo and size, resize once from the full decode (exact) and once from the drafted
decode (fast), with the build's default filter, and report the PSNR between the two, next to
the PSNR that the JPEG re-encode at the default quality itself costs (the error every output
already carries). Usage: python scripts/psnr_fast_vs_exact.py [--corpus ../shared/corpus]
"""

from __future__ import annotations

import argparse
import json
import math
import platform
from pathlib import Path

import numpy as np
from PIL import Image

from imgtools.transform import (
    DEFAULT_FILTER,
    DEFAULT_QUALITY,
    DRAFT_MARGIN,
    FILTERS,
    decode,
    encode_jpeg,
    read_bytes,
    target_size,
)


def psnr(a: Image.Image, b: Image.Image) -> float:
    x = np.asarray(a, dtype=np.float64)
    y = np.asarray(b, dtype=np.float64)
    mse = float(np.mean((x - y) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)


def measure(files: list[Path], size: int) -> dict:
    fast_vs_exact, encode_cost, n = [], [], 0
    for path in files:
        data = read_bytes(str(path))
        full, _, (w, h) = decode(data)
        if min(w, h) <= size:
            continue  # copied as is in both modes
        dims = target_size(w, h, size)
        exact = full.resize(dims, FILTERS[DEFAULT_FILTER])
        drafted, _, _ = decode(data, draft_to=target_size(w, h, DRAFT_MARGIN * size))
        fast = drafted.resize(dims, FILTERS[DEFAULT_FILTER])
        fast_vs_exact.append(psnr(exact, fast))
        reencoded = Image.open(__import__("io").BytesIO(encode_jpeg(exact, DEFAULT_QUALITY)))
        encode_cost.append(psnr(exact, reencoded.convert("RGB")))
        n += 1
    finite = [p for p in fast_vs_exact if math.isfinite(p)]
    return {"size": size, "images": n,
            "fast_vs_exact_mean_db": round(float(np.mean(finite)), 2) if finite else None,
            "fast_vs_exact_min_db": round(float(np.min(finite)), 2) if finite else None,
            "identical": len(fast_vs_exact) - len(finite),
            "jpeg_q_encode_mean_db": round(float(np.mean(encode_cost)), 2)}


def main() -> None:
    here = Path(__file__).resolve().parent.parent
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", type=Path, default=here.parent / "shared" / "corpus")
    ap.add_argument("--sizes", type=int, nargs="+", default=[128, 160, 192, 224, 256, 320])
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args()
    files = sorted(p for p in args.corpus.iterdir() if p.suffix.lower() in (".jpeg", ".jpg"))
    rows = [measure(files, s) for s in args.sizes]
    print(f"# fast vs exact decode, filter {DEFAULT_FILTER}, {len(files)} photos from "
          f"{args.corpus.name}, Pillow {Image.__version__}, {platform.python_version()}")
    print("| size | photos resized | of which fast decodes smaller | PSNR fast vs exact on "
          f"those: mean (min) | PSNR of the JPEG q{DEFAULT_QUALITY} encode itself |")
    print("|---:|---:|---:|---:|---:|")
    for r in rows:
        drafted = r["images"] - r["identical"]
        psnr_cell = (f"{r['fast_vs_exact_mean_db']} dB ({r['fast_vs_exact_min_db']} dB)"
                     if drafted else "- (identical)")
        print(f"| {r['size']} | {r['images']} | {drafted} | {psnr_cell} | "
              f"{r['jpeg_q_encode_mean_db']} dB |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
