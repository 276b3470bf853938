"""Sources written by the tools that made the real ones: GNU tar (the image-net.org archives)
and TensorFlow Datasets' own builder (a TFDS-prepared copy), built from and compared with the
tree build."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

pytestmark = pytest.mark.usefixtures("own_cache")


def _gnu_tar(*args) -> None:
    subprocess.run(["tar", "--format=gnu", "--owner=0", "--group=0", *map(str, args)],
                   check=True)


@pytest.mark.skipif(shutil.which("tar") is None, reason="needs GNU tar")
def test_archives_made_by_gnu_tar(demo, helpers, tmp_path):
    """The trio as `tar` makes it: per-class tars of bare file names inside the train tar."""
    out, inner = tmp_path / "archives", tmp_path / "inner"
    out.mkdir()
    inner.mkdir()
    for folder in sorted((demo.root / "train").iterdir()):
        _gnu_tar("-cf", inner / f"{folder.name}.tar", "-C", folder,
                 *sorted(p.name for p in folder.iterdir()))
    _gnu_tar("-cf", out / "ILSVRC2012_img_train.tar", "-C", inner,
             *sorted(p.name for p in inner.iterdir()))
    _gnu_tar("-cf", out / "ILSVRC2012_img_val.tar", "-C", demo.root / "val",
             *sorted(p.name for p in (demo.root / "val").iterdir()))
    _gnu_tar("-czf", out / "ILSVRC2012_devkit_t12.tar.gz", "-C", demo.root,
             "ILSVRC2012_devkit_t12")
    _, want = helpers.build_digest("imagenette", demo.src, tmp_path / "tree")
    _, got = helpers.build_digest("imagenette", out, tmp_path / "tar")
    assert got == want and len(want) > 60


_TFDS_SCRIPT = """
import json, sys
import tensorflow_datasets as tfds

items, wnids, data_dir = json.load(open(sys.argv[1])), sys.argv[2].split(","), sys.argv[3]


class Imagenet2012(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    VERSION = tfds.core.Version("5.1.0")

    def _info(self):
        return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(encoding_format="jpeg"),
            "label": tfds.features.ClassLabel(names=wnids),
            "file_name": tfds.features.Text()}))

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples("train"),
                "validation": self._generate_examples("val")}

    def _generate_examples(self, pool):
        for item in items:
            if item["pool"] == pool:
                yield item["name"], {"image": item["path"], "label": item["wnid"],
                                     "file_name": item["name"]}


builder = Imagenet2012(data_dir=data_dir)
builder.download_and_prepare()
print(builder.data_dir)
"""


def test_tfds_prepared_copy(demo, helpers, tmp_path):
    """A TFDS-prepared imagenet2012 folder written by TFDS itself (its writer, its
    label.labels.txt, its file names), with the files TFDS can encode (broken quirks left out
    of both builds)."""
    from imgtools.demo_tree import BROKEN_QUIRKS
    from imgtools.sources.dataset_copy import sorted_wnids

    python = os.environ.get("IMGTOOLS_CLIENTS_PYTHON", sys.executable)
    if subprocess.run([python, "-c", "import tensorflow_datasets"],
                      capture_output=True).returncode:
        pytest.skip("tensorflow_datasets is not installed (set IMGTOOLS_CLIENTS_PYTHON)")
    tree = tmp_path / "tree"
    shutil.copytree(demo.root, tree)
    for kind in BROKEN_QUIRKS:
        if kind in demo.quirks:
            (tree / demo.quirks[kind]).unlink()
    labels = demo.val_label_of()
    items = [{"pool": "train", "wnid": f.parent.name, "name": f.name, "path": str(f)}
             for f in sorted((tree / "train").rglob("*")) if f.is_file()]
    items += [{"pool": "val", "wnid": labels[f.name], "name": f.name, "path": str(f)}
              for f in sorted((tree / "val").iterdir())]
    (tmp_path / "items.json").write_text(json.dumps(items))
    proc = subprocess.run([python, "-c", _TFDS_SCRIPT, str(tmp_path / "items.json"),
                           ",".join(sorted_wnids()), str(tmp_path / "tfds")],
                          capture_output=True, text=True, env={**os.environ,
                                                               "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    copy = tmp_path / "tfds" / "imagenet2012" / "5.1.0"
    assert (copy / "label.labels.txt").is_file()
    assert any(p.name.startswith("imagenet2012-train.tfrecord-") for p in copy.iterdir())
    _, want = helpers.build_digest("imagenette", tree, tmp_path / "from-tree")
    report, got = helpers.build_digest("imagenette", copy, tmp_path / "from-tfds")
    assert report["source_layout"] == "copy:tfds"
    assert got == want and len(want) > 60
