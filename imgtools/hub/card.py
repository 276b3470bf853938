"""The dataset card (README.md): YAML front matter the Hub reads, and a body people read.

The YAML follows what ``datasets.push_to_hub`` writes - ``configs`` (``data_files`` per split) and
``dataset_info`` (features with ``class_label`` names, splits with ``num_examples``/``num_bytes``)
- so ``load_dataset`` needs nothing else, plus the keys of the best image cards on the Hub
(imagenet-1k, cifar10, frgfm/imagenette): pretty_name, ``license: other`` with ``license_name`` /
``license_link`` and ``extra_gated_prompt`` for the ImageNet terms, task_categories,
size_categories, source_datasets. The body has the sections of the Hub's dataset-card template:
summary, Dataset Structure (Data Instances with a real row, Data Fields, Data Splits), Dataset
Creation (the command, resizer, filter, quality, size rule, seed, from ``build-info.json``),
Considerations for Using the Data, licensing and citation.

Facts come from the build report and the dataset sidecar, never from what a build usually does:
keys other parts of imgtools may add (a label convention, an orientation/colour policy, a
Croissant file beside the data) are shown when present and left out when absent.

Parsing an existing card is ``huggingface_hub.DatasetCard``'s job. Writing the YAML is ours:
``huggingface_hub``'s ``yaml_dump`` (PyYAML, YAML 1.1) writes a class named ``008`` unquoted,
which a YAML 1.2 reader (the Hub's JavaScript front end, ruamel.yaml) reads as the integer 8;
:func:`dump_yaml` quotes every string a YAML 1.2 reader would take for a number, boolean or null.

Re-publishing must not destroy what a user wrote on the Hub. Generated body sections are
wrapped in HTML comments (``<!-- imgtools:begin NAME -->`` ... ``<!-- imgtools:end NAME -->``,
invisible on the rendered card); on re-push only those blocks are replaced, and only for the
configs being pushed, so text outside the markers, other configs' sections and YAML keys the
user added all survive (``metadata_update`` merges YAML only and commits on its own, so it
cannot do this). Descriptive YAML keys the user changed (license, pretty_name) are kept.
"""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Iterable
from dataclasses import dataclass

import yaml

from imgtools import __version__
from imgtools.errors import UserError
from imgtools.hub.layout import ASSETS_DIR, ConfigSummary, built_size
from imgtools.recipes import load_recipe

DEFAULT_ENDPOINT = "https://huggingface.co"
_BLOCK = re.compile(r"<!-- imgtools:begin (?P<name>[^ ]+) -->\n?(?P<body>.*?)"
                    r"<!-- imgtools:end (?P=name) -->\n?", re.S)
FAMILY_IMAGENETTE = ("imagenette", "imagewoof", "imagewang")
IMAGENET_1K_CARD = "https://huggingface.co/datasets/ILSVRC/imagenet-1k"
IMAGENET_TERMS_URL = "https://image-net.org/download.php"
IMAGENET_LICENSE_NAME = "imagenet-terms-of-access"

IMAGENET_TERMS = (
    'By clicking on "Access repository" below, you also agree to the ImageNet Terms of Access: '
    '[RESEARCHER_FULLNAME] (the "Researcher") has requested permission to use the ImageNet '
    'database (the "Database") at Princeton University and Stanford University. In exchange for '
    "such permission, Researcher hereby agrees to the following terms and conditions: "
    "1. Researcher shall use the Database only for non-commercial research and educational "
    "purposes. 2. Princeton University and Stanford University make no representations or "
    "warranties regarding the Database, including but not limited to warranties of "
    "non-infringement or fitness for a particular purpose. 3. Researcher accepts full "
    "responsibility for his or her use of the Database and shall defend and indemnify the "
    "ImageNet team, Princeton University, and Stanford University, including their employees, "
    "Trustees, officers and agents, against any and all claims arising from Researcher's use of "
    "the Database, including but not limited to Researcher's use of any copies of copyrighted "
    "images that he or she may create from the Database. 4. Researcher may provide research "
    "associates and colleagues with access to the Database provided that they first agree to be "
    "bound by these terms and conditions. 5. Princeton University and Stanford University "
    "reserve the right to terminate Researcher's access to the Database at any time. 6. If "
    "Researcher is employed by a for-profit, commercial entity, Researcher's employer shall also "
    "be bound by these terms and conditions, and Researcher hereby represents that he or she is "
    "fully authorized to enter into this agreement on behalf of such employer. 7. The law of the "
    "State of New Jersey shall apply to all disputes under this agreement.")

