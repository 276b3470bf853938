"""The engine's shared stages: how a run claims, stages, fingerprints, resumes and publishes
its outputs (:mod:`imgtools.pipeline.output`), and how it stops on a signal
(:mod:`imgtools.pipeline.interrupt`). Build, convert and downsampled builds all go through
these, so an output is treated one way whichever command writes it.

May import: ``imgtools.atomic``, ``imgtools.locks``, ``imgtools.errors`` and the standard
library; never a command, a format or a transform.
"""
