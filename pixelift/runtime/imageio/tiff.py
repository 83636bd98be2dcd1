"""TIFF via tifffile: every depth and layout read_image accepts, EXIF/GPS sub-IFDs, ICC, XMP, IPTC, resolution."""

from __future__ import annotations

import os
import struct
import warnings
from pathlib import Path
from typing import Any, cast

import numpy as np
from PIL import Image

from pixelift.errors import ImageReadError
from pixelift.runtime.imageio.data import _DTYPES, ImageData, _to_uint8, _WriteJob
from pixelift.runtime.imageio.guards import _check_size
from pixelift.runtime.imageio.icc import _cmyk_to_rgb
from pixelift.runtime.imageio.metadata import (
    _EXIF_IFD,
    _GPS_IFD,
    _INTEROP_IFD,
    _ORIENTATION,
    _RESUNIT,
    _XRES,
    _YRES,
    _clean_dpi,
    _strip_exif_header,
)

# IFD0 tags carried between EXIF and a TIFF's own first IFD (the rest of IFD0 describes the pixels).
_TIFF_TEXT_TAGS = (270, 271, 272, 305, 306, 315, 316, 33432)  # Description, Make, Model, Software, DateTime, ...
_TIFF_EXIF_TAGS = (*_TIFF_TEXT_TAGS, _ORIENTATION, _XRES, _YRES, _RESUNIT)