CITATION_IMAGENET = """@article{ILSVRC15,
  author = {Olga Russakovsky and Jia Deng and Hao Su and Jonathan Krause and Sanjeev Satheesh and
            Sean Ma and Zhiheng Huang and Andrej Karpathy and Aditya Khosla and Michael Bernstein
            and Alexander C. Berg and Li Fei-Fei},
  title = {{ImageNet Large Scale Visual Recognition Challenge}},
  journal = {International Journal of Computer Vision (IJCV)},
  year = {2015},
  volume = {115},
  number = {3},
  pages = {211--252},
  doi = {10.1007/s11263-015-0816-y}
}"""

CITATION_IMAGENETTE = """@software{Howard_Imagenette_2019,
  title = {Imagenette: A smaller subset of 10 easily classified classes from Imagenet},
  author = {Jeremy Howard},
  year = {2019},
  month = {March},
  publisher = {GitHub},
  url = {https://github.com/fastai/imagenette}
}"""

CITATION_DOWNSAMPLED = """@article{chrabaszcz2017downsampled,
  title = {A Downsampled Variant of ImageNet as an Alternative to the CIFAR datasets},
  author = {Patryk Chrabaszcz and Ilya Loshchilov and Frank Hutter},
  journal = {arXiv preprint arXiv:1707.08819},
  year = {2017}
}"""

# build-info.json / sidecar keys that describe how pixels were treated, when a build states them
_IMAGE_POLICY_KEYS = (("pixels", "pixels"), ("composition", "composition"),
                      ("orientation", "orientation"), ("orientation_policy", "orientation"),
                      ("colour", "colour"), ("color", "colour"), ("colour_policy", "colour"),
                      ("color_policy", "colour"), ("icc", "ICC profiles"),
                      ("icc_policy", "ICC profiles"), ("image_policy", "image policy"))
_LABEL_KEYS = ("label_convention", "labels")


@dataclass
class CardContext:
    """Where the card will live: the loading snippet names the repository."""

    repo_id: str
    revision: str = "main"
    endpoint: str = DEFAULT_ENDPOINT


@dataclass
class DatasetDescription:
    """Dataset-level facts, from the recipe when the dataset is one of ours."""

    name: str
    pretty_name: str
    description: str
    homepage: str
    selection_license: str  # the licence of the class list / split files (not of the photos)
    from_imagenet: bool
    has_official_split: bool = False

    @classmethod
    def for_dataset(cls, name: str, from_imagenet: bool) -> DatasetDescription:
        try:
            recipe = load_recipe(name)
        except (UserError, OSError, ValueError):
            return cls(name, name, f"An image classification dataset ({name}).", "", "",
                       from_imagenet)
        return cls(name, recipe.pretty_name or name, recipe.description, recipe.homepage,
                   recipe.license or "", True, recipe.official is not None)


# ----------------------------------------------------------------------------------------------
# YAML
# ----------------------------------------------------------------------------------------------


class _Yaml12SafeDumper(yaml.SafeDumper):
    """PyYAML's safe dumper that also quotes what YAML 1.2 (core schema) reads as non-strings.

    PyYAML quotes a string only when a YAML 1.1 reader would misread it, so ``008`` (not a
    valid 1.1 octal), ``1e3`` (1.1 floats need a dot) or ``0o7`` come out plain, and a 1.2
    reader turns them into numbers. Registering the 1.2 resolvers makes the emitter see those
    plain forms as non-strings and quote them; 1.1 readers still read the quoted strings."""


