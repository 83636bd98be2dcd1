"""Provider selection that explains itself, and falls back out loud.

This is the CPU-only policy: OpenVINO (measured faster than onnxruntime on this CPU
class, shared/notes/cpu-baseline.md) then onnxruntime CPU. GPU providers join the
table in ``base.PROVIDERS``; the order below reads it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pixelift.errors import PixeliftError
from pixelift.providers.base import PROVIDERS, Session

log = logging.getLogger(__name__)

AUTO_ORDER = ("openvino", "cpu")


class ProviderError(PixeliftError):
    """No provider could run the model, or a strict request failed."""


@dataclass(frozen=True)
class Request:
    """``provider`` is ``auto``, a provider name, or ``name:DEVICE`` (e.g. ``openvino:GPU``)."""

    provider: str = "auto"
    strict: bool = False
    options: dict[str, Any] = field(default_factory=dict)

    def candidates(self) -> list[tuple[str, dict[str, Any]]]:
        if self.provider == "auto":
            return [(name, dict(self.options)) for name in AUTO_ORDER if name in PROVIDERS]
        name, _, device = self.provider.partition(":")
        if name not in PROVIDERS:
            raise ProviderError(f"unknown provider {name!r}; choose from auto, {', '.join(PROVIDERS)}")
        opts = dict(self.options)
        if device:
            opts["device"] = device.upper()
        chain = [(name, opts)]
        if not self.strict:
            chain += [(n, dict(self.options)) for n in AUTO_ORDER if n != name and n in PROVIDERS]
        return chain


@dataclass(frozen=True)
class Selection:
    provider: str
    options: dict[str, Any]
    session: Session
    rejected: tuple[tuple[str, str], ...]  # (provider, why) for each candidate tried before


def open_session(model_path: Path, request: Request) -> Selection:
    """Open a session on the first candidate that works; log and record every rejection."""
    rejected: list[tuple[str, str]] = []
    for name, opts in request.candidates():
        provider = PROVIDERS[name]
        probe = provider.probe()
        if not probe.available:
            why = f"unavailable: {probe.reason}"
        else:
            try:
                session = provider.open(model_path, **opts)
            except Exception as exc:  # any backend failure is a reason to fall back
                why = f"failed to open: {type(exc).__name__}: {exc}"
            else:
                for prev, reason in rejected:
                    log.warning("provider %s rejected (%s); using %s", prev, reason, name)
                log.info("provider %s selected for %s (%s)", name, model_path.name, probe.reason)
                return Selection(name, opts, session, tuple(rejected))
        if request.strict:
            raise ProviderError(f"provider {name!r} (strict): {why}")
        rejected.append((name, why))
        log.warning("provider %s: %s", name, why)
    raise ProviderError("no provider could open the model: " + "; ".join(f"{n}: {w}" for n, w in rejected))
