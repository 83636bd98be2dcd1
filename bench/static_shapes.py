"""OpenVINO static-shape compilation vs one dynamic-shape compilation, same tile, one run.

    python -m bench.static_shapes [--models a,b] [--size 256]

For every OpenVINO capability row with an artifact: median seconds of ``OvSession`` with
``static_shapes=0`` (dynamic H/W only) and with the default (reshaped to the tile's shape).
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from pixelift import precision as P
from pixelift.artifacts import find
from pixelift.samples import sample_photo, to_chw

RUNS = 7


def median_seconds(run: object, x: np.ndarray, runs: int = RUNS) -> float:
    run(x)  # type: ignore[operator]
    ts = []
    for _ in range(runs):
        t0 = time.perf_counter()
        run(x)  # type: ignore[operator]
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def main() -> None:
    from pixelift.providers import get_provider, provider_options

    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="realesrgan-animevideov3-x4,span-x2-ch48")
    ap.add_argument("--size", type=int, default=256)
    a = ap.parse_args()
    x = to_chw(sample_photo()[: a.size, : a.size])[None]
    ov = get_provider("openvino")
    print(f"| model | row | dynamic ms | static ms | static speed-up |\n|{'---|' * 5}")
    for model_id in a.models.split(","):
        for cap in P.rows("openvino"):
            art = find(model_id, cap.target)
            if art is None:
                continue
            dyn = median_seconds(
                ov.open(art.path, provider_options("openvino", {**cap.options, "static_shapes": 0})).run, x
            )
            st = median_seconds(ov.open(art.path, provider_options("openvino", cap.options)).run, x)
            print(f"| {model_id} | {cap.key}@{cap.target} | {dyn * 1000:.1f} | {st * 1000:.1f} | {dyn / st:.2f}x |")


if __name__ == "__main__":
    main()
