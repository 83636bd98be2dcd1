"""ICC helpers: the reproducible sRGB profile, a profile's colour space, CMYK -> RGB through ImageCms."""

from __future__ import annotations

import functools
import hashlib
import io
import struct

from PIL import Image, ImageCms


@functools.cache
def srgb_profile_bytes() -> bytes:
    """``ImageCms.createProfile("sRGB")`` as ICC bytes, made reproducible.

    lcms stamps the save time into the header (and, for v4, into the MD5 profile ID), so two calls a second apart
    differ; pin the date to 2000-01-01 and recompute the ID the way ICC.1 defines it.
    """
    raw = bytearray(ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes())
    raw[24:36] = struct.pack(">6H", 2000, 1, 1, 0, 0, 0)
    if any(raw[84:100]):
        probe = bytearray(raw)
        probe[44:48] = probe[64:68] = bytes(4)
        probe[84:100] = bytes(16)
        raw[84:100] = hashlib.md5(bytes(probe), usedforsecurity=False).digest()
    return bytes(raw)


def _icc_space(icc: bytes | None) -> bytes | None:
    return icc[16:20] if icc and len(icc) >= 128 else None


def _cmyk_to_rgb(im: Image.Image, icc: bytes | None, notes: list[str]) -> tuple[Image.Image, bytes | None]:
    if icc and _icc_space(icc) == b"CMYK":
        try:
            src = ImageCms.ImageCmsProfile(io.BytesIO(icc))
            srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))
            transform = ImageCms.buildTransform(src, srgb, "CMYK", "RGB", renderingIntent=ImageCms.Intent.PERCEPTUAL)
            rgb = ImageCms.applyTransform(im, transform)
            assert rgb is not None
            notes.append(
                "CMYK converted to RGB with the embedded ICC profile (perceptual intent); "
                "the output ICC profile is sRGB (ImageCms.createProfile('sRGB'))"
            )
            return rgb, srgb_profile_bytes()
        except (ImageCms.PyCMSError, OSError, ValueError) as e:
            notes.append(f"the embedded CMYK ICC profile could not be used ({e})")
    notes.append(
        "CMYK converted to RGB naively (R = 255 - C - K style, no usable CMYK ICC profile): colours are approximate "
        "and no ICC profile is attached (sRGB assumed)"
    )
    return im.convert("RGB"), None
