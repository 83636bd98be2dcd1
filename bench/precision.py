"""Precision chosen by ``--precision auto`` vs ncnn's best CPU mode, side by side, one run.

For each model: the fp32 export (+ int8 unless --no-int8), fidelity of every runnable
capability row on held-out crops (stored in the manifests), then seconds per run at SIZE
px (batch 1, 2 threads, median of RUNS) for ncnn fp32 / ncnn bf16 storage (official ncnn
package) and for the row ``auto`` picks at the high (50 dB) and fast (40 dB) gates.

    python -m bench.precision [--size 256] [--models a,b] [--no-int8 realesrgan-x4plus]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np

from pixelift import precision as P
from pixelift.models import get
from pixelift.models.sources import NcnnPackageSource
from pixelift.samples import sample_photo, to_chw

MODELS = ("realesrgan-animevideov3-x4", "span-x2-ch48", "realesrgan-x4plus")
RUNS = 5


def _median(fn, runs: int) -> float:  # type: ignore[no-untyped-def]
    fn()
    ts = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def ncnn_seconds(model_id: str, x: np.ndarray, runs: int) -> dict[str, float]:
    import ncnn

    from pixelift.models import ncnn as fmt

    spec = get(model_id)
    src = next(s for s in spec.sources if isinstance(s, NcnnPackageSource))
    param, binf = src.files()
    graph = fmt.parse_param(param.read_text(), source=str(param))
    out = {}
    for mode in ("fp32", "bf16"):
        net = ncnn.Net()
        net.opt.use_vulkan_compute = False
        net.opt.num_threads = 2
        net.opt.use_fp16_packed = net.opt.use_fp16_storage = net.opt.use_fp16_arithmetic = False
        net.opt.use_bf16_storage = mode == "bf16"
        net.load_param(str(param))
        net.load_model(str(binf))
        mat = ncnn.Mat(np.ascontiguousarray(x[0]))

        def run(net=net, mat=mat) -> None:  # type: ignore[no-untyped-def]
            ex = net.create_extractor()
            ex.input(graph.input_blob, mat)
            ex.extract(graph.output_blob)

        out[f"ncnn-{mode}"] = _median(run, runs)
        net.clear()
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument(
        "--no-int8", default="realesrgan-x4plus", help="comma list: skip int8 (x4plus peaks ~7 GB, minutes)"
    )
    ap.add_argument("--runs", type=int, default=RUNS)
    ap.add_argument("--out", type=Path, default=Path("bench/results/precision.json"))
    a = ap.parse_args()
    from pixelift.export import to_onnx
    from pixelift.export.artifacts import find
    from pixelift.export.precision import to_int8
    from pixelift.providers import get_provider

    results = []
    for model_id in a.models.split(","):
        to_onnx(model_id)
        if model_id not in a.no_int8.split(","):
            to_int8(model_id)
        records = P.measure_model(model_id)
        rows = P.measured_rows(records)
        x = to_chw(sample_photo()[: a.size, : a.size])[None]
        base = ncnn_seconds(model_id, x, a.runs)
        ncnn_best = min(base.values())
        entry = {"model": model_id, "size": a.size, **base, "ncnn_best": ncnn_best, "rows": {}}
        for gate in (P.HIGH_FIDELITY_DB, P.FAST_DB):
            best, _ = P.choose_auto(rows, gate)
            cap = best.capability
            art = find(model_id, cap.target)
            sess = get_provider(cap.provider).open(art.path, **cap.options)
            s = _median(lambda sess=sess, x=x: sess.run(x), a.runs)
            entry["rows"][str(gate)] = {
                "choice": f"{cap.provider}:{cap.precision}@{cap.target}",
                "psnr_db": best.psnr_db,
                "seconds": round(s, 4),
                "speedup_vs_ncnn_best": round(ncnn_best / s, 2),
            }
        entry["fidelity"] = {k: v.get("psnr_db") for k, v in records.items()}
        results.append(entry)
        print(json.dumps(entry), flush=True)
    print(f"\n| model | ncnn fp32 s | ncnn bf16 s | gate | auto choice | dB | s | vs ncnn best |\n|{'---|' * 8}")
    for e in results:
        for gate, r in e["rows"].items():
            print(
                f"| {e['model']} | {e['ncnn-fp32']:.3f} | {e['ncnn-bf16']:.3f} | {gate} | {r['choice']} | "
                f"{r['psnr_db']} | {r['seconds']:.3f} | {r['speedup_vs_ncnn_best']}x |"
            )
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