for _tag, _regex, _first in (
        ("tag:yaml.org,2002:int", r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$",
         list("-+0123456789")),
        ("tag:yaml.org,2002:float",
         r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
         r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$", list("-+.0123456789")),
        ("tag:yaml.org,2002:bool", r"^(?:true|True|TRUE|false|False|FALSE)$", list("tTfF")),
        ("tag:yaml.org,2002:null", r"^(?:~|null|Null|NULL)$", list("~nN"))):
    _Yaml12SafeDumper.add_implicit_resolver(_tag, re.compile(_regex), _first)


def dump_yaml(data: dict) -> str:
    """The front matter: block style, keys in the order given, YAML 1.1 and 1.2 safe."""
    return yaml.dump(data, Dumper=_Yaml12SafeDumper, sort_keys=False, allow_unicode=True,
                     width=100)


def features_yaml(features: dict) -> list[dict]:
    """``datasets`` features JSON (Parquet schema metadata) -> the YAML list of a card."""
    out = []
    for name, feature in features.items():
        kind = feature.get("_type")
        if kind == "Image":
            out.append({"name": name, "dtype": "image"})
        elif kind == "ClassLabel":
            names = {str(i): str(n) for i, n in enumerate(feature["names"])}
            out.append({"name": name, "dtype": {"class_label": {"names": names}}})
        elif kind == "Value":
            out.append({"name": name, "dtype": feature["dtype"]})
        else:
            raise ValueError(f"feature {name!r} of type {kind!r} has no card mapping")
    return out


def config_entries(summary: ConfigSummary) -> tuple[dict, dict]:
    """The ``configs`` and ``dataset_info`` entries of one config."""
    config = {"config_name": summary.name,
              "data_files": [{"split": s, "path": f"{summary.name}/{s}-*"}
                             for s in summary.splits]}
    info = {
        "config_name": summary.name,
        "features": features_yaml(summary.features),
        "splits": [{"name": s.name, "num_bytes": s.num_bytes, "num_examples": s.num_examples}
                   for s in summary.splits.values()],
        "download_size": sum(s.download_size for s in summary.splits.values()),
        "dataset_size": sum(s.num_bytes for s in summary.splits.values()),
    }
    return config, info


def size_category(n: int) -> str:
    """The Hub's ``size_categories`` bucket for ``n`` examples."""
    for limit, label in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"),
                         (1_000_000, "100K<n<1M"), (10_000_000, "1M<n<10M")):
        if n < limit:
            return label
    return "10M<n<100M"


def _as_list(value) -> list[dict]:
    if value is None:
        return []
    if isinstance(value, dict):
        return [value]
    return [v for v in value if isinstance(v, dict)]


def _merge_by_config(old: list[dict], new: list[dict]) -> list[dict]:
    """Replace entries of the configs we push, keep the others, new configs at the end."""
    fresh = {e["config_name"]: e for e in new}
    merged = [fresh.pop(e.get("config_name", "default"), e) for e in old]
    return merged + list(fresh.values())


def published_class_names(meta: dict) -> dict[str, list[str]]:
    """Config name -> the ``label`` class names a card's ``dataset_info`` declares."""
    published = {}
    for info in _as_list(meta.get("dataset_info")):
        for feat in info.get("features") or []:
            dtype = feat.get("dtype") if isinstance(feat, dict) else None
            names = dtype.get("class_label", {}).get("names") if isinstance(dtype, dict) else None
            if feat.get("name") == "label" and isinstance(names, dict):
                published[str(info.get("config_name", "default"))] = [
                    str(names[k]) for k in sorted(names, key=lambda k: int(k))]
    return published


