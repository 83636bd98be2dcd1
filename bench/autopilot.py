"""The autopilot against an oracle that tries every candidate pipeline, file to file.

    python -m bench.autopilot [--photos ...] [--size 128] [--cases 10]

Held-out photos (not those of the tests: ``immunohistochemistry``, ``hubble_deep_field``,
``retina`` by default) are degraded by random mixtures (seeded): Gaussian noise sigma 5-40
or Poisson-Gaussian, JPEG quality 20-90 (or none), Gaussian blur 0-1.5, then asked for x1
or x2 (the x2 reference is the photo before its area downscale). Every case is written to a
file and run through ``pixelift enhance``'s code path (``enhance_file``): the autopilot, and
each candidate pipeline (every subset of denoise / de-JPEG steps, in the autopilot's order,
before the upscaler the scale needs). The oracle takes the best candidate per case. Y PSNR,
4 px border cut. Writes ``bench/results/autopilot.json``.
"""

from __future__ import annotations

import argparse
import io
import itertools
import json
import statistics
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageFilter

from pixelift.metrics import psnr
from pixelift.runtime import autopilot
from pixelift.runtime.enhancer import AutoEnhancer, Enhancer

PHOTOS = ("immunohistochemistry", "hubble_deep_field", "retina", "rocket", "coffee")
RESTORERS = (autopilot.DENOISER, autopilot.DEJPEG[2], autopilot.DEJPEG[3])


def _photo(name: str, size: int, scale: int) -> np.ndarray:
    import skimage.data

    img = getattr(skimage.data, name)()[..., :3]
    side = size * scale
    h, w = img.shape[:2]
    top, left = (h - side) // 2, (w - side) // 2
    return np.ascontiguousarray(img[top : top + side, left : left + side])


def _degrade(clean: np.ndarray, rng: np.random.Generator) -> tuple[bytes, str, dict[str, Any]]:
    blur = float(rng.choice([0.0, 0.0, 0.8, 1.5]))
    img = Image.fromarray(clean)
    if blur:
        img = img.filter(ImageFilter.GaussianBlur(blur))
    f = np.asarray(img).astype(np.float64) / 255
    if rng.random() < 0.3:
        a, sigma = float(rng.choice([0.002, 0.005])), 2.0
    else:
        a, sigma = 0.0, float(rng.choice([0.0, 5.0, 15.0, 25.0, 40.0]))
    std = np.sqrt(a * f + (sigma / 255) ** 2)
    noisy = np.clip(np.rint((f + rng.normal(0, 1, f.shape) * std) * 255), 0, 255).astype(np.uint8)
    quality = int(rng.choice([0, 20, 40, 60, 90]))
    if not (blur or sigma or a or quality):  # every case is degraded: a clean input is its own reference
        quality = 90
    buf = io.BytesIO()
    if quality:
        Image.fromarray(noisy).save(buf, "JPEG", quality=quality)
        return buf.getvalue(), ".jpg", {"blur": blur, "sigma": sigma, "poisson_a": a, "jpeg": quality}
    Image.fromarray(noisy).save(buf, "PNG")
    return buf.getvalue(), ".png", {"blur": blur, "sigma": sigma, "poisson_a": a, "jpeg": None}


def _ydb(ref: np.ndarray, out: np.ndarray) -> float:
    def y(x: np.ndarray) -> np.ndarray:
        g = x.astype(np.float64) / 255
        return (0.299 * g[..., 0] + 0.587 * g[..., 1] + 0.114 * g[..., 2])[4:-4, 4:-4]

    return round(min(psnr(y(ref), y(out)), 99.0), 2)


