"""Helpers shared by the zoo tables."""

from __future__ import annotations

from pixelift.models.sources import NcnnPackageSource


def pkg(distribution: str, stem: str) -> tuple[NcnnPackageSource, ...]:
    return (NcnnPackageSource(distribution, distribution.replace("-", "_"), stem),)


MIT_SR_VULKAN = "MIT (License field and classifier of the {dist} wheel's METADATA)"
