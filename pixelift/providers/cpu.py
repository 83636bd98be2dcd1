"""onnxruntime's CPU execution provider: always there."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from pixelift.providers import ort
from pixelift.providers.base import ProbeResult, Role, Session
from pixelift.providers.machine import MachineFacts
from pixelift.providers.options import ProviderOptions, at_least, choice, parse


@dataclass(frozen=True)
class CpuOptions(ProviderOptions):
    provider: ClassVar[str] = "cpu"
    threads: int | None = at_least(None, 1)  # None: the CPUs this process may use
    graph_optimization: str = choice("all", ort.GRAPH_OPTIMIZATION)


class CpuProvider:
    name = "cpu"
    role = Role.CPU
    devices: tuple[str, ...] = ()
    accelerator_devices: tuple[str, ...] = ()
    options_type: type[ProviderOptions] = CpuOptions
    suffixes: tuple[str, ...] = (".onnx",)

    def probe(self, facts: MachineFacts) -> ProbeResult:
        if not ort.installed():
            return ProbeResult(False, "onnxruntime is not installed")
        return ProbeResult(
            True,
            f"onnxruntime CPU on {facts.cpu_count} threads ({', '.join(facts.cpu_features) or 'baseline ISA'})",
            ("CPU",),
            {"cpu_features": list(facts.cpu_features)},
        )

    def open(self, model_path: Path, options: ProviderOptions | None = None) -> Session:
        opts = parse(CpuOptions, options)
        return ort.open_ort(
            model_path, self.name, ort.CPU_EP, {}, threads=opts.threads, graph_optimization=opts.graph_optimization
        )
