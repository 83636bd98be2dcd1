"""The autopilot: analyse an image, then choose the steps (denoise -> de-JPEG -> upscale).

Torch-free. :func:`analyse` measures what the choice needs; :func:`plan` turns it into
model steps, each with the reason it was taken (or why a step was left out), which the
CLI shows with ``--json`` and ``--verbose``.

* **Noise:** the noise-level function (:mod:`pixelift.runtime.noise`).
* **JPEG quality:** from the file's quantisation tables when it is a JPEG (the IJG scaling
  of the standard luminance table, inverted); otherwise estimated from blockiness, the
  ratio of luma steps across the 8x8 grid to steps inside blocks (calibrated on photos
  saved at q20-90: 1.7-2.5 at q20, 1.2-1.5 at q60, 1.0-1.16 at q90, 0.97-1.13 for
  never-compressed crops).
* **Content:** photo or drawing (share of flat 4x4 blocks and of distinct colours).
* **Sharpness** and **size** are reported.

Choices, from measured quality (shared notes and ``bench/denoise_quality.py``): JPEG
artifacts (quality <= 75) go to waifu2x CUNet 1x (noise level 2 below q30, 3 above),
the best de-JPEG restorer in the zoo (+1.4-1.6 dB at q20-40); noise above the clean
level goes to FFDNet with the estimated map (2-2.8 dB above non-local means); both
when both are measured (noise first: FFDNet was trained on Gaussian noise, which JPEG
then quantises); the upscale is SPAN for photos (the best PSNR per second), Real-ESRGAN
Compact for drawings.
"""

from __future__ import annotations

import io
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from pixelift.runtime import noise

#: below this estimated sigma (8-bit levels) an image counts as clean
CLEAN_SIGMA = 1.0
#: from this estimated sigma on, CUNet 1x runs after FFDNet: in a JPEG file (any quality) noise
#: level 3, as JPEG quantisation leaves strong noise blocky, which FFDNet (trained on Gaussian
#: noise) leaves behind (bench/autopilot.py: +1-2.5 dB over FFDNet alone at sigma 15-40 in q90
#: JPEGs). Elsewhere the milder noise level 2: on Gaussian noise alone level 3 after FFDNet lost
#: 0.43 dB on average to FFDNet alone (7 photos x sigma 10/15/25/40 x blur 0/0.8, x1; up to
#: 2.76), level 2 0.12 (up to 0.91, about 0 from sigma 25 on), while on Poisson-Gaussian noise
#: (shot noise, as cameras have) level 2 gained 0 to 7.3 dB and never lost (4 cases of the bench)
STRONG_SIGMA = 6.0
#: JPEG quality at or below which the de-JPEG step runs
DEJPEG_MAX_QUALITY = 75
#: (blockiness ratio, JPEG quality) calibration points, ratio ascending
BLOCKINESS_TO_QUALITY = ((1.05, 95.0), (1.15, 75.0), (1.25, 60.0), (1.4, 40.0), (1.75, 20.0), (2.5, 10.0))
#: IJG standard luminance quantisation table (natural order), for reading a file's quality
_IJG_LUMA = np.array(
    [16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40, 57, 69, 56, 14, 17, 22, 29, 51,
     87, 80, 62, 18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92, 49, 64, 78, 87, 103, 121, 120,
     101, 72, 92, 95, 98, 112, 100, 103, 99],
    dtype=np.float64,
)  # fmt: skip
DENOISER = "ffdnet-rgb"
DEJPEG = {2: "waifu2x-cunet-x1-noise2", 3: "waifu2x-cunet-x1-noise3"}
UPSCALERS = {("photo", 2): "span-x2-ch48", ("photo", 4): "span-x4-ch48", ("art", 2): "realesrgan-animevideov3-x4",
             ("art", 4): "realesrgan-animevideov3-x4"}  # fmt: skip


@dataclass(frozen=True)
class Analysis:
    height: int
    width: int
    noise_sigma: float  # 8-bit levels, the NLF at the mean intensity
    noise_signal_dependent: bool
    jpeg_quality: float | None
    jpeg_source: str  # "quantisation tables" | "blockiness" | "none"
    blockiness: float
    content: str  # "photo" | "art"
    sharpness: float  # mean gradient magnitude of luma (0..1 units per pixel)

    def to_dict(self) -> dict[str, Any]:
        return {k: (round(v, 3) if isinstance(v, float) else v) for k, v in asdict(self).items()}


@dataclass(frozen=True)
class Step:
    model: str
    why: str


@dataclass(frozen=True)
class Plan:
    analysis: Analysis
    steps: tuple[Step, ...]
    skipped: tuple[str, ...] = field(default=())

    @property
    def models(self) -> list[str]:
        return [s.model for s in self.steps]

    def reasons(self) -> list[str]:
        return [f"{s.model}: {s.why}" for s in self.steps] + list(self.skipped)


