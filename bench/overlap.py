"""Overlap per architecture: tiled vs whole-image PSNR through the Enhancer, per overlap.

    python -m bench.overlap [--models a,b] [--overlaps 0,4,8,...] [--tiles 48,64,96] [--out bench/results/overlap.json]

Each model runs on real photo crops (scikit-image's astronaut, chelsea, coffee, rocket)
through :class:`pixelift.runtime.enhancer.Enhancer` on onnxruntime CPU at fp32, once
whole (``tile=None``) and once per overlap with small tiles, so that many seams cross
the crop (a worst case: a photo's real tiles are far larger, so fewer pixels lie near a
seam). The chosen overlap of an architecture is the smallest whose *worst* crop holds
``--gate`` dB (default 55: 5 dB above the 50 dB the runtime promises). SE models run
synced (whole-image SE means), as the runtime runs them.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from pixelift import models
from pixelift.metrics import psnr

#: one model per architecture
DEFAULT_MODELS = (
    "span-x2-ch48",
    "realesrgan-animevideov3-x4",
    "realesrgan-x4plus",
    "waifu2x-photo-x2",
    "waifu2x-cunet-x1-noise1",
    "realcugan-se-x2",
    "ffdnet-rgb",
)
#: colour photos, a gray one and a star field: on 4 colour crops alone SPAN's 2 px held 60 dB (60.15), and
#: other crops then showed seams at 53-57 dB
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "camera", "hubble_deep_field")


@dataclass(frozen=True)
class Row:
    model: str
    architecture: str
    overlap: int
    min_db: float
    mean_db: float
    overhead_12mp_tile512: float


def crop(name: str, h: int, w: int) -> np.ndarray:
    import skimage.data

    img = getattr(skimage.data, name)()
    img = np.repeat(img[..., None], 3, axis=2) if img.ndim == 2 else img[..., :3]
    top, left = (img.shape[0] - h) // 3, (img.shape[1] - w) // 3
    return np.ascontiguousarray(img[top : top + h, left : left + w]).astype(np.float32) / 255.0


def main() -> None:
    from pixelift.runtime import tiling
    from pixelift.runtime.enhancer import Enhancer, TileOptions

    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default=",".join(DEFAULT_MODELS))
    ap.add_argument("--overlaps", default="0,2,4,8,12,16,24,32,48")
    ap.add_argument("--tiles", default="48,64,96", help="tile sizes: seams fall at other places in each")
    ap.add_argument("--size", default="192x256", help="crop HxW")
    ap.add_argument("--gate", type=float, default=55.0)
    ap.add_argument("--out", type=Path, default=Path("bench/results/overlap.json"))
    a = ap.parse_args()
    h, w = (int(v) for v in a.size.split("x"))
    overlaps = [int(v) for v in a.overlaps.split(",")]
    tiles = [int(v) for v in a.tiles.split(",")]
    rows: list[Row] = []
    chosen: dict[str, int | None] = {}
    for model_id in a.models.split(","):
        spec = models.get(model_id)
        crops = [crop(p, h, w) for p in PHOTOS]
        noise = 15.0 if spec.architecture == "FFDNet" else None  # a fixed map: the comparison is of tiling only
        opts = dict(provider="cpu", precision="fp32", denoise=noise)
        whole = [Enhancer(model_id, tiles=TileOptions(tile=None), **opts).enhance(c) for c in crops]  # type: ignore[arg-type]
        pick = None
        for ov in overlaps:
            dbs = []
            for tile in tiles:
                enh = Enhancer(model_id, tiles=TileOptions(tile=tile, overlap=ov), **opts)  # type: ignore[arg-type]
                dbs += [min(psnr(enh.enhance(c), ref), 200.0) for c, ref in zip(crops, whole, strict=True)]
            big = tiling.plan_tiles(3000, 4000, tile=512, overlap=ov, alignment=spec.alignment).overhead
            row = Row(model_id, spec.architecture, ov, round(min(dbs), 2), round(float(np.mean(dbs)), 2), round(big, 4))
            rows.append(row)
            print(row, flush=True)
            if pick is None and row.min_db >= a.gate:
                pick = ov
                break
        chosen[spec.architecture] = pick
        print(f"{spec.architecture}: overlap {pick} holds {a.gate} dB on every crop", flush=True)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(
        json.dumps(
            {
                "tiles": tiles,
                "crop": [h, w],
                "photos": PHOTOS,
                "gate_db": a.gate,
                "chosen": chosen,
                "rows": [asdict(r) for r in rows],
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
