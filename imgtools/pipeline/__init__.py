"""The engine (:mod:`.engine`: one run loop and one shard worker for every command that writes
a dataset) and its stages: work units from either kind of source (:mod:`.units`), a dataset
source cut into output shards (:mod:`.slices`), how a run claims, stages, fingerprints, resumes
and publishes its outputs (:mod:`.output`), its report and checksums (:mod:`.report`), how it
stops on a signal (:mod:`.interrupt`), and the record formats' second pass (:mod:`.packing`).

``output``, ``report`` and ``interrupt`` import only the core (``imgtools.atomic``,
``imgtools.locks``, ``imgtools.errors``, ``imgtools.runner``); ``slices``, ``packing`` and
``units`` sit above the format interface (not the registry); ``engine`` above them all.
"""