def merge_metadata(old: dict, summaries: list[ConfigSummary], desc: DatasetDescription) -> dict:
    """The new YAML: user keys kept, configs/dataset_info updated for the pushed configs.

    One exception: a ``license`` equal to the selection's own licence with no
    ``license_name`` is what imgtools wrote before it described the photos' terms (Imagenette's
    ``apache-2.0`` for ImageNet photos), not a user's choice, so it is replaced."""
    meta = dict(old)
    if (desc.from_imagenet and desc.selection_license and "license_name" not in meta
            and meta.get("license") in (desc.selection_license, [desc.selection_license])):
        del meta["license"]
    new_configs, new_infos = zip(*(config_entries(s) for s in summaries), strict=True)
    configs = _merge_by_config(_as_list(meta.get("configs")), list(new_configs))
    defaults = [c for c in configs if c.get("default")]
    if not defaults and configs:
        # a repository with several configs needs a default for load_dataset("user/name")
        configs[0]["default"] = True
    infos = _merge_by_config(_as_list(meta.get("dataset_info")), list(new_infos))
    largest = max(sum(s.get("num_examples", 0) for s in i.get("splits", [])) for i in infos)
    defaults_for_new: dict = {"pretty_name": desc.pretty_name, "license": "other"}
    if desc.from_imagenet:
        defaults_for_new.update({
            "license_name": IMAGENET_LICENSE_NAME,
            "license_link": IMAGENET_TERMS_URL,
            "extra_gated_prompt": IMAGENET_TERMS,
        })
    defaults_for_new.update({
        "task_categories": ["image-classification"],
        "task_ids": ["multi-class-image-classification"],
    })
    if desc.from_imagenet:
        defaults_for_new.update({"annotations_creators": ["crowdsourced"],
                                 "source_datasets": ["extended|imagenet-1k"]})
    defaults_for_new["tags"] = ["imagenet", "imgtools"] if desc.from_imagenet else ["imgtools"]
    ordered = {k: meta.get(k, v) for k, v in defaults_for_new.items()}
    ordered["size_categories"] = [size_category(largest)]
    for k, v in meta.items():
        ordered.setdefault(k, v)
    ordered["configs"] = configs
    ordered["dataset_info"] = infos
    return ordered


# ----------------------------------------------------------------------------------------------
# Facts about one config
# ----------------------------------------------------------------------------------------------


def public_command(command: str | list[str]) -> str:
    """The build command without local paths: an absolute or home-relative path is cut to its
    last component (``--src /home/me/data/ILSVRC`` -> ``--src ILSVRC``), so the card shows how
    the data was made without publishing the builder's directory layout."""
    words = shlex.split(command) if isinstance(command, str) else [str(w) for w in command]

    def strip(word: str) -> str:
        if "=" in word and word.startswith("--"):
            key, value = word.split("=", 1)
            return f"{key}={strip(value)}"
        if os.path.isabs(word) or word.startswith("~") or re.match(r"^[A-Za-z]:[\\/]", word):
            return os.path.basename(word.rstrip("/\\")) or word
        return word

    return shlex.join(strip(w) for w in words)


def _split_facts(summary: ConfigSummary) -> tuple[str | None, object, object]:
    options = (summary.build_info or {}).get("options") or {}
    return options.get("split"), options.get("valid_pct"), options.get("seed")


def split_warnings(summaries: list[ConfigSummary], desc: DatasetDescription) -> list[str]:
    """Sentences for the top of the card, one per way configs depart from the published split
    (configs built alike share one)."""
    published = "fastai's published" if desc.name in FAMILY_IMAGENETTE else "the published"
    groups: dict[tuple, list[str]] = {}
    for s in summaries:
        split, valid_pct, seed = _split_facts(s)
        if split == "random" or (split == "source" and desc.has_official_split):
            groups.setdefault((split, valid_pct, seed), []).append(s.name)
    out = []
    for (split, valid_pct, seed), names in groups.items():
        which = (f"Config `{names[0]}` does" if len(names) == 1 else
                 f"Configs {', '.join(f'`{n}`' for n in names)} do")
        head = f"**{which} not use {published} {desc.pretty_name} split.**"
        if split == "random":
            pct = f"{float(valid_pct):.0%}" if isinstance(valid_pct, int | float) else "a share"
            how = (f"The validation set is a seeded random {pct} of each class (`--split "
                   f"random`, `valid_pct={valid_pct}`, `seed={seed}`)")
        else:
            how = "It keeps ImageNet's own train/validation membership (`--split source`)"
        out.append(f"{head} {how}, so results on it are not comparable with results reported "
                   f"on {published} split.")
    return out


def size_sentence(summary: ConfigSummary) -> str:
    """What the image sizes really are (a build never upscales)."""
    size = built_size(summary.build_info)
    options = (summary.build_info or {}).get("options", {})
    if size and options.get("format") in ("pickle", "npz"):  # downsampled ImageNet: N x N
        how = "centre-cropped to a square first" if options.get("crop") else \
            "squashed, aspect ratio not kept, as in the published downsampled ImageNet"
        return f"Every image resized to {size}x{size} pixels ({how})."
    if size:
        return (f"Shortest side at most {size} pixels, aspect ratio kept: larger images were "
                f"downscaled to a shortest side of {size}; smaller images are kept as they are "
                "(never upscaled; RGB JPEGs copied byte for byte, other files re-encoded at "
                "their size).")
    if summary.name == "full" or summary.build_info:
        return ("Images at their original ImageNet size (RGB JPEGs copied byte for byte, other "
                "files re-encoded as JPEG at their size).")
    return "Images as stored in the source dataset."


