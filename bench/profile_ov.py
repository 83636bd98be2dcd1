"""Where OpenVINO spends its time: per-op-type share of one precision row on one tile.

    python -m bench.profile_ov -m realesrgan-animevideov3-x4 --rows openvino:int8@openvino-int8,openvino:bf16@onnx-fp32

Uses OpenVINO's per-node performance counters (``PERF_COUNT``), summed over RUNS runs after
a warm-up, grouped by (layer type, kernel): what explains a ratio that misses its goal.
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from typing import Any

import numpy as np

from pixelift import precision as P
from pixelift.artifacts import find
from pixelift.samples import sample_photo, to_chw

RUNS = 3


def profile(model_id: str, row: str, x: np.ndarray, runs: int = RUNS) -> list[tuple[str, float, int]]:
    """[(layer type / kernel, ms per run, nodes)] sorted by time."""
    import openvino as ov

    from pixelift.providers.openvino import openvino_config

    key, _, target = row.partition("@")
    cap = next(c for c in P.CAPABILITIES if c.key == key and c.target == target)
    art = find(model_id, cap.target)
    if art is None:
        raise SystemExit(f"{model_id}: no {cap.target} artifact; run pixelift export --precision all {model_id}")
    config = openvino_config(**cap.options)
    config.pop("CACHE_DIR", None)
    config["PERF_COUNT"] = True
    compiled = ov.Core().compile_model(str(art.path), "CPU", config)
    req = compiled.create_infer_request()
    req.infer({0: x})
    totals: dict[str, float] = defaultdict(float)
    nodes: dict[str, set[str]] = defaultdict(set)
    for _ in range(runs):
        req.infer({0: x})
        for info in req.get_profiling_info():
            if info.status != info.Status.EXECUTED:
                continue
            k = f"{info.node_type} / {info.exec_type}"
            totals[k] += info.real_time.total_seconds() * 1000 / runs
            nodes[k].add(info.node_name)
    return sorted(((k, v, len(nodes[k])) for k, v in totals.items()), key=lambda t: -t[1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("-m", "--model", default="realesrgan-animevideov3-x4")
    ap.add_argument("--rows", default="openvino:int8@openvino-int8,openvino:bf16@onnx-fp32")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--top", type=int, default=8)
    a = ap.parse_args()
    x = to_chw(sample_photo()[: a.size, : a.size])[None]
    for row in a.rows.split(","):
        prof = profile(a.model, row, x)
        total = sum(v for _, v, _ in prof)
        print(f"\n{a.model} {row} at {a.size}px: {total:.1f} ms of kernels per run")
        print("| layer type / kernel | nodes | ms | share |\n|---|---|---|---|")
        rest: Any = sum(v for _, v, _ in prof[a.top :])
        for k, v, n in prof[: a.top]:
            print(f"| {k} | {n} | {v:.1f} | {100 * v / total:.0f}% |")
        print(f"| (other) | | {rest:.1f} | {100 * rest / total:.0f}% |")


if __name__ == "__main__":
    main()
