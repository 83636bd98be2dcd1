"""Reading an input by rows, for the streamed path: tiled or striped TIFF by region, everything else whole.

:func:`open_rows` gives a :class:`RowSource`: its size, sample type, metadata, and ``read(y0, y1)`` returning
rows ``[y0, y1)`` exactly as :func:`~pixelift.runtime.imageio.read_image` would hand them back (same dtype,
same alpha, same notes). A TIFF whose first page is tiled, or striped in more than one strip, with a plain layout
(gray or RGB, 8/16-bit or float32, at most one unassociated or unspecified extra sample, interleaved samples,
orientation 1) is read segment by segment: only the TIFF segments under the asked rows are decoded, and one row
of segments is kept for the next call. Any other input is read whole by ``read_image`` (a 100 MP 8-bit RGB input
is 300 MB; the output is the part that grows with the scale).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np

from pixelift.errors import ImageReadError, PixeliftError
from pixelift.runtime.imageio.data import ImageData
from pixelift.runtime.imageio.guards import DEFAULT_MAX_PIXELS, _check_size, _resolve_max_pixels
from pixelift.runtime.imageio.read import read_image
from pixelift.runtime.imageio.stream_write import StreamMeta

_SIMPLE_DTYPES = {(8, 1): np.uint8, (16, 1): np.uint16, (32, 3): np.float32}  # (bits, sampleformat) -> dtype


@dataclass
class RowSource:
    """An input image read by rows. ``read`` returns ``(color (n, W, C), alpha (n, W) or None)``."""

    path: Path
    height: int
    width: int
    channels: int
    dtype: np.dtype
    has_alpha: bool
    meta: StreamMeta
    source_format: str
    source_mode: str
    notes: list[str] = field(default_factory=list)
    by_region: bool = False  # True: segments are decoded as rows are asked for

    def read(self, y0: int, y1: int) -> tuple[np.ndarray, np.ndarray | None]:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __enter__(self) -> RowSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass
class _WholeSource(RowSource):
    data: ImageData | None = None

    def read(self, y0: int, y1: int) -> tuple[np.ndarray, np.ndarray | None]:
        assert self.data is not None
        alpha = None if self.data.alpha is None else self.data.alpha[y0:y1]
        return self.data.color[y0:y1], alpha


@dataclass
class _TiffSource(RowSource):
    tif: Any = None
    page: Any = None
    seg_rows: int = 0  # rows per segment (tile length or rows per strip)
    seg_cols: int = 1  # segments across (tiles per row; 1 for strips)
    seg_width: int = 0
    samples: int = 0
    _cache: dict[int, np.ndarray] = field(default_factory=dict)

    def _segment_row(self, r: int) -> np.ndarray:
        """Decoded samples of segment row ``r``: (rows, W, samples)."""
        got = self._cache.get(r)
        if got is not None:
            return got
        page, fh = self.page, self.tif.filehandle
        y0 = r * self.seg_rows
        n = min(self.seg_rows, self.height - y0)
        out = np.empty((n, self.width, self.samples), self.dtype)
        for c in range(self.seg_cols):
            index = r * self.seg_cols + c
            offset, count = int(page.dataoffsets[index]), int(page.databytecounts[index])
            fh.seek(offset)
            raw = fh.read(count)
            seg, _, _ = page.decode(raw, index, jpegtables=page.jpegtables)
            seg = np.asarray(seg).reshape(seg.shape[-3:])  # (length, width, samples) of a contig page
            x0 = c * self.seg_width
            w = min(self.seg_width, self.width - x0)
            out[:, x0 : x0 + w] = seg[:n, :w]
        for old in [k for k in self._cache if k < r]:  # rows are asked for top to bottom
            del self._cache[old]
        self._cache[r] = out
        return out

    def read(self, y0: int, y1: int) -> tuple[np.ndarray, np.ndarray | None]:
        if not 0 <= y0 < y1 <= self.height:
            raise ValueError(f"rows [{y0}, {y1}) are outside the image (0..{self.height})")
        parts = []
        for r in range(y0 // self.seg_rows, (y1 - 1) // self.seg_rows + 1):
            seg = self._segment_row(r)
            top = r * self.seg_rows
            parts.append(seg[max(y0 - top, 0) : min(y1 - top, seg.shape[0])])
        arr = parts[0] if len(parts) == 1 else np.concatenate(parts)
        color = np.ascontiguousarray(arr[:, :, : self.channels])
        alpha = np.ascontiguousarray(arr[:, :, self.channels]) if self.has_alpha else None
        return color, alpha

    def close(self) -> None:
        self._cache.clear()
        if self.tif is not None:
            self.tif.close()
            self.tif = None


def open_rows(path: str | os.PathLike[str], *, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> RowSource:
    """A :class:`RowSource` on ``path``: by region for a plain tiled/striped TIFF, else the whole image."""
    path = Path(path)
    try:
        with path.open("rb") as f:
            head = f.read(4)
    except OSError:
        head = b""  # read_image reports it
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        try:
            tiff = _open_tiff(path, _resolve_max_pixels(max_pixels))
        except PixeliftError:
            raise
        except Exception:
            tiff = None  # not a plain layout, or damaged: read_image decides and reports
        if tiff is not None:
            return tiff
    data = read_image(path, max_pixels=max_pixels)
    meta = StreamMeta(data.icc, data.exif, data.xmp, data.iptc, data.dpi, data.png_chunks)
    return _WholeSource(
        path,
        data.height,
        data.width,
        int(data.color.shape[2]),
        data.color.dtype,
        data.alpha is not None,
        meta,
        data.source_format,
        data.source_mode,
        list(data.notes),
        data=data,
    )


def _open_tiff(path: Path, limit: int | None) -> _TiffSource | None:
    import tifffile

    from pixelift.runtime.imageio.tiff import _iptc_trim, _mode_name, _tag_bytes, _tiff_dpi, _tiff_exif

    tif = tifffile.TiffFile(path)
    src = None
    try:
        if not len(tif.pages):
            return None
        page = cast("tifffile.TiffPage", tif.pages[0])
        _check_size(path, int(page.imagewidth), int(page.imagelength), limit)
        photometric, spp = int(page.photometric), int(page.samplesperpixel)
        bps = page.bitspersample
        dtype = _SIMPLE_DTYPES.get((int(bps), int(page.sampleformat)))
        extras = tuple(int(e) for e in page.extrasamples)
        n_color = {1: 1, 2: 3}.get(photometric)
        plain = (
            n_color is not None
            and dtype is not None
            and page.imagedepth == 1
            and spp in (n_color, n_color + 1)
            and (spp == 1 or int(page.planarconfig) == 1)
            and not (extras and extras[0] == 1)  # associated alpha: read_image un-premultiplies
            and int(page.tags.valueof(274, 1)) == 1
            and not page.is_subsampled
        )
        tiled = bool(page.is_tiled)
        seg_rows = int(page.tilelength) if tiled else int(page.rowsperstrip)
        if not plain or (not tiled and seg_rows >= int(page.imagelength)) or (tiled and page.tiledepth != 1):
            return None
        assert n_color is not None and dtype is not None
        height, width = int(page.imagelength), int(page.imagewidth)
        seg_width = int(page.tilewidth) if tiled else width
        notes = []
        if len(tif.pages) > 1:
            notes.append(f"only the first of {len(tif.pages)} TIFF pages was read")
        alpha = spp > n_color
        if alpha and (not extras or extras[0] == 0):
            notes.append("unspecified TIFF extra sample treated as alpha")
        tags = page.tags
        exif = _tiff_exif(path, tif.byteorder, tif.is_bigtiff, page.offset, notes)
        meta = StreamMeta(
            _tag_bytes(tags.get(34675), tif.byteorder),
            exif,
            _tag_bytes(tags.get(700), tif.byteorder),
            _iptc_trim(_tag_bytes(tags.get(33723), tif.byteorder)),
            _tiff_dpi(tags),
        )
        from pixelift.runtime.imageio.metadata import _exif_orientation

        if _exif_orientation(exif) != 1:
            return None  # read_image turns the pixels; only it does that
        mode = _mode_name("gray" if n_color == 1 else "rgb", np.dtype(dtype), alpha, False)
        src = _TiffSource(
            path,
            height,
            width,
            n_color,
            np.dtype(dtype),
            alpha,
            meta,
            "TIFF",
            mode,
            notes,
            by_region=True,
            tif=tif,
            page=page,
            seg_rows=seg_rows,
            seg_cols=-(-width // seg_width),
            seg_width=seg_width,
            samples=spp,
        )
    finally:
        if src is None:
            tif.close()
    return src


def read_rows_checked(src: RowSource, y0: int, y1: int) -> tuple[np.ndarray, np.ndarray | None]:
    """``src.read`` with decoder failures as :class:`ImageReadError` naming the file."""
    try:
        return src.read(y0, y1)
    except PixeliftError:
        raise
    except MemoryError as e:
        raise ImageReadError(f"{src.path}: not enough memory to decode rows {y0}..{y1}") from e
    except Exception as e:
        raise ImageReadError(f"{src.path}: corrupt or truncated TIFF ({type(e).__name__}: {e})") from e


__all__ = ["RowSource", "open_rows", "read_rows_checked"]