def label_sentence(summary: ConfigSummary) -> str:
    """How integers map to classes, as the build or the sidecar states it."""
    sources = [summary.build_info or {}, summary.info.extra or {}]
    for src in sources:
        for key in _LABEL_KEYS:
            if isinstance(src.get(key), str) and src[key]:
                return f"Labels: {src[key]}."
    order = (summary.build_info or {}).get("label_order") or summary.info.label_order
    return (f"Label order: {order} (label `i` is row `i` of the class table below; "
            "`features['label'].names` gives the same list).")


def _sentence(text: str) -> str:
    """First letter up, the rest as written (``str.capitalize`` would turn ImageNet into
    imagenet)."""
    return text[:1].upper() + text[1:]


def _creation_section(summary: ConfigSummary) -> str:
    b = summary.build_info
    if not b or b.get("kind") == "convert":  # a conversion's report holds no build settings
        return (f"Converted from the {summary.source_format or 'source'} dataset "
                f"`{summary.source.name}` (no build report of the original build, so its "
                "settings are not known).")
    options = b.get("options") or {}
    lines = []
    if b.get("command"):
        lines.append(f"```\n{public_command(b['command'])}\n```")
    split, valid_pct, seed = _split_facts(summary)
    split_text = split
    if split == "random" and valid_pct is not None:
        split_text = f"random, valid_pct={valid_pct}"
    mode = None
    if "exact" in options:
        mode = "exact (full decode, then resize)" if options["exact"] else \
            "fast (DCT-scaled JPEG decode when there is a 2x margin, then resize)"
    facts = [("recipe", b.get("recipe")), ("imgtools version", b.get("tool_version")),
             ("source layout", b.get("source_layout")), ("split", split_text), ("seed", seed),
             ("size", size_sentence(summary)), ("resizer", b.get("resizer")),
             ("filter", options.get("filter")), ("decode", mode),
             ("JPEG quality of re-encoded images", options.get("quality"))]
    for key, label in _IMAGE_POLICY_KEYS:
        value = b.get(key, (summary.info.extra or {}).get(key))
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            value = "; ".join(value)  # the composition: a sentence a part
        if isinstance(value, str | int | float) and value != "":
            facts.append((label, value))
    skipped = b.get("skipped") or []
    if skipped:
        facts.append(("skipped source files", f"{len(skipped)} (unreadable or not images; "
                      "listed in the build's `build-info.json`)"))
    repaired = b.get("repaired") or []
    if repaired:
        facts.append(("repaired source files", f"{len(repaired)} (CMYK, greyscale or PNG files "
                      "named .JPEG, re-encoded as RGB JPEG)"))
    lines.append("\n".join(f"- **{k}:** {v}" for k, v in facts if v not in (None, "")))
    return "\n\n".join(lines)


def _stats_section(summary: ConfigSummary) -> str:
    st = summary.stats
    if not st:
        return "No train split: per-channel statistics not computed."
    mean = ", ".join(f"{v:.4f}" for v in st["mean"])
    std = ", ".join(f"{v:.4f}" for v in st["std"])
    return (f"Per-channel (R, G, B) statistics of the `train` split, over "
            f"{st['images']:,} images and {st['pixels']:,} pixels, on a 0-1 scale:\n\n"
            f"```python\nmean = [{mean}]\nstd = [{std}]\n```")


def _instance_section(summary: ConfigSummary, ctx: CardContext) -> str:
    row = summary.example
    if not row:
        return ""
    label = row.get("label")
    name = ""
    if isinstance(label, int) and 0 <= label < len(summary.class_names):
        wnid = summary.info.classes[label].wnid if label < len(summary.info.classes) else ""
        name = f"  # {summary.class_names[label]}" + (f" ({wnid})" if wnid else "")
    return (f"The first row of `{row['split']}`, as `datasets` returns it:\n\n```python\n"
            f">>> load_dataset(\"{ctx.repo_id}\", \"{summary.name}\")[\"{row['split']}\"][0]\n"
            f"{{'image': <{row['image_class']} image mode={row['mode']} "
            f"size={row['width']}x{row['height']}>, 'label': {label}}}{name}\n```")


