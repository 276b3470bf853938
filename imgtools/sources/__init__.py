"""Where a build's images come from: an extracted ImageNet tree, the image-net.org archives
read in place, the Kaggle zip, or a copy in a training format (HF, TFDS, WebDataset).

:func:`open_source` detects which one ``--src`` is; every source lists images and hands out
locators that :func:`open_locator` reads in any worker process.
"""

from imgtools.sources.base import Source, open_source
from imgtools.sources.members import locator_inputs, open_locator

__all__ = ["Source", "locator_inputs", "open_locator", "open_source"]
