"""Architecture descriptors: what pixelift knows about each network family, in one place.

Torch-free. The importer module (torch) is named here and loaded only when weights are
imported. Adding an architecture: one descriptor here, one importer module, its zoo rows.
User models (any architecture spandrel detects) that have no descriptor get
:func:`architecture`'s generic one: not measured, so the tile chooser assumes a heavy
network and says so.
"""

from __future__ import annotations

from dataclasses import dataclass

#: bytes of activations per input pixel assumed for an architecture nobody measured
UNMEASURED_BYTES_PER_PIXEL = 20000.0


@dataclass(frozen=True)
class ExtraInput:
    """A graph input beside the image (e.g. a per-pixel noise-level map). It is tiled with the image."""

    name: str
    channels: int
    description: str


@dataclass(frozen=True)
class Architecture:
    name: str
    #: module under ``pixelift.models.importers`` with ``from_ncnn(model, spec)``; None: user files only
    importer: str | None
    #: activations per input pixel, measured with ``python -m bench.footprint`` (onnxruntime CPU,
    #: slope of peak RSS between 64 and 256 px inputs); None when not measured
    bytes_per_input_pixel: float | None
    #: False when the output depends on whole-image statistics, so tiles differ from a whole run
    tile_safe: bool = True
    #: squeeze-excitation blocks that the SE-sync artifact can give whole-image means when tiled
    se_blocks: bool = False
    extra_inputs: tuple[ExtraInput, ...] = ()

    @property
    def measured(self) -> bool:
        return self.bytes_per_input_pixel is not None


# footprints measured 2026-11-25 (see pixelift/runtime/footprint.py for the margin)
ARCHITECTURES: dict[str, Architecture] = {
    a.name: a
    for a in (
        Architecture("ESRGAN", "esrgan", 16861),
        Architecture("Compact", "compact", 817),
        Architecture("SPAN", "span", 2631),
        Architecture("RealCUGAN", "realcugan", 6140, tile_safe=False, se_blocks=True),
        Architecture("waifu2x-UpConv7", "waifu2x", 3975),
        Architecture("waifu2x-CUNet", "waifu2x", 1252, tile_safe=False, se_blocks=True),
    )
}


def architecture(name: str) -> Architecture:
    """The descriptor of ``name``; a generic, unmeasured one for architectures only user files have."""
    return ARCHITECTURES.get(name) or Architecture(name, None, None)


__all__ = ["ARCHITECTURES", "UNMEASURED_BYTES_PER_PIXEL", "Architecture", "ExtraInput", "architecture"]
