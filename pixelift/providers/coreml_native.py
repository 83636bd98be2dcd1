"""Core ML packages (``coreml-fp16`` targets) run through coremltools, on macOS only.

Unlike the onnxruntime CoreML EP this runs the ML Program that coremltools converted from
PyTorch (fp16 compute, flexible H/W), so no ONNX operator has to be supported by the EP.
Prediction exists only on macOS; elsewhere the probe says so and nothing opens.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from pixelift.providers.base import ProbeResult, Role, Session, run_guarded
from pixelift.providers.machine import MachineFacts
from pixelift.providers.options import ProviderOptions, choice, parse

if TYPE_CHECKING:
    import numpy as np

COMPUTE_UNITS = ("ALL", "CPU_AND_GPU", "CPU_AND_NE", "CPU_ONLY")


@dataclass(frozen=True)
class CoreMLNativeOptions(ProviderOptions):
    provider: ClassVar[str] = "coreml-native"
    compute_units: str = choice("ALL", COMPUTE_UNITS)


class CoreMLNativeSession:
    provider = "coreml-native"
    input_names: tuple[str, ...] = ("input",)
    output_names: tuple[str, ...] = ("output",)

    def __init__(self, model: Any) -> None:
        self._model = model

    def run(self, x: np.ndarray) -> np.ndarray:
        import numpy as np

        # the package takes one image; a batch runs image by image
        outs = [
            run_guarded(self._model.predict, {"input": np.ascontiguousarray(x[i : i + 1], np.float32)})["output"]
            for i in range(x.shape[0])
        ]
        return np.concatenate([np.asarray(o, dtype=np.float32) for o in outs], axis=0)

    def run_feeds(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        return [self.run(feeds["input"])]


class CoreMLNativeProvider:
    name = "coreml-native"
    role = Role.EXPLICIT
    devices: tuple[str, ...] = ()
    accelerator_devices: tuple[str, ...] = ()
    options_type: type[ProviderOptions] = CoreMLNativeOptions
    suffixes: tuple[str, ...] = (".mlpackage",)

    def probe(self, facts: MachineFacts) -> ProbeResult:
        if facts.os != "Darwin":
            return ProbeResult(False, f"Core ML prediction needs macOS (this is {facts.os})")
        if importlib.util.find_spec("coremltools") is None:
            return ProbeResult(False, "coremltools is not installed: pip install 'pixelift[coreml]'")
        return ProbeResult(True, f"coremltools on {facts.apple_chip or facts.cpu_model}", COMPUTE_UNITS)

    def open(self, model_path: Path, options: ProviderOptions | None = None) -> Session:
        compute_units = parse(CoreMLNativeOptions, options).compute_units
        if model_path.suffix != ".mlpackage":
            raise ValueError(f"coreml-native runs .mlpackage files, not {model_path.name}")
        import coremltools as ct

        model = ct.models.MLModel(str(model_path), compute_units=ct.ComputeUnit[compute_units])
        return CoreMLNativeSession(model)