def _read_tiff(path: Path, limit: int | None) -> ImageData:
    import tifffile

    notes: list[str] = []
    with tifffile.TiffFile(path) as tif:
        if not len(tif.pages):
            raise ImageReadError(f"{path}: the TIFF holds no image")
        page = cast("tifffile.TiffPage", tif.pages[0])  # the first page is always a TiffPage
        if len(tif.pages) > 1:
            notes.append(f"only the first of {len(tif.pages)} TIFF pages was read")
        _check_size(path, int(page.imagewidth), int(page.imagelength), limit)
        if page.imagedepth > 1:
            raise ImageReadError(f"{path}: volumetric TIFF (depth {page.imagedepth}) is not supported")
        photometric = int(page.photometric)
        bps = page.bitspersample
        extrasamples = tuple(int(e) for e in page.extrasamples)
        colormap = page.colormap
        compression = int(page.compression)
        tags = page.tags
        icc = _tag_bytes(tags.get(34675), tif.byteorder)
        xmp = _tag_bytes(tags.get(700), tif.byteorder)
        iptc = _iptc_trim(_tag_bytes(tags.get(33723), tif.byteorder))
        dpi = _tiff_dpi(tags)
        exif = _tiff_exif(path, tif.byteorder, tif.is_bigtiff, page.offset, notes)
        arr = page.asarray()
        axes = page.axes
    # bring to (H, W, S)
    if "S" in axes:
        arr = np.moveaxis(arr, axes.index("S"), -1)
        axes = axes.replace("S", "") + "S"
    else:
        arr = arr[..., None]
        axes += "S"
    if axes != "YXS":
        raise ImageReadError(f"{path}: unsupported TIFF layout {axes!r}")

    n_color = {0: 1, 1: 1, 2: 3, 3: 1, 5: 4, 6: 3}.get(photometric)
    if n_color is None or (photometric == 6 and compression != 7):
        raise ImageReadError(f"{path}: unsupported TIFF photometric interpretation {photometric}")
    if photometric == 5 and arr.shape[2] < 4:
        raise ImageReadError(f"{path}: CMYK TIFF with {arr.shape[2]} inks is not supported")
    if arr.shape[2] < n_color:
        raise ImageReadError(f"{path}: TIFF has {arr.shape[2]} samples per pixel, expected {n_color}")
    color, extra = arr[:, :, :n_color], arr[:, :, n_color:]

    alpha = None
    associated = False
    if extra.shape[2]:
        kind = extrasamples[0] if extrasamples else 0
        alpha = extra[:, :, 0]
        associated = kind == 1
        if kind == 0:
            notes.append("unspecified TIFF extra sample treated as alpha")
        if extra.shape[2] > 1:
            notes.append(f"{extra.shape[2] - 1} extra TIFF sample channel(s) dropped")

    def scale(a: np.ndarray) -> np.ndarray:
        if a.dtype == np.bool_:
            return a.astype(np.uint8) * np.uint8(255)
        if a.dtype == np.uint8 and bps < 8:
            return (a.astype(np.uint16) * 255 // (2**bps - 1)).astype(np.uint8)
        if a.dtype == np.uint16 and 8 < bps < 16:
            return (a.astype(np.uint32) * 65535 // (2**bps - 1)).astype(np.uint16)
        if a.dtype in (np.float16, np.float64):
            return a.astype(np.float32)
        if a.dtype not in _DTYPES:
            raise ImageReadError(f"{path}: TIFF sample type {a.dtype} is not supported (uint8, uint16, float32)")
        return a

    kind_name = "gray"
    if photometric == 3:
        if colormap is None:
            raise ImageReadError(f"{path}: palette TIFF without a colormap")
        cmap = np.round(np.asarray(colormap, dtype=np.float64) / 257.0).astype(np.uint8).T
        color = cmap[np.clip(color[:, :, 0], 0, len(cmap) - 1)]
        notes.append("palette image expanded to RGB 8-bit")
        kind_name = "palette"
        if alpha is not None:
            alpha = scale(alpha)
            if alpha.dtype != np.uint8:
                alpha = _to_uint8(alpha)
    else:
        if arr.dtype == np.bool_:
            notes.append("1-bit image converted to 8-bit grayscale (0/255)")
        elif arr.dtype == np.uint8 and bps < 8:
            notes.append(f"{bps}-bit samples scaled to 8 bits")
        elif arr.dtype == np.uint16 and 8 < bps < 16:
            notes.append(f"{bps}-bit samples scaled to 16 bits")
        elif arr.dtype in (np.float16, np.float64):
            notes.append(f"{arr.dtype} samples converted to float32")
        color = scale(color)
        alpha = None if alpha is None else scale(alpha)
        if photometric == 0:
            color = ~color if color.dtype != np.float32 else (1.0 - color).astype(np.float32)
            notes.append("min-is-white gray inverted to min-is-black")
    if associated and alpha is not None:
        color = _unpremultiply(color, alpha)
        notes.append("premultiplied (associated) alpha un-premultiplied")

    if photometric == 5:
        kind_name = "cmyk"
        if color.dtype != np.uint8:
            color = _to_uint8(color)
            alpha = None if alpha is None else _to_uint8(alpha)
            notes.append(f"{arr.dtype} CMYK reduced to 8-bit CMYK before conversion")
        h, w = color.shape[:2]
        im = Image.frombytes("CMYK", (w, h), np.ascontiguousarray(color).tobytes())
        rgb, icc = _cmyk_to_rgb(im, icc, notes)
        color = np.asarray(rgb)
    elif photometric in (2, 6):
        kind_name = "rgb"

    mode = _mode_name(kind_name, color.dtype, alpha is not None, arr.dtype == np.bool_)
    return ImageData(
        np.ascontiguousarray(color),
        None if alpha is None else np.ascontiguousarray(alpha),
        icc,
        exif,
        xmp,
        iptc,
        dpi,
        "TIFF",
        mode,
        notes,
    )


def _mode_name(kind: str, dtype: np.dtype, has_alpha: bool, bilevel: bool) -> str:
    if bilevel:
        return "1"
    if kind == "cmyk":
        return "CMYKA" if has_alpha else "CMYK"
    if kind == "palette":
        return "PA" if has_alpha else "P"
    base = ("LA" if has_alpha else "L") if kind == "gray" else ("RGBA" if has_alpha else "RGB")
    if dtype == np.uint8:
        return base
    if base == "L":
        return "I;16" if dtype == np.uint16 else "F"
    return base + (";16" if dtype == np.uint16 else ";32F")


def _tag_bytes(tag: Any, byteorder: str) -> bytes | None:
    if tag is None:
        return None
    value = tag.value
    if isinstance(value, bytes):
        return value or None
    if isinstance(value, str):
        return value.encode("utf-8") or None
    arr = np.asarray(value)
    if arr.dtype.kind in "ui" and tag.dtype in (3, 4, 8, 9):
        arr = arr.astype(byteorder + {3: "u2", 4: "u4", 8: "i2", 9: "i4"}[int(tag.dtype)])
    return arr.tobytes() or None


def _iptc_trim(iptc: bytes | None) -> bytes | None:
    """Drop the zero padding a LONG-typed TIFF IPTC tag adds after the last IIM dataset."""
    if not iptc:
        return None
    pos = 0
    while pos + 5 <= len(iptc) and iptc[pos] == 0x1C:
        (size,) = struct.unpack_from(">H", iptc, pos + 3)
        if size & 0x8000:  # extended dataset: the length is in the next (size & 0x7FFF) bytes
            n = size & 0x7FFF
            size = int.from_bytes(iptc[pos + 5 : pos + 5 + n], "big") + n
        pos += 5 + size
    if 0 < pos <= len(iptc) and not iptc[pos:].strip(b"\x00"):
        return iptc[:pos]
    return iptc


def _tiff_dpi(tags: Any) -> tuple[float, float] | None:
    try:
        unit = int(tags[296].value) if 296 in tags else 2
        xs, ys = tags[282].value, tags[283].value
        x, y = xs[0] / xs[1], ys[0] / ys[1]
    except (KeyError, ZeroDivisionError, TypeError, IndexError):
        return None
    if unit == 3:
        x, y = x * 2.54, y * 2.54
    elif unit != 2:
        return None
    return _clean_dpi((x, y))


def _tiff_exif(path: Path, byteorder: str, bigtiff: bool, offset: int, notes: list[str]) -> bytes | None:
    """EXIF bytes from a TIFF's first IFD: its descriptive tags plus the Exif and GPS sub-IFDs."""
    try:
        with path.open("rb") as fp, warnings.catch_warnings():
            # Pillow warns about count mismatches it tolerates (e.g. IPTC stored as LONGs, as Photoshop does)
            warnings.simplefilter("ignore")
            src = Image.Exif()
            src.endian = byteorder
            src.bigtiff = bigtiff
            src.load_from_fp(fp, offset)
            out = Image.Exif()
            out.endian = "<" if byteorder == "<" else ">"
            for tag in _TIFF_EXIF_TAGS:
                if tag in src:
                    value = src[tag]
                    if tag == 270 and isinstance(value, str) and _is_machine_description(value):
                        continue
                    out[tag] = value
            for ifd_tag in (_EXIF_IFD, _GPS_IFD):
                if ifd_tag in src:
                    sub = dict(src.get_ifd(ifd_tag))
                    if ifd_tag == _EXIF_IFD and _INTEROP_IFD in sub:
                        interop = src.get_ifd(_INTEROP_IFD)
                        if interop:
                            sub[_INTEROP_IFD] = dict(interop)
                        else:
                            del sub[_INTEROP_IFD]
                    if sub:
                        out[ifd_tag] = sub
            if not set(out) - {_ORIENTATION, _XRES, _YRES, _RESUNIT} and out.get(_ORIENTATION, 1) == 1:
                return None  # nothing beyond what the TIFF's own tags (and ImageData.dpi) already say
            return _strip_exif_header(out.tobytes())
    except Exception as e:
        notes.append(f"EXIF tags in the TIFF could not be read and were dropped ({type(e).__name__}: {e})")
        return None


def _is_machine_description(text: str) -> bool:
    """tifffile/ImageJ write shape metadata into ImageDescription; it must not follow the pixels."""
    t = text.lstrip()
    return (t.startswith("{") and '"shape"' in t) or t.startswith("ImageJ=")


def _unpremultiply(color: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    c = color.astype(np.float64)
    a = alpha.astype(np.float64)[:, :, None]
    if color.dtype == np.float32:
        return np.where(a > 0, c / np.where(a > 0, a, 1), 0).astype(np.float32)
    top = float(np.iinfo(color.dtype).max)
    out = np.where(a > 0, c * top / np.where(a > 0, a, 1), 0)
    return np.clip(np.round(out), 0, top).astype(color.dtype)


def _write_tiff(tmp: Path, job: _WriteJob) -> None:
    import tifffile

    color, alpha = job.color, job.alpha
    arr = color if alpha is None else np.concatenate([color, alpha[:, :, None]], axis=2)
    if arr.shape[2] == 1:
        arr = arr[:, :, 0]
    options, sub_ifds = _tiff_options(
        job, gray=color.shape[2] == 1, alpha=alpha is not None, integer=arr.dtype != np.float32
    )
    tifffile.imwrite(tmp, arr, **options)
    if sub_ifds:
        _append_sub_ifds(tmp, sub_ifds)


def _tiff_options(
    job: _WriteJob, *, gray: bool, alpha: bool, integer: bool
) -> tuple[dict[str, Any], dict[int, tuple[int, dict[int, Any]]]]:
    """tifffile.imwrite keyword arguments for ``job``'s metadata (the in-memory and the streamed writer share
    them), and the EXIF/GPS sub-IFDs to append after writing (:func:`_append_sub_ifds`)."""
    icc, exif, xmp, iptc, dpi, compression = job.icc, job.exif, job.xmp, job.iptc, job.dpi, job.compression
    extratags: list[tuple[Any, ...]] = [(_ORIENTATION, "H", 1, 1, True)]
    sub_ifds: dict[int, tuple[int, dict[int, Any]]] = {}
    src = Image.Exif()
    if exif:
        try:
            src.load(exif)
        except Exception as e:
            warnings.warn(f"EXIF could not be parsed and is not written to the TIFF ({e})", stacklevel=4)
            src = Image.Exif()
    if len(src):
        for tag in _TIFF_TEXT_TAGS:
            value = src.get(tag)
            if isinstance(value, bytes):
                value = value.rstrip(b"\x00").decode("latin-1")
            if isinstance(value, str) and value.strip("\x00"):
                if tag == 270 and _is_machine_description(value):
                    continue
                extratags.append((tag, "s", 0, value.rstrip("\x00").encode("utf-8", "replace"), True))
        # tifffile refuses to write tags 34665/34853 itself: write a LONG placeholder one below the real code
        # (so the IFD stays sorted), then append the sub-IFD and patch the entry, see _append_sub_ifds.
        for real, placeholder in ((_EXIF_IFD, 34664), (_GPS_IFD, 34852)):
            if real in src:
                sub = dict(src.get_ifd(real))
                if real == _EXIF_IFD and _INTEROP_IFD in sub:
                    interop = src.get_ifd(_INTEROP_IFD)
                    if interop:
                        sub[_INTEROP_IFD] = dict(interop)
                    else:
                        del sub[_INTEROP_IFD]
                try:
                    _ifd_bytes(sub, real, b"II*\x00\x08\x00\x00\x00", 8)
                except Exception as e:
                    name = "Exif" if real == _EXIF_IFD else "GPS"
                    warnings.warn(f"EXIF {name} IFD could not be written to the TIFF; dropped ({e})", stacklevel=4)
                    continue
                if sub:
                    sub_ifds[placeholder] = (real, sub)
                    extratags.append((placeholder, "I", 1, 0, True))
    if xmp:
        extratags.append((700, "B", len(xmp), xmp, True))
    if iptc:  # as LONGs like Photoshop (exiftool flags UNDEFINED); zero padding is trimmed on read
        padded = iptc + b"\x00" * (-len(iptc) % 4)
        extratags.append((33723, "I", len(padded) // 4, np.frombuffer(padded, "<u4"), True))
    extratags.sort(key=lambda t: t[0])
    options: dict[str, Any] = dict(
        photometric="minisblack" if gray else "rgb",
        planarconfig="contig",
        extrasamples=("unassalpha",) if alpha else None,
        compression=compression,
        predictor=True if (compression and integer) else None,
        iccprofile=icc or None,
        resolution=dpi,
        resolutionunit="INCH" if dpi else None,
        metadata=None,
        software=False,
        extratags=extratags,
        byteorder="<",
    )
    return options, sub_ifds


def _ifd_bytes(values: dict[int, Any], group: int, head: bytes, offset: int) -> bytes:
    """One IFD (entries, next-IFD 0, then its data) serialised by Pillow for file offset ``offset``."""
    from PIL import TiffImagePlugin

    ifd = TiffImagePlugin.ImageFileDirectory_v2(ifh=head, group=group)
    for k, v in values.items():
        ifd[k] = v
    return ifd.tobytes(offset)


def _append_sub_ifds(tmp: Path, sub_ifds: dict[int, tuple[int, dict[int, Any]]]) -> None:
    with tmp.open("r+b") as f:
        head = f.read(16)
        endian = "<" if head[:2] == b"II" else ">"
        big = head[2:4] in (b"+\x00", b"\x00+")
        f.seek(8 if big else 4)
        (ifd0,) = struct.unpack(endian + ("Q" if big else "I"), f.read(8 if big else 4))
        f.seek(ifd0)
        (n,) = struct.unpack(endian + ("Q" if big else "H"), f.read(8 if big else 2))
        entry_size = 20 if big else 12
        first = ifd0 + (8 if big else 2)
        f.seek(first)
        table = f.read(n * entry_size)
        positions = {}
        for i in range(n):
            (tag,) = struct.unpack_from(endian + "H", table, i * entry_size)
            if tag in sub_ifds:
                positions[tag] = first + i * entry_size
        for placeholder, (real, values) in sub_ifds.items():
            f.seek(0, os.SEEK_END)
            pos = f.tell()
            if pos % 2:
                f.write(b"\x00")
                pos += 1
            f.write(_ifd_bytes(values, real, head[: 16 if big else 8], pos))
            f.seek(positions[placeholder])
            if big:
                f.write(struct.pack(endian + "HHQQ", real, 18, 1, pos))  # IFD8
            else:
                f.write(struct.pack(endian + "HHII", real, 4, 1, pos))  # LONG