def _candidates(scale: int) -> list[tuple[str, ...]]:
    up = () if scale == 1 else (autopilot.UPSCALERS[("photo", scale)],)
    out = [up] if up else [()]
    for k in (1, 2):
        for combo in itertools.combinations(RESTORERS, k):
            if sum(m in autopilot.DEJPEG.values() for m in combo) <= 1:
                out.append((*combo, *up))
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--photos", nargs="*", default=list(PHOTOS))
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--cases", type=int, default=8, help="degradations per photo and scale")
    args = ap.parse_args()
    rng = np.random.default_rng(12)
    opts: dict[str, Any] = {"provider": "cpu", "precision": "fp32"}
    pipelines: dict[tuple[str, ...], Enhancer] = {}
    autos = {s: AutoEnhancer(outscale=float(s), **opts) for s in (1, 2)}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.photos:
            for scale in (1, 2):
                ref = _photo(name, args.size, scale)
                small = ref if scale == 1 else np.asarray(Image.fromarray(ref).resize((args.size,) * 2, Image.Resampling.BOX))
                for i in range(args.cases):
                    data, suffix, cond = _degrade(small, rng)
                    src = Path(tmp) / f"{name}-{scale}-{i}{suffix}"
                    src.write_bytes(data)
                    scores: dict[str, float] = {}
                    for cand in _candidates(scale):
                        if not cand:
                            out = np.asarray(Image.open(src).convert("RGB"))
                        else:
                            enh = pipelines.get(cand) or pipelines.setdefault(cand, Enhancer(list(cand), outscale=scale, **opts))
                            dst = Path(tmp) / "cand.png"
                            enh.enhance_file(src, dst, overwrite=True)
                            out = np.asarray(Image.open(dst).convert("RGB"))
                        scores["+".join(cand) or "none"] = _ydb(ref, out)
                    dst = Path(tmp) / "auto.png"
                    _, res = autos[scale].enhance_file(src, dst, overwrite=True)
                    auto_db = _ydb(ref, np.asarray(Image.open(dst).convert("RGB")))
                    best = max(scores, key=lambda k: scores[k])
                    row = {
                        "photo": name,
                        "scale": scale,
                        **cond,
                        "autopilot": auto_db,
                        "autopilot_steps": res.models,
                        "analysis": (res.autopilot or {}).get("analysis"),
                        "oracle": scores[best],
                        "oracle_pipeline": best,
                        "candidates": scores,
                    }
                    rows.append(row)
                    print(json.dumps({k: v for k, v in row.items() if k != "candidates"}))
    gaps = [r["oracle"] - r["autopilot"] for r in rows]
    # the best single fixed pipeline (per scale, the same restoration steps for every case)
    fixed: dict[str, float] = {}
    for key in {k.replace("+" + autopilot.UPSCALERS[("photo", 2)], "").replace(autopilot.UPSCALERS[("photo", 2)], "none") for r in rows for k in r["candidates"]}:
        vals = []
        for r in rows:
            up = autopilot.UPSCALERS[("photo", 2)]
            k = key if r["scale"] == 1 else (up if key == "none" else f"{key}+{up}")
            if k in r["candidates"]:
                vals.append(r["candidates"][k])
        if len(vals) == len(rows):
            fixed[key] = statistics.mean(vals)
    best_fixed = max(fixed, key=lambda k: fixed[k])
    summary = {
        "cases": len(rows),
        "autopilot_mean_db": round(statistics.mean(r["autopilot"] for r in rows), 3),
        "oracle_mean_db": round(statistics.mean(r["oracle"] for r in rows), 3),
        "mean_gap_to_oracle_db": round(statistics.mean(gaps), 3),
        "worst_gap_db": round(max(gaps), 2),
        "best_fixed_pipeline": best_fixed,
        "best_fixed_mean_db": round(fixed[best_fixed], 3),
        "gain_over_best_fixed_db": round(statistics.mean(r["autopilot"] for r in rows) - fixed[best_fixed], 3),
        "fixed_pipelines_mean_db": {k: round(v, 3) for k, v in sorted(fixed.items(), key=lambda kv: -kv[1])},
    }
    print(json.dumps(summary, indent=1))
    out = Path(__file__).parent / "results" / "autopilot.json"
    out.write_text(json.dumps({"size": args.size, "summary": summary, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