# ----------------------------------------------------------------------------------------------
# Body
# ----------------------------------------------------------------------------------------------


def _table(header: list[str], rows: Iterable[list], align: list[str] | None = None) -> str:
    align = align or ["---"] * len(header)
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _human_bytes(n: int) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n} B"  # pragma: no cover


def render_header(desc: DatasetDescription, infos: list[dict], configs: list[dict],
                  summaries: list[ConfigSummary], ctx: CardContext) -> str:
    default = next((c["config_name"] for c in configs if c.get("default")), None)
    split_names = []
    for info in infos:
        for s in info.get("splits", []):
            if s["name"] not in split_names:
                split_names.append(s["name"])
    rows = []
    for info in infos:
        counts = {s["name"]: s.get("num_examples", 0) for s in info.get("splits", [])}
        name = info.get("config_name", "default")
        rows.append([f"`{name}`" + (" (default)" if name == default else "")]
                    + [counts.get(s, "") for s in split_names]
                    + [_human_bytes(info.get("download_size", 0))])
    example = default or (infos[0].get("config_name") if infos else "default")
    warnings = split_warnings(summaries, desc)
    warning = "".join(f"> {w}\n>\n" for w in warnings).rstrip(">\n") + "\n\n" if warnings else ""
    homepage = f"- **Homepage:** {desc.homepage}\n" if desc.homepage else ""
    origin = ("which builds it from a copy of ImageNet (ILSVRC 2012) and writes the layout "
              "`datasets.push_to_hub` writes" if desc.from_imagenet
              else "in the layout `datasets.push_to_hub` writes")
    terms = (f"- **Access:** the images are subject to the [ImageNet terms of access]"
             f"({IMAGENET_TERMS_URL}) (non-commercial research and education); see Licensing "
             "below.\n" if desc.from_imagenet else "")
    return f"""# {desc.pretty_name}

{warning}{desc.description}

{homepage}- **Published with:** imgtools {__version__}, {origin}.
{terms}
## Configs

{_table(["config", *split_names, "download size"], rows,
        ["---"] + ["---:"] * (len(split_names) + 1))}

## Loading

```python
from datasets import load_dataset

ds = load_dataset("{ctx.repo_id}", "{example}")
ds["train"][0]  # {{'image': <PIL.Image.Image ...>, 'label': 0}}
ds["train"].features["label"].int2str(0)  # class name
```

## Dataset Structure

### Data Fields

- `image`: an `Image` feature: the encoded image file as built (JPEG, or PNG when the source
  was one), decoded to a `PIL.Image` when a row is read.
- `label`: a `ClassLabel`: an integer index into the class names of each config (listed in the
  config's class table below and in `features["label"].names`); `-1` in a split without labels.

Each config below shows a real row (Data Instances), its splits (Data Splits) and how it was made
(Dataset Creation).
"""


