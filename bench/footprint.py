"""Measure the memory footprint per input pixel of each architecture on onnxruntime CPU.

Each measurement runs in a fresh process: peak RSS (ru_maxrss) after one inference at
two sizes; the slope between them is the bytes per input pixel that the tile chooser uses.

    python -m bench.footprint [--models ID ...]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

CHILD = r"""
import resource, sys, numpy as np, onnxruntime as ort
path, size, channels = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
so = ort.SessionOptions(); so.intra_op_num_threads = 2
s = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
x = np.random.default_rng(0).random((1, channels, size, size), dtype=np.float32)
s.run(None, {"input": x})
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
"""

SIZES = (64, 256)
DEFAULT_IDS = (
    "realesrgan-x4plus",
    "realesrgan-animevideov3-x4",
    "span-x4-ch48",
    "realcugan-se-x2",
    "waifu2x-photo-x2",
    "waifu2x-cunet-x1-noise1",
)


def peak_rss(path: str, size: int, channels: int = 3) -> int:
    """``channels``: the graph input's (the image's 3, plus packed extra inputs such as a noise map)."""
    cmd = [sys.executable, "-c", CHILD, path, str(size), str(channels)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return int(out.stdout.strip().splitlines()[-1])


def main() -> None:
    from pixelift import models
    from pixelift.export import to_onnx
    from pixelift.models.architectures import input_channels

    ap = argparse.ArgumentParser()
    ap.add_argument("--models", nargs="*", default=list(DEFAULT_IDS))
    args = ap.parse_args()
    rows = []
    for mid in args.models:
        spec = models.get(mid)
        size_a, size_b = (spec.alignment * (s // spec.alignment) for s in SIZES)
        path = str(to_onnx(mid).path)
        channels = input_channels(spec.architecture)
        a, b = peak_rss(path, size_a, channels), peak_rss(path, size_b, channels)
        per_px = (b - a) / (size_b * size_b - size_a * size_a)
        rows.append(
            {
                "model": mid,
                "architecture": spec.architecture,
                "peak_rss_mb": {size_a: a >> 20, size_b: b >> 20},
                "bytes_per_input_pixel": round(per_px),
            }
        )
        print(json.dumps(rows[-1]))


if __name__ == "__main__":
    main()
