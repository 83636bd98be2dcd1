"""The format and suffix tables, and the output names they imply. No numpy, no Pillow: a CLI run
that hands its files to a running service plans its outputs with this alone."""

from __future__ import annotations

import os
from pathlib import Path

READ_FORMATS = ("PNG", "JPEG", "TIFF", "WEBP", "BMP")
WRITE_FORMATS = ("PNG", "TIFF", "JPEG", "WEBP")
SUFFIXES = {
    ".png": "PNG",
    ".tif": "TIFF",
    ".tiff": "TIFF",
    ".jpg": "JPEG",
    ".jpeg": "JPEG",
    ".jpe": "JPEG",
    ".webp": "WEBP",
    ".bmp": "BMP",
    ".dib": "BMP",
}
#: the suffixes a folder scan picks up: every one of a format pixelift reads
READ_SUFFIXES = tuple(s for s, f in SUFFIXES.items() if f in READ_FORMATS)
_FORMAT_SUFFIX = {"PNG": ".png", "TIFF": ".tif", "JPEG": ".jpg", "WEBP": ".webp", "BMP": ".bmp"}


def default_output_format(input_format: str) -> str:
    """Lossless by default: TIFF stays TIFF, everything else becomes PNG."""
    return "TIFF" if input_format.upper() in ("TIFF", "TIF") else "PNG"


def format_for_path(path: str | os.PathLike[str]) -> str | None:
    """The format a file name implies (``.png`` -> ``"PNG"``, ``.tif`` -> ``"TIFF"``), or None."""
    return SUFFIXES.get(Path(path).suffix.lower())


def suffix_for(fmt: str) -> str:
    """The usual file suffix for a format name: ``"TIFF"`` -> ``".tif"``."""
    key = {"JPG": "JPEG", "TIF": "TIFF"}.get(fmt.upper(), fmt.upper())
    if key not in _FORMAT_SUFFIX:
        raise ValueError(f"unknown image format {fmt!r}; known: {', '.join(_FORMAT_SUFFIX)}")
    return _FORMAT_SUFFIX[key]


def default_output_path(src: Path, fmt: str) -> Path:
    """Where an output goes when none is named: beside ``src``, ``<stem>_pixelift`` with ``fmt``'s suffix."""
    return src.with_name(f"{src.stem}_pixelift{suffix_for(fmt)}")
