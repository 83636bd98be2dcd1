"""onnxruntime's CPU execution provider: always there."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pixelift.providers import ort
from pixelift.providers.base import ProbeResult, Role, Session
from pixelift.providers.machine import MachineFacts


class CpuProvider:
    name = "cpu"
    role = Role.CPU
    devices: tuple[str, ...] = ()
    accelerator_devices: tuple[str, ...] = ()

    def probe(self, facts: MachineFacts) -> ProbeResult:
        if not ort.installed():
            return ProbeResult(False, "onnxruntime is not installed")
        return ProbeResult(
            True,
            f"onnxruntime CPU on {facts.cpu_count} threads ({', '.join(facts.cpu_features) or 'baseline ISA'})",
            ("CPU",),
            {"cpu_features": list(facts.cpu_features)},
        )

    def open(
        self, model_path: Path, *, threads: int | None = None, graph_optimization: str = "all", **_: Any
    ) -> Session:
        return ort.open_ort(
            model_path, self.name, ort.CPU_EP, {}, threads=threads, graph_optimization=graph_optimization
        )
