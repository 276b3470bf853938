"""One orientation and colour policy: every output is upright sRGB with no Orientation tag and no
ICC profile, so HF ``datasets`` (which applies ``exif_transpose``), PIL and TensorFlow (which do
not, and none of which applies ICC profiles) return the same dimensions and the same colours.

Sources: a photo stored landscape with EXIF Orientation 6 (as phones write it) and a photo
tagged Adobe RGB (1998). Both are built at full size (where a clean JPEG would be copied) and
at 160 px (resized), as folders and as Parquet.
"""

from __future__ import annotations

import io
import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageCms

from imgtools.build import BuildOptions, build
from imgtools.plan import make_plan
from imgtools.recipes import load_recipe
from imgtools.sources import open_source
from imgtools.transforms.jpeg import RenderOptions, render

WNID = "n01440764"
ROTATED, ADOBE, PLAIN = f"{WNID}_1.JPEG", f"{WNID}_2.JPEG", f"{WNID}_3.JPEG"
RED, BLUE = (220, 30, 30), (30, 30, 220)
ADOBE_COLOUR = (200, 100, 50)  # Adobe RGB values; in sRGB about (220, 94, 38)


def _s15(x: float) -> bytes:
    return struct.pack(">i", round(x * 65536))


def adobe_rgb_profile() -> bytes:
    """An ICC v2 matrix/TRC profile with Adobe RGB (1998)'s primaries (D50-adapted, as in
    Adobe's own profile) and gamma 563/256. ``PIL.ImageCms`` can only create sRGB, LAB and XYZ
    profiles, so the bytes are laid out here and LittleCMS (through ImageCms) parses them."""
    def xyz(x, y, z):
        return b"XYZ \0\0\0\0" + _s15(x) + _s15(y) + _s15(z)

    name = b"Adobe RGB (1998) compatible"
    desc = (b"desc\0\0\0\0" + struct.pack(">I", len(name) + 1) + name + b"\0"
            + b"\0" * 8 + b"\0\0\0" + b"\0" * 67)
    curve = b"curv\0\0\0\0" + struct.pack(">IH", 1, 563) + b"\0\0"
    tags = [(b"desc", desc), (b"cprt", b"text\0\0\0\0no copyright, test data\0"),
            (b"wtpt", xyz(0.9642, 1.0, 0.8249)),
            (b"rXYZ", xyz(0.6097412, 0.3111115, 0.0194702)),
            (b"gXYZ", xyz(0.2052460, 0.6256714, 0.0608673)),
            (b"bXYZ", xyz(0.1491852, 0.0632172, 0.7445679)),
            (b"rTRC", curve), (b"gTRC", curve), (b"bTRC", curve)]
    offset = 128 + 4 + 12 * len(tags)
    table, data = b"", b""
    for sig, body in tags:
        body += b"\0" * (-len(body) % 4)
        table += sig + struct.pack(">II", offset + len(data), len(body))
        data += body
    size = offset + len(data)
    header = (struct.pack(">I", size) + b"\0\0\0\0" + bytes([2, 0x10, 0, 0]) + b"mntrRGB XYZ "
              + b"\0" * 12 + b"acsp" + b"\0" * 24 + b"\0\0\0\0"
              + _s15(0.9642) + _s15(1.0) + _s15(0.8249) + b"\0" * 48)
    assert len(header) == 128
    return header + struct.pack(">I", len(tags)) + table + data


def expected_srgb(adobe: tuple[int, int, int]) -> np.ndarray:
    """What LittleCMS makes of an Adobe RGB colour in sRGB (the conversion itself, not ours)."""
    profile = ImageCms.ImageCmsProfile(io.BytesIO(adobe_rgb_profile()))
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))
    pixel = ImageCms.profileToProfile(Image.new("RGB", (1, 1), adobe), profile, srgb)
    return np.asarray(pixel, dtype=np.int16)[0, 0]


def _jpeg(image: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=95, **kw)
    return buf.getvalue()


