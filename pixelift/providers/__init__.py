"""Inference backends. One adapter per backend; ``probe()`` has no side effects."""

from __future__ import annotations

from pixelift.providers.base import (
    PROVIDERS,
    ProbeResult,
    Provider,
    Session,
    get_provider,
)

__all__ = ["PROVIDERS", "ProbeResult", "Provider", "Session", "get_provider"]
