"""Image I/O that loses nothing: bit depth, alpha, ICC profile, EXIF, XMP, IPTC and DPI survive a round trip.

Libraries: Pillow for JPEG, WebP, BMP and 8-bit PNG pixels; tifffile for every TIFF; imagecodecs for 16-bit PNG.
PNG library choice: imagecodecs (libpng in C) over pypng (pure Python, far slower on photo-sized 16-bit images);
it is kept by the tifffile author and tifffile already relies on it for compressed TIFFs, so it costs no extra stack.
PNG metadata chunks (iCCP, eXIf, iTXt XMP, zTXt IPTC, pHYs) are parsed and written here, the same way for 8 and 16 bits.

What :func:`read_image` hands back, per source mode (``color`` is (H, W, 3) RGB or (H, W, 1) gray; every
conversion adds a line to ``notes``; CMYK with an ICC uses the perceptual intent and the output ICC becomes
``ImageCms.createProfile("sRGB")``; without one it is the naive formula and no ICC is attached):

================================  ===============================  ======================  ===============================
Source (``source_mode``)          ``color``                        ``alpha``               Notes / written back as
================================  ===============================  ======================  ===============================
``1`` (1-bit PNG/BMP/TIFF)        (H,W,1) uint8, 0/255             none                    note; gray 8-bit
``L``, 2/4-bit gray               (H,W,1) uint8 (low bits scaled)  none                    gray 8-bit
``I;16`` (PNG/TIFF)               (H,W,1) uint16                   none                    gray 16-bit (PNG/TIFF)
``F`` (float TIFF)                (H,W,1) float32                  none                    float32 TIFF
``LA`` / ``LA;16``                (H,W,1) uint8/uint16             (H,W) same dtype        gray + alpha
``P`` / ``PA`` (palette)          (H,W,3) uint8                    (H,W) if transparent    note; RGB(A) 8-bit
``L``/``RGB`` + tRNS key          as the mode                      0 at the key, else max  note
``RGB``, ``RGB;16``, ``RGB;32F``  (H,W,3) uint8/uint16/float32     none                    same depth (PNG 8/16, TIFF all)
``RGBA``, ``RGBA;16``, ...        (H,W,3) same dtype               (H,W) straight          same depth + alpha
premultiplied (TIFF, ``RGBa``)    un-premultiplied                 (H,W) straight          note
32-bit BI_RGB BMP (``RGB``)       (H,W,3) uint8                    4th byte, if not all 0  note (Pillow's RGBA BMPs)
12-bit TIFF                       uint16 scaled to 0..65535        as color                note
float16/float64 TIFF              float32                          as color                note
``CMYK`` + CMYK ICC (JPEG/TIFF)   (H,W,3) uint8 via ImageCms       kept (TIFF)             icc -> sRGB, note
``CMYK`` without usable ICC       (H,W,3) uint8, naive             kept (TIFF)             icc None, note
16-bit CMYK TIFF                  as above, via 8-bit CMYK         8-bit                   note
JPEG-in-TIFF YCbCr, ``RGBX``      (H,W,3) uint8                    none                    RGB
================================  ===============================  ======================  ===============================

What :func:`write_image` does per output format:

======  =============================  ==================  ==========================================================
Format  Samples                        Alpha               Metadata
======  =============================  ==================  ==========================================================
PNG     uint8, uint16 (float32 -> 16)  RGBA / LA           iCCP, eXIf, iTXt XMP, pHYs, zTXt ``Raw profile type iptc``
TIFF    uint8, uint16, float32 (zlib)  unassociated extra  34675 ICC, 700 XMP, 33723 IPTC, resolution (inch),
                                                           EXIF IFD0 text tags + Exif/GPS sub-IFDs (34665/34853)
JPEG    uint8 (deeper is reduced)      raises (see below)  ICC APP2, EXIF APP1, XMP APP1, IPTC APP13, JFIF dpi
WEBP    uint8 RGB (gray expanded)      RGBA (``exact``)    ICCP, EXIF, XMP (no IPTC; dpi only via EXIF)
======  =============================  ==================  ==========================================================

JPEG cannot hold alpha: writing alpha raises :class:`~pixelift.errors.AlphaNotSupportedError` unless
``flatten_alpha=True``, which composites on white. JPEG uses 4:4:4 chroma at quality >= 90. 16-bit and float data
written to JPEG/WebP are rounded to 8 bits (those formats hold no more); ``lossless=True`` or ``quality=100``
makes WebP bit-exact.
TIFF uses Adobe Deflate (``compression=``), with the horizontal predictor for integer samples.

EXIF is held as TIFF-structured bytes *without* the ``Exif\\0\\0`` APP1 header (Pillow's ``Image.Exif().load`` takes it
either way). On read the EXIF orientation is applied to the pixels (``ImageOps.exif_transpose`` semantics) and the tag
is patched to 1 in place (XMP ``tiff:Orientation`` too), so maker notes and offsets stay untouched. On write, EXIF
X/YResolution and the output dpi are multiplied by ``scale_dpi``, and PixelX/YDimension is set to the written size.

Safety: writes go to a temp file renamed into place (:func:`pixelift.paths.atomic_path`); an existing output raises
:class:`~pixelift.errors.OutputExistsError` unless ``overwrite=True``. Images over ``max_pixels`` (default
:data:`DEFAULT_MAX_PIXELS`, 200 MP) raise :class:`~pixelift.errors.ImageTooLargeError` before any pixel is decoded;
pass ``max_pixels=None`` or set ``PIXELIFT_MAX_PIXELS`` (a number, or ``0``/``none`` for no limit; it replaces the
default, an explicit other ``max_pixels`` wins). Pillow's own guard is switched off, under a lock, only while
``Image.open`` reads a header, and ours is applied to the size it reports. Missing, empty, corrupt, truncated and
unsupported files raise :class:`~pixelift.errors.ImageReadError` naming the path.

Layout: :mod:`.data` (ImageData, array conversions; the format tables are :mod:`pixelift.runtime.formats`), :mod:`.guards` (``max_pixels``, Pillow's guard),
:mod:`.metadata` (EXIF parsing and patching, orientation, dpi), :mod:`.icc` (sRGB profile, CMYK -> RGB),
:mod:`.pil` (Pillow images <-> ImageData), one module per format family (:mod:`.png`, :mod:`.tiff`,
:mod:`.pillow_formats` for JPEG/WebP/BMP), and the dispatchers :mod:`.read` and :mod:`.write` (format -> function
tables). Import from this package; the submodules are internal.
"""