def rotated_source() -> bytes:
    """Stored 400x300, left half red and right half blue, with Orientation 6 ("rotate 90
    clockwise to show"): shown 300x400, red on top and blue below."""
    stored = Image.new("RGB", (400, 300), BLUE)
    stored.paste(RED, (0, 0, 200, 300))
    exif = Image.Exif()
    exif[0x0112] = 6
    return _jpeg(stored, exif=exif)


def adobe_source() -> bytes:
    return _jpeg(Image.new("RGB", (400, 300), ADOBE_COLOUR), icc_profile=adobe_rgb_profile())


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict[str, Path]:
    """The two sources (and a plain photo) built at full size and 160 px, folder and Parquet."""
    tmp = tmp_path_factory.mktemp("orient")
    for split in ("train", "val"):
        (tmp / "in" / split / WNID).mkdir(parents=True)
    (tmp / "in" / "train" / WNID / ROTATED).write_bytes(rotated_source())
    (tmp / "in" / "train" / WNID / ADOBE).write_bytes(adobe_source())
    (tmp / "in" / "train" / WNID / PLAIN).write_bytes(_jpeg(Image.new("RGB", (400, 300), RED)))
    (tmp / "in" / "val" / WNID / "ILSVRC2012_val_00000001.JPEG").write_bytes(
        _jpeg(Image.new("RGB", (400, 300), BLUE)))
    recipe = tmp / "one.toml"
    recipe.write_text(f'name = "one"\nclasses = ["{WNID}"]\npool = ["train", "val"]\n'
                      'default_split = "source"\n')
    plan = make_plan(load_recipe(recipe), open_source(tmp / "in"), split_mode=None, seed=0)
    out = {}
    for fmt in ("folder", "parquet"):
        report = build(plan, BuildOptions(out=tmp / "out", sizes=[None, 160], fmt=fmt,
                                          quiet=True, n_jobs=1), command="test")
        for size, root in zip(("full", "160"), report["outputs"]):
            out[f"{fmt}-{size}"] = Path(root)
        repaired = {Path(r["path"]).name: r["what"] for r in report["repaired"]}
        assert "EXIF Orientation 6 applied" in repaired[ROTATED]
        assert "'Adobe RGB (1998) compatible' converted to sRGB" in repaired[ADOBE]
        assert PLAIN not in repaired
    return out