def render_config(summary: ConfigSummary, ctx: CardContext) -> str:
    splits = list(summary.splits.values())
    split_rows = [[f"`{s.name}`", f"{s.num_examples:,}", len(s.files),
                   _human_bytes(s.download_size)] for s in splits]
    class_rows = [[i, f"`{c.wnid}`", name] + [f"{s.class_counts[i]:,}" for s in splits]
                  for i, (c, name) in enumerate(zip(summary.info.classes, summary.class_names,
                                                    strict=False))]
    labelled_note = ""
    unlabelled = [s for s in splits if s.unlabelled]
    if unlabelled:
        labelled_note = "\n\n" + " ".join(
            f"The `{s.name}` split holds {s.unlabelled:,} unlabelled images (label -1 or "
            "missing): use them without labels, for self-supervised or semi-supervised "
            "training." for s in unlabelled)
    parts = [f"## Config `{summary.name}`", f"{size_sentence(summary)} {label_sentence(summary)}"]
    instance = _instance_section(summary, ctx)
    if instance:
        parts += ["### Data Instances", instance]
    parts += ["### Data Splits",
              _table(["split", "examples", "Parquet files", "size"], split_rows,
                     ["---", "---:", "---:", "---:"]) + labelled_note,
              "### Dataset Creation", _creation_section(summary),
              "### Normalization", _stats_section(summary)]
    if summary.assets:
        images = []
        if "preview" in summary.assets:
            images.append(f"![Sample images per class]({summary.assets['preview']})")
        if "histogram" in summary.assets:
            images.append(f"![Images per class]({summary.assets['histogram']})")
        parts += ["### Preview", "\n\n".join(images)]
    parts += ["### Classes",
              _table(["label", "wnid", "name"] + [s.name for s in splits], class_rows,
                     ["---:", "---", "---"] + ["---:"] * len(splits))]
    if summary.extra_files:
        names = ", ".join(f"[`{name}`]({name})" for _, name in summary.extra_files)
        parts += ["### Noisy labels",
                  f"{names}: the fastai label file of this build. Columns `path` "
                  "(`train/<wnid>/<file>` or `val/<wnid>/<file>`), `noisy_labels_0`, "
                  "`noisy_labels_1`, `noisy_labels_5`, `noisy_labels_25`, `noisy_labels_50` (the "
                  "wnid after changing that percentage of training labels; validation labels "
                  "never change) and `is_valid`. Join it to the rows on the file name: `image` "
                  "keeps the original file name in its `path` field."]
    return "\n\n".join(parts) + "\n"


def render_considerations(desc: DatasetDescription) -> str:
    if not desc.from_imagenet:
        return ("## Considerations for Using the Data\n\nThe images and labels come from the "
                "source dataset; its own card describes its biases and limitations.\n")
    return f"""## Considerations for Using the Data

### Social impact and biases

These images are a subset of ImageNet (ILSVRC 2012) and carry its known problems. The photos
were gathered from web image search and Flickr around 2010 and labelled by crowd workers, so
they over-represent some places, cultures and kinds of photo; class labels can be wrong or
ambiguous (several objects in one photo, one label given). People appear in many photos even
though no class here is a person - bystanders, photographers, owners holding a fish or a dog -
photographed without having consented to this use; faces are not blurred in this copy. Read the
[Considerations for Using the Data of the imagenet-1k card]({IMAGENET_1K_CARD}) for the full
discussion and references (among them Yang et al., "Towards Fairer Datasets", FAT* 2020, and
"A Study of Face Obfuscation in ImageNet", ICML 2022).

### Other known limitations

Results on a small subset do not predict results on ImageNet itself. Models pretrained on
ImageNet-1k were trained on many of these very photos (those drawn from ImageNet's training
set): do not evaluate such models on this data as if it were unseen.
"""


def render_footer(desc: DatasetDescription, summaries: list[ConfigSummary]) -> str:
    citations = [CITATION_IMAGENET] if desc.from_imagenet else []
    if desc.name in FAMILY_IMAGENETTE:
        citations.append(CITATION_IMAGENETTE)
    if any(s.source_format in ("pickle", "npz") for s in summaries):
        citations.append(CITATION_DOWNSAMPLED)
    selection = ""
    if desc.selection_license:
        selection = (f"The {desc.pretty_name} selection (its class list and split files) is "
                     f"published under `{desc.selection_license}` by its authors; that licence "
                     "does not extend to the photos. ")
    if desc.from_imagenet:
        licence = f"""{selection}The images come from ImageNet and remain subject to the
[ImageNet terms of access]({IMAGENET_TERMS_URL}): non-commercial research and educational use
only; the copyright of each photo stays with its owner. The card's YAML says so with
`license: other`, `license_name: {IMAGENET_LICENSE_NAME}` and `license_link`.

**Gating.** The card carries the ImageNet terms in `extra_gated_prompt`, as imagenet-1k does.
The Hub shows them only when access requests are on: in the repository's *Settings*, enable
*Access requests* (or run `imgtools push-hub ... --gated auto`), so that every user accepts the
terms before downloading."""
    else:
        licence = (f"{selection}See the source dataset for the terms that apply to its images."
                   ).strip()
    cites = "\n\n".join(f"```bibtex\n{c}\n```" for c in citations)
    citation = f"\n## Citation\n\n{cites}\n" if citations else ""
    return f"{render_considerations(desc)}\n## Licensing Information\n\n{licence}\n{citation}"


