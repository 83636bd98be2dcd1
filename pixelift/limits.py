"""Size guards and the parsing of numeric options and environment variables.

Every number a user gives (an option or an environment variable) is parsed here, once,
and refused with a :class:`~pixelift.errors.UsageError` that names where it came from:
negative, zero where zero means nothing, NaN, infinite or non-numeric values never turn
a guard off silently.
"""

from __future__ import annotations

import math
import os

from pixelift.errors import UsageError

#: decompression-bomb guard on input images
DEFAULT_MAX_PIXELS = 200_000_000
ENV_MAX_PIXELS = "PIXELIFT_MAX_PIXELS"
#: output-size guard, checked before anything is allocated: the output is held as float32
#: RGB with a few working copies (about 40 B/px), so 500 MP needs about 20 GB
DEFAULT_MAX_OUTPUT_PIXELS = 500_000_000
ENV_MAX_OUTPUT_PIXELS = "PIXELIFT_MAX_OUTPUT_PIXELS"
NO_LIMIT = ("none", "off", "unlimited", "0")
#: the guard on streamed outputs (16-bit RGBA at this size is 80 GB uncompressed; see runtime.stream)
DEFAULT_MAX_STREAM_PIXELS = 10_000_000_000
ENV_MAX_STREAM_PIXELS = "PIXELIFT_MAX_STREAM_PIXELS"
#: bytes of model activations the auto tile may use (default: from the memory available)
ENV_TILE_MEMORY = "PIXELIFT_TILE_MEMORY"
_BYTE_UNITS = {"": 1, "b": 1, "k": 1 << 10, "kb": 1 << 10, "kib": 1 << 10, "m": 1 << 20, "mb": 1 << 20,
               "mib": 1 << 20, "g": 1 << 30, "gb": 1 << 30, "gib": 1 << 30}  # fmt: skip
#: below this an activation budget cannot hold the smallest tile of a heavy model
MIN_TILE_MEMORY = 64 << 20
#: bytes the compiled-model cache (OpenVINO's) may hold in pixelift's cache folder, least recently
#: used files out first: it keeps a file per model, precision and input shape, so a photo that
#: fits one tile adds one per new size (measured: SPAN 1.75 MB, ESRGAN x4plus 69 MB); 0 turns it off
ENV_COMPILE_CACHE = "PIXELIFT_COMPILE_CACHE"
DEFAULT_COMPILE_CACHE = 1 << 30
#: numpy's own variable (read when numpy is imported): the CLI turns transparent huge pages off
#: unless the user set it (see ``pixelift.cli.main``), and the bench runs its peers the same way
ENV_NUMPY_HUGE_PAGES = "NUMPY_MADVISE_HUGEPAGE"
#: final scales outside this range are typing mistakes (1e-9, 1000), not requests
MIN_SCALE, MAX_SCALE = 0.01, 64.0


def parse_pixels(value: str | int | float, where: str) -> int | None:
    """A pixel count (``200000000``, ``2e8``, ``200_000_000``), or None for ``none``/``0``."""
    if isinstance(value, bool):
        raise UsageError(f"{where}: expected a number of pixels, or 'none' for no limit, not {value!r}")
    text = str(value).strip().replace("_", "").lower()
    if text in NO_LIMIT:
        return None
    try:
        number = float(text)
    except ValueError:
        raise UsageError(f"{where}={value!r}: expected a number of pixels, or 'none' for no limit") from None
    if not math.isfinite(number) or number < 1 or number != int(number):
        raise UsageError(f"{where}={value!r}: expected a whole positive number of pixels, or 'none' for no limit")
    return int(number)


