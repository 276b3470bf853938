"""The dataset card (README.md): YAML front matter the Hub reads, and a body people read.

This module assembles the card and merges it into the one already published; the parts are
:mod:`~imgtools.hub.card_yaml` (the front matter), :mod:`~imgtools.hub.card_sections` (the body's
Markdown), :mod:`~imgtools.hub.card_facts` (sentences about one config, from its build report)
and :mod:`~imgtools.hub.card_terms` (the dataset's description, the ImageNet terms, citations).

Parsing an existing card is ``huggingface_hub.DatasetCard``'s job (:func:`split_front_matter`).

Re-publishing must not destroy what a user wrote on the Hub. Generated body sections are
wrapped in HTML comments (``<!-- imgtools:begin NAME -->`` ... ``<!-- imgtools:end NAME -->``,
invisible on the rendered card); on re-push only those blocks are replaced, and only for the
configs being pushed, so text outside the markers, other configs' sections and YAML keys the
user added all survive (``metadata_update`` merges YAML only and commits on its own, so it
cannot do this). Descriptive YAML keys the user changed (license, pretty_name) are kept.
"""

from __future__ import annotations

import re

import yaml

from imgtools.errors import UserError
from imgtools.hub.card_sections import CardContext, render_config, render_footer, render_header
from imgtools.hub.card_terms import DatasetDescription
from imgtools.hub.card_yaml import dump_yaml, merge_metadata
from imgtools.hub.layout import ASSETS_DIR, ConfigSummary

_BLOCK = re.compile(r"<!-- imgtools:begin (?P<name>[^ ]+) -->\n?(?P<body>.*?)"
                    r"<!-- imgtools:end (?P=name) -->\n?", re.S)


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