from __future__ import annotations

from pixelift.runtime.formats import (
    READ_FORMATS,
    WRITE_FORMATS,
    default_output_format,
    default_output_path,
    format_for_path,
    suffix_for,
)
from pixelift.runtime.formats import (
    SUFFIXES as SUFFIXES,
)
from pixelift.runtime.imageio.data import ImageData, from_array, from_float32, to_array, to_float32
from pixelift.runtime.imageio.guards import DEFAULT_MAX_PIXELS, ENV_MAX_PIXELS
from pixelift.runtime.imageio.icc import srgb_profile_bytes
from pixelift.runtime.imageio.metadata import _exif_orientation as _exif_orientation
from pixelift.runtime.imageio.metadata import _strip_exif_header as _strip_exif_header
from pixelift.runtime.imageio.metadata import fit_metadata
from pixelift.runtime.imageio.pil import from_pil, to_pil
from pixelift.runtime.imageio.read import read_image
from pixelift.runtime.imageio.write import write_image

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "ENV_MAX_PIXELS",
    "READ_FORMATS",
    "WRITE_FORMATS",
    "ImageData",
    "default_output_format",
    "default_output_path",
    "fit_metadata",
    "format_for_path",
    "from_array",
    "from_float32",
    "from_pil",
    "read_image",
    "srgb_profile_bytes",
    "suffix_for",
    "to_array",
    "to_float32",
    "to_pil",
    "write_image",
]
