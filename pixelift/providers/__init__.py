"""Inference backends: one adapter per backend, a side-effect-free probe, and a selection
policy that explains itself. Never imports torch."""

from __future__ import annotations

from pixelift.providers.base import ProbeResult, Provider, ProviderError, Session
from pixelift.providers.machine import MachineFacts, read_machine
from pixelift.providers.select import Request, Selection, open_session, plan, probe_all
from pixelift.providers.table import PROVIDERS


def get_provider(name: str) -> Provider:
    try:
        return PROVIDERS[name]
    except KeyError:
        raise ProviderError(f"unknown provider {name!r}; known: {', '.join(PROVIDERS)}") from None


__all__ = [
    "PROVIDERS",
    "MachineFacts",
    "ProbeResult",
    "Provider",
    "ProviderError",
    "Request",
    "Selection",
    "Session",
    "get_provider",
    "open_session",
    "plan",
    "probe_all",
    "read_machine",
]
