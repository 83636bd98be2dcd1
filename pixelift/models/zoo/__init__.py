"""The built-in zoo: every real pretrained model obtainable from PyPI packages."""

from __future__ import annotations

from pixelift.models.spec import ModelSpec
from pixelift.models.zoo import ffdnet, realcugan, realesrgan, span, waifu2x

FAMILIES = (realesrgan, span, realcugan, waifu2x, ffdnet)


def builtin_specs() -> list[ModelSpec]:
    return [spec for family in FAMILIES for spec in family.SPECS]
