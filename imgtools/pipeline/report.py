"""The run report every command writes beside its output (``build-info.json``), and what a
command answers when there is nothing to do.

May import: the standard library and ``imgtools.errors``.
"""

from __future__ import annotations

import json
from pathlib import Path

from imgtools.errors import UserError

BUILD_INFO = "build-info.json"
CHECKSUMS = "SHA256SUMS"


def already_complete(roots: list[Path]) -> dict:
    """The answer of ``--resume`` on outputs that are complete with the same settings and
    input: their own report (from the first output), marked as nothing done."""
    try:
        report = json.loads((Path(roots[0]) / BUILD_INFO).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        report = {}
    if not isinstance(report, dict):
        report = {}
    return {**report, "nothing_to_do": True, "outputs": [str(r) for r in roots],
            "message": "already complete with the same settings and input; nothing changed"}


def load_build_info(root: Path) -> dict:
    """``build-info.json`` written by ``imgtools build``; ``{}`` for datasets built otherwise
    (a conversion, a dataset from elsewhere) - the card then says less, but says nothing false."""
    path = root / BUILD_INFO
    if not path.is_file():
        return {}
    try:
        obj = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise UserError(f"cannot read the build report: {e}", path=path,
                        fix="restore the file from the build, or delete it to publish without "
                            "build details") from e
    if not isinstance(obj, dict):
        raise UserError("the build report is not a JSON object", path=path,
                        fix="restore the file from the build, or delete it")
    return obj
