"""Dataset recipes: declarative descriptions of what to carve out of ImageNet.

A recipe is a TOML file (``builders/imagenette.toml`` and friends, or the user's own) that says
which classes, which ImageNet splits to draw from, and how to split them. The machinery that
executes a recipe lives elsewhere (``imgtools.plan``), as TFDS separates a dataset's description
from its builder: adding an Imagenette-like subset is a new file, not new code.

Recipe keys (all optional except ``name`` and ``classes`` or ``parts``)::

    name          short name; also the default output folder name
    pretty_name   display name (dataset card)
    output_name   output folder stem: "imagenette2" gives imagenette2-320/
    description, homepage, license
    classes       a manifest file (wnid<TAB>name lines; looked up beside the recipe, then
                  in manifests/), or an inline list of wnids or of {wnid=, name=} tables
    pool          ImageNet splits to draw images from: ["train", "val"] (default ["train"])
    default_split "official" (needs [official]), "random", or "source" (keep ImageNet's split)
    csv_name      name of the fastai-style label CSV written beside the output
    label_order   "wnid" (default): label i is the i-th class in sorted wnid order, as
                  torchvision/HF/TFDS/Keras/fastai number class folders; "recipe": pin the
                  order the recipe lists its classes in (every output then says so)
    downsampled_label_order
                  the same choice for pickle/npz outputs only (default: label_order);
                  ``imagenet`` pins "recipe" there to keep the published map_clsloc ids
    [official]    url, sha256, counts: the published membership list (fastai CSV)
    [random]      valid_pct: fraction of each class sent to val by --split random
    [[parts]]     composite recipes (Imagewang): recipe=, take={from_split = to_split},
                  fraction= (share of each class kept in the mapped split),
                  fraction_of= "part" (default: of the images taken) or "class" (of all
                  the class's images, train + val, still drawn from the taken split),
                  rest= (the split that gets the others)
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

from imgtools.errors import UserError
from imgtools.manifests import (
    IMAGENET_MANIFEST,
    imagenet_names,
    is_wnid,
    read_manifest,
)
from imgtools.records import ClassInfo
from imgtools.resources import builtin_recipes, manifest_path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

LABEL_ORDERS = ("wnid", "recipe")
LABEL_ORDER_TEXT = {
    "wnid": "sorted wnid: label i is the i-th class in sorted WordNet-id order, as torchvision "
            "ImageFolder, HF imagefolder, TFDS, Keras and fastai number class folders",
    "recipe": "recipe order (pinned by the recipe): label i is the i-th class {listed}, not "
              "the sorted-folder order of ImageFolder-style readers",
}
"""What ``label_order`` means, as every output's metadata (and so the dataset card) states it."""


@dataclass(frozen=True)
class OfficialSplit:
    url: str
    sha256: str
    counts: dict[str, int] = field(default_factory=dict)


@dataclass
class Part:
    """A piece of a composite recipe: which split of ``recipe`` goes to which of ours."""

    recipe: Recipe
    take: dict[str, str]
    fraction: float | None = None
    rest: str | None = None
    fraction_of: str = "part"


@dataclass
class Recipe:
    name: str
    classes: list[ClassInfo]
    path: Path | None = None
    pretty_name: str = ""
    output_name: str = ""
    description: str = ""
    homepage: str = ""
    license: str = "other"
    pool: tuple[str, ...] = ("train",)
    default_split: str = "random"
    csv_name: str = ""
    official: OfficialSplit | None = None
    valid_pct: float = 0.3
    label_order: str = "wnid"
    downsampled_label_order: str = ""
    classes_file: str = ""  # the manifest the classes came from ("" for an inline list)
    parts: list[Part] = field(default_factory=list)

    @property
    def is_composite(self) -> bool:
        return bool(self.parts)

    def folder_name(self, size: int | None) -> str:
        """``imagenette2`` for full size, ``imagenette2-320`` otherwise (the tarballs' names)."""
        stem = self.output_name or self.name
        return stem if size is None else f"{stem}-{size}"

    def labelled_classes(self, downsampled: bool = False) -> tuple[list[ClassInfo], str]:
        """The classes in label order and the sentence that states the order.

        Sorted wnid order unless the recipe pins its own: that is how every ImageFolder-style
        reader numbers class folders, so an integer means one class whichever reader or
        format a user picks. ``downsampled`` selects the pickle/npz order (``imagenet`` keeps
        map_clsloc there, the published Imagenet8-64 ids)."""
        order = (self.downsampled_label_order or self.label_order) if downsampled \
            else self.label_order
        if order == "recipe":
            listed = ("in ImageNet's devkit (map_clsloc) order" if
                      self.classes_file == IMAGENET_MANIFEST else
                      f"of {self.classes_file}" if self.classes_file else "the recipe lists")
            return list(self.classes), LABEL_ORDER_TEXT["recipe"].format(listed=listed)
        return sorted(self.classes, key=lambda c: c.wnid), LABEL_ORDER_TEXT["wnid"]


def load_recipe(name_or_path: str | Path) -> Recipe:
    """A built-in recipe by name (``imagenette``) or a recipe file (``my-subset.toml``)."""
    builtins = builtin_recipes()
    key = str(name_or_path)
    if key in builtins:
        return _parse(builtins[key])
    path = Path(key)
    if path.suffix == ".toml" and path.is_file():
        return _parse(path)
    raise UserError(
        f"unknown dataset {key!r}",
        fix=f"use a built-in recipe ({', '.join(builtins)}) or the path of a recipe .toml file "
            "(see README: 'Datasets are recipes')",
    )