def parse_bytes(value: str | int, where: str, minimum: int = MIN_TILE_MEMORY) -> int:
    """A size in bytes: ``6442450944``, ``6e9``, ``6G``/``6GB``/``6GiB``, ``512M`` (binary units),
    at least ``minimum``."""
    if isinstance(value, bool):
        raise UsageError(f"{where}: expected a size such as 6G or 512M, not {value!r}")
    text = str(value).strip().lower().replace("_", "")
    number = text.rstrip("kmgib")
    unit = text[len(number) :]
    try:
        amount = float(number) * _BYTE_UNITS[unit]
    except (ValueError, KeyError):
        raise UsageError(f"{where}={value!r}: expected a size such as 6G, 512M or 6442450944") from None
    if not math.isfinite(amount) or amount < minimum:
        least = f"{minimum >> 20}M" if minimum >= 1 << 20 else str(minimum)
        raise UsageError(f"{where}={value!r}: expected a size of at least {least}")
    return int(amount)


def tile_memory_bytes() -> int | None:
    """The budget ``PIXELIFT_TILE_MEMORY`` sets (validated: a bad value is a UsageError naming it);
    None: from the memory available when a tile is chosen."""
    raw = os.environ.get(ENV_TILE_MEMORY, "").strip()
    return parse_bytes(raw, ENV_TILE_MEMORY) if raw else None


def compile_cache_bytes() -> int:
    """The compiled-model cache's budget: ``$PIXELIFT_COMPILE_CACHE`` (validated), else the default."""
    raw = os.environ.get(ENV_COMPILE_CACHE, "").strip()
    return parse_bytes(raw, ENV_COMPILE_CACHE, minimum=0) if raw else DEFAULT_COMPILE_CACHE


def resolve_limit(value: int | None, default: int, env: str, where: str) -> int | None:
    """An explicit ``value`` other than ``default`` wins; else ``$env`` when set; else ``default``.
    None means no limit."""
    if value is not None and value != default:
        return parse_pixels(value, where)
    if value is None:
        return None
    raw = os.environ.get(env, "").strip()
    return parse_pixels(raw, env) if raw else default


def max_stream_pixels() -> int | None:
    """The streamed-output guard: ``$PIXELIFT_MAX_STREAM_PIXELS`` when set, else the default; None: none."""
    return resolve_limit(DEFAULT_MAX_STREAM_PIXELS, DEFAULT_MAX_STREAM_PIXELS, ENV_MAX_STREAM_PIXELS, ENV_MAX_STREAM_PIXELS)


def parse_scale(value: float | str, where: str = "outscale") -> float:
    """A finite scale from :data:`MIN_SCALE` to :data:`MAX_SCALE`."""
    try:
        scale = float(value)
    except (TypeError, ValueError):
        raise UsageError(f"{where}={value!r}: expected a number from {MIN_SCALE:g} to {MAX_SCALE:g}") from None
    if not math.isfinite(scale) or not MIN_SCALE <= scale <= MAX_SCALE:
        raise UsageError(f"{where}={value!r}: expected a number from {MIN_SCALE:g} to {MAX_SCALE:g}")
    return scale


def parse_range(value: object, low: float, high: float, where: str) -> float:
    """A finite number from ``low`` to ``high``."""
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise UsageError(f"{where}={value!r}: expected a number from {low:g} to {high:g}") from None
    if isinstance(value, bool) or not math.isfinite(number) or not low <= number <= high:
        raise UsageError(f"{where}={value!r}: expected a number from {low:g} to {high:g}")
    return number


def check_output_size(height: int, width: int, limit: int | None, what: str) -> None:
    from pixelift.errors import ImageTooLargeError

    if height < 1 or width < 1:
        raise UsageError(f"{what}: the output would be {width}x{height} pixels; choose a larger scale")
    if limit is not None and height * width > limit:
        raise ImageTooLargeError(
            f"{what}: the output would be {width}x{height} = {width * height:,} pixels, over the limit of "
            f"{limit:,} (about 40 bytes per output pixel are needed). Lower --outscale, or raise the limit with "
            f"--max-output-pixels N|none or {ENV_MAX_OUTPUT_PIXELS}"
        )


__all__ = [
    "DEFAULT_MAX_OUTPUT_PIXELS",
    "DEFAULT_MAX_PIXELS",
    "ENV_MAX_OUTPUT_PIXELS",
    "ENV_MAX_PIXELS",
    "check_output_size",
    "parse_pixels",
    "parse_range",
    "parse_scale",
    "resolve_limit",
]
