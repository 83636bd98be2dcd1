"""Architecture descriptors: what pixelift knows about each network family, in one place.

Torch-free. The importer module (torch) is named here and loaded only when weights are
imported. Adding an architecture: one descriptor here, one importer module, its zoo rows.
User models (any architecture spandrel detects) that have no descriptor get
:func:`architecture`'s generic one: not measured, so the tile chooser assumes a heavy
network and says so.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

#: bytes of activations per input pixel assumed for an architecture nobody measured
UNMEASURED_BYTES_PER_PIXEL = 20000.0
#: tile overlap for an architecture nobody measured (a user model spandrel detected): the old fixed default
UNMEASURED_OVERLAP = 32


@dataclass(frozen=True)
class ExtraInput:
    """A per-pixel input beside the image (e.g. a noise-level map).

    It travels as extra channels of the graph's one input, after the image's three: so it
    is tiled, padded and batched with the image, and every runner (parity, fidelity
    measurement, calibration, probes) feeds one array. ONNX inputs have no defaults, so a
    second graph input would have to be fed by each of them. ``default`` is the value used
    where no real map exists (probes, calibration, fidelity measurement).
    """

    name: str
    channels: int
    description: str
    default: float


@dataclass(frozen=True)
class Architecture:
    name: str
    #: module under ``pixelift.models.importers`` with ``from_ncnn(model, spec)``; None: user files only
    importer: str | None
    #: activations per input pixel, measured with ``python -m bench.footprint`` (onnxruntime CPU,
    #: slope of peak RSS between 64 and 256 px inputs); None when not measured
    bytes_per_input_pixel: float | None
    #: (provider, bytes per input pixel) where a backend was measured apart: OpenVINO reuses
    #: buffers differently (ESRGAN half of onnxruntime's, Compact a quarter more); a provider
    #: not listed is sized with ``bytes_per_input_pixel``
    backend_bytes_per_input_pixel: tuple[tuple[str, float], ...] = ()
    #: False when the output depends on whole-image statistics, so tiles differ from a whole run
    tile_safe: bool = True
    #: squeeze-excitation blocks that the SE-sync artifact can give whole-image means when tiled
    se_blocks: bool = False
    extra_inputs: tuple[ExtraInput, ...] = ()
    #: context pixels per side between tiles: the smallest overlap whose tiled output stays
    #: >= 60 dB from the whole-image one on every crop of ``python -m bench.overlap``
    overlap: int = UNMEASURED_OVERLAP

    @property
    def measured(self) -> bool:
        return self.bytes_per_input_pixel is not None

    def bytes_per_input_pixel_on(self, provider: str | None, precision: str | None = None) -> float | None:
        """The footprint measured on ``provider``'s backend at ``precision`` (``ncnn:bf16``), else on
        that backend, else the onnxruntime figure."""
        measured = dict(self.backend_bytes_per_input_pixel)
        return measured.get(f"{provider}:{precision}", measured.get(provider or "", self.bytes_per_input_pixel))


#: FFDNet's conditioning: sigma per pixel and RGB channel, in 0..1 units (sigma_8bit / 255)
NOISE_MAP = ExtraInput("noise_map", 3, "noise standard deviation per pixel and channel (0..1 scale)", 25 / 255)
IMAGE_CHANNELS = 3  # the model contract: RGB in, RGB out


def _on(openvino: float, ncnn: tuple[float, float] | None = None) -> tuple[tuple[str, float], ...]:
    """Footprints measured apart: OpenVINO's, and ncnn's (fp32, bf16 storage) where it runs the architecture."""
    return (("openvino", openvino), *((("ncnn", ncnn[0]), ("ncnn:bf16", ncnn[1])) if ncnn is not None else ()))


# footprints measured 2026-11-25 (see pixelift/runtime/footprint.py for the margin), OpenVINO's
# 2026-12-04 (python -m bench.footprint: f32 hint, static shape; onnxruntime's reproduced within
# 1%, FFDNet's re-measured with VmHWM), ncnn's the same day (fp32 and bf16 storage: ESRGAN 46
# and 34 KB/px, Winograd buffers and a pool that reuses few blocks); ESRGAN's again that day once its
# tail ran in strips (onnxruntime 16861 -> 7044, OpenVINO 8617 -> 2734: bench/results/esrgan_strips.json); overlaps
# 2026-12-05 with bench/overlap.py (worst of 6 crops 192x256 -- 4 colour photos, a gray one, a star field --
# at tiles 48, 64 and 96, >= 60 dB vs whole; bench/results/overlap_v2.json): on 2026-12-03's 4 colour crops
# at one tile SPAN's 2 px held 60.15 dB and seams of 53-57 dB showed on others. SPAN 8 (6 held 60.36: no
# margin), waifu2x-UpConv7 4 (67.7), Compact 8 (61.9), FFDNet 12 (65.2; 8 gave 59.8), RealCUGAN 12 (63.2),
# CUNet 2 (0 held 60.9). ESRGAN: 32 (bench/results/overlap.json: 49.6 dB worst, 56.3 mean at tile 64; 48
# gives 56.0 worst but, with the ~212 px tiles onnxruntime's footprint then allowed, 2.07x the pixels of a
# 12 MP photo against 1.58x).
ARCHITECTURES: dict[str, Architecture] = {
    a.name: a
    for a in (
        Architecture("ESRGAN", "esrgan", 7044, _on(2734, (45960, 34260)), overlap=32),
        Architecture("Compact", "compact", 817, _on(999, (3013, 2955)), overlap=8),
        Architecture("SPAN", "span", 2631, _on(1958, (4390, 2848)), overlap=8),
        Architecture("RealCUGAN", "realcugan", 6140, _on(2895), tile_safe=False, se_blocks=True, overlap=12),
        Architecture("waifu2x-UpConv7", "waifu2x", 3975, _on(1677, (6280, 4982)), overlap=4),
        Architecture("waifu2x-CUNet", "waifu2x", 1252, _on(803), tile_safe=False, se_blocks=True, overlap=2),
        # 1024 -> 2048 px (below 1024 px the run stays under onnxruntime's 515 MB start-up peak)
        Architecture("FFDNet", "ffdnet", 318, _on(268), extra_inputs=(NOISE_MAP,), overlap=12),
    )
}


def input_channels(name: str) -> int:
    """Channels of the graph's input: the image's, then each extra input's."""
    return IMAGE_CHANNELS + sum(e.channels for e in architecture(name).extra_inputs)


