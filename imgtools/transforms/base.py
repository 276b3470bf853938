"""The interface every transform implements (see :mod:`imgtools.transforms`)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

from imgtools.records import Record

PRODUCTS = ("jpeg", "as-input", "planar-rows")
"""What a transform's records hold: JPEG bytes, the input's bytes as they were, or a raw
channel-planar uint8 row (which only the pickle/npz writers take)."""


class Transform(ABC):
    """One record in, one record per output out.

    Instances are small, frozen and picklable: they travel inside every shard task to
    wherever the executor runs it.
    """

    produces: ClassVar[str]
    """One of :data:`PRODUCTS`."""
    pixels: ClassVar[str]
    """The pixel policy in one sentence, for build-info.json and the dataset card."""
    renders: ClassVar[bool] = True
    """Whether :meth:`apply` decodes and encodes pixels. The engine transforms several such
    records before it writes them (a codec leaves the processor's caches cold for the writes:
    :data:`imgtools.pipeline.engine.RECORDS_IN_FLIGHT`), and writes a record that only passes
    through as soon as it is read, while its bytes are still in the caches."""
    prefer: ClassVar[str | None] = None
    """``"threads"`` when the work is GIL-releasing C code (Pillow decode and resize), so a
    local executor can run shards as threads of one process (one interpreter's memory)."""

    @property
    @abstractmethod
    def outputs(self) -> int:
        """How many records :meth:`apply` returns (one per output folder of the run)."""

    @abstractmethod
    def apply(self, record: Record) -> tuple[list[Record], str | None]:
        """The output records and a repair note (None when nothing was repaired). Raises
        :class:`imgtools.transforms.jpeg.BadImage` when the image cannot be used."""

    @abstractmethod
    def settings(self) -> dict[str, Any]:
        """Everything that decides the output bytes (for the fingerprint and the report),
        ``resizer`` included."""
