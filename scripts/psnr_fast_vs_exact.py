#!/usr/bin/env python
"""How far is ``--fast`` (JPEG DCT-scaled decode) from ``--exact``? Measured, not assumed.

For each photo and size, resize once from the full decode (exact) and once the way ``--fast``
does (DCT-scaled decode, then ``transform.resize_decoded``: the scaled decode's box and, for a
soft filter, bicubic), before any JPEG encoding. Reported per decode margin (the build's
``DRAFT_MARGIN`` of 1, i.e. DCT scaling down to the target itself, and 2, Pillow's
``thumbnail()`` margin), plus margin 1 done naively (requested filter over the whole scaled
image, ignoring its box), which is what an earlier version of ``--fast`` did: how many photos the
fast path decodes smaller, the PSNR between fast and exact on those, and each one's PSNR against
an ideal resize (full decode, Lanczos), which tells a real loss of detail from a mere
difference. The JPEG re-encode at the default quality is shown as the error every output
carries anyway.

    python scripts/psnr_fast_vs_exact.py [--corpus ../shared/corpus] [--sizes 160 320]
"""

from __future__ import annotations

import argparse
import io
import json
import math
import platform
from pathlib import Path

import numpy as np
from PIL import Image

from imgtools.transforms.jpeg import (
    DEFAULT_FILTER,
    DEFAULT_QUALITY,
    DRAFT_MARGIN,
    FILTERS,
    decode,
    encode_jpeg,
    read_bytes,
    resize_decoded,
    target_size,
)


def psnr(a: Image.Image, b: Image.Image) -> float:
    x = np.asarray(a, dtype=np.float64)
    y = np.asarray(b, dtype=np.float64)
    mse = float(np.mean((x - y) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)


def _mean(values: list[float]) -> float | None:
    return round(float(np.mean(values)), 2) if values else None


def measure(files: list[Path], size: int, margin: int, naive: bool = False) -> dict:
    drafted_vs_exact, fast_vs_ideal, exact_vs_ideal, encode_cost = [], [], [], []
    resized = 0
    for path in files:
        data = read_bytes(str(path))
        full, _, _, (w, h) = decode(data)
        if min(w, h) <= size:
            continue  # copied as is in both modes
        resized += 1
        dims = target_size(w, h, size)
        exact = full.resize(dims, FILTERS[DEFAULT_FILTER])
        encoded = Image.open(io.BytesIO(encode_jpeg(exact, DEFAULT_QUALITY))).convert("RGB")
        encode_cost.append(psnr(exact, encoded))
        drafted, box, _, _ = decode(data, draft_to=target_size(w, h, margin * size))
        if drafted.size == full.size:
            continue  # too small for DCT scaling: fast is exact
        fast = (drafted.resize(dims, FILTERS[DEFAULT_FILTER]) if naive
                else resize_decoded(drafted, box, dims, DEFAULT_FILTER))
        ideal = full.resize(dims, Image.Resampling.LANCZOS)
        drafted_vs_exact.append(psnr(exact, fast))
        fast_vs_ideal.append(psnr(fast, ideal))
        exact_vs_ideal.append(psnr(exact, ideal))
    return {"size": size, "margin": f"{margin} naive" if naive else margin, "resized": resized,
            "decoded_smaller": len(drafted_vs_exact),
            "fast_vs_exact_db": _mean(drafted_vs_exact),
            "fast_vs_exact_min_db": round(min(drafted_vs_exact), 2) if drafted_vs_exact else None,
            "fast_vs_ideal_db": _mean(fast_vs_ideal), "exact_vs_ideal_db": _mean(exact_vs_ideal),
            "jpeg_encode_db": _mean(encode_cost)}


def main() -> None:
    here = Path(__file__).resolve().parent.parent
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", type=Path, default=here.parent / "shared" / "corpus")
    ap.add_argument("--sizes", type=int, nargs="+", default=[128, 160, 224, 320])
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args()
    files = sorted(p for p in args.corpus.iterdir() if p.suffix.lower() in (".jpeg", ".jpg"))
    rows = [measure(files, s, m) for m in sorted({DRAFT_MARGIN, 1, 2}) for s in args.sizes]
    rows += [measure(files, s, 1, naive=True) for s in args.sizes]
    print(f"{len(files)} photos from {args.corpus}, filter {DEFAULT_FILTER}, Pillow "
          f"{Image.__version__}, Python {platform.python_version()}; build default margin: "
          f"{DRAFT_MARGIN}")
    print()
    print("| margin | size | photos resized | decoded smaller by `--fast` | PSNR fast vs exact, "
          "mean (min) | fast vs ideal | exact vs ideal | JPEG q90 encode |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        cell = "-"
        if r["decoded_smaller"]:
            cell = f"{r['fast_vs_exact_db']} dB ({r['fast_vs_exact_min_db']} dB)"
        ideal_fast = f"{r['fast_vs_ideal_db']} dB" if r["decoded_smaller"] else "-"
        ideal_exact = f"{r['exact_vs_ideal_db']} dB" if r["decoded_smaller"] else "-"
        print(f"| {r['margin']} | {r['size']} | {r['resized']} | {r['decoded_smaller']} | {cell} "
              f"| {ideal_fast} | {ideal_exact} | {r['jpeg_encode_db']} dB |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
