"""The dataset card (README.md): YAML front matter the Hub reads, and a body people read.

The YAML follows what ``datasets.push_to_hub`` writes - ``configs`` (``data_files`` per split) and
``dataset_info`` (features with ``class_label`` names, splits with ``num_examples``/``num_bytes``)
- so ``load_dataset`` needs nothing else, plus the descriptive keys of the best cards on the Hub
(the Imagenette card: pretty_name, license, task_categories, size_categories, source_datasets).

Re-publishing must not destroy what a user wrote on the Hub. Generated body sections are
wrapped in HTML comments (``<!-- imgtools:begin NAME -->`` ... ``<!-- imgtools:end NAME -->``,
invisible on the rendered card); on re-push only those blocks are replaced, and only for the
configs being pushed, so text outside the markers, other configs' sections and YAML keys the
user added all survive. Descriptive YAML keys the user changed (license, pretty_name) are kept.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from imgtools import __version__
from imgtools.errors import UserError
from imgtools.hub.layout import ASSETS_DIR, ConfigSummary, built_size
from imgtools.recipes import load_recipe

DEFAULT_ENDPOINT = "https://huggingface.co"
_BLOCK = re.compile(r"<!-- imgtools:begin (?P<name>[^ ]+) -->\n?(?P<body>.*?)"
                    r"<!-- imgtools:end (?P=name) -->\n?", re.S)
_FRONT = re.compile(r"\A\s*---\s*\n(?P<yaml>.*?)\n---\s*\n?", re.S)
FAMILY_IMAGENETTE = ("imagenette", "imagewoof", "imagewang")

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


@dataclass
class CardContext:
    """Where the card will live: links to preview images and the loading snippet need it."""

    repo_id: str
    revision: str = "main"
    endpoint: str = DEFAULT_ENDPOINT

    def file_url(self, path_in_repo: str) -> str:
        return (f"{self.endpoint.rstrip('/')}/datasets/{self.repo_id}/resolve/"
                f"{self.revision}/{path_in_repo}")


@dataclass
class DatasetDescription:
    """Dataset-level facts, from the recipe when the dataset is one of ours."""

    name: str
    pretty_name: str
    description: str
    homepage: str
    license: str

    @classmethod
    def for_dataset(cls, name: str) -> DatasetDescription:

        try:
            recipe = load_recipe(name)
        except (UserError, OSError, ValueError):
            return cls(name, name, f"An image classification dataset ({name}).", "", "other")
        return cls(name, recipe.pretty_name or name, recipe.description, recipe.homepage,
                   recipe.license or "other")


# ----------------------------------------------------------------------------------------------
# YAML front matter
# ----------------------------------------------------------------------------------------------


def features_yaml(features: dict) -> list[dict]:
    """``datasets`` features JSON (Parquet schema metadata) -> the YAML list of a card."""
    out = []
    for name, feature in features.items():
        kind = feature.get("_type")
        if kind == "Image":
            out.append({"name": name, "dtype": "image"})
        elif kind == "ClassLabel":
            names = {str(i): n for i, n in enumerate(feature["names"])}
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


def merge_metadata(old: dict, summaries: list[ConfigSummary], desc: DatasetDescription) -> dict:
    """The new YAML: user keys kept, configs/dataset_info updated for the pushed configs."""
    meta = dict(old)
    new_configs, new_infos = zip(*(config_entries(s) for s in summaries), strict=True)
    configs = _merge_by_config(_as_list(meta.get("configs")), list(new_configs))
    defaults = [c for c in configs if c.get("default")]
    if not defaults and configs:
        # a repository with several configs needs a default for load_dataset("user/name")
        configs[0]["default"] = True
    infos = _merge_by_config(_as_list(meta.get("dataset_info")), list(new_infos))
    largest = max(sum(s.get("num_examples", 0) for s in i.get("splits", [])) for i in infos)
    defaults_for_new = {
        "pretty_name": desc.pretty_name,
        "license": desc.license,
        "task_categories": ["image-classification"],
        "task_ids": ["multi-class-image-classification"],
        "annotations_creators": ["crowdsourced"],
        "language": ["en"],
        "source_datasets": ["extended|imagenet-1k"],
        "tags": ["imagenet", "imgtools"],
    }
    ordered = {k: meta.get(k, v) for k, v in defaults_for_new.items()}
    ordered["size_categories"] = [size_category(largest)]
    for k, v in meta.items():
        ordered.setdefault(k, v)
    ordered["configs"] = configs
    ordered["dataset_info"] = infos
    return ordered


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
                  ctx: CardContext) -> str:
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
    homepage = f"\n\n- **Homepage:** {desc.homepage}" if desc.homepage else ""
    return f"""# {desc.pretty_name}

