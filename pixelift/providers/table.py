"""The provider table, in automatic-selection order. Adding a backend: one file, one line here.

Selection, the CPU micro-benchmark, ``doctor``, the CLI's ``--provider`` choices and the
capability table read only this table and what each provider declares (role, devices,
options type).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pixelift.errors import ProviderOptionError
from pixelift.providers.base import Provider, Role
from pixelift.providers.coreml import CoreMLProvider
from pixelift.providers.coreml_native import CoreMLNativeProvider
from pixelift.providers.cpu import CpuProvider
from pixelift.providers.cuda import CudaProvider
from pixelift.providers.ncnn import NcnnProvider
from pixelift.providers.openvino import OpenVINOProvider
from pixelift.providers.options import ProviderOptions, parse
from pixelift.providers.tensorrt import TensorRTProvider

PROVIDERS: dict[str, Provider] = {
    p.name: p
    for p in (
        TensorRTProvider(),
        CudaProvider(),
        CoreMLProvider(),
        OpenVINOProvider(),
        CpuProvider(),
        NcnnProvider(),
        CoreMLNativeProvider(),
    )
}


def with_role(role: Role) -> tuple[str, ...]:
    """Names of the providers of ``role``, in table order."""
    return tuple(n for n, p in PROVIDERS.items() if p.role == role)


def cpu_backends() -> tuple[str, ...]:
    return with_role(Role.CPU)


def opens(name: str, suffix: str | None) -> bool:
    """Whether provider ``name`` opens model files ending in ``suffix`` (None: any file)."""
    return suffix is None or suffix in PROVIDERS[name].suffixes


def opening(suffix: str | None, names: tuple[str, ...] | None = None) -> tuple[str, ...]:
    """Of ``names`` (default: every provider), those that open model files ending in ``suffix``."""
    return tuple(n for n in (PROVIDERS if names is None else names) if opens(n, suffix))


def provider_choices() -> list[str]:
    """Every value ``--provider`` accepts: auto, each name, and name:DEVICE where a provider has devices."""
    return ["auto", *PROVIDERS, *(f"{n}:{d}" for n, p in PROVIDERS.items() for d in p.devices)]


def provider_options(
    name: str, options: Mapping[str, Any] | ProviderOptions | None = None, *, base: ProviderOptions | None = None
) -> ProviderOptions:
    """The one way from a provider name and options (typed, or a mapping of option names) to
    that provider's typed options, validated. ``base`` (a request's options) is applied
    first where it belongs to that provider, so other providers keep their defaults."""
    provider = PROVIDERS.get(name)
    if provider is None:
        raise ProviderOptionError(f"unknown provider {name!r}; known: {', '.join(PROVIDERS)}")
    return parse(provider.options_type, options, base=base)
