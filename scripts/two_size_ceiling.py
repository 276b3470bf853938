#!/usr/bin/env python
"""How much faster one two-size run can be than two one-size runs, from the image work alone.

Why this exists: ``imgtools build --size 160 --size 320`` saves, against a 320 run followed by
a 160 run, exactly what the second run would spend reading, opening and decoding each image,
plus the second run's start-up. The resizes, the JPEG encodes and the file writes are per
output and cannot be shared. This script measures the image work of each run in one process,
on one core, with no files written and no start-up: ``imgtools.transforms.jpeg.render`` per photo,
for the sizes (320), (160) and (160, 320), the way the build calls it. The quotient

    (render 320 + render 160) / render 160+320

is what a build's two-size ratio would be if reading, writing, planning and start-up cost
nothing. A build sits near it: start-up and per-image reads are shared (they raise the build's
ratio), file writes and hashing are per output (they lower it).

The script also gives the quotient if the 160 output's resize in the two-size render cost
nothing: no way of making the smaller size (from the decoded pixels, from the 320 output,
by any filter) can beat that.

    python scripts/two_size_ceiling.py                  # corpus photos and demo photos
    python scripts/two_size_ceiling.py --sources corpus --repeats 9

Timings are the best of ``--repeats`` passes over all photos, per photo, in milliseconds.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_build import demo_tree  # noqa: E402
from bench_resize import best_ms  # noqa: E402
from make_corpus_tree import DEFAULT_CORPUS, corpus_photos  # noqa: E402

from imgtools.transforms import jpeg as transform  # noqa: E402
from imgtools.transforms.jpeg import RenderOptions, render, target_size  # noqa: E402

SMALL, LARGE = 160, 320


def two_size_small_resize(data: bytes, exact: bool) -> Callable[[], Image.Image] | None:
    """The 160 resize exactly as ``render`` does it in a (160, 320) run, ready to call: after
    the decode that run makes (DCT-scaled only as far as the 320 output allows). None for a
    photo at or under 160 px, which is copied."""
    im = Image.open(io.BytesIO(data))
    w, h = im.size
    if min(w, h) <= SMALL:
        return None
    draft_to = None if exact else target_size(w, h, transform.DRAFT_MARGIN * LARGE)
    rgb, box = transform.load_rgb(im, draft_to)
    dims = target_size(w, h, SMALL)
    return lambda: transform.resize_decoded(rgb, box, dims, transform.DEFAULT_FILTER, exact)


def small_resize_ms(data: bytes, exact: bool, repeats: int) -> float:
    """Time of :func:`two_size_small_resize`, best of ``repeats`` right after the decode, with
    the pixels in cache as in ``render`` (timing all photos' resizes in a row would fetch each
    from memory); 0 for a copied photo."""
    resize = two_size_small_resize(data, exact)
    return 0.0 if resize is None else best_ms([resize], lambda fn: fn(), repeats)


def measure(datas: list[bytes], repeats: int, exact: bool) -> dict:
    """Per-photo render times of each run and the two quotients (see the module docstring).
    All photos count, as in a build: those at or under a size are checked by decoding them
    and copied."""
    runs = {}
    for label, sizes in ((str(LARGE), (LARGE,)), (str(SMALL), (SMALL,)),
                         (f"{SMALL}+{LARGE}", (SMALL, LARGE))):
        opts = RenderOptions(sizes=sizes, exact=exact)
        runs[label] = best_ms(datas, lambda d, o=opts: render(d, o), repeats)
    small_resize = sum(small_resize_ms(d, exact, repeats) for d in datas) / len(datas)
    separate = runs[str(LARGE)] + runs[str(SMALL)]
    together = runs[f"{SMALL}+{LARGE}"]
    return {"photos": len(datas), "exact": exact, "render_ms": runs,
            "small_resize_in_two_size_ms": small_resize,
            "two_runs_over_one": separate / together,
            "two_runs_over_one_if_small_resize_free": separate / (together - small_resize)}


def demo_photos(images: int) -> list[bytes]:
    """Photos of the benchmark demo tree (``bench_build.demo_tree``: ImageNet-sized)."""
    with tempfile.TemporaryDirectory(prefix="two-size-demo-") as tmp:
        tree = demo_tree(Path(tmp) / "tree", images)
        return [p.read_bytes() for p in sorted(tree.rglob("*.JPEG"))]


def markdown(rows: list[dict]) -> str:
    lines = [f"| photos | mode | render {LARGE} (ms) | render {SMALL} (ms) | render {SMALL}+{LARGE}"
             f" (ms) | two runs ÷ one | {SMALL} resize inside it (ms) | two runs ÷ one, "
             f"that resize free |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        ms = r["render_ms"]
        lines.append(
            f"| {r['source']} ({r['photos']}) | {'exact' if r['exact'] else 'fast'} | "
            f"{ms[str(LARGE)]:.3f} | {ms[str(SMALL)]:.3f} | {ms[f'{SMALL}+{LARGE}']:.3f} | "
            f"{r['two_runs_over_one']:.2f}x | {r['small_resize_in_two_size_ms']:.3f} | "
            f"{r['two_runs_over_one_if_small_resize_free']:.2f}x |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS,
                        help="folder of real photos (default: %(default)s)")
    parser.add_argument("--demo-images", type=int, default=400,
                        help="photos to generate for the demo row (default: %(default)s)")
    parser.add_argument("--sources", default="corpus,demo", help="comma list: corpus, demo")
    parser.add_argument("--repeats", type=int, default=5, help="best of this many passes")
    parser.add_argument("--json-out", type=Path, default=None, help="also write all numbers")
    args = parser.parse_args(argv)
    rows = []
    for source in [s.strip() for s in args.sources.split(",") if s.strip()]:
        if source == "corpus":
            datas = [p.read_bytes() for p in corpus_photos(args.corpus)]
        elif source == "demo":
            datas = demo_photos(args.demo_images)
        else:
            parser.error(f"unknown source {source!r}: use corpus and/or demo")
        for exact in (False, True):
            rows.append({"source": source, **measure(datas, args.repeats, exact)})
    if args.json_out:
        args.json_out.write_text(json.dumps(rows, indent=2))
    print(markdown(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
