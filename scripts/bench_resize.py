#!/usr/bin/env python
"""Where a build's time goes per image, and what the SIMD resizer changes: decode, resize, encode.

Why this exists: a build on two cores can beat a one-process Pillow loop by more than 2x only by
doing less work per image. This script measures each stage on real photos, single-threaded, in
one process, so the choice of resizer rests on numbers: JPEG decode (full and DCT-scaled as
``--fast`` does it), resize with Pillow and with ``imgtools.transforms.resample``
(fast_image_resize via
cykooz.resizer) for each filter, and JPEG encode at q90. For each filter it also reports how far
each resizer is from an ideal resize (Lanczos in floating point, never rounded to 8 bits between
passes) and the largest pixel difference between the two resizers.

    python scripts/bench_resize.py                      # the 100 corpus photos, sizes 320 160
    python scripts/bench_resize.py --corpus DIR --sizes 224 --repeats 9

Timings are the best of ``--repeats`` passes over all photos (the least disturbed by other
work on the machine), per photo, in milliseconds. Photos at or under a size are skipped for it,
as a build copies them.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_corpus_tree import DEFAULT_CORPUS, corpus_photos  # noqa: E402
from psnr_fast_vs_exact import psnr  # noqa: E402

from imgtools.transforms import resample  # noqa: E402
from imgtools.transforms.jpeg import DEFAULT_QUALITY, target_size  # noqa: E402

SIMD_FILTERS = ("bilinear", "bicubic", "lanczos", "box")
"""Box is measured although builds keep it on Pillow: this table is where its tie-breaking
differs (a whole row or column one source pixel off at ratios near 1)."""


FILTER_TYPES = {"bilinear": resample.FilterType.bilinear,
                "bicubic": resample.FilterType.catmull_rom,
                "lanczos": resample.FilterType.lanczos3, "box": resample.FilterType.box}


def best_ms(items: list, fn: Callable, repeats: int) -> float:
    """Best-of-``repeats`` time of ``fn`` over all ``items``, per item, in ms."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for item in items:
            fn(item)
        best = min(best, time.perf_counter() - start)
    return 1000 * best / len(items)


def ideal(im: Image.Image, dims: tuple[int, int]) -> np.ndarray:
    planes = [np.asarray(Image.fromarray(np.asarray(c, np.float32), "F").resize(
        dims, Image.Resampling.LANCZOS)) for c in im.split()]
    return np.stack(planes, axis=-1)


def encode(im: Image.Image) -> bytes:
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=DEFAULT_QUALITY)
    return buf.getvalue()


def decode_drafted(data: bytes, size: int) -> Image.Image:
    im = Image.open(io.BytesIO(data))
    im.draft("RGB", target_size(*im.size, size))
    im.load()
    return im


def simd_resize(im: Image.Image, dims: tuple[int, int], name: str) -> Image.Image:
    """fast_image_resize with the named filter, whether or not builds use it for that filter."""
    dst = Image.new("RGB", dims, None)
    resample.Resizer().resize_pil(im, dst, resample.ResizeOptions(
        resample.ResizeAlg.convolution(FILTER_TYPES[name])))
    return dst


def measure(datas: list[bytes], sizes: list[int], repeats: int) -> dict:
    images = [Image.open(io.BytesIO(d)).convert("RGB") for d in datas]
    out: dict = {"photos": len(datas), "repeats": repeats,
                 "decode_full_ms": best_ms(datas, lambda d: Image.open(io.BytesIO(d)).load(),
                                           repeats),
                 "sizes": {}}
    for size in sizes:
        pairs = [(d, im) for d, im in zip(datas, images) if min(im.size) > size]
        jobs = [(im, target_size(*im.size, size)) for _d, im in pairs]  # (photo, output dims)
        row: dict = {"photos_resized": len(jobs),
                     "decode_full_ms": best_ms([d for d, _im in pairs],
                                               lambda d: Image.open(io.BytesIO(d)).load(),
                                               repeats),
                     "decode_dct_scaled_ms": best_ms([d for d, _im in pairs],
                                                     lambda d, s=size: decode_drafted(d, s),
                                                     repeats),
                     "encode_ms": best_ms([im.resize(d) for im, d in jobs], encode, repeats),
                     "filters": {}}
        ideals = [ideal(im, d) for im, d in jobs]
        for name in SIMD_FILTERS:
            flt = resample.FILTERS[name]
            pil_ms = best_ms(jobs, lambda job, f=flt: job[0].resize(job[1], f), repeats)
            simd_ms = best_ms(jobs, lambda job, n=name: simd_resize(job[0], job[1], n), repeats)
            pil_out = [im.resize(d, flt) for im, d in jobs]
            simd_out = [simd_resize(im, d, name) for im, d in jobs]
            row["filters"][name] = {
                "pillow_ms": pil_ms, "simd_ms": simd_ms, "speedup": pil_ms / simd_ms,
                "max_abs_diff": int(max(np.abs(np.asarray(a, np.int16)
                                               - np.asarray(b, np.int16)).max()
                                        for a, b in zip(pil_out, simd_out))),
                "pillow_vs_ideal_db": float(np.mean([psnr(a, i)
                                                     for a, i in zip(pil_out, ideals)])),
                "simd_vs_ideal_db": float(np.mean([psnr(b, i)
                                                   for b, i in zip(simd_out, ideals)]))}
        out["sizes"][str(size)] = row
    return out


def markdown(result: dict) -> str:
    lines = [f"Full JPEG decode: {result['decode_full_ms']:.3f} ms per photo "
             f"({result['photos']} photos, best of {result['repeats']}). Per size, the photos "
             "larger than it:", "",
             "| size | photos | full decode (ms) | DCT-scaled decode (ms) | JPEG q90 encode (ms) "
             "| filter "
             "| Pillow resize (ms) | SIMD resize (ms) | speed-up | max pixel diff "
             "| Pillow vs ideal | SIMD vs ideal |",
             "|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|"]
    for size, row in result["sizes"].items():
        for name, f in row["filters"].items():
            lines.append(
                f"| {size} | {row['photos_resized']} | {row['decode_full_ms']:.3f} | "
                f"{row['decode_dct_scaled_ms']:.3f} | "
                f"{row['encode_ms']:.3f} | {name} | {f['pillow_ms']:.3f} | {f['simd_ms']:.3f} | "
                f"{f['speedup']:.1f}x | {f['max_abs_diff']} | {f['pillow_vs_ideal_db']:.2f} dB | "
                f"{f['simd_vs_ideal_db']:.2f} dB |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS,
                        help="folder of real photos (default: %(default)s)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[320, 160])
    parser.add_argument("--repeats", type=int, default=5, help="best of this many passes")
    parser.add_argument("--json-out", type=Path, default=None, help="also write all numbers")
    args = parser.parse_args(argv)
    datas = [p.read_bytes() for p in corpus_photos(args.corpus)]
    result = measure(datas, args.sizes, args.repeats)
    result["resizer"] = resample.resizer_name(exact=False)
    if args.json_out:
        args.json_out.write_text(json.dumps(result, indent=2))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
