"""Where the shipped recipes (``builders/``) and class lists (``manifests/``) live.

In a wheel they are installed inside the package as ``imgtools/_data/{builders,manifests}``; in a
source checkout (editable install, tests) they are the top-level folders of the repository.
"""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def data_dir(kind: str) -> Path:
    """``kind`` is ``"builders"`` or ``"manifests"``."""
    for candidate in (_PACKAGE / "_data" / kind, _PACKAGE.parent / kind):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"imgtools is installed without its {kind}/ folder (looked in "
                            f"{_PACKAGE / '_data' / kind} and {_PACKAGE.parent / kind})")


def builtin_recipes() -> dict[str, Path]:
    return {p.stem: p for p in sorted(data_dir("builders").glob("*.toml"))}


def manifest_path(name: str) -> Path:
    return data_dir("manifests") / name
