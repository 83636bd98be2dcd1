"""Inference backends: one adapter per backend, a side-effect-free probe, and a selection
policy that explains itself. Never imports torch, and imports numpy only where arrays are made
(the CLI reads the provider table on its way to a service without it; tests/test_service.py blocks it)."""

from __future__ import annotations

from pixelift.providers.base import ProbeResult, Provider, ProviderError, Role, Session
from pixelift.providers.machine import MachineFacts, read_machine
from pixelift.providers.options import ProviderOptions
from pixelift.providers.select import Request, Selection, open_session, plan, probe_all, requested_unavailable
from pixelift.providers.table import (
    PROVIDERS,
    cpu_backends,
    opening,
    opens,
    provider_choices,
    provider_options,
    with_role,
)


def validate_provider(value: str) -> str:
    """``auto``, a provider name or ``name:DEVICE`` (device upper-cased); :class:`ProviderError`
    (a usage error) naming the choices otherwise."""
    if not isinstance(value, str):
        raise ProviderError(f"provider must be a string, not {type(value).__name__}")
    name, sep, device = value.strip().partition(":")
    name = name.lower()
    if name == "auto" and not sep:
        return "auto"
    provider = PROVIDERS.get(name)
    if provider is None or (sep and device.upper() not in provider.devices):
        raise ProviderError(f"unknown provider {value!r}; choose from {', '.join(provider_choices())}")
    return f"{name}:{device.upper()}" if sep else name


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
    "ProviderOptions",
    "Request",
    "Role",
    "Selection",
    "Session",
    "cpu_backends",
    "get_provider",
    "open_session",
    "opening",
    "opens",
    "plan",
    "probe_all",
    "provider_choices",
    "provider_options",
    "read_machine",
    "requested_unavailable",
    "validate_provider",
    "with_role",
]