def pack(name: str, x: np.ndarray, maps: Sequence[np.ndarray] | None = None) -> np.ndarray:
    """The graph input for an NCHW image ``x``: the image, then each extra input (``maps``, NCHW
    or CHW, in declaration order; each at its ``default`` where none is given)."""
    import numpy as np  # not at import: the registry is read by a CLI that may never touch an array

    extra = architecture(name).extra_inputs
    if not extra:
        return x
    n, _, h, w = x.shape
    given = list(maps or [])
    parts = [x]
    for i, e in enumerate(extra):
        m = given[i] if i < len(given) else np.full((e.channels, h, w), e.default, np.float32)
        m = np.asarray(m, np.float32)
        parts.append(np.broadcast_to(m if m.ndim == 4 else m[None], (n, e.channels, h, w)))
    return np.ascontiguousarray(np.concatenate(parts, axis=1), dtype=np.float32)


def architecture(name: str) -> Architecture:
    """The descriptor of ``name``; a generic, unmeasured one for architectures only user files have."""
    return ARCHITECTURES.get(name) or Architecture(name, None, None)


__all__ = [
    "ARCHITECTURES",
    "IMAGE_CHANNELS",
    "NOISE_MAP",
    "UNMEASURED_BYTES_PER_PIXEL",
    "UNMEASURED_OVERLAP",
    "Architecture",
    "ExtraInput",
    "architecture",
    "input_channels",
    "pack",
]
