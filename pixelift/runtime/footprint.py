"""Memory per input pixel for the tile chooser, from the architecture descriptors
(:mod:`pixelift.models.architectures`, measured with ``python -m bench.footprint``).

A 1.5x margin covers arena growth and other backends. An architecture nobody measured
(a user model spandrel detected) is assumed heavy, and the assumption is logged.
"""

from __future__ import annotations

import functools
import logging

from pixelift import limits
from pixelift.models.architectures import UNMEASURED_BYTES_PER_PIXEL, architecture
from pixelift.models.spec import ModelSpec
from pixelift.runtime import tiling

log = logging.getLogger(__name__)

MARGIN = 1.5
FALLBACK_MEMORY = 2 << 30  # when free memory cannot be read
# Measured (span-x2-ch48, 1600x1200, OpenVINO): tile 128/256/512/768 took 9.95/7.05/6.09/5.91 s.
# With edge tiles unpadded and overlaps measured per architecture, 768 keeps every architecture
# with an overlap under 24 px at <= 1.04x the pixels of a 12 MP photo (bench/results/overlap.json).
MAX_AUTO_TILE = 768
#: a wider overlap raises the cap to this many overlaps, where memory allows: ESRGAN (32 px) may
#: take 1024 px tiles, 3x4 of them on a 12 MP photo (1.09x its pixels) instead of 4x6 (1.15x)
TILE_PER_OVERLAP = 32
#: bytes of model activations an auto tile may use: a third of the memory available, at least
#: TILE_MEMORY_FLOOR (what every machine had before, if it has that much) and at most
#: TILE_MEMORY_CAP; PIXELIFT_TILE_MEMORY sets it. The tile chooser plans for 3/4 of it and each
#: footprint carries a 1.5x margin, so a tile is sized to use about a sixth of the memory available
#: (ESRGAN on OpenVINO at 23 GB available: 1024 px tiles, about 3.3 GB)
TILE_MEMORY_FLOOR = 3 << 30
TILE_MEMORY_CAP = 8 << 30
TILE_MEMORY_SHARE = 3
#: the photo a row's per-crop time is scaled to when auto compares backends whose footprints
#: differ (a camera's 12 MP): ncnn holds ESRGAN at 46 KB per pixel against OpenVINO's 2.7, so
#: its tiles are smaller and overlap more
REFERENCE_PHOTO = (3000, 4000)


@functools.cache
def bytes_per_input_pixel(name: str, provider: str | None = None, precision: str | None = None) -> float:
    """Peak bytes per input pixel of one call of architecture ``name`` on ``provider`` at
    ``precision``, with the margin."""
    arch = architecture(name)
    measured = arch.bytes_per_input_pixel_on(provider, precision)
    if measured is None:
        log.info(
            "%s: memory per pixel not measured; tiles are sized as for %.0f B/px (run python -m bench.footprint)",
            name,
            UNMEASURED_BYTES_PER_PIXEL,
        )
        return UNMEASURED_BYTES_PER_PIXEL * MARGIN
    return measured * MARGIN


def tile_memory_budget(available: int | None = None, *, sharers: int = 1) -> int:
    """The auto tile's activation budget from the memory available now (see TILE_MEMORY_SHARE).
    ``sharers`` processes that enhance at once on this machine (a Ray node's actors) split the same
    share between them, each at most TILE_MEMORY_CAP, with no floor each (``sharers`` floors could
    be more than the machine has)."""
    avail = available if available is not None else (tiling.available_memory_bytes() or FALLBACK_MEMORY)
    if sharers > 1:
        return max(limits.MIN_TILE_MEMORY, min(avail // (TILE_MEMORY_SHARE * sharers), TILE_MEMORY_CAP))
    return min(avail, max(TILE_MEMORY_FLOOR, min(avail // TILE_MEMORY_SHARE, TILE_MEMORY_CAP)))


def auto_tile(
    spec: ModelSpec,
    provider: str | None,
    height: int,
    width: int,
    budget: int,
    *,
    precision: str | None = None,
    overlap: int | None = None,
) -> int | None:
    """The auto tile of ``spec`` on ``provider`` at ``precision`` for an ``height`` x ``width``
    input within ``budget`` bytes of activations (None: the whole image in one run)."""
    ov = architecture(spec.architecture).overlap if overlap is None else overlap
    return tiling.choose_tile(
        height,
        width,
        bytes_per_input_pixel=bytes_per_input_pixel(spec.architecture, provider, precision),
        available_bytes=budget,
        alignment=spec.alignment,
        max_tile=max(MAX_AUTO_TILE, TILE_PER_OVERLAP * ov),
        overlap=ov,
    )


def reference_overhead(
    spec: ModelSpec, provider: str, budget: int | None = None, precision: str | None = None
) -> float:
    """Pixels computed per image pixel when ``provider`` runs :data:`REFERENCE_PHOTO` with auto tiles."""
    h, w = REFERENCE_PHOTO
    ov = architecture(spec.architecture).overlap
    if budget is None:
        budget = limits.tile_memory_bytes() or tile_memory_budget()
    tile = auto_tile(spec, provider, h, w, budget, precision=precision)
    return tiling.plan_tiles(h, w, tile=tile, overlap=ov, alignment=spec.alignment).overhead
