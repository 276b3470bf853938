"""The build and conversion pipelines' shared pieces (see /work/shared/ARCHITECTURE.md):
:mod:`.packing` sizes record-format output files independently of the work unit."""