def _parse(path: Path) -> Recipe:
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as e:
        raise UserError(f"not valid TOML: {e}", path=path, fix="fix the recipe syntax") from e
    if "name" not in raw:
        raw["name"] = path.stem
    known = {"name", "pretty_name", "output_name", "description", "homepage", "license",
             "classes", "pool", "default_split", "csv_name", "official", "random", "parts",
             "label_order", "downsampled_label_order"}
    unknown = set(raw) - known
    if unknown:
        raise UserError(f"unknown recipe keys: {', '.join(sorted(unknown))}", path=path,
                        fix=f"allowed keys: {', '.join(sorted(known))}")
    parts = [_parse_part(p, path) for p in raw.get("parts", [])]
    if parts:
        classes = _union_classes(parts)
    elif "classes" in raw:
        classes = _parse_classes(raw["classes"], path)
    else:
        raise UserError("a recipe needs 'classes' (or 'parts')", path=path,
                        fix='add e.g. classes = ["n01440764", "n02102040"]')
    official = None
    if "official" in raw:
        o = raw["official"]
        official = OfficialSplit(url=o["url"], sha256=o["sha256"].lower(),
                                 counts=dict(o.get("counts", {})))
    default_split = raw.get("default_split", "official" if official else "random")
    if default_split not in ("official", "random", "source"):
        raise UserError(f"default_split must be official, random or source, not {default_split!r}",
                        path=path)
    pool = tuple(raw.get("pool", ["train"]))
    if not set(pool) <= {"train", "val"}:
        raise UserError(f"pool may hold 'train' and 'val' only, not {list(pool)}", path=path)
    for key in ("label_order", "downsampled_label_order"):
        if raw.get(key, "wnid") not in LABEL_ORDERS:
            raise UserError(f"{key} must be one of {', '.join(LABEL_ORDERS)}, not {raw[key]!r}",
                            path=path, fix='"wnid" (sorted, the default) or "recipe" (as listed)')
    name = raw["name"]
    return Recipe(
        name=name,
        classes=classes,
        path=path,
        pretty_name=raw.get("pretty_name", name),
        output_name=raw.get("output_name", name),
        description=raw.get("description", ""),
        homepage=raw.get("homepage", ""),
        license=raw.get("license", "other"),
        pool=pool,
        default_split=default_split,
        csv_name=raw.get("csv_name", f"noisy_{name}.csv"),
        official=official,
        valid_pct=float(raw.get("random", {}).get("valid_pct", 0.3)),
        label_order=raw.get("label_order", "wnid"),
        downsampled_label_order=raw.get("downsampled_label_order", ""),
        classes_file=raw["classes"] if isinstance(raw.get("classes"), str) else "",
        parts=parts,
    )


def _parse_part(raw: dict, path: Path) -> Part:
    try:
        sub = load_recipe(raw["recipe"])
        take = dict(raw["take"])
    except KeyError as e:
        raise UserError(f"each [[parts]] entry needs {e.args[0]!r}", path=path) from e
    for src, dst in take.items():
        if src not in ("train", "val") or dst not in ("train", "val", "unsup"):
            raise UserError(f"part take {src!r} -> {dst!r}: from train/val to train/val/unsup",
                            path=path)
    fraction = raw.get("fraction")
    if fraction is not None and not 0 <= float(fraction) <= 1:
        raise UserError(f"part fraction must be within 0..1, not {fraction}", path=path)
    fraction_of = raw.get("fraction_of", "part")
    if fraction_of not in ("part", "class"):
        raise UserError(f"part fraction_of must be 'part' or 'class', not {fraction_of!r}",
                        path=path, fix='"class": counted on all the class\'s images')
    return Part(sub, take, None if fraction is None else float(fraction), raw.get("rest"),
                fraction_of)


def _union_classes(parts: list[Part]) -> list[ClassInfo]:
    seen: dict[str, ClassInfo] = {}
    for p in parts:
        for c in p.recipe.classes:
            seen.setdefault(c.wnid, c)
    return list(seen.values())


def _parse_classes(spec, path: Path) -> list[ClassInfo]:
    if isinstance(spec, str):
        for candidate in (path.parent / spec, manifest_path(spec)):
            if candidate.is_file():
                classes = read_manifest(candidate)
                break
        else:
            raise UserError(f"class list {spec!r} not found", path=path,
                            fix="give a manifest file beside the recipe or in manifests/")
    else:
        names = None
        classes = []
        for entry in spec:
            if isinstance(entry, str):
                names = names or imagenet_names()
                wnid, name = entry, names.get(entry, entry)
            else:
                wnid = entry.get("wnid", "")
                if "name" in entry:
                    name = entry["name"]
                else:
                    names = names or imagenet_names()
                    name = names.get(wnid, wnid)
            if not is_wnid(wnid):
                raise UserError(f"{wnid!r} is not a WordNet id like n01440764", path=path)
            classes.append(ClassInfo(wnid, name))
    dupes = {c.wnid for c in classes if sum(d.wnid == c.wnid for d in classes) > 1}
    if dupes:
        raise UserError(f"classes listed twice: {', '.join(sorted(dupes))}", path=path)
    return classes
