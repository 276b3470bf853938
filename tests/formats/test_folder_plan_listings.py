"""The class folders a conversion's plan lists are read from its listing in the same process
(``-j 1``, forked workers): the names it counted, the latest run's only, within a bound."""

from __future__ import annotations

import pytest
from conftest import make_folder

from imgtools.formats import folder as folder_module
from imgtools.formats import get_format
from imgtools.formats.base import InputShard
from imgtools.pipeline.slices import plan_while_listing, read_slice


def _shard(path: str, token: str) -> InputShard:
    return InputShard(path, "train", {"wnid": "n0", "listed": token})


def test_only_the_latest_runs_listings_are_kept_and_within_the_bound(monkeypatch):
    listings = folder_module._PlanListings()
    monkeypatch.setattr(folder_module, "PLANNED_NAMES", 5)
    listings.keep(_shard("/a", "run1"), ["1.jpg", "2.jpg"])
    listings.keep(_shard("/b", "run1"), ["3.jpg", "4.jpg"])
    listings.keep(_shard("/c", "run1"), ["5.jpg", "6.jpg"])  # 6 names: over the bound
    assert listings.get(_shard("/a", "run1"), "run1") == ("1.jpg", "2.jpg")
    assert listings.get(_shard("/c", "run1"), "run1") is None  # its readers list it
    assert listings.get(_shard("/a", "run2"), "run2") is None  # another run's token
    listings.keep(_shard("/c", "run2"), ["5.jpg"])
    assert listings.get(_shard("/a", "run1"), "run1") is None  # the last run's are gone
    assert listings.get(_shard("/c", "run2"), "run2") == ("5.jpg",)


def test_an_image_gone_since_the_plan_is_an_error_naming_it(tmp_path):
    """The readers read the names the plan counted: one deleted since is named, not passed
    over (which would shift every later record of the slice)."""
    src = make_folder(tmp_path / "src", per_class=3)
    fmt = get_format("folder")
    info = fmt.read_info(src)
    plan, _inputs = plan_while_listing(fmt, src, fmt.input_shards(src), info, 100, None,
                                       tmp_path / "inputs.jsonl")
    gone = sorted((src / "train").glob("*/*.JPEG"))[1]
    gone.unlink()
    with pytest.raises(OSError) as raised:
        [r for o in plan for s in o.slices for r in read_slice(fmt, s, info)]
    assert raised.value.filename == str(gone)
