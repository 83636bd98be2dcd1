"""Blind noise estimation (``pixelift.runtime.noise``) on real photos with known added noise.

    python -m bench.noise_estimation [--quick] [--out bench/results/noise_estimation.json]

Photos: scikit-image's bundled data (test extra; nothing downloaded) and pixelift's sample
photo. Noise is added to the 8-bit image and the result clipped and re-quantised to uint8,
as a noisy file would be, with fixed seeds:

* Gaussian, sigma in {0, 5, 10, 15, 25, 35, 50} (8-bit units): the overall estimate
  (``NoiseEstimate.sigma``) against the added sigma. sigma = 0 is the clean photo: what it
  reads is the photo's own noise (film grain, sensor noise) plus whatever texture leaks in.
* Poisson-Gaussian, ``y = a * Poisson(x / a) + N(0, b)`` in 0..1 units: the fitted NLF
  ``sigma(I)`` (mean over channels) against ``sqrt(a I + b)`` at several intensities, the
  bright/dark ratio ``sigma(0.8) / sigma(0.2)``, and the error of ``sigma_map`` per pixel
  against the true sigma at the clean pixel.
* Time per megapixel of ``estimate_noise`` (median of repeats) on every photo and on a
  12 MP image (a photo upscaled to 4000x3000, then noise added), and of ``sigma_map``.

Three groups of photos. ``dev``: what the method was developed and its constants set on.
``check``: never used while developing, measured once at the end. ``texture``: scikit-image's
brick, grass and gravel, all texture and no smooth area: a stress case, not a target.
Errors are in 8-bit units (sigma * 255).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import warnings
import zlib
from pathlib import Path

import numpy as np

from pixelift.runtime.noise import NoiseEstimate, estimate_noise
from pixelift.samples import sample_photo

DEV: tuple[str, ...] = ("astronaut", "chelsea", "coffee", "rocket", "immunohistochemistry", "camera", "moon")
DEV += ("coins", "hubble_deep_field", "retina", "clock", "cell", "motorcycle_left", "pixelift_sample")
CHECK = ("motorcycle_right", "page", "text", "lfw_faces")
TEXTURE = ("brick", "grass", "gravel")
GAUSS_SIGMAS = (0, 5, 10, 15, 25, 35, 50)
PG = ((0.0005, 1.0), (0.002, 2.0), (0.005, 2.0), (0.002, 0.0))  # (a, sqrt(b) in 8-bit units)
LEVELS = (0.1, 0.25, 0.5, 0.75, 0.9)


def load(name: str) -> np.ndarray:
    """HWC uint8 (C = 3, or 1 for gray photos)."""
    if name == "pixelift_sample":
        return sample_photo()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import skimage.data as d

        if name.startswith("motorcycle_"):
            left, right, _ = d.stereo_motorcycle()
            img = left if name.endswith("left") else right
        elif name == "lfw_faces":
            faces = d.lfw_subset()[:64]  # 25x25 gray faces, float 0..1: an 8x8 mosaic
            img = np.round(faces.reshape(8, 8, 25, 25).transpose(0, 2, 1, 3).reshape(200, 200) * 255)
        else:
            img = getattr(d, name)()
    img = np.asarray(img)
    if img.ndim == 2:
        img = img[:, :, None]
    return np.ascontiguousarray(img[:, :, :3]).astype(np.uint8)


def _stable_seed(parts: tuple[object, ...]) -> int:
    """A fixed seed per (photo, condition), independent of the run order."""
    return zlib.crc32(json.dumps([str(p) for p in parts]).encode())


def add_gaussian(img: np.ndarray, sigma8: float, s: int) -> np.ndarray:
    if sigma8 == 0:
        return img
    rng = np.random.default_rng(s)
    y = img.astype(np.float64) + rng.normal(0.0, sigma8, img.shape)
    return np.clip(np.round(y), 0, 255).astype(np.uint8)


def add_poisson_gaussian(img: np.ndarray, a: float, b: float, s: int) -> np.ndarray:
    rng = np.random.default_rng(s)
    x = img.astype(np.float64) / 255.0
    y = a * rng.poisson(x / a) + rng.normal(0.0, np.sqrt(b), x.shape)
    return np.clip(np.round(y * 255.0), 0, 255).astype(np.uint8)


def f32(u8: np.ndarray) -> np.ndarray:
    return u8.astype(np.float32) / np.float32(255.0)


def nlf8(e: NoiseEstimate, levels: np.ndarray) -> np.ndarray:
    """The fitted sigma(I), mean over channels, in 8-bit units."""
    return np.mean([e.sigma_at(levels, c) for c in range(e.channels)], axis=0) * 255.0


def median_seconds(fn, runs: int) -> float:  # type: ignore[no-untyped-def]
    fn()
    ts = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def gaussian_rows(names: tuple[str, ...], group: str) -> list[dict]:
    rows = []
    for name in names:
        img = load(name)
        for s8 in GAUSS_SIGMAS:
            e = estimate_noise(f32(add_gaussian(img, s8, _stable_seed((name, "g", s8)))))
            rows.append(
                {
                    "group": group,
                    "photo": name,
                    "shape": list(img.shape),
                    "sigma": s8,
                    "estimate": round(e.sigma * 255, 3),
                    "per_channel": [round(v * 255, 3) for v in e.sigma_channels],
                    "a": [float(v) for v in e.a],
                    "sqrt_b": [round(float(np.sqrt(v)) * 255, 3) for v in e.b],
                    "method": e.method,
                }
            )
    return rows


def pg_rows(names: tuple[str, ...], group: str) -> list[dict]:
    rows = []
    lv = np.asarray(LEVELS)
    for name in names:
        img = load(name)
        clean = f32(img)
        for a, sb8 in PG:
            b = (sb8 / 255.0) ** 2
            noisy = f32(add_poisson_gaussian(img, a, b, _stable_seed((name, "pg", a, sb8))))
            e = estimate_noise(noisy)
            est = nlf8(e, lv)
            true = np.sqrt(a * lv + b) * 255.0
            r = np.asarray([0.2, 0.8])
            ratio_est = float(np.divide(*nlf8(e, r)[::-1])) if nlf8(e, r)[0] > 0 else float("inf")
            ratio_true = float(np.sqrt((a * 0.8 + b) / (a * 0.2 + b)))
            smap = e.sigma_map(noisy)
            true_map = np.sqrt(a * clean + b)
            rows.append(
                {
                    "group": group,
                    "photo": name,
                    "a": a,
                    "sqrt_b": sb8,
                    "levels": list(LEVELS),
                    "true": [round(float(v), 3) for v in true],
                    "estimate": [round(float(v), 3) for v in est],
                    "abs_err": [round(float(v), 3) for v in np.abs(est - true)],
                    "ratio_0.8_0.2": {"true": round(ratio_true, 3), "estimate": round(ratio_est, 3)},
                    "map_mae": round(float(np.abs(smap - true_map).mean()) * 255, 3),
                    "fit": {"a": [float(v) for v in e.a], "sqrt_b": [float(np.sqrt(v)) * 255 for v in e.b]},
                }
            )
    return rows


def timing_rows(names: tuple[str, ...], runs: int) -> list[dict]:
    from PIL import Image

    rows = []
    for name in names:
        x = f32(add_gaussian(load(name), 15, 1))
        mp = x.shape[0] * x.shape[1] / 1e6
        t = median_seconds(lambda x=x: estimate_noise(x), runs)
        rows.append({"photo": name, "mp": round(mp, 3), "seconds": round(t, 4), "s_per_mp": round(t / mp, 4)})
    big = np.asarray(Image.fromarray(load("motorcycle_left")).resize((4000, 3000), Image.Resampling.BICUBIC))
    for label, noisy in (
        ("12mp_gauss15", add_gaussian(big, 15, 2)),
        ("12mp_pg_a0.002", add_poisson_gaussian(big, 0.002, (2 / 255) ** 2, 3)),
    ):
        x = f32(noisy)
        e = estimate_noise(x)
        t = median_seconds(lambda x=x: estimate_noise(x), runs)
        tm = median_seconds(lambda x=x, e=e: e.sigma_map(x), max(3, runs // 2))
        rows.append(
            {
                "photo": label,
                "mp": 12.0,
                "seconds": round(t, 4),
                "s_per_mp": round(t / 12.0, 4),
                "estimate": round(e.sigma * 255, 3),
                "sigma_map_seconds": round(tm, 4),
                "map_constant": not any(v > 0 for v in e.a),
            }
        )
    return rows


def summarize_gaussian(rows: list[dict], group: str) -> dict[str, dict[str, float]]:
    out = {}
    for s8 in GAUSS_SIGMAS:
        errs = [abs(r["estimate"] - s8) for r in rows if r["group"] == group and r["sigma"] == s8]
        bias = [r["estimate"] - s8 for r in rows if r["group"] == group and r["sigma"] == s8]
        if errs:
            out[str(s8)] = {
                "mae": round(float(np.mean(errs)), 3),
                "max": round(float(np.max(errs)), 3),
                "bias": round(float(np.mean(bias)), 3),
            }
    return out


def print_gaussian(rows: list[dict], group: str) -> None:
    names = list(dict.fromkeys(r["photo"] for r in rows if r["group"] == group))
    print(f"\nGaussian noise [{group}]: estimated sigma (8-bit units) per added sigma")
    print(f"{'photo':<22}" + "".join(f"{s:>8}" for s in GAUSS_SIGMAS))
    for n in names:
        ests = {r["sigma"]: r["estimate"] for r in rows if r["photo"] == n and r["group"] == group}
        print(f"{n:<22}" + "".join(f"{ests[s]:8.2f}" for s in GAUSS_SIGMAS))
    summ = summarize_gaussian(rows, group)
    for key in ("mae", "max", "bias"):
        label = {"mae": "mean |err|", "max": "max |err|", "bias": "mean err"}[key]
        print(f"{label:<22}" + "".join(f"{summ[str(s)][key]:8.2f}" for s in GAUSS_SIGMAS))


def summarize_pg(rows: list[dict], group: str) -> list[dict]:
    out = []
    for a, sb8 in PG:
        rs = [r for r in rows if r["group"] == group and r["a"] == a and r["sqrt_b"] == sb8]
        if not rs:
            continue
        err = np.asarray([r["abs_err"] for r in rs])
        ratios = np.asarray([r["ratio_0.8_0.2"]["estimate"] for r in rs])
        out.append(
            {
                "a": a,
                "sqrt_b": sb8,
                "true": rs[0]["true"],
                "mae": [round(float(v), 3) for v in err.mean(axis=0)],
                "max": [round(float(v), 3) for v in err.max(axis=0)],
                "ratio_true": rs[0]["ratio_0.8_0.2"]["true"],
                "ratio_est_mean": round(float(ratios.mean()), 3),
                "ratio_est_min": round(float(ratios.min()), 3),
                "ratio_est_max": round(float(ratios.max()), 3),
                "map_mae_mean": round(float(np.mean([r["map_mae"] for r in rs])), 3),
                "map_mae_max": round(float(np.max([r["map_mae"] for r in rs])), 3),
            }
        )
    return out


def print_pg(rows: list[dict], group: str) -> None:
    print(f"\nPoisson-Gaussian noise [{group}]: sigma(I) error (8-bit units) at I = {LEVELS}")
    for s in summarize_pg(rows, group):
        print(f"a={s['a']:<7} sqrt(b)={s['sqrt_b']:.0f}/255  true sigma(I) {s['true']}")
        print(f"    mean |err| {s['mae']}   max |err| {s['max']}")
        print(
            f"    sigma(0.8)/sigma(0.2): true {s['ratio_true']:.3f}, estimated mean {s['ratio_est_mean']:.3f} "
            f"[{s['ratio_est_min']:.3f} .. {s['ratio_est_max']:.3f}]   "
            f"sigma_map mean |err| {s['map_mae_mean']:.2f} (max {s['map_mae_max']:.2f})"
        )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "noise_estimation.json")
    ap.add_argument("--runs", type=int, default=7, help="timing repeats (median)")
    ap.add_argument("--quick", action="store_true", help="dev photos only, fewer timing runs")
    args = ap.parse_args()

    groups = {"dev": DEV} if args.quick else {"dev": DEV, "check": CHECK, "texture": TEXTURE}
    g_rows: list[dict] = []
    p_rows: list[dict] = []
    for group, names in groups.items():
        g_rows += gaussian_rows(names, group)
        print_gaussian(g_rows, group)
        if group != "texture":
            p_rows += pg_rows(names, group)
            print_pg(p_rows, group)
    t_rows = timing_rows(DEV, 3 if args.quick else args.runs)
    print("\nTime of estimate_noise (median), noisy photos (Gaussian sigma 15)")
    for r in t_rows:
        extra = f"   sigma_map {r['sigma_map_seconds']:.3f} s" if "sigma_map_seconds" in r else ""
        print(f"{r['photo']:<22}{r['mp']:7.2f} MP {r['seconds']:8.4f} s {r['s_per_mp']:8.4f} s/MP{extra}")

    result = {
        "gaussian": {"rows": g_rows, "summary": {g: summarize_gaussian(g_rows, g) for g in groups}},
        "poisson_gaussian": {
            "rows": p_rows,
            "summary": {g: summarize_pg(p_rows, g) for g in groups if g != "texture"},
        },
        "timing": t_rows,
        "groups": {g: list(n) for g, n in groups.items()},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
