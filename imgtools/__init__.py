"""imgtools: make small ImageNet-derived datasets and move them between formats.

Data flows one way through the package, and the modules are laid out to show it:

    sources   (imgtools.sources, pipeline.slices)  ImageNet's images in any form, or a dataset
    plan      (imgtools.plan, pipeline.units)      which images go to which split, in work units
    transform (imgtools.transforms)                decode, repair, resize, encode - or pass through
    writer    (imgtools.formats)                   one module per on-disk format: reader, writer,
                                                   and a second pass where the format needs one
    metadata  (pipeline.report, imgtools.metadata, imgtools.hub)  report, checksums, cards

and one engine runs them for every command (imgtools.pipeline.engine).
"""

__version__ = "0.1.0"
"""The one place the version is written (pyproject.toml reads it: ``[tool.hatch.version]``);
a constant rather than ``importlib.metadata.version()``, whose import costs every process,
the CLI and each worker, some 30-60 ms of start-up."""