# ----------------------------------------------------------------------------------------------
# Assembling and merging
# ----------------------------------------------------------------------------------------------


def split_front_matter(text: str) -> tuple[dict, str]:
    """``(yaml dict, body)`` of an existing README.md (parsed by ``DatasetCard``, as the Hub
    library reads cards); a card without YAML has an empty dict."""
    from huggingface_hub import DatasetCard
    from huggingface_hub.utils import logging as hf_logging

    if not text.strip():
        return {}, ""
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # "metadata block was not found" is fine for a new card
    try:
        card = DatasetCard(text, ignore_metadata_errors=True)
    except (ValueError, yaml.YAMLError) as e:
        raise UserError(f"the existing README.md has a YAML header that cannot be read: {e}",
                        fix="fix or remove the README.md front matter, then push again") from e
    finally:
        hf_logging.set_verbosity(verbosity)
    return card.data.to_dict(), card.text


def _block(name: str, body: str) -> str:
    return f"<!-- imgtools:begin {name} -->\n{body.rstrip()}\n<!-- imgtools:end {name} -->\n"


def merge_body(old_body: str, blocks: dict[str, str]) -> str:
    """Replace our blocks in ``old_body``, keep everything else; new config blocks go after
    the last config block (or before the footer), header first and footer last when new."""
    pending = dict(blocks)
    out: list[str] = []
    pos = 0
    last_config_end = None
    for m in _BLOCK.finditer(old_body):
        out.append(old_body[pos:m.start()])
        name = m.group("name")
        out.append(_block(name, pending.pop(name)) if name in pending else m.group(0))
        if name.startswith("config:"):
            last_config_end = len(out)
        pos = m.end()
    out.append(old_body[pos:])
    new_configs = [_block(n, b) for n, b in pending.items() if n.startswith("config:")]
    if new_configs:
        if last_config_end is None:
            footer_at = next((i for i, part in enumerate(out)
                              if part.startswith("<!-- imgtools:begin footer")), len(out))
            last_config_end = footer_at
        out[last_config_end:last_config_end] = ["\n" + "\n".join(new_configs)]
    if "header" in pending:
        out.insert(0, _block("header", pending["header"]) + "\n")
    if "footer" in pending:
        out.append("\n" + _block("footer", pending["footer"]))
    text = "".join(out)
    return re.sub(r"\n{3,}", "\n\n", text).strip() + "\n"


def describe(summaries: list[ConfigSummary]) -> DatasetDescription:
    from_imagenet = any(s.build_info for s in summaries)
    return DatasetDescription.for_dataset(summaries[0].info.name, from_imagenet)


def build_card(existing: str | None, summaries: list[ConfigSummary], ctx: CardContext) -> str:
    """The README.md to publish: ``existing`` (the card already in the repository, or None)
    updated for ``summaries`` (the configs pushed now)."""
    old_meta, old_body = split_front_matter(existing or "")
    desc = describe(summaries)
    meta = merge_metadata(old_meta, summaries, desc)
    desc.pretty_name = str(meta.get("pretty_name") or desc.pretty_name)
    blocks = {"header": render_header(desc, meta["dataset_info"], meta["configs"], summaries,
                                      ctx)}
    for s in summaries:
        blocks[f"config:{s.name}"] = render_config(s, ctx)
    blocks["footer"] = render_footer(desc, summaries)
    return f"---\n{dump_yaml(meta)}---\n\n{merge_body(old_body, blocks)}"


def preview_asset_paths(config: str) -> dict[str, str]:
    return {"preview": f"{ASSETS_DIR}/preview-{config}.jpg",
            "histogram": f"{ASSETS_DIR}/histogram-{config}.png"}


def owned_asset_patterns(config: str) -> list[str]:
    """Every asset name this or an earlier imgtools wrote for ``config`` (PNG previews
    before JPEG), so a re-push deletes the ones it no longer writes."""
    return [f"{ASSETS_DIR}/{kind}-{config}.{ext}" for kind in ("preview", "histogram")
            for ext in ("png", "jpg", "webp")]