def jpeg_quality_from_tables(data: bytes) -> float | None:
    """The IJG quality a JPEG file was saved at, from its luminance quantisation table."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as im:
            tables = getattr(im, "quantization", None)
    except Exception:
        return None
    if not tables or 0 not in tables:
        return None
    luma = np.asarray(tables[0], dtype=np.float64)
    if luma.size != 64:
        return None
    # Pillow gives the table in zigzag order; the mean ratio is order-independent enough when
    # computed against the sorted standard table
    scale = float(np.mean(np.sort(luma) * 100.0 / np.sort(_IJG_LUMA)))
    quality = (200.0 - scale) / 2.0 if scale <= 100.0 else 5000.0 / scale
    return float(np.clip(quality, 1.0, 100.0))


def blockiness(luma: np.ndarray) -> float:
    """Mean luma step across the 8x8 grid over the mean step inside blocks (1.0: no grid)."""
    if luma.shape[0] < 16 or luma.shape[1] < 16:
        return 1.0
    dh = np.abs(np.diff(luma, axis=1))
    dv = np.abs(np.diff(luma, axis=0))
    across = dh[:, 7::8].mean() + dv[7::8, :].mean()
    inside = np.delete(dh, np.s_[7::8], axis=1).mean() + np.delete(dv, np.s_[7::8], axis=0).mean()
    return float(across / max(inside, 1e-9))


def _quality_from_blockiness(ratio: float) -> float | None:
    ratios = [r for r, _ in BLOCKINESS_TO_QUALITY]
    if ratio < ratios[0]:
        return None
    return float(np.interp(ratio, ratios, [q for _, q in BLOCKINESS_TO_QUALITY]))


def _content(image: np.ndarray) -> str:
    """Drawings have large flat areas and few distinct colours; photos have neither. Black and
    white areas (a photo's background, clipped sky) count for neither."""
    h, w = image.shape[:2]
    q = (np.clip(image[: h - h % 4, : w - w % 4], 0, 1) * 255).astype(np.uint8)
    if q.size == 0:
        return "photo"
    blocks = q.reshape(q.shape[0] // 4, 4, q.shape[1] // 4, 4, -1).astype(int)
    mean = blocks.mean(axis=(1, 3, 4))
    mid = (mean > 12) & (mean < 243)
    if not mid.any():
        return "photo"
    spread = (blocks.max(axis=(1, 3)) - blocks.min(axis=(1, 3))).max(axis=-1)
    flat = float(np.mean(spread[mid] <= 2))
    sample = q.reshape(-1, q.shape[-1])[:: max(1, q.shape[0] * q.shape[1] // 65536)]
    colours = len(np.unique(sample, axis=0)) / max(len(sample), 1)
    return "art" if flat > 0.5 and colours < 0.15 else "photo"


def analyse(image: np.ndarray, *, file_bytes: bytes | None = None) -> Analysis:
    """``image``: HWC float32 in 0..1 (C = 1 or 3). ``file_bytes``: the source file, when it
    is a JPEG, for its quantisation tables."""
    rgb = np.repeat(image, 3, axis=2) if image.shape[2] == 1 else image
    luma = (0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2]).astype(np.float64)
    est = noise.estimate_noise(image)
    block = blockiness(luma * 255)
    quality = jpeg_quality_from_tables(file_bytes) if file_bytes else None
    source = "quantisation tables" if quality is not None else "none"
    if quality is None:
        quality = _quality_from_blockiness(block)
        source = "blockiness" if quality is not None else "none"
    # np.gradient needs 2 samples along an axis: a 1-px side has no gradient along it
    gy = np.gradient(luma, axis=0) if luma.shape[0] > 1 else np.zeros_like(luma)
    gx = np.gradient(luma, axis=1) if luma.shape[1] > 1 else np.zeros_like(luma)
    return Analysis(
        height=image.shape[0],
        width=image.shape[1],
        noise_sigma=est.sigma * 255,
        noise_signal_dependent=any(a > 0 for a in est.a),
        jpeg_quality=quality,
        jpeg_source=source,
        blockiness=block,
        content=_content(rgb),
        sharpness=float(np.mean(np.hypot(gx, gy))),
    )


def plan(analysis: Analysis, scale: float) -> Plan:
    """The steps for ``analysis`` and a final ``scale`` (the resize to it comes after the models)."""
    steps: list[Step] = []
    skipped: list[str] = []
    sigma, quality = analysis.noise_sigma, analysis.jpeg_quality
    if sigma >= CLEAN_SIGMA:
        kind = "signal-dependent" if analysis.noise_signal_dependent else "constant"
        steps.append(Step(DENOISER, f"noise sigma {sigma:.1f} levels ({kind}); the estimated map drives FFDNet"))
    else:
        skipped.append(f"denoise: skipped, noise sigma {sigma:.2f} < {CLEAN_SIGMA} levels")
    jpeg = quality is not None and quality <= DEJPEG_MAX_QUALITY
    if jpeg or sigma >= STRONG_SIGMA:
        in_jpeg = analysis.jpeg_source == "quantisation tables"
        level = 2 if (quality is not None and quality < 30) or not (jpeg or in_jpeg) else 3
        where = " in a JPEG" if in_jpeg else ""
        why = (
            f"JPEG quality {quality:.0f} (from the {analysis.jpeg_source})"
            if jpeg
            else f"strong noise (sigma {sigma:.1f} >= {STRONG_SIGMA}){where}: cleans what the denoiser leaves"
        )
        steps.append(Step(DEJPEG[level], why))
    else:
        found = "no JPEG trace" if quality is None else f"JPEG quality {quality:.0f} > {DEJPEG_MAX_QUALITY}"
        skipped.append(f"de-JPEG: skipped, {found} and noise below {STRONG_SIGMA} levels")
    if scale > 1:
        factor = 2 if scale <= 2 else 4
        model = UPSCALERS[(analysis.content, factor)]
        steps.append(Step(model, f"x{scale:g} requested, {analysis.content} content: {model}, then resized to x{scale:g}"))
    else:
        skipped.append("upscale: skipped, output at x1 or smaller")
    return Plan(analysis, tuple(steps), tuple(skipped))


__all__ = ["Analysis", "Plan", "Step", "analyse", "blockiness", "jpeg_quality_from_tables", "plan"]
