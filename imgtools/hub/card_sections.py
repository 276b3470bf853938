"""The card's body, the part people read, in the sections of the Hub's dataset-card template:
a header (summary, configs, loading, Data Fields), one section per config (Data Instances with a
real row, Data Splits, Dataset Creation, normalization statistics, preview, classes) and a
footer (Considerations for Using the Data, licensing, citation). Each is Markdown;
:mod:`imgtools.hub.card` wraps them in the markers that let a re-push replace only them."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from imgtools import __version__
from imgtools.hub.card_facts import creation_section, label_sentence, size_sentence, split_warnings
from imgtools.hub.card_terms import (
    CITATION_DOWNSAMPLED,
    CITATION_IMAGENET,
    CITATION_IMAGENETTE,
    FAMILY_IMAGENETTE,
    IMAGENET_1K_CARD,
    IMAGENET_LICENSE_NAME,
    IMAGENET_TERMS_URL,
    DatasetDescription,
)
from imgtools.hub.layout import ConfigSummary

DEFAULT_ENDPOINT = "https://huggingface.co"


@dataclass
class CardContext:
    """Where the card will live: the loading snippet names the repository."""

    repo_id: str
    revision: str = "main"
    endpoint: str = DEFAULT_ENDPOINT


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
              "### Dataset Creation", creation_section(summary),
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
