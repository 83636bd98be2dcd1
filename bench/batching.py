"""Does batching tiles per inference call help? Measure it, per provider and model.

    python -m bench.batching [--tile 128] [--runs 3]

Runs the same 8 equal tiles (real photo crops) as 8 calls of batch 1, 4 calls of
batch 2 and 2 calls of batch 4; prints the median seconds per tile and the ratio to batch 1.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from pixelift.export import to_onnx
from pixelift.providers import get_provider
from pixelift.samples import photo_crop, to_chw

MODELS = ("span-x2-ch48", "realesrgan-animevideov3-x4", "waifu2x-photo-x2")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tile", type=int, default=128)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--models", nargs="*", default=list(MODELS))
    args = ap.parse_args()
    t = args.tile
    tiles = np.stack([to_chw(photo_crop(t, t, top=(i // 4) * 64, left=(i % 4) * 48)) for i in range(8)])
    print(f"| model | provider | s/tile b1 | s/tile b2 | s/tile b4 | b2 vs b1 | b4 vs b1 |  (tile {t} px)")
    print("|---|---|---|---|---|---|---|")
    for mid in args.models:
        path = to_onnx(mid).path
        for prov in ("cpu", "openvino"):
            sess = get_provider(prov).open(path)
            per_tile = {}
            for b in (1, 2, 4):
                sess.run(tiles[:b])  # warm-up for this shape
                runs = []
                for _ in range(args.runs):
                    t0 = time.perf_counter()
                    for i in range(0, 8, b):
                        sess.run(tiles[i : i + b])
                    runs.append((time.perf_counter() - t0) / 8)
                per_tile[b] = statistics.median(runs)
            r2, r4 = per_tile[1] / per_tile[2], per_tile[1] / per_tile[4]
            print(
                f"| {mid} | {prov} | {per_tile[1]:.4f} | {per_tile[2]:.4f} | {per_tile[4]:.4f} | {r2:.2f}x | {r4:.2f}x |"
            )


if __name__ == "__main__":
    main()
