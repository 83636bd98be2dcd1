"""Compare images: PSNR, SSIM, max abs error, a difference heatmap and a crop sheet."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw


def load(path: Path | str) -> np.ndarray:
    """HWC float64 in 0..255 (RGB; 16-bit images are scaled to 0..255)."""
    with Image.open(path) as im:
        a = np.asarray(im)
        if a.dtype == np.uint16 or im.mode in ("I;16", "I"):
            return np.atleast_3d(a.astype(np.float64) / 257.0)[..., :3]
        return np.asarray(im.convert("RGB"), np.float64)


def _gauss(sigma: float = 1.5, truncate: float = 3.5) -> np.ndarray:
    r = int(truncate * sigma + 0.5)
    k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    return k / k.sum()


def _filt(x: np.ndarray, k: np.ndarray) -> np.ndarray:
    """Separable 'valid' filter over the first two axes."""
    n = len(k)
    h, w = x.shape[:2]
    rows = sum(k[i] * x[i : h - n + 1 + i] for i in range(n))
    return sum(k[i] * rows[:, i : w - n + 1 + i] for i in range(n))


def ssim(a: np.ndarray, b: np.ndarray, data_range: float = 255.0) -> float:
    """Gaussian-window SSIM (Wang et al. 2004; sigma 1.5, K1 .01, K2 .03), mean over channels;
    the same numbers as skimage's structural_similarity(gaussian_weights=True,
    use_sample_covariance=False)."""
    a, b = np.atleast_3d(np.asarray(a, np.float64)), np.atleast_3d(np.asarray(b, np.float64))
    k = _gauss()
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    ma, mb = _filt(a, k), _filt(b, k)
    va = _filt(a * a, k) - ma * ma
    vb = _filt(b * b, k) - mb * mb
    cov = _filt(a * b, k) - ma * mb
    s = ((2 * ma * mb + c1) * (2 * cov + c2)) / ((ma * ma + mb * mb + c1) * (va + vb + c2))
    return float(s.mean())


def metrics(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    if a.shape != b.shape:
        raise ValueError(f"size mismatch: {a.shape[1]}x{a.shape[0]} vs {b.shape[1]}x{b.shape[0]}")
    mse = float(np.mean((a - b) ** 2))
    return {
        "psnr_db": float("inf") if mse == 0 else float(10 * np.log10(255.0**2 / mse)),
        "ssim": ssim(a, b),
        "max_abs": float(np.max(np.abs(a - b))),
        "mean_abs": float(np.mean(np.abs(a - b))),
    }


def heatmap(a: np.ndarray, b: np.ndarray, path: Path | str) -> float:
    """Write |a - b| (mean over channels) as a colour heatmap; returns the value of full scale."""
    d = np.abs(a - b).mean(axis=2)
    top = float(max(d.max(), 1e-9))
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        h, w = d.shape
        fig, ax = plt.subplots(figsize=(min(12, 2 + 6 * w / max(h, w)), min(10, 0.5 + 6 * h / max(h, w))))
        im = ax.imshow(d, cmap="inferno", vmin=0, vmax=top, interpolation="nearest")
        ax.set_axis_off()
        fig.colorbar(im, ax=ax, label="|difference| (0..255 scale)")
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)
    except ImportError:  # no matplotlib: grey levels
        Image.fromarray(np.uint8(np.clip(d / top * 255, 0, 255))).save(path)
    return top


def _to_u8(x: np.ndarray) -> Image.Image:
    return Image.fromarray(np.uint8(np.clip(np.rint(x), 0, 255)))


def crop_sheet(
    images: list[tuple[str, np.ndarray]],
    path: Path | str,
    *,
    crop: int = 96,
    zoom: int = 4,
    focus: np.ndarray | None = None,
) -> tuple[int, int]:
    """Side by side, the same crop of each image, nearest-zoomed; the crop is centred on the
    largest difference in ``focus`` (HW) if given. Smaller images (an input) are scaled up
    to the size of the largest first. Returns the crop's (top, left) in output pixels."""
    hh = max(im.shape[0] for _, im in images)
    ww = max(im.shape[1] for _, im in images)
    c = min(crop, hh, ww)
    if focus is not None:
        y, x = np.unravel_index(int(np.argmax(focus)), focus.shape)
    else:
        y, x = hh // 2, ww // 2
    top, left = int(np.clip(y - c // 2, 0, hh - c)), int(np.clip(x - c // 2, 0, ww - c))
    tiles = []
    for name, im in images:
        pil = _to_u8(im)
        if pil.size != (ww, hh):
            pil = pil.resize((ww, hh), Image.Resampling.NEAREST)
        tile = pil.crop((left, top, left + c, top + c)).resize((c * zoom, c * zoom), Image.Resampling.NEAREST)
        tiles.append((name, tile))
    pad, label_h = 6, 18
    sheet = Image.new("RGB", (len(tiles) * (c * zoom + pad) + pad, c * zoom + label_h + 2 * pad), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for i, (name, tile) in enumerate(tiles):
        x0 = pad + i * (c * zoom + pad)
        sheet.paste(tile, (x0, pad + label_h))
        draw.text((x0, pad), name[:40], fill=(0, 0, 0))
    sheet.save(path)
    return top, left


def compare(
    reference: Path | str,
    others: list[Path | str],
    *,
    heatmap_path: Path | str | None = None,
    sheet_path: Path | str | None = None,
    input_path: Path | str | None = None,
) -> dict[str, Any]:
    ref = load(reference)
    out: dict[str, Any] = {"reference": str(reference), "results": []}
    loaded = []
    for p in others:
        b = load(p)
        out["results"].append({"image": str(p), **metrics(ref, b)})
        loaded.append((Path(p).name, b))
    if heatmap_path and loaded:
        out["heatmap"] = str(heatmap_path)
        out["heatmap_full_scale"] = heatmap(ref, loaded[0][1], heatmap_path)
    if sheet_path:
        images = ([("input", load(input_path))] if input_path else []) + [(Path(reference).name, ref), *loaded]
        focus = np.abs(ref - loaded[0][1]).mean(axis=2) if loaded else None
        if focus is not None:
            k = np.ones(9) / 9
            focus = np.pad(_filt(focus[..., None], k)[..., 0], 4)
        out["sheet"] = str(sheet_path)
        out["crop_top_left"] = crop_sheet(images, sheet_path, focus=focus)
    return out