{desc.description}{homepage}
- **Published with:** imgtools {__version__}, which builds it from a copy of ImageNet
  (ILSVRC 2012) and writes the layout `datasets.push_to_hub` writes.

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

Each row holds `image` (the encoded JPEG or PNG as built, decoded to a `PIL.Image` by `datasets`)
and `label` (a `ClassLabel`: an integer index into the class names listed below).
"""


def _size_line(summary: ConfigSummary) -> str:

    size = built_size(summary.build_info)
    options = (summary.build_info or {}).get("options", {})
    if size and options.get("format") in ("pickle", "npz"):  # downsampled ImageNet: N x N
        how = "centre-cropped to a square first" if options.get("crop") else \
            "squashed, aspect ratio not kept, as in the published downsampled ImageNet"
        return f"resized to {size}x{size} pixels ({how})"
    if size:
        return f"shortest side resized to {size} pixels, aspect ratio kept"
    if summary.name == "full" or summary.build_info:
        return "images at their original ImageNet size"
    return "images as stored in the source dataset"


def _sentence(text: str) -> str:
    """First letter up, the rest as written (``str.capitalize`` would turn ImageNet into
    imagenet)."""
    return text[:1].upper() + text[1:]


def _build_section(summary: ConfigSummary) -> str:
    b = summary.build_info
    if not b or b.get("kind") == "convert":  # a conversion's report holds no build settings
        return (f"Converted from the {summary.source_format or 'source'} dataset "
                f"`{summary.source.name}` (no `build-info.json`, so the original build "
                "settings are not known).")
    options = b.get("options") or {}
    lines = []
    if b.get("command"):
        command = b["command"] if isinstance(b["command"], str) else " ".join(b["command"])
        lines.append(f"```\n{command}\n```")
    facts = [("recipe", b.get("recipe")), ("imgtools version", b.get("tool_version")),
             ("source layout", b.get("source_layout")), ("seed", options.get("seed")),
             ("split", options.get("split")), ("size", _size_line(summary)),
             ("JPEG quality", options.get("quality")), ("filter", options.get("filter")),
             ("pixels", b.get("pixels")),
             ("composition", "; ".join(summary.info.extra.get("composition", [])))]
    skipped = b.get("skipped") or []
    if skipped:
        facts.append(("skipped source files", f"{len(skipped)} (unreadable or not images; "
                      "listed in the build's `build-info.json`)"))
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
    parts = [f"## Config `{summary.name}`",
             f"{_sentence(_size_line(summary))}. Label order: {summary.info.label_order}.",
             "### How it was built", _build_section(summary),
             "### Splits",
             _table(["split", "examples", "Parquet files", "size"], split_rows,
                    ["---", "---:", "---:", "---:"]) + labelled_note,
             "### Normalization", _stats_section(summary)]
    if summary.assets:
        images = []
        if "preview" in summary.assets:
            images.append(f"![Sample images per class]({ctx.file_url(summary.assets['preview'])})")
        if "histogram" in summary.assets:
            images.append(f"![Images per class]({ctx.file_url(summary.assets['histogram'])})")
        parts += ["### Preview", "\n\n".join(images)]
    parts += ["### Classes",
              _table(["label", "wnid", "name"] + [s.name for s in splits], class_rows,
                     ["---:", "---", "---"] + ["---:"] * len(splits))]
    if summary.extra_files:
        names = ", ".join(f"[`{name}`]({ctx.file_url(name)})" for _, name in summary.extra_files)
        parts += ["### Noisy labels",
                  f"{names}: the fastai label file of this build. Columns `path` "
                  "(`train/<wnid>/<file>` or `val/<wnid>/<file>`), `noisy_labels_0`, "
                  "`noisy_labels_1`, `noisy_labels_5`, `noisy_labels_25`, `noisy_labels_50` (the "
                  "wnid after changing that percentage of training labels; validation labels "
                  "never change) and `is_valid`. Join it to the rows on the file name: `image` "
                  "keeps the original file name in its `path` field."]
    return "\n\n".join(parts) + "\n"


def render_footer(desc: DatasetDescription, summaries: list[ConfigSummary]) -> str:
    citations = [CITATION_IMAGENET]
    if desc.name in FAMILY_IMAGENETTE:
        citations.append(CITATION_IMAGENETTE)
    if any(s.source_format == "pickle" for s in summaries):
        citations.append(CITATION_DOWNSAMPLED)
    if desc.license and desc.license != "other":
        licence = (f"The {desc.pretty_name} selection is published under `{desc.license}` by its "
                   "authors. ")
    else:
        licence = ""
    cites = "\n\n".join(f"```bibtex\n{c}\n```" for c in citations)
    return f"""## Licensing

