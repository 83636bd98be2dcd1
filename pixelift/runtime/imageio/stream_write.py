"""Streamed writers: the image arrives as horizontal strips, top to bottom, and goes to disk as it comes.

Memory does not depend on the image size: TIFF keeps one row of TIFF tiles (:data:`TIFF_TILE` rows), PNG one
block of filtered rows. The metadata is what :func:`~pixelift.runtime.imageio.write.write_image` writes, built by
the same helpers (``tiff._tiff_options``, ``png._png_meta_chunks``, ``metadata._patch_exif``).

======  ========================================================  =========================================
Format  How                                                       Samples
======  ========================================================  =========================================
TIFF    tifffile, tiled 256 x 256, Adobe Deflate + predictor;      uint8, uint16, float32 (kept), alpha as
        BigTIFF once the uncompressed pixels pass 2 GiB            unassociated extra sample
PNG     our own chunks: IHDR, metadata, IDAT from one zlib         uint8, uint16 (float32 -> 16 bit, like
        stream of Paeth-filtered rows, IEND                        ``write_image``)
======  ========================================================  =========================================

JPEG and WebP cannot be streamed, and their formats cap the size (:data:`FORMAT_MAX_SIDE`):
:func:`check_format_limits` refuses a larger output before any work, suggesting TIFF.

Atomic like ``write_image``: everything goes to a part file beside the output, renamed into place only once the
last row is written; any error (out of disk space included), or fewer rows than announced, removes it.
"""

from __future__ import annotations

import errno
import io
import os
import struct
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from pixelift.errors import ImageWriteError, OutputExistsError, OutputTooLargeForFormatError, PixeliftError
from pixelift.paths import atomic_path
from pixelift.runtime.imageio.data import _to_uint16, _WriteJob
from pixelift.runtime.imageio.metadata import _patch_exif, _strip_exif_header

STREAM_FORMATS = ("TIFF", "PNG")
#: the largest side each format can hold (PNG: 2**31 - 1; TIFF: no practical limit as BigTIFF)
FORMAT_MAX_SIDE = {"JPEG": 65_535, "WEBP": 16_383, "PNG": 2**31 - 1}
TIFF_TILE = 256
BIGTIFF_FROM = 2 << 30  # uncompressed bytes
PNG_BLOCK_ROWS = 32  # rows filtered at a time
PNG_IDAT_BYTES = 1 << 20
PNG_LEVEL = 6

Strip = tuple[np.ndarray, np.ndarray | None]  # (rows, W, C) colour, (rows, W) alpha or None


@dataclass(frozen=True)
class StreamMeta:
    """What a streamed output carries besides pixels (as :class:`~pixelift.runtime.imageio.ImageData` holds it)."""

    icc: bytes | None = None
    exif: bytes | None = None
    xmp: bytes | None = None
    iptc: bytes | None = None
    dpi: tuple[float, float] | None = None
    png_chunks: tuple[tuple[bytes, bytes], ...] = ()


@dataclass(frozen=True)
class StreamShape:
    height: int
    width: int
    channels: int  # colour channels, 1 or 3
    dtype: np.dtype
    alpha: bool

    @property
    def samples(self) -> int:
        return self.channels + int(self.alpha)


def check_format_limits(fmt: str, height: int, width: int, where: str) -> None:
    """Refuse an output its format cannot hold (JPEG 65,535 px a side, WebP 16,383), suggesting TIFF."""
    limit = FORMAT_MAX_SIDE.get(fmt.upper())
    if limit is not None and max(height, width) > limit:
        raise OutputTooLargeForFormatError(
            f"{where}: the output would be {width}x{height} pixels; {fmt.upper()} holds at most {limit:,} pixels a "
            "side. Write TIFF (--format tiff, or a .tif output): it holds any size, 16-bit and float kept, and is "
            "streamed to disk where the pipeline allows (one model at its own scale)"
        )


def _open_for_write(path: Path) -> BinaryIO:
    """The part file, opened for writing (one place, so tests can make the disk run out)."""
    return io.FileIO(path, "w+")  # type: ignore[return-value]


