"""Guards that run before a pixel is decoded: the ``max_pixels`` decompression-bomb limit and Pillow's own guard."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from PIL import Image

from pixelift import limits
from pixelift.errors import ImageReadError, ImageTooLargeError

DEFAULT_MAX_PIXELS = limits.DEFAULT_MAX_PIXELS
ENV_MAX_PIXELS = limits.ENV_MAX_PIXELS


def _resolve_max_pixels(max_pixels: int | None) -> int | None:
    return limits.resolve_limit(max_pixels, DEFAULT_MAX_PIXELS, ENV_MAX_PIXELS, "max_pixels")


def _check_size(path: Path, width: int, height: int, limit: int | None) -> None:
    if width <= 0 or height <= 0:
        raise ImageReadError(f"{path}: the image has no pixels ({width}x{height})")
    if limit is not None and width * height > limit:
        raise ImageTooLargeError(
            f"{path}: {width}x{height} = {width * height:,} pixels is over the limit of {limit:,} "
            "(a guard against decompression bombs). If you trust this file, raise it: --max-pixels N|none, "
            f"{ENV_MAX_PIXELS}=N|none, or max_pixels=None in Python"
        )


_PIL_OPEN_LOCK = threading.Lock()


def _pil_open(fp: Any, fmt: str) -> Image.Image:
    """Image.open without Pillow's own bomb check: ours (``max_pixels``) runs on the size it reports."""
    with _PIL_OPEN_LOCK:
        saved = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = None
        try:
            return Image.open(fp, formats=[fmt])
        finally:
            Image.MAX_IMAGE_PIXELS = saved
