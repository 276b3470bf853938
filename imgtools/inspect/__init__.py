"""Look inside any dataset imgtools reads: describe it, check it, measure it, show it.

One module per command: :mod:`~imgtools.inspect.info` (``describe``),
:mod:`~imgtools.inspect.verify` (``verify``, with the build-time checksums in
:mod:`~imgtools.inspect.checksums`), :mod:`~imgtools.inspect.stats` (``channel_stats``) and
:mod:`~imgtools.inspect.preview` (``preview``); what they share (opening a dataset, running a
worker on every shard) is :mod:`~imgtools.inspect.dataset`.

Every command works through the format registry (``detect_format`` -> ``read_info`` ->
``input_shards`` -> ``read_shard``), so a new format gets inspection for free. Work is split by
input shard and run in parallel on an executor; workers return small summaries (counters, integer
sums, capped problem lists), so memory does not grow with the number of images. Pixel sums are
exact integers, so ``stats`` gives the same digits however many workers run it.

The commands' functions are imported from their modules (``from imgtools.inspect.verify import
verify``), not re-exported here: a package attribute named like a submodule would be replaced
by the module on its first import.
"""
