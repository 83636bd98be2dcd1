"""PNG: 8-bit pixels via Pillow, 16-bit via imagecodecs; iCCP, eXIf, iTXt XMP, zTXt IPTC and pHYs parsed here."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np

from pixelift.errors import ImageReadError, ImageWriteError
from pixelift.runtime.imageio.data import ImageData, _WriteJob
from pixelift.runtime.imageio.guards import _check_size, _pil_open
from pixelift.runtime.imageio.metadata import _strip_exif_header
from pixelift.runtime.imageio.pil import _from_pil

_METADATA_LIMIT = 64 << 20  # inflated size cap for compressed PNG metadata chunks


def _png_chunks(buf: bytes, path: Path, notes: list[str]) -> list[tuple[bytes, bytes]]:
    chunks: list[tuple[bytes, bytes]] = []
    pos = 8
    while True:
        if pos + 12 > len(buf):
            raise ImageReadError(f"{path}: truncated PNG (the file ends before the IEND chunk)")
        (n,) = struct.unpack_from(">I", buf, pos)
        ctype = buf[pos + 4 : pos + 8]
        end = pos + 12 + n
        if end > len(buf):
            raise ImageReadError(
                f"{path}: truncated PNG (chunk {ctype.decode('latin-1')} runs past the end of the file)"
            )
        body = buf[pos + 8 : pos + 8 + n]
        (crc,) = struct.unpack_from(">I", buf, pos + 8 + n)
        if zlib.crc32(ctype + body) & 0xFFFFFFFF != crc:
            if not ctype[:1].isupper():
                notes.append(f"skipped PNG chunk {ctype.decode('latin-1')} with a bad checksum")
                pos = end
                continue
            raise ImageReadError(f"{path}: corrupt PNG (bad checksum in chunk {ctype.decode('latin-1')})")
        chunks.append((ctype, body))
        pos = end
        if ctype == b"IEND":
            return chunks


def _inflate(data: bytes) -> bytes:
    d = zlib.decompressobj()
    out = d.decompress(data, _METADATA_LIMIT)
    if d.unconsumed_tail:
        raise ValueError("compressed metadata chunk inflates past 64 MiB")
    return out


def _parse_raw_profile(text: bytes) -> bytes:
    """ImageMagick's ``Raw profile type NAME`` text: '\\nNAME\\n   LENGTH\\nHEX...'."""
    parts = text.strip().split(b"\n")
    length = int(parts[1])
    return bytes.fromhex(b"".join(p.strip() for p in parts[2:]).decode("ascii"))[:length]


def _raw_profile(name: str, data: bytes) -> bytes:
    hx = data.hex()
    lines = "\n".join(hx[i : i + 72] for i in range(0, len(hx), 72))
    return f"\n{name}\n{len(data):8d}\n{lines}\n".encode("ascii")


def _read_png(path: Path, limit: int | None) -> ImageData:
    notes: list[str] = []
    buf = path.read_bytes()
    chunks = _png_chunks(buf, path, notes)
    if chunks[0][0] != b"IHDR" or len(chunks[0][1]) < 13:
        raise ImageReadError(f"{path}: corrupt PNG (no IHDR chunk)")
    width, height, depth, ctype = struct.unpack_from(">IIBB", chunks[0][1])
    _check_size(path, width, height, limit)
    icc = exif = xmp = iptc = None
    dpi = None
    carried: list[tuple[bytes, bytes]] = []  # written back to a PNG output as they were
    for name, body in chunks[1:]:
        if name in CARRIED_CHUNKS and not _holds_known_metadata(name, body):
            carried.append((name, body))
        try:
            if name == b"iCCP":
                icc = _inflate(body.split(b"\x00", 1)[1][1:])
            elif name == b"eXIf":
                exif = _strip_exif_header(body)
            elif name == b"pHYs" and len(body) >= 9:
                x, y, unit = struct.unpack_from(">IIB", body)
                if unit == 1 and x and y:
                    dpi = (round(x * 0.0254, 2), round(y * 0.0254, 2))  # 11811 px/m -> 300.0, not 299.9994
            elif name == b"iTXt":
                key, rest = body.split(b"\x00", 1)
                compressed = rest[0] == 1
                _lang, _translated, text = rest[2:].split(b"\x00", 2)
                if key == b"XML:com.adobe.xmp":
                    xmp = _inflate(text) if compressed else text
            elif name in (b"tEXt", b"zTXt"):
                key, text = body.split(b"\x00", 1)
                if key.startswith(b"Raw profile type "):
                    if name == b"zTXt":
                        text = _inflate(text[1:])
                    kind = key[len(b"Raw profile type ") :].lower()
                    if kind == b"iptc":
                        iptc = _parse_raw_profile(text)
                    elif kind in (b"exif", b"app1") and exif is None:
                        exif = _strip_exif_header(_parse_raw_profile(text))
                    elif kind == b"xmp" and xmp is None:
                        xmp = _parse_raw_profile(text)
        except (ValueError, IndexError, zlib.error) as e:
            notes.append(f"ignored an unreadable PNG {name.decode('latin-1')} chunk ({e})")
    if depth == 16:
        import imagecodecs

        arr = imagecodecs.png_decode(buf)
        if arr.ndim == 2:
            arr = arr[:, :, None]
        arr = arr.astype(np.uint16, copy=False)
        color, alpha = (arr[:, :, :-1], arr[:, :, -1]) if arr.shape[2] in (2, 4) else (arr, None)
        trns = next((b for n, b in chunks if n == b"tRNS"), None)
        if alpha is None and trns is not None and len(trns) == 2 * color.shape[2]:
            colour_key = np.array(struct.unpack(f">{color.shape[2]}H", trns), dtype=np.uint16)
            alpha = np.where(np.all(color == colour_key, axis=2), 0, 65535).astype(np.uint16)
        if trns is not None:
            notes.append("transparent colour key (tRNS) turned into an alpha channel")
        gray = color.shape[2] == 1
        mode = ("I;16" if alpha is None else "LA;16") if gray else ("RGB;16" if alpha is None else "RGBA;16")
        return ImageData(
            np.ascontiguousarray(color),
            None if alpha is None else np.ascontiguousarray(alpha),
            icc,
            exif,
            xmp,
            iptc,
            dpi,
            "PNG",
            "I;16" if gray and ctype == 0 else mode,
            notes,
            tuple(carried),
        )
    if any(n == b"acTL" for n, _ in chunks):
        notes.append("animated PNG: only the default image was read")
    # Pillow decodes the pixels from the critical chunks only: the metadata is already parsed above, and Pillow's
    # own 1 MB text-chunk limit would otherwise reject a valid PNG with a large XMP packet.
    pixels_only = b"\x89PNG\r\n\x1a\n" + b"".join(
        _png_chunk(n, b) for n, b in chunks if n in (b"IHDR", b"PLTE", b"tRNS", b"IDAT", b"IEND")
    )
    with _pil_open(io.BytesIO(pixels_only), "PNG") as im:
        im.load()
        mode = im.mode
        color, alpha, icc = _from_pil(im, icc, notes)
    return ImageData(color, alpha, icc, exif, xmp, iptc, dpi, "PNG", mode, notes, tuple(carried))


