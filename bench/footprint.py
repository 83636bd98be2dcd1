"""Measure the memory footprint per input pixel of each architecture on each CPU backend.

Each measurement runs in a fresh process: peak RSS (ru_maxrss) after one inference at
two sizes; the slope between them is the bytes per input pixel that the tile chooser uses
(onnxruntime CPU: ``Architecture.bytes_per_input_pixel``; OpenVINO, compiled for the tile's
static shape at the f32 hint, its largest: ``Architecture.backend_bytes_per_input_pixel``).

    python -m bench.footprint [--models ID ...] [--backends cpu openvino ncnn:fp32 ncnn:bf16]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

# VmHWM, not ru_maxrss: a child's ru_maxrss keeps the parent's peak across fork and exec (the
# parent has torch loaded: a 514 MB floor that hid every small model's slope)
PEAK = r"""
def peak():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
"""

CHILD = {
    "cpu": PEAK
    + r"""
import sys, numpy as np, onnxruntime as ort
path, size, channels = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
so = ort.SessionOptions(); so.intra_op_num_threads = 2
s = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
x = np.random.default_rng(0).random((1, channels, size, size), dtype=np.float32)
s.run(None, {"input": x})
print(peak())
""",
    "openvino": PEAK
    + r"""
import sys, numpy as np, openvino as ov
path, size, channels = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
core = ov.Core()
m = core.read_model(path)
m.reshape([1, channels, size, size])
cfg = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": 2}
req = core.compile_model(m, "CPU", cfg).create_infer_request()
x = np.random.default_rng(0).random((1, channels, size, size), dtype=np.float32)
req.infer({0: x})
print(peak())
""",
    # the ncnn-fp32 artifact through pixelift's session (contract included), per storage mode
    **dict.fromkeys(
        ("ncnn:fp32", "ncnn:bf16"),
        PEAK
        + r"""
import sys, numpy as np
from pathlib import Path
from pixelift.providers.ncnn import NcnnProvider, NcnnOptions
path, size, channels, backend = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
s = NcnnProvider().open(Path(path), NcnnOptions(threads=2, storage=backend.split(":")[1]))
x = np.random.default_rng(0).random((1, channels, size, size), dtype=np.float32)
s.run(x)
print(peak())
""",
    ),
}

#: the artifact each child runs
TARGET = {"cpu": "onnx-fp32", "openvino": "onnx-fp32", "ncnn:fp32": "ncnn-fp32", "ncnn:bf16": "ncnn-fp32"}
SIZES = (64, 256)
DEFAULT_IDS = (
    "realesrgan-x4plus",
    "realesrgan-animevideov3-x4",
    "span-x4-ch48",
    "realcugan-se-x2",
    "waifu2x-photo-x2",
    "waifu2x-cunet-x1-noise1",
    "ffdnet-rgb",
)


def peak_rss(path: str, size: int, channels: int = 3, backend: str = "cpu") -> int:
    """``channels``: the graph input's (the image's 3, plus packed extra inputs such as a noise map)."""
    cmd = [sys.executable, "-c", CHILD[backend], path, str(size), str(channels), backend]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return int(out.stdout.strip().splitlines()[-1])


def main() -> None:
    from pixelift import models
    from pixelift.export.ncnn import refusal
    from pixelift.export.targets import build
    from pixelift.models.architectures import input_channels

    ap = argparse.ArgumentParser()
    ap.add_argument("--models", nargs="*", default=list(DEFAULT_IDS))
    ap.add_argument("--backends", nargs="*", default=list(CHILD), choices=list(CHILD))
    ap.add_argument("--sizes", type=int, nargs=2, default=SIZES)
    args = ap.parse_args()
    rows = []
    for mid in args.models:
        spec = models.get(mid)
        size_a, size_b = (spec.alignment * (s // spec.alignment) for s in args.sizes)
        channels = input_channels(spec.architecture)
        for backend in args.backends:
            target = TARGET[backend]
            if refusal(spec) and target == "ncnn-fp32":
                continue
            path = str(build(mid, target).path)
            a, b = peak_rss(path, size_a, channels, backend), peak_rss(path, size_b, channels, backend)
            per_px = (b - a) / (size_b * size_b - size_a * size_a)
            rows.append(
                {
                    "model": mid,
                    "architecture": spec.architecture,
                    "backend": backend,
                    "peak_rss_mb": {size_a: a >> 20, size_b: b >> 20},
                    "bytes_per_input_pixel": round(per_px),
                }
            )
            print(json.dumps(rows[-1]), flush=True)


if __name__ == "__main__":
    main()
