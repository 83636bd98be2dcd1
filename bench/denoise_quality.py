"""Denoising quality on real photos: pixelift's FFDNet (estimated map, true map) against
classical references, and what the noise estimate costs against the true map.

    python -m bench.denoise_quality [--photos chelsea coffee ...] [--size 256]

Photos ship with scikit-image; noise is added to 8-bit RGB and re-quantised (seed fixed),
as a real file would hold it. Y-channel PSNR with a 4 px border cut. On the "clean"
condition the columns are the change made to a photo that had no noise added. References:
scikit-image non-local means told the true sigma (h = 0.6 sigma) and, when the
non-commercial ``bm3d`` package happens to be installed, CBM3D with the true sigma (a
reference only, never a dependency). Writes ``bench/results/denoise_quality.json``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

from pixelift import Enhancer
from pixelift.metrics import psnr

PHOTOS = ("chelsea", "coffee", "astronaut", "rocket", "immunohistochemistry")
#: (label, gaussian sigma in 8-bit levels, poisson a in 0..1 units)
CONDITIONS = (("clean", 0.0, 0.0), ("g15", 15.0, 0.0), ("g25", 25.0, 0.0), ("g35", 35.0, 0.0), ("pg", 3.0, 0.004))


def _photo(name: str, size: int) -> np.ndarray:
    import skimage.data

    img = getattr(skimage.data, name)()
    h, w = img.shape[:2]
    top, left = (h - size) // 2, (w - size) // 2
    return np.ascontiguousarray(img[top : top + size, left : left + size, :3])


def _degrade(img: np.ndarray, sigma: float, a: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Noisy 8-bit image and the true per-pixel sigma (0..1 units)."""
    rng = np.random.default_rng(seed)
    f = img.astype(np.float64) / 255
    std = np.sqrt(a * f + (sigma / 255) ** 2)
    noisy = np.clip(np.rint((f + rng.normal(0, 1, f.shape) * std) * 255), 0, 255).astype(np.uint8)
    return noisy, std.astype(np.float32)


def _y(x: np.ndarray) -> np.ndarray:
    f = x.astype(np.float64) / 255
    return (0.299 * f[..., 0] + 0.587 * f[..., 1] + 0.114 * f[..., 2])[4:-4, 4:-4]


def _ydb(clean: np.ndarray, out: np.ndarray) -> float:
    return round(min(psnr(_y(clean), _y(out)), 99.0), 2)


def _nlm(noisy: np.ndarray, std: np.ndarray) -> np.ndarray:
    """Non-local means told the true (mean) sigma: a reference with an oracle's advantage."""
    from skimage.restoration import denoise_nl_means

    f = noisy.astype(np.float64) / 255
    s = max(float(std.mean()), 1e-3)
    out = denoise_nl_means(f, h=0.6 * s, sigma=s, patch_size=5, patch_distance=6, fast_mode=True, channel_axis=-1)
    return np.clip(np.rint(out * 255), 0, 255).astype(np.uint8)


def _ffdnet_true_map(noisy: np.ndarray, std: np.ndarray) -> np.ndarray:
    """FFDNet with the true per-pixel map (the ceiling the estimate is measured against)."""
    from pixelift.models.architectures import pack
    from pixelift.providers import Request, get_provider
    from pixelift.runtime.session import load

    lm = load("ffdnet-rgb", Request("cpu"))
    x = pack("FFDNet", (noisy.astype(np.float32) / 255).transpose(2, 0, 1)[None], [std.transpose(2, 0, 1)])
    y = get_provider("cpu").open(lm.artifact.path).run(x)[0].transpose(1, 2, 0)
    return np.clip(np.rint(y * 255), 0, 255).astype(np.uint8)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--photos", nargs="*", default=list(PHOTOS))
    ap.add_argument("--size", type=int, default=256)
    args = ap.parse_args()
    auto = Enhancer("ffdnet-rgb", provider="cpu", precision="fp32")
    rows: list[dict[str, Any]] = []
    have_bm3d = importlib.util.find_spec("bm3d") is not None
    for i, name in enumerate(args.photos):
        clean = _photo(name, args.size)
        for label, sigma, a in CONDITIONS:
            noisy, std = _degrade(clean, sigma, a, seed=i)
            t0 = time.perf_counter()
            out_auto = auto.enhance(noisy)
            t_auto = time.perf_counter() - t0
            row: dict[str, Any] = {
                "photo": name,
                "condition": label,
                "input": _ydb(clean, noisy),
                "ffdnet_estimated": _ydb(clean, out_auto),
                "ffdnet_true_map": _ydb(clean, _ffdnet_true_map(noisy, std)),
                "nlm_true_sigma": _ydb(clean, _nlm(noisy, std)),
                "ffdnet_s": round(t_auto, 3),
            }
            if have_bm3d and sigma and not a:
                import bm3d

                ref = bm3d.bm3d_rgb(noisy.astype(np.float64) / 255, sigma / 255)
                row["cbm3d_true_sigma"] = _ydb(clean, np.clip(np.rint(ref * 255), 0, 255).astype(np.uint8))
            rows.append(row)
            print(json.dumps(row))
    summary = {}
    for label, _, _ in CONDITIONS:
        sel = [r for r in rows if r["condition"] == label]
        summary[label] = {
            k: round(statistics.mean(r[k] for r in sel), 2)
            for k in ("input", "ffdnet_estimated", "ffdnet_true_map", "nlm_true_sigma")
        }
        summary[label]["lost_to_estimate_db"] = round(
            statistics.mean(r["ffdnet_true_map"] - r["ffdnet_estimated"] for r in sel), 2
        )
    print(json.dumps(summary, indent=1))
    out = Path(__file__).parent / "results" / "denoise_quality.json"
    out.write_text(json.dumps({"size": args.size, "rows": rows, "summary": summary}, indent=1))


if __name__ == "__main__":
    main()