def write_streamed(
    strips: Iterable[Strip],
    path: str | os.PathLike[str],
    shape: StreamShape,
    meta: StreamMeta,
    *,
    format: str,
    overwrite: bool = False,
    scale_dpi: float = 1.0,
    compression: str | None = "zlib",
) -> Path:
    """Write ``strips`` (in order, covering ``shape.height`` rows exactly) to ``path`` atomically; returns it.

    An exception raised by the iterator (the model failing half way) propagates unchanged and leaves nothing."""
    path = Path(path)
    fmt = {"TIF": "TIFF"}.get(format.upper(), format.upper())
    if fmt not in STREAM_FORMATS:
        check_format_limits(fmt, shape.height, shape.width, str(path))
        raise ImageWriteError(f"{path}: {fmt} cannot be streamed; write {' or '.join(STREAM_FORMATS)}")
    check_format_limits(fmt, shape.height, shape.width, str(path))
    if shape.channels not in (1, 3) or np.dtype(shape.dtype) not in (np.uint8, np.uint16, np.float32):
        raise ValueError(f"cannot stream {shape}")
    if path.is_dir():
        raise ImageWriteError(f"{path}: is a directory")
    if path.exists() and not overwrite:
        raise OutputExistsError(f"{path}: already exists; --overwrite (overwrite=True) replaces it")
    dpi = None if meta.dpi is None else (meta.dpi[0] * scale_dpi, meta.dpi[1] * scale_dpi)
    exif = _strip_exif_header(meta.exif)
    if exif:
        exif = _patch_exif(exif, scale=scale_dpi, size=(shape.width, shape.height))
    empty = np.zeros((0, 0, shape.channels), np.dtype(shape.dtype))
    job = _WriteJob(empty, None, meta.icc, exif, meta.xmp, meta.iptc, dpi, 95, False, compression, meta.png_chunks)
    rows = _checked(strips, shape, str(path))
    try:
        with atomic_path(path, replace=overwrite) as tmp:
            if fmt == "TIFF":
                _stream_tiff(tmp, rows, shape, job)
            else:
                _stream_png(tmp, rows, shape, job)
    except _StripError as e:
        raise ImageWriteError(str(e)) from None
    except PixeliftError:
        raise
    except OSError as e:
        if e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            raise ImageWriteError(f"{path}: out of disk space writing {fmt} ({e.strerror or e}); nothing was left") from e
        raise ImageWriteError(f"{path}: cannot write {fmt} ({type(e).__name__}: {e})") from e
    except _ProducerError as e:  # the strips' own error (the model, the reader): unchanged
        raise e.error from e.error.__cause__
    except Exception as e:
        raise ImageWriteError(f"{path}: cannot write {fmt} ({type(e).__name__}: {e})") from e
    return path


class _StripError(Exception):
    """Strips that do not add up to the announced image (a bug in the producer)."""


