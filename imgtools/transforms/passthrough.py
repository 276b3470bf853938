"""The conversion transform: every record goes through untouched (same bytes, label, name)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from imgtools.records import Record
from imgtools.transforms.base import Transform


@dataclass(frozen=True)
class Passthrough(Transform):
    produces = "as-input"
    pixels = "the input's encoded bytes, untouched"
    renders = False

    @property
    def outputs(self) -> int:
        return 1

    def apply(self, record: Record) -> tuple[list[Record], str | None]:
        return [record], None

    def settings(self) -> dict[str, Any]:
        return {"transform": "passthrough", "resizer": None}