def pil_read(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        assert 0x0112 not in im.getexif() and "icc_profile" not in im.info
        return np.asarray(im.convert("RGB"))


def hf_read(folder: Path, parquet: Path) -> dict[str, list[np.ndarray]]:
    """file name -> the pixels HF ``datasets`` returns, from the folder (``imagefolder``) and
    from our Parquet; both decode through ``datasets.Image`` (``exif_transpose`` included)."""
    datasets = pytest.importorskip("datasets")
    out: dict[str, list[np.ndarray]] = {}
    loaded = [datasets.load_dataset("imagefolder", data_dir=str(folder), split="train"),
              datasets.load_dataset("parquet", data_files=str(parquet / "train-*.parquet"),
                                    split="train")]
    for ds in loaded:
        names = [Path(r["path"]).name for r in
                 ds.cast_column("image", datasets.Image(decode=False))["image"]]
        for name, row in zip(names, ds):
            out.setdefault(name, []).append(np.asarray(row["image"].convert("RGB")))
    return out


_TF_SCRIPT = """
import sys
from pathlib import Path
import numpy as np
import tensorflow as tf
out = Path(sys.argv[1])
for i, path in enumerate(sys.argv[2:]):
    pixels = tf.io.decode_jpeg(tf.io.read_file(path), channels=3).numpy()
    np.save(out / f"{i}.npy", pixels)
print("done")
"""


def tf_read(paths: list[Path], tmp: Path) -> list[np.ndarray]:
    """``tf.io.decode_jpeg`` on each of ``paths`` in the clients' Python (TensorFlow must not
    share our process), in one interpreter."""
    python = os.environ.get("IMGTOOLS_CLIENTS_PYTHON", sys.executable)
    proc = subprocess.run([python, "-W", "ignore", "-c", _TF_SCRIPT, str(tmp), *map(str, paths)],
                          capture_output=True, text=True)
    if proc.returncode and "No module named 'tensorflow" in proc.stderr:
        pytest.skip("tensorflow is not installed (set IMGTOOLS_CLIENTS_PYTHON; .ci/run does)")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return [np.load(tmp / f"{i}.npy") for i in range(len(paths))]


@pytest.fixture(scope="module")
def tf_pixels(built, tmp_path_factory) -> dict[str, dict[str, np.ndarray]]:
    """size -> file name -> TensorFlow's pixels (one TensorFlow start for both sizes)."""
    keys = [(size, n) for size in ("full", "160") for n in (ROTATED, ADOBE)]
    pixels = tf_read([built[f"folder-{size}"] / "train" / WNID / n for size, n in keys],
                     tmp_path_factory.mktemp("tf"))
    out: dict[str, dict[str, np.ndarray]] = {"full": {}, "160": {}}
    for (size, name), array in zip(keys, pixels):
        out[size][name] = array
    return out


@pytest.mark.parametrize("size", ["full", "160"])
def test_every_reader_sees_the_same_upright_srgb_image(built, tf_pixels, size):
    folder, parquet = built[f"folder-{size}"], built[f"parquet-{size}"]
    files = [folder / "train" / WNID / n for n in (ROTATED, ADOBE)]
    pil = {p.name: pil_read(p) for p in files}
    hf = hf_read(folder, parquet)
    tf = tf_pixels[size]
    for name in (ROTATED, ADOBE):
        readers = [pil[name], *hf[name], tf[name]]
        assert len(readers) == 4
        assert {r.shape for r in readers} == {pil[name].shape}, name  # same dimensions
        for r in hf[name]:  # same colours: datasets decodes with PIL
            assert np.array_equal(r, pil[name]), name
        # TensorFlow's default decode uses libjpeg's fast integer IDCT: a few levels of rounding
        diff = np.abs(tf[name].astype(np.int16) - pil[name])
        assert diff.max() <= 6 and diff.mean() < 1.5, (name, diff.max(), diff.mean())
    rotated = pil[ROTATED].astype(np.int16)
    h, w, _ = rotated.shape
    assert h > w and (h, w) == ((400, 300) if size == "full" else (213, 160))  # shown upright
    top, bottom = rotated[: h // 3].mean((0, 1)), rotated[-h // 3:].mean((0, 1))
    assert np.abs(top - RED).max() < 8 and np.abs(bottom - BLUE).max() < 8
    adobe = pil[ADOBE].astype(np.int16)
    centre = adobe[adobe.shape[0] // 2, adobe.shape[1] // 2]
    target = expected_srgb(ADOBE_COLOUR)
    assert np.abs(target - ADOBE_COLOUR).max() > 10  # the test can tell the two apart
    assert np.abs(centre - target).max() <= 3, (centre, target)


def test_an_upright_srgb_jpeg_is_still_copied_byte_for_byte(built):
    """The fast path is unchanged for the images that need nothing: the plain photo, and an
    sRGB-tagged one (a profile LittleCMS finds to be sRGB is no reason to re-encode)."""
    src = _jpeg(Image.new("RGB", (400, 300), RED))
    assert (built["folder-full"] / "train" / WNID / PLAIN).read_bytes() == src
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    tagged = _jpeg(Image.new("RGB", (120, 90), BLUE), icc_profile=srgb)
    outputs, note = render(tagged, RenderOptions((None, 160)))
    assert note is None and outputs == [tagged, tagged]


def test_the_profile_is_the_one_the_test_means():
    profile = ImageCms.ImageCmsProfile(io.BytesIO(adobe_rgb_profile()))
    assert ImageCms.getProfileDescription(profile).strip() == "Adobe RGB (1998) compatible"
    assert profile.profile.xcolor_space == "RGB "
    assert json.dumps(expected_srgb(ADOBE_COLOUR).tolist())  # LittleCMS converts with it
