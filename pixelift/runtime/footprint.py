"""Memory per input pixel for the tile chooser, from the architecture descriptors
(:mod:`pixelift.models.architectures`, measured with ``python -m bench.footprint``).

A 1.5x margin covers arena growth and other backends. An architecture nobody measured
(a user model spandrel detected) is assumed heavy, and the assumption is logged.
"""

from __future__ import annotations

import functools
import logging

from pixelift.models.architectures import UNMEASURED_BYTES_PER_PIXEL, architecture

log = logging.getLogger(__name__)

MARGIN = 1.5


@functools.cache
def bytes_per_input_pixel(name: str, provider: str | None = None) -> float:
    """Peak bytes per input pixel of one call of architecture ``name`` on ``provider``, with the margin."""
    arch = architecture(name)
    measured = arch.bytes_per_input_pixel_on(provider)
    if measured is None:
        log.info(
            "%s: memory per pixel not measured; tiles are sized as for %.0f B/px (run python -m bench.footprint)",
            name,
            UNMEASURED_BYTES_PER_PIXEL,
        )
        return UNMEASURED_BYTES_PER_PIXEL * MARGIN
    return measured * MARGIN
