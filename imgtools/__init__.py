"""imgtools: make small ImageNet-derived datasets and move them between formats.

Data flows one way through the package, and the modules are laid out to show it:

    sources (imgtools.sources)     ImageNet's images: a tree, the archives, the Kaggle zip, a copy
    plan    (imgtools.plan)        decide which images go to which split, in shards
    transform (imgtools.transforms.jpeg) decode, convert to RGB, resize, encode
    writer  (imgtools.formats.*)   one module per on-disk format, each with a reader and a writer
    metadata (imgtools.report, imgtools.hub) build report, dataset card
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("imgtools")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"