{licence}The images come from ImageNet and remain subject to the ImageNet terms of access
(https://image-net.org/download): non-commercial research and educational use only. The
copyright of each photo stays with its owner.

## Citation

{cites}
"""


# ----------------------------------------------------------------------------------------------
# Assembling and merging
# ----------------------------------------------------------------------------------------------


def split_front_matter(text: str) -> tuple[dict, str]:
    """``(yaml dict, body)`` of an existing README.md; a card without YAML has an empty dict."""
    import yaml

    m = _FRONT.match(text)
    if not m:
        return {}, text
    try:
        meta = yaml.safe_load(m.group("yaml")) or {}
    except yaml.YAMLError:
        meta = None
    if not isinstance(meta, dict):

        raise UserError("the existing README.md has a YAML header that is not a mapping",
                        fix="fix or remove the README.md front matter, then push again")
    return meta, text[m.end():]


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


def build_card(existing: str | None, summaries: list[ConfigSummary], ctx: CardContext) -> str:
    """The README.md to publish: ``existing`` (the card already in the repository, or None)
    updated for ``summaries`` (the configs pushed now)."""
    import yaml

    old_meta, old_body = split_front_matter(existing or "")
    desc = DatasetDescription.for_dataset(summaries[0].info.name)
    meta = merge_metadata(old_meta, summaries, desc)
    pretty = meta.get("pretty_name") or desc.pretty_name
    desc = DatasetDescription(desc.name, pretty, desc.description, desc.homepage,
                              str(meta.get("license") or desc.license))
    blocks = {"header": render_header(desc, meta["dataset_info"], meta["configs"], ctx)}
    for s in summaries:
        blocks[f"config:{s.name}"] = render_config(s, ctx)
    blocks["footer"] = render_footer(desc, summaries)
    front = yaml.safe_dump(meta, sort_keys=False, allow_unicode=True, width=1000)
    return f"---\n{front}---\n\n{merge_body(old_body, blocks)}"


def preview_asset_paths(config: str) -> dict[str, str]:
    return {"preview": f"{ASSETS_DIR}/preview-{config}.png",
            "histogram": f"{ASSETS_DIR}/histogram-{config}.png"}
