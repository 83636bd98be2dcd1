"""Pick the default photo model by measured quality per second (CPU, onnxruntime).

For each photo upscaler in the zoo: downscale real photos (scikit-image) by the model's
scale with bicubic, upscale back with the model, and score PSNR against the original,
next to bicubic's own PSNR. Time a 128 px input on onnxruntime CPU (median of runs).

    python -m bench.quality_per_second [--runs 5] [--json out.json]

Quality per second = (PSNR gain over bicubic, dB) / (seconds per input megapixel).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np
from PIL import Image

from pixelift import models
from pixelift.export import to_onnx
from pixelift.metrics import psnr
from pixelift.providers import get_provider

PHOTOS = ("astronaut", "chelsea", "coffee", "rocket")
CROP = 192


def _photos() -> list[np.ndarray]:
    import skimage.data

    out = []
    for name in PHOTOS:
        img = getattr(skimage.data, name)()[..., :3]
        h, w = img.shape[:2]
        out.append(img[(h - CROP) // 2 : (h + CROP) // 2, (w - CROP) // 2 : (w + CROP) // 2])
    return out


def _to_nchw(img: np.ndarray) -> np.ndarray:
    return img.transpose(2, 0, 1)[None].astype(np.float32) / 255.0


def _to_u8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x[0].transpose(1, 2, 0) * 255), 0, 255).astype(np.uint8)


def measure(model_id: str, runs: int) -> dict[str, float | str]:
    spec = models.get(model_id)
    art = to_onnx(spec)
    sess = get_provider("cpu").open(art.path)
    s = spec.scale
    gains, model_db, bicubic_db = [], [], []
    for hr in _photos():
        lr = np.asarray(Image.fromarray(hr).resize((CROP // s, CROP // s), Image.Resampling.BICUBIC))
        sr = _to_u8(sess.run(_to_nchw(lr)))
        bic = np.asarray(Image.fromarray(lr).resize((CROP, CROP), Image.Resampling.BICUBIC))
        m, b = psnr(sr / 255.0, hr / 255.0), psnr(bic / 255.0, hr / 255.0)
        model_db.append(m)
        bicubic_db.append(b)
        gains.append(m - b)
    tile = _to_nchw(_photos()[0][:128, :128])
    sess.run(tile)  # warm-up
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        sess.run(tile)
        times.append(time.perf_counter() - t0)
    sec = statistics.median(times)
    s_per_mp = sec / (128 * 128 / 1e6)
    gain = statistics.mean(gains)
    return {
        "model": model_id,
        "scale": s,
        "psnr_db": round(statistics.mean(model_db), 2),
        "bicubic_db": round(statistics.mean(bicubic_db), 2),
        "gain_db": round(gain, 2),
        "s_per_128px": round(sec, 4),
        "s_per_input_mp": round(s_per_mp, 1),
        "gain_db_per_s_mp": round(gain / s_per_mp, 4),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--json", dest="json_path")
    ap.add_argument("--models", nargs="*", help="default: every photo upscaler in the zoo")
    args = ap.parse_args()
    ids = args.models or [s.id for s in models.REGISTRY if s.content == "photo" and s.scale > 1]
    rows = [measure(i, args.runs) for i in ids]
    rows.sort(key=lambda r: -float(r["gain_db_per_s_mp"]))
    cols = list(rows[0])
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for r in rows:
        print("| " + " | ".join(str(r[c]) for c in cols) + " |")
    if args.json_path:
        with open(args.json_path, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
