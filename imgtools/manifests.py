"""Class manifests: ``wnid<TAB>name`` lines, or the devkit's ``wnid id name`` lines
(``map_clsloc.txt``), and the ImageNet-1k class table shipped as one.

Apart from :mod:`imgtools.recipes` because readers need the class table without the recipe
machinery (a JPEG folder without a sidecar names its wnid folders from it): a conversion's
start-up then loads neither TOML nor the recipe types.
"""

from __future__ import annotations

from pathlib import Path

from imgtools.errors import UserError
from imgtools.records import ClassInfo
from imgtools.resources import manifest_path

IMAGENET_MANIFEST = "imagenet1k_map_clsloc.txt"


def imagenet_names() -> dict[str, str]:
    """wnid -> readable name for all 1000 ImageNet-1k classes (from the devkit's map_clsloc)."""
    return {c.wnid: c.name for c in read_manifest(manifest_path(IMAGENET_MANIFEST))}


def read_manifest(path: Path) -> list[ClassInfo]:
    """Read ``wnid<TAB>name`` lines, or devkit ``wnid id name`` lines (map_clsloc.txt)."""
    classes: list[ClassInfo] = []
    for lineno, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split("\t") if "\t" in line else line.split(None, 2)
        wnid = parts[0].strip()
        if not is_wnid(wnid):
            raise UserError(f"line {lineno}: {wnid!r} is not a WordNet id like n01440764",
                            path=path, fix="each line must start with a wnid")
        if len(parts) == 3 and parts[1].strip().isdigit():  # map_clsloc: wnid id name
            name = parts[2].strip().replace("_", " ")
        else:
            name = parts[1].strip() if len(parts) > 1 else wnid
        classes.append(ClassInfo(wnid, name))
    if not classes:
        raise UserError("the class list is empty", path=path, fix="list one wnid per line")
    return classes


def is_wnid(s: str) -> bool:
    return len(s) == 9 and s[0] == "n" and s[1:].isdigit()
