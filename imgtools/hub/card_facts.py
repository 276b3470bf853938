"""Sentences about one config, from its build report (``build-info.json``) and the dataset
sidecar: the build command without local paths, how the images were sized, how labels map to
classes, how the split departs from the published one, and the settings of the build.

Facts come from those files, never from what a build usually does: keys other parts of imgtools
may add (a label convention, an orientation/colour policy) are shown when present and left out
when absent.
"""

from __future__ import annotations

import os
import re
import shlex

from imgtools.hub.card_terms import FAMILY_IMAGENETTE, DatasetDescription
from imgtools.hub.layout import ConfigSummary, built_size

# build-info.json / sidecar keys that describe how pixels were treated, when a build states them
_IMAGE_POLICY_KEYS = (("pixels", "pixels"), ("composition", "composition"),
                      ("orientation", "orientation"), ("orientation_policy", "orientation"),
                      ("colour", "colour"), ("color", "colour"), ("colour_policy", "colour"),
                      ("color_policy", "colour"), ("icc", "ICC profiles"),
                      ("icc_policy", "ICC profiles"), ("image_policy", "image policy"))
_LABEL_KEYS = ("label_convention", "labels")


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


def creation_section(summary: ConfigSummary) -> str:
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
