"""The provider table, in automatic-selection order. Adding a backend: one file, one line here."""

from __future__ import annotations

from pixelift.providers.base import Provider
from pixelift.providers.coreml import CoreMLProvider
from pixelift.providers.coreml_native import CoreMLNativeProvider
from pixelift.providers.cpu import CpuProvider
from pixelift.providers.cuda import CudaProvider
from pixelift.providers.openvino import OpenVINOProvider
from pixelift.providers.tensorrt import TensorRTProvider

PROVIDERS: dict[str, Provider] = {
    p.name: p
    for p in (
        TensorRTProvider(),
        CudaProvider(),
        CoreMLProvider(),
        OpenVINOProvider(),
        CpuProvider(),
        CoreMLNativeProvider(),
    )
}
