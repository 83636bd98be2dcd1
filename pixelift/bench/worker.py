"""One benchmark configuration in a fresh process: ``python -P -m pixelift.bench.worker '<json>'``.

Imports only pixelift and the runtime under test (never the runner, report or matplotlib),
so the peak RSS and setup time belong to that runtime alone. Prints one line ``RESULT {json}``.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np


def rss_mb() -> float:
    """Peak RSS of this process in MB. VmHWM, not ru_maxrss: a fork inherits the parent's
    ru_maxrss, so a child of a big parent would report the parent's peak."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (1024.0 if sys.platform != "darwin" else 1024.0**2)


def timed(run: Any, x: Any, cfg: dict[str, Any]) -> tuple[Any, list[float]]:
    """Warm-up runs, then repeats until the median is stable (or max repeats / time budget)."""
    out = None
    for _ in range(cfg.get("warmup", 2)):
        out = run(x)
    times: list[float] = []
    prev = None
    t_start = time.perf_counter()
    while True:
        t0 = time.perf_counter()
        out = run(x)
        times.append(time.perf_counter() - t0)
        med = statistics.median(times)
        n = len(times)
        if n >= cfg.get("max_repeats", 15):
            break
        if n >= cfg.get("min_repeats", 3):
            stable = prev is not None and abs(med - prev) / med < cfg.get("stable", 0.02)
            if stable or time.perf_counter() - t_start > cfg.get("budget_s", 6.0):
                break
        prev = med
    return out, times


def _pixelift(cfg: dict[str, Any]) -> tuple[Any, Any]:
    from pixelift.providers import get_provider, provider_options

    provider = get_provider(cfg["provider"])
    opts: dict[str, Any] = {"threads": cfg["threads"]} if "threads" in provider.options_type.names() else {}
    if cfg["provider"] == "openvino":
        opts["precision"] = {"fp32": "f32"}.get(cfg["precision"], cfg["precision"])
    opts.update(cfg.get("options", {}))
    sess = provider.open(Path(cfg["artifact"]), provider_options(provider.name, opts))
    return sess.run, None


def _torch(cfg: dict[str, Any]) -> tuple[Any, Any]:
    import torch

    from pixelift.models import get
    from pixelift.models.importers import build_torch

    torch.set_num_threads(cfg["threads"])
    module = build_torch(get(cfg["model"]))

    def run(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return module(torch.from_numpy(x)).numpy()

    return run, module


def _ncnn(cfg: dict[str, Any]) -> tuple[Any, Any]:
    from pixelift.models import get
    from pixelift.models.oracle import NcnnNet, contract_run
    from pixelift.models.sources import NcnnPackageSource

    spec = get(cfg["model"])
    src = spec.source(NcnnPackageSource)
    if src is None:
        raise ValueError(f"{spec.id} has no ncnn original to bench")
    param, binf = src.files()
    net = NcnnNet(param, binf, threads=cfg["threads"], storage="bf16" if cfg["precision"] == "bf16" else "fp32")

    def run(x: np.ndarray) -> np.ndarray:  # same contract as the oracle and the exported model
        return contract_run(spec, net, x[0])[None]

    return run, net


def tile_config(cfg: dict[str, Any]) -> dict[str, Any]:
    rss0 = rss_mb()
    x = np.load(cfg["input"])
    t0 = time.perf_counter()
    run, keep = {"pixelift": _pixelift, "torch": _torch, "ncnn": _ncnn}[cfg["runtime"]](cfg)
    setup = time.perf_counter() - t0
    t0 = time.perf_counter()
    out = run(x)
    first = time.perf_counter() - t0
    out, times = timed(run, x, cfg)
    if cfg.get("output"):
        np.save(cfg["output"], np.asarray(out, np.float32))
    del keep
    return {
        "setup_s": setup,
        "first_run_s": first,
        "times": times,
        "rss_before_mb": rss0,
        "rss_peak_mb": rss_mb(),
        "out_shape": list(np.shape(out)),
    }


def ceiling(cfg: dict[str, Any]) -> dict[str, Any]:
    n = cfg.get("n", 4096)
    rng = np.random.default_rng(0)
    a = rng.random((n, n), dtype=np.float32)
    b = rng.random((n, n), dtype=np.float32)
    _, times = timed(lambda _: a @ b, None, {"warmup": 1, "min_repeats": 3, "max_repeats": 5, "budget_s": 4.0})
    med = statistics.median(times)
    return {"n": n, "times": times, "gflops": 2 * n**3 / med / 1e9, "gflops_best": 2 * n**3 / min(times) / 1e9}


def scaling(cfg: dict[str, Any]) -> dict[str, Any]:
    from PIL import Image

    from pixelift import Enhancer
    from pixelift.runtime.enhancer import TileOptions
    from pixelift.samples import sample_photo

    mp = float(cfg["mp"])
    w = round((mp * 1e6 * 4 / 3) ** 0.5)
    h = round(mp * 1e6 / w)
    img = np.asarray(Image.fromarray(sample_photo()).resize((w, h), Image.Resampling.LANCZOS))
    tile = cfg.get("tile", "auto")
    enh = Enhancer(cfg["model"], provider=cfg.get("provider", "auto"), tiles=TileOptions(tile=tile))
    t0 = time.perf_counter()
    lm = enh.loaded()
    setup = time.perf_counter() - t0
    rss_loaded = rss_mb()
    t0 = time.perf_counter()
    out = enh.enhance(img)
    sec = time.perf_counter() - t0
    return {
        "width": w,
        "height": h,
        "mp": w * h / 1e6,
        "setup_s": setup,
        "seconds": sec,
        "mp_per_s": w * h / 1e6 / sec,
        "provider": lm[0].provider,
        "rss_loaded_mb": rss_loaded,
        "rss_peak_mb": rss_mb(),
        "out_shape": list(out.shape),
    }


def auto_choice(cfg: dict[str, Any]) -> dict[str, Any]:
    """What ``provider=auto`` (the Enhancer's selection) picks for this model here."""
    from pixelift.providers import Request
    from pixelift.runtime.session import load

    lm = load(cfg["model"], Request(), precision="auto")  # the Enhancer's default
    opts = {k: v for k, v in lm.selection.options.changed().items() if isinstance(v, str | int | float | bool)}
    return {"provider": lm.provider, "precision": lm.precision, "options": opts, "why": lm.selection.why}


def main() -> None:
    cfg = json.loads(sys.argv[1])
    try:
        res = {"tile": tile_config, "ceiling": ceiling, "scaling": scaling, "auto": auto_choice}[cfg["kind"]](cfg)
        res["ok"] = True
    except Exception as exc:  # reported, never fatal to the matrix
        res = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    res["pid"] = os.getpid()
    sys.stdout.write("RESULT " + json.dumps(res) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