class _ProducerError(Exception):
    """Carries an exception raised by the strip iterator through the writer libraries untouched."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(str(error))
        self.error = error


def _checked(strips: Iterable[Strip], shape: StreamShape, where: str) -> Iterator[Strip]:
    """The strips, each checked against ``shape``; exactly ``shape.height`` rows in all."""
    done = 0
    it = iter(strips)
    while True:
        try:
            item = next(it)
        except StopIteration:
            break
        except Exception as e:
            raise _ProducerError(e) from e
        color, alpha = item
        n = color.shape[0]
        if color.shape[1:] != (shape.width, shape.channels) or color.dtype != shape.dtype:
            raise _StripError(f"{where}: strip {color.shape} {color.dtype} does not fit {shape}")
        if (alpha is None) == shape.alpha or (alpha is not None and alpha.shape != (n, shape.width)):
            raise _StripError(f"{where}: strip alpha does not fit {shape}")
        done += n
        if done > shape.height:
            raise _StripError(f"{where}: more than the {shape.height} rows announced")
        yield color, alpha
    if done != shape.height:
        raise _StripError(f"{where}: the image ended after {done} of {shape.height} rows")


def _samples(color: np.ndarray, alpha: np.ndarray | None) -> np.ndarray:
    return color if alpha is None else np.concatenate([color, alpha[:, :, None]], axis=2)


# --------------------------------------------------------------------------- TIFF


def _tiff_tiles(rows: Iterator[Strip], shape: StreamShape) -> Iterator[np.ndarray]:
    """Tiles in file order (row-major) from strips of any height: one row of tiles is held at a time."""
    t = TIFF_TILE
    buf = np.empty((t, shape.width, shape.samples), np.dtype(shape.dtype))
    filled = 0
    for color, alpha in rows:
        arr = _samples(color, alpha)
        pos = 0
        while pos < arr.shape[0]:
            take = min(t - filled, arr.shape[0] - pos)
            buf[filled : filled + take] = arr[pos : pos + take]
            filled += take
            pos += take
            if filled == t:
                yield from _tile_row(buf, shape.channels == 1 and not shape.alpha)
                filled = 0
    if filled:
        yield from _tile_row(buf[:filled], shape.channels == 1 and not shape.alpha)


def _tile_row(band: np.ndarray, squeeze: bool) -> Iterator[np.ndarray]:
    for x in range(0, band.shape[1], TIFF_TILE):
        tile = np.ascontiguousarray(band[:, x : x + TIFF_TILE])
        yield tile[:, :, 0] if squeeze else tile


def _stream_tiff(tmp: Path, rows: Iterator[Strip], shape: StreamShape, job: _WriteJob) -> None:
    import tifffile

    from pixelift.runtime.imageio.tiff import _append_sub_ifds, _tiff_options

    dtype = np.dtype(shape.dtype)
    options, sub_ifds = _tiff_options(job, gray=shape.channels == 1, alpha=shape.alpha, integer=dtype != np.float32)
    dims: tuple[int, ...] = (shape.height, shape.width)
    if shape.samples > 1:
        dims += (shape.samples,)
    big = shape.height * shape.width * shape.samples * dtype.itemsize >= BIGTIFF_FROM
    with _open_for_write(tmp) as fh:
        tifffile.imwrite(
            fh,
            _tiff_tiles(rows, shape),
            shape=dims,
            dtype=dtype,
            tile=(TIFF_TILE, TIFF_TILE),
            bigtiff=big,
            maxworkers=1,
            **options,
        )
    if sub_ifds:
        _append_sub_ifds(tmp, sub_ifds)


# --------------------------------------------------------------------------- PNG


def _paeth(raw: np.ndarray, prev: np.ndarray, bpp: int) -> np.ndarray:
    """PNG filter type 4 over whole rows at once (every predictor reads raw neighbours only)."""
    a = np.zeros(raw.shape, np.int16)
    a[:, bpp:] = raw[:, :-bpp]
    b = np.empty(raw.shape, np.int16)
    b[0] = prev
    b[1:] = raw[:-1]
    c = np.zeros(raw.shape, np.int16)
    c[:, bpp:] = b[:, :-bpp]
    pa = np.abs(b - c)
    pb = np.abs(a - c)
    pc = np.abs(a + b - 2 * c)
    pred = np.where((pa <= pb) & (pa <= pc), a, np.where(pb <= pc, b, c))
    out = np.empty((raw.shape[0], raw.shape[1] + 1), np.uint8)
    out[:, 0] = 4
    out[:, 1:] = (raw.astype(np.int16) - pred).astype(np.uint8)
    return out


def _stream_png(tmp: Path, rows: Iterator[Strip], shape: StreamShape, job: _WriteJob) -> None:
    from pixelift.runtime.imageio.png import _png_chunk, _png_meta_chunks

    depth = 8 if np.dtype(shape.dtype) == np.uint8 else 16
    ctype = {(1, False): 0, (1, True): 4, (3, False): 2, (3, True): 6}[(shape.channels, shape.alpha)]
    bpp = shape.samples * depth // 8
    prev = np.zeros(shape.width * bpp, np.uint8)
    comp = zlib.compressobj(PNG_LEVEL)
    pending: list[bytes] = []
    size = 0
    with _open_for_write(tmp) as fh:
        fh.write(b"\x89PNG\r\n\x1a\n")
        fh.write(_png_chunk(b"IHDR", struct.pack(">IIBBBBB", shape.width, shape.height, depth, ctype, 0, 0, 0)))
        for chunk in [*_png_meta_chunks(job.icc, job.dpi, job.exif, job.xmp, job.iptc), *(_png_chunk(n, b) for n, b in job.png_chunks)]:
            fh.write(chunk)
        for color, alpha in rows:
            arr = _samples(color, alpha)
            if arr.dtype == np.float32:  # as write_image: float is written as 16 bit
                arr = _to_uint16(arr)
            raw = arr.astype(">u2", copy=False) if depth == 16 else arr
            flat = np.ascontiguousarray(raw).view(np.uint8).reshape(arr.shape[0], -1)
            for i in range(0, flat.shape[0], PNG_BLOCK_ROWS):
                block = flat[i : i + PNG_BLOCK_ROWS]
                data = comp.compress(_paeth(block, prev, bpp).tobytes())
                prev = block[-1].copy()
                if data:
                    pending.append(data)
                    size += len(data)
                if size >= PNG_IDAT_BYTES:
                    fh.write(_png_chunk(b"IDAT", b"".join(pending)))
                    pending, size = [], 0
        pending.append(comp.flush())
        fh.write(_png_chunk(b"IDAT", b"".join(pending)))
        fh.write(_png_chunk(b"IEND", b""))


__all__ = [
    "FORMAT_MAX_SIDE",
    "STREAM_FORMATS",
    "StreamMeta",
    "StreamShape",
    "check_format_limits",
    "write_streamed",
]
