"""read_image: checks the path, sniffs the format from its first bytes, dispatches to the format's reader."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path

from pixelift.errors import ImageReadError, PixeliftError
from pixelift.runtime.formats import READ_FORMATS
from pixelift.runtime.imageio.data import ImageData
from pixelift.runtime.imageio.guards import DEFAULT_MAX_PIXELS, _resolve_max_pixels
from pixelift.runtime.imageio.metadata import _apply_orientation
from pixelift.runtime.imageio.pillow_formats import _read_bmp, _read_jpeg, _read_webp
from pixelift.runtime.imageio.png import _read_png
from pixelift.runtime.imageio.tiff import _read_tiff

# format (as _sniff names it) -> reader; every format in READ_FORMATS has one
_READERS: dict[str, Callable[[Path, int | None], ImageData]] = {
    "PNG": _read_png,
    "JPEG": _read_jpeg,
    "TIFF": _read_tiff,
    "WEBP": _read_webp,
    "BMP": _read_bmp,
}


def read_image(path: str | os.PathLike[str], *, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> ImageData:
    """Read a JPEG, PNG, TIFF, WebP or BMP file. See the package docstring for what each mode becomes."""
    path = Path(path)
    limit = _resolve_max_pixels(max_pixels)
    try:
        st = path.stat()
        if stat.S_ISDIR(st.st_mode):
            raise ImageReadError(f"{path}: is a directory, not an image file")
        if not stat.S_ISREG(st.st_mode):
            # a FIFO or a device would block or never end
            raise ImageReadError(f"{path}: is not a regular file (a pipe, socket or device); refused")
        size = st.st_size
        with path.open("rb") as f:
            head = f.read(32)
    except FileNotFoundError:
        raise ImageReadError(f"{path}: no such file") from None
    except OSError as e:
        raise ImageReadError(f"{path}: cannot open ({e.strerror or e})") from e
    except ValueError as e:  # an embedded NUL byte
        raise ImageReadError(f"{path!r}: not a usable path ({e})") from None
    if size == 0:
        raise ImageReadError(f"{path}: the file is empty (0 bytes)")
    fmt = _sniff(head)
    if fmt is None:
        raise ImageReadError(
            f"{path}: not a supported image ({_describe(head)}); pixelift reads {', '.join(READ_FORMATS)}"
        )
    try:
        data = _READERS[fmt](path, limit)
    except PixeliftError as e:
        if str(path) in str(e):
            raise
        raise type(e)(f"{path}: {e}") from e
    except MemoryError as e:
        raise ImageReadError(f"{path}: not enough memory to decode this {fmt} image") from e
    except Exception as e:  # decoders raise anything from OSError to struct.error on bad data
        raise ImageReadError(f"{path}: corrupt or truncated {fmt} file ({type(e).__name__}: {e})") from e
    _apply_orientation(data)
    return data


def _sniff(head: bytes) -> str | None:
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if head.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "TIFF"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    if head[:2] == b"BM":
        return "BMP"
    return None


def _describe(head: bytes) -> str:
    known = {b"GIF8": "GIF", b"%PDF": "PDF", b"8BPS": "PSD", b"\x00\x00\x00\x0cjP": "JPEG 2000"}
    for magic, name in known.items():
        if head.startswith(magic):
            return f"looks like {name}"
    if head[4:8] == b"ftyp":
        return "looks like HEIF/AVIF/MP4"
    try:
        head.decode("utf-8")
        return "looks like a text file"
    except UnicodeDecodeError:
        return "unrecognised signature"
