"""The engine's shared stages: how a run claims, stages, fingerprints, resumes and publishes
its outputs (:mod:`.output`), its report and checksums (:mod:`.report`), how it stops on a
signal (:mod:`.interrupt`), and how record-format builds pack work shards into files of each
format's size, independent of the work unit (:mod:`.packing`). Build, convert and downsampled
builds all go through these, so an output is treated one way whichever command writes it.

``output``, ``report`` and ``interrupt`` import only the core (``imgtools.atomic``,
``imgtools.locks``, ``imgtools.errors``, ``imgtools.runner``); ``packing`` sits above the
formats and the conversion planner.
"""