#: ancillary chunks a PNG output gets back as they were read: colour (without them a gamma-1.0 or non-sRGB
#: PNG with no ICC displays differently) and text (author, comment, software). tIME is left: it would lie.
CARRIED_CHUNKS = (b"gAMA", b"cHRM", b"sRGB", b"tEXt", b"zTXt", b"iTXt")


def _holds_known_metadata(name: bytes, body: bytes) -> bool:
    """An XMP iTXt or a "Raw profile type" text chunk: parsed into the ImageData's fields, written from them."""
    key = body.split(b"\x00", 1)[0]
    return (name == b"iTXt" and key == b"XML:com.adobe.xmp") or key.startswith(b"Raw profile type ")


def _png_chunk(ctype: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + ctype + body + struct.pack(">I", zlib.crc32(ctype + body) & 0xFFFFFFFF)


def _write_png(tmp: Path, job: _WriteJob) -> None:
    import imagecodecs

    color, alpha, icc, exif, xmp, iptc, dpi = job.color, job.alpha, job.icc, job.exif, job.xmp, job.iptc, job.dpi
    arr = color if alpha is None else np.concatenate([color, alpha[:, :, None]], axis=2)
    if arr.shape[2] == 1:
        arr = arr[:, :, 0]
    png = imagecodecs.png_encode(np.ascontiguousarray(arr))
    if png[12:16] != b"IHDR":
        raise ImageWriteError("PNG encoder output does not start with IHDR")
    ihdr_end = 8 + 12 + struct.unpack_from(">I", png, 8)[0]
    extra = _png_meta_chunks(icc, dpi, exif, xmp, iptc) + [_png_chunk(n, b) for n, b in job.png_chunks]
    tmp.write_bytes(png[:ihdr_end] + b"".join(extra) + png[ihdr_end:])


def _png_meta_chunks(
    icc: bytes | None, dpi: tuple[float, float] | None, exif: bytes | None, xmp: bytes | None, iptc: bytes | None
) -> list[bytes]:
    """The metadata chunks written after IHDR (the in-memory and the streamed writer share them)."""
    extra = []
    if icc:
        extra.append(_png_chunk(b"iCCP", b"ICC profile\x00\x00" + zlib.compress(icc)))
    if dpi:
        x, y = (min(2**32 - 1, max(1, round(v / 0.0254))) for v in dpi)
        extra.append(_png_chunk(b"pHYs", struct.pack(">IIB", x, y, 1)))
    if exif:
        extra.append(_png_chunk(b"eXIf", exif))
    if xmp:
        extra.append(_png_chunk(b"iTXt", b"XML:com.adobe.xmp\x00\x00\x00\x00\x00" + xmp))
    if iptc:
        extra.append(_png_chunk(b"zTXt", b"Raw profile type iptc\x00\x00" + zlib.compress(_raw_profile("iptc", iptc))))
    return extra
