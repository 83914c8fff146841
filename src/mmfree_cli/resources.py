"""Where the files shipped with the package live: recipes/, templates/ and the embedded corpus.

In a wheel, recipes/ and templates/ are copied inside the package (pyproject force-include). In an
editable install they are still at the top of the repository, two levels above this file.
"""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def _shipped(name: str) -> Path:
    inside = _PACKAGE / name
    if inside.is_dir():
        return inside
    return _PACKAGE.parent.parent / name


def recipes_dir() -> Path:
    return _shipped("recipes")


def templates_dir() -> Path:
    return _shipped("templates")


def assets_dir() -> Path:
    return _PACKAGE / "assets"


def embedded_corpus() -> Path:
    """The public-domain Tiny Shakespeare corpus (about 1.1 MB) shipped for the offline default."""
    return assets_dir() / "tinyshakespeare.txt"
