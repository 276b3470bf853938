"""The card's YAML front matter, the part the Hub and ``load_dataset`` read.

It follows what ``datasets.push_to_hub`` writes - ``configs`` (``data_files`` per split) and
``dataset_info`` (features with ``class_label`` names, splits with ``num_examples``/``num_bytes``)
- so ``load_dataset`` needs nothing else, plus the keys of the best image cards on the Hub
(imagenet-1k, cifar10, frgfm/imagenette): pretty_name, ``license: other`` with ``license_name`` /
``license_link`` and ``extra_gated_prompt`` for the ImageNet terms, task_categories,
size_categories, source_datasets. On re-push the pushed configs' entries are replaced, other
configs' entries and keys the user added are kept, and so are descriptive keys the user changed
(license, pretty_name).

Writing the YAML is ours: ``huggingface_hub``'s ``yaml_dump`` (PyYAML, YAML 1.1) writes a class
named ``008`` unquoted, which a YAML 1.2 reader (the Hub's JavaScript front end, ruamel.yaml)
reads as the integer 8; :func:`dump_yaml` quotes every string a YAML 1.2 reader would take for a
number, boolean or null.
"""

from __future__ import annotations

import re

import yaml

from imgtools.hub.card_terms import (
    IMAGENET_LICENSE_NAME,
    IMAGENET_TERMS,
    IMAGENET_TERMS_URL,
    DatasetDescription,
)
from imgtools.hub.layout import ConfigSummary


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
