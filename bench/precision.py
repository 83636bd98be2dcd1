"""Every precision row vs ncnn's best CPU mode, side by side, one run.

For each model: every precision is exported (fp16 ONNX + IR, both int8 routes unless
--no-int8), the fidelity of every runnable capability row is measured on held-out crops
(stored in the manifests), then seconds per run at SIZE px (batch 1, 2 threads, median
of RUNS) for ncnn fp32 / ncnn bf16 storage (official ncnn package) and for every row.
Reported per gate (50 dB, 40 dB with --fast): the row ``auto`` picks, and the fastest row
at SIZE that meets the gate.

    python -m bench.precision [--size 256] [--models a,b] [--no-int8 m1,m2]
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
    src = spec.source(NcnnPackageSource)
    assert src is not None, spec.id
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


def time_rows(
    model_id: str, rows: list[P.Measured], x: np.ndarray, runs: int, skip: set[str]
) -> dict[str, dict[str, object]]:
    """Seconds per run of every measured row on ``x`` (the rows' fidelity comes from the manifests)."""
    from pixelift.artifacts import find
    from pixelift.providers import get_provider, provider_options

    out: dict[str, dict[str, object]] = {}
    for m in sorted(rows, key=lambda m: (m.capability.provider, m.capability.precision, m.capability.target)):
        cap = m.capability
        if cap.key in skip:
            continue
        art = find(model_id, cap.target)
        sess = get_provider(cap.provider).open(art.path, provider_options(cap.provider, cap.options))
        out[f"{cap.key}@{cap.target}"] = {
            "psnr_db": m.psnr_db,
            "finite": m.finite,
            "seconds": round(_median(lambda sess=sess: sess.run(x), runs), 4),
        }
        del sess
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--no-int8", default="", help="comma list of models not to quantize")
    ap.add_argument(
        "--skip-rows",
        default="cpu:fp16",
        help="provider:precision rows not to time (x86 onnxruntime has few fp16 kernels: minutes for x4plus)",
    )
    ap.add_argument("--runs", type=int, default=RUNS)
    ap.add_argument("--out", type=Path, default=Path("bench/results/precision.json"))
    a = ap.parse_args()
    from pixelift.export.targets import export_precision

    results = []
    for model_id in a.models.split(","):
        for prec in P.PRECISIONS:
            if not (prec == "int8" and model_id in a.no_int8.split(",")):
                export_precision(model_id, prec)
        records = P.measure_model(model_id)
        rows = P.measured_rows(records)
        x = to_chw(sample_photo()[: a.size, : a.size])[None]
        base = ncnn_seconds(model_id, x, a.runs)
        ncnn_best = min(base.values())
        timed = time_rows(model_id, rows, x, a.runs, set(a.skip_rows.split(",")))
        for t in timed.values():
            t["vs_ncnn_best"] = round(ncnn_best / t["seconds"], 2)  # type: ignore[operator]
        entry: dict[str, object] = {"model": model_id, "size": a.size, **base, "ncnn_best": ncnn_best, "rows": timed}
        for gate in (P.HIGH_FIDELITY_DB, P.FAST_DB):
            # what auto picks (its own timings: held-out crop size, measured at export) ...
            best, _ = P.choose_auto(rows, gate)
            key = f"{best.capability.key}@{best.capability.target}"
            # ... and the fastest row meeting the gate at this size, in this run
            meets = [
                k
                for k, t in timed.items()
                if t["finite"] and (k.split("@")[0].endswith(":fp32") or t["psnr_db"] >= gate)
            ]  # type: ignore[operator]
            fastest = min(meets, key=lambda k: timed[k]["seconds"])  # type: ignore[arg-type,return-value]
            entry[f"auto@{gate}"] = {"choice": key, **timed.get(key, {})}
            entry[f"best@{gate}"] = {"choice": fastest, **timed[fastest]}
        results.append(entry)
        print(json.dumps(entry), flush=True)
    print(f"\n| model | row (provider:precision@artifact) | dB vs fp32 | s @{a.size}px | vs ncnn best |\n|{'---|' * 5}")
    for e in results:
        print(
            f"| {e['model']} | ncnn fp32 / bf16 storage | ref | {e['ncnn-fp32']:.3f} / {e['ncnn-bf16']:.3f} | 1.00x |"
        )
        for k, t in e["rows"].items():  # type: ignore[attr-defined]
            print(f"| {e['model']} | {k} | {t['psnr_db']} | {t['seconds']:.3f} | {t['vs_ncnn_best']}x |")
    print(
        f"\n| model | gate dB | auto's choice | dB | s | vs ncnn best | fastest at {a.size}px meeting the gate | vs ncnn |\n|{'---|' * 8}"
    )
    for e in results:
        for gate in (P.HIGH_FIDELITY_DB, P.FAST_DB):
            au, be = e[f"auto@{gate}"], e[f"best@{gate}"]  # type: ignore[index]
            print(
                f"| {e['model']} | {gate:g} | {au['choice']} | {au.get('psnr_db')} | {au.get('seconds')} | "
                f"{au.get('vs_ncnn_best')}x | {be['choice']} ({be['psnr_db']} dB) | {be['vs_ncnn_best']}x |"
            )
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
