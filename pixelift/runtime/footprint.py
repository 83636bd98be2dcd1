"""Measured memory per input pixel, by architecture, for the tile chooser.

Measured with ``python -m bench.footprint`` (onnxruntime CPU, fresh process per run,
slope of peak RSS between a 64 px and a 256 px input) on 2026-11-25:
ESRGAN 16861, RealCUGAN 6140, waifu2x-UpConv7 3975, SPAN 2631, waifu2x-CUNet 1252,
Compact 817 bytes. A 1.5x margin covers arena growth and other backends.
"""

from __future__ import annotations

MARGIN = 1.5
MEASURED = {
    "ESRGAN": 16861,
    "RealCUGAN": 6140,
    "waifu2x-UpConv7": 3975,
    "SPAN": 2631,
    "waifu2x-CUNet": 1252,
    "Compact": 817,
}
UNKNOWN = 20000  # an architecture we have not measured: assume a heavy one


def bytes_per_input_pixel(architecture: str) -> float:
    base = MEASURED.get(architecture, UNKNOWN)
    return base * MARGIN
