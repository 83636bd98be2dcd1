"""Blind noise estimation for FFDNet's noise-level map (numpy only; never imports torch).

FFDNet denoises an image *given* the noise level per pixel and channel (sigma in 0..1
units, ``sigma_8bit / 255``). This module measures that level from the image alone, as a
noise-level function (NLF) per channel: the Poisson-Gaussian model of a camera sensor,
``sigma^2(I) = a * I + b`` (``a >= 0``: signal-dependent shot noise; ``b >= 0``: read noise,
or added Gaussian noise, for which ``a = 0``).

Method (:func:`estimate_noise`)
    1. **Orthogonal block split.** The image is cut into 8x8 blocks and each block is
       expanded in the separable 8-point discrete Chebyshev (Gram) polynomial basis, which
       is orthonormal: white noise of std sigma gives every coefficient std sigma. The 64
       coefficients are split three ways. *Smooth* (order <= 2 along both axes): shading,
       ignored. *Residual* (order >= 5 along both axes, 9 coefficients): these annihilate
       every polynomial of degree <= 4 along either axis (flat areas, ramps, curvature,
       edges along rows or columns), so they carry noise and little image; their mean square
       is the block's noise variance, chi-square with 9 degrees of freedom. *Texture* (the
       other 46): the block's texture score.
    2. **Selection without selection bias.** Residual and texture coefficients are
       orthogonal, so under Gaussian noise they are statistically independent: keeping the
       least textured blocks (lowest quarter per intensity bin) removes edges and texture
       without preferring blocks whose noise happened to be low, the downward bias of
       "lowest local variance" estimators.
    3. **Bins.** Blocks are binned by their mean (up to 16 bins over 0..1); a bin's variance
       is the median over its kept blocks divided by the median of chi-square_9 / 9, so the
       textured blocks left over do not pull it up.
    4. **Quantisation.** 8-bit data carries rounding noise of variance ``q^2 / 12`` (sigma =
       0.29 / 255) that is not noise to remove (the grid, 8 or 16 bit, is detected from the
       values). It is in every bin alike, so step 6 fits ``var - q^2 / 12`` over the bins
       without clamping each bin at 0 (which would bias bins reading below it, e.g.
       JPEG-smoothed areas, upwards): clean photos read ~0.
    5. **Clipping.** Near black and white, noisy values were clipped, which shrinks both the
       variance and the distance of the mean to the bound. Each bin's (mean, variance) is
       mapped back through the moments of a clipped Gaussian; bins that kept under 30 % of
       their variance are left out and the others are weighted by what they kept. Clipping
       also breaks the independence of step 2 (the most clipped blocks look the least
       textured), so a bin where clipping took over 5 % of the variance uses all its blocks.
    6. **Fit.** ``sigma^2 = a I + b`` by weighted non-negative least squares over the bins
       (weights: blocks over the variance of a variance estimate), iterated with bins far
       above the line down-weighted: texture only ever adds variance.

    Images under ~48 x 48 px fall back to one global MAD estimate of the orthonormal 2x2
    Haar diagonal detail (``median|HH| / 0.6745``) per channel, with ``a = 0``. Above 1 MP,
    evenly spaced strips of block rows (1 MP in all) are analysed: 12 MP takes ~0.05-0.1 s.

The map (:meth:`NoiseEstimate.sigma_map`)
    The NLF is evaluated on a box-blurred copy of the image at 1/4 resolution (a ~12 px
    window, so the noise does not modulate the map), clipped to ``0 .. MAX_SIGMA`` (75 / 255,
    FFDNet's training range) and upsampled bilinearly; with ``a = 0`` the map is constant.

Limitations: this measures the white-noise-equivalent sigma at the finest scale. Camera
noise that was demosaiced, denoised or JPEG-compressed is spatially correlated, has less
energy at that scale and reads lower than its per-pixel std. Grain already in a "clean"
photo is noise here too (scikit-image's astronaut reads ~1.4 / 255). Where an image has no
smooth area in some intensity range, that range's bins carry texture and are only
down-weighted; the slope ``a`` needs a spread of smooth intensities to be identifiable.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["MAX_SIGMA", "NoiseEstimate", "constant_map", "estimate_noise"]

#: Upper clip of every map: FFDNet was trained for sigma in 0..75 (8-bit units).
MAX_SIGMA = 75.0 / 255.0

# --- blocks ---------------------------------------------------------------------------
_BLOCK = 8  # block side (px); each block is expanded in the 8-point Chebyshev basis
_SMOOTH_ORDER = 2  # orders <= this along both axes: shading, never texture or noise
_RES_ORDER = 5  # orders >= this along both axes: the noise probe (3 x 3 = 9 coefficients)
_MIN_BLOCKS = 36  # fewer blocks than this (below ~48 x 48 px): global MAD fallback
_MAX_SAMPLED_PX = 1_000_000  # larger images: evenly spaced strips of block rows
_STRIP_ROWS = 4  # block rows per sampled strip

# --- binning and selection -----------------------------------------------------------
_MAX_BINS = 16
_MIN_PER_BIN = 12  # fewer blocks in an intensity bin: the bin is skipped
_KEEP_FRACTION = 0.25  # least textured fraction of each bin kept
_MIN_KEEP = 8

# --- clipping and fit ----------------------------------------------------------------
_CLIP_ALL = 0.95  # bins where clipping kept less of the variance use all their blocks
_MIN_RETENTION = 0.3  # bins where clipping kept less than this are left out
_OUTLIER_RATIO = 1.5  # bins above this multiple of the fitted variance are down-weighted
_FIT_ITERATIONS = 4


def _gram_basis(k: int) -> np.ndarray:
    """Orthonormal discrete Chebyshev (Gram) polynomials on ``k`` points, one per row
    (row ``n`` has degree ``n`` and is orthogonal to every polynomial of lower degree)."""
    t = np.arange(k, dtype=np.float64) - (k - 1) / 2
    v = np.vander(t, k, increasing=True)  # monomials 1, t, t^2, ...
    q, r = np.linalg.qr(v)
    return np.asarray((q * np.sign(np.diag(r))).T, dtype=np.float64)


_BASIS = _gram_basis(_BLOCK).astype(np.float32)


@dataclass(frozen=True)
class NoiseEstimate:
    """Per-channel noise-level function ``sigma^2(I) = a * I + b`` (0..1 units).

    ``sigma_channels`` is the NLF at each channel's mean intensity and ``sigma`` their root
    mean square: the one number to use where a single level is wanted. ``method`` is
    ``"nlf"`` (binned fit), ``"global"`` (small-image MAD fallback) or ``"none"`` (no
    samples at all, e.g. smaller than 2x2). ``quantization`` is the step whose rounding noise
    was discounted (1/255 for 8-bit data, 0 when the values are not on a coarse grid).
    ``bins`` is the number of intensity bins the fit used (the most of any channel).
    """

    a: tuple[float, ...]
    b: tuple[float, ...]
    sigma_channels: tuple[float, ...]
    sigma: float
    method: str
    quantization: float
    bins: int = 0

    @property
    def channels(self) -> int:
        return len(self.a)

    def sigma_at(self, intensity: float | np.ndarray, channel: int = 0) -> np.ndarray:
        """The NLF of ``channel`` at ``intensity`` (0..1), unclipped."""
        i = np.clip(np.asarray(intensity, dtype=np.float64), 0.0, 1.0)
        return np.sqrt(np.maximum(self.a[channel] * i + self.b[channel], 0.0))

    def sigma_map(self, image: np.ndarray, strength: float = 1.0) -> np.ndarray:
        """HWC float32 sigma per pixel and channel for ``image`` (HWC, 0..1), times ``strength``.

        The NLF is evaluated on a blurred copy (box mean over ~12 px): the map should follow
        the scene's brightness, not the noise riding on it. ``strength`` scales sigma
        linearly (> 1 denoises harder); the result is clipped to ``0 .. MAX_SIGMA``.
        A gray estimate (one channel) applies to every channel of the image; otherwise the
        channel counts must match.
        """
        x = _as_hwc(image)
        h, w, c = x.shape
        if not math.isfinite(strength) or strength < 0:
            raise ValueError(f"strength must be finite and >= 0, got {strength}")
        if self.channels not in (1, c):
            raise ValueError(f"estimate has {self.channels} channels, image has {c}")
        a = np.resize(np.asarray(self.a, dtype=np.float32), c)
        b = np.resize(np.asarray(self.b, dtype=np.float32), c)
        if not np.any(a > 0) or h == 0 or w == 0:  # signal-independent: constant per channel
            return constant_map((h, w, c), [float(v) * strength for v in np.sqrt(b)])
        smooth = _blur_small(x)
        if self.channels == 1 and c > 1:
            smooth = smooth.mean(axis=2, keepdims=True)
        small = np.sqrt(np.maximum(a * np.clip(smooth, 0.0, 1.0) + b, 0.0)) * np.float32(strength)
        # clip before upsampling: bilinear weights are convex, so the range is kept
        return _upsample(np.clip(small, 0.0, MAX_SIGMA).astype(np.float32), h, w)


def constant_map(shape: Sequence[int], sigma: float | Sequence[float]) -> np.ndarray:
    """HWC float32 map of constant sigma (0..1 units), clipped to ``0 .. MAX_SIGMA``.

    ``shape`` is ``(H, W, C)``, or ``(H, W)`` for one channel per value of ``sigma``
    (one channel when ``sigma`` is a number). ``sigma`` is one value or one per channel.
    """
    sig = np.atleast_1d(np.asarray(sigma, dtype=np.float64))
    if sig.ndim != 1 or sig.size == 0 or not np.all(np.isfinite(sig)) or np.any(sig < 0):
        raise ValueError(f"sigma must be finite and >= 0 (one value or one per channel), got {sigma!r}")
    dims = tuple(int(s) for s in shape)
    if len(dims) == 2:
        dims = (*dims, sig.size)
    if len(dims) != 3 or min(dims) < 0:
        raise ValueError(f"shape must be (H, W) or (H, W, C), got {tuple(shape)}")
    if sig.size not in (1, dims[2]):
        raise ValueError(f"{sig.size} sigma values for {dims[2]} channels")
    vals = np.clip(np.broadcast_to(sig, (dims[2],)), 0.0, MAX_SIGMA).astype(np.float32)
    return np.broadcast_to(vals, dims).copy()


def estimate_noise(
    image: np.ndarray, quantization: float | None = None, *, mask: np.ndarray | None = None
) -> NoiseEstimate:
    """Estimate each channel's noise-level function from ``image`` alone.

    ``image`` is HWC (or HW) float in 0..1; integer images are scaled by their dtype's
    maximum. ``quantization`` is the step of the data's grid whose rounding noise is not
    to be counted as noise; ``None`` detects 8 and 16 bit grids from the values. ``mask``
    (HW bool): only blocks wholly inside it count (the visible part of a transparent image,
    whose hidden colour is often flat and would read as noiseless).
    See the module docstring for the method.
    """
    x = _as_hwc(image)
    q = _detect_quantization(x) if quantization is None else float(quantization)
    qvar = q * q / 12.0
    h, w, c = x.shape
    bs = _BLOCK
    if mask is not None and mask.shape != (h, w):
        raise ValueError(f"mask is {mask.shape}, the image {(h, w)}")
    keep = None if mask is None else _block_mask(mask)
    if (h // bs) * (w // bs) < _MIN_BLOCKS or (keep is not None and int(keep.sum()) < _MIN_BLOCKS):
        return _global_estimate(x, q, mask)

    means, nvar, tex = _block_stats(x)
    if keep is not None:
        means, nvar, tex = means[keep], nvar[keep], tex[keep]
    if not (np.all(np.isfinite(means)) and np.all(np.isfinite(nvar)) and np.all(np.isfinite(tex))):
        raise ValueError("image has non-finite values")
    a_s: list[float] = []
    b_s: list[float] = []
    n_bins = 0
    samples = (_BLOCK - _RES_ORDER) ** 2
    for ch in range(c):
        bins = _bin_channel(means[:, ch], nvar[:, ch], tex[:, ch], samples)
        n_bins = max(n_bins, bins.i_sel.size)
        a, b = _fit_nlf(bins, samples, qvar)
        a_s.append(a)
        b_s.append(b)
    return _finish(means.mean(axis=0, dtype=np.float64), a_s, b_s, "nlf", q, n_bins)


# --- internals --------------------------------------------------------------------------


def _as_hwc(image: np.ndarray) -> np.ndarray:
    x = np.asarray(image)
    if x.ndim == 2:
        x = x[:, :, None]
    if x.ndim != 3 or x.shape[2] == 0:
        raise ValueError(f"expected an HWC or HW image, got shape {x.shape}")
    if np.issubdtype(x.dtype, np.integer):
        return x.astype(np.float32) / np.float32(np.iinfo(x.dtype).max)
    if x.dtype != np.float32:
        return x.astype(np.float32)
    return x


def _detect_quantization(x: np.ndarray) -> float:
    """1/255 or 1/65535 when a sample of values sits on that grid, else 0."""
    flat = x.reshape(-1)
    step = max(1, flat.size // 65536)
    s = flat[::step].astype(np.float64)
    for levels in (255.0, 65535.0):
        v = s * levels
        # float32 holds k / 65535 to ~0.008 of a level; random data is never this close
        if np.all(np.abs(v - np.round(v)) < 0.02):
            return 1.0 / levels
    return 0.0


def _finish(mean: np.ndarray, a_s: list[float], b_s: list[float], method: str, q: float, bins: int) -> NoiseEstimate:
    sig = [math.sqrt(max(a * float(m) + b, 0.0)) for a, b, m in zip(a_s, b_s, mean, strict=True)]
    overall = math.sqrt(sum(s * s for s in sig) / len(sig))
    return NoiseEstimate(
        a=tuple(float(v) for v in a_s),
        b=tuple(float(v) for v in b_s),
        sigma_channels=tuple(sig),
        sigma=overall,
        method=method,
        quantization=q,
        bins=bins,
    )


def _block_mask(mask: np.ndarray) -> np.ndarray:
    """Per block, in :func:`_block_stats`' order: whether every pixel of it is in ``mask``."""
    bs = _BLOCK
    h, w = mask.shape
    parts = []
    for r0, r1 in _strips(h, w):
        m = mask[r0:r1]
        nby, nbx = m.shape[0] // bs, w // bs
        if nby > 0 and nbx > 0:
            parts.append(m[: nby * bs, : nbx * bs].reshape(nby, bs, nbx, bs).all(axis=(1, 3)).reshape(-1))
    return np.concatenate(parts) if parts else np.zeros(0, bool)


def _global_estimate(x: np.ndarray, q: float, mask: np.ndarray | None = None) -> NoiseEstimate:
    """Small images: MAD of the orthonormal 2x2 Haar diagonal detail, per channel, a = 0 (over the
    2x2 cells wholly inside ``mask``, when given)."""
    h, w, c = x.shape
    h2, w2 = h // 2 * 2, w // 2 * 2
    if h2 == 0 or w2 == 0:
        return _finish(_channel_mean(x), [0.0] * c, [0.0] * c, "none", q, 0)
    y = x[:h2, :w2].astype(np.float64)
    if not np.all(np.isfinite(y)):
        raise ValueError("image has non-finite values")
    hh = ((y[0::2, 0::2] - y[0::2, 1::2] - y[1::2, 0::2] + y[1::2, 1::2]) * 0.5).reshape(-1, c)
    if mask is not None:
        cells = mask[:h2, :w2].reshape(h2 // 2, 2, w2 // 2, 2).all(axis=(1, 3)).reshape(-1)
        if not cells.any():
            return _finish(_channel_mean(x), [0.0] * c, [0.0] * c, "none", q, 0)
        hh = hh[cells]
    mad = np.median(np.abs(hh), axis=0) / 0.6745
    b = np.maximum(mad * mad - q * q / 12.0, 0.0)
    return _finish(_channel_mean(x), [0.0] * c, [float(v) for v in b], "global", q, 0)


def _channel_mean(x: np.ndarray) -> np.ndarray:
    if x.size == 0:
        return np.zeros(x.shape[2])
    return np.asarray(x.reshape(-1, x.shape[2]).mean(axis=0, dtype=np.float64))


def _strips(h: int, w: int) -> list[tuple[int, int]]:
    """Pixel-row ranges to analyse: the whole image, or (large images) evenly spaced strips
    of ``_STRIP_ROWS`` block rows, so at most ``_MAX_SAMPLED_PX`` pixels are read."""
    bs = _BLOCK
    nby = h // bs
    if h * w <= _MAX_SAMPLED_PX:
        return [(0, h)]
    n_strips = -(-nby // _STRIP_ROWS)
    want = max(1, min(n_strips, _MAX_SAMPLED_PX // (w * bs * _STRIP_ROWS)))
    out = []
    for st in np.unique(np.linspace(0, n_strips - 1, want).round().astype(np.int64)):
        r0 = int(st) * _STRIP_ROWS * bs
        r1 = min(h, r0 + _STRIP_ROWS * bs)
        out.append((r0, r1))
    return out


def _block_stats(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per block and channel: mean, residual variance, texture score (all strips)."""
    parts = [_strip_stats(x[r0:r1]) for r0, r1 in _strips(x.shape[0], x.shape[1])]
    parts = [p for p in parts if p[0].size]
    if not parts:
        c = x.shape[2]
        return np.zeros((0, c), np.float32), np.zeros((0, c), np.float32), np.zeros((0, c), np.float32)
    return tuple(np.concatenate(z, axis=0) for z in zip(*parts, strict=True))  # type: ignore[return-value]


def _strip_stats(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    bs = _BLOCK
    h, w, c = x.shape
    nby, nbx = h // bs, w // bs
    if nby <= 0 or nbx <= 0:
        z = np.zeros((0, c), np.float32)
        return z, z, z
    xs = x[: nby * bs, : nbx * bs]
    # separable transform of every block, as two GEMMs on contiguous memory: along x with
    # kron(B, I_c) on each row's (px, C) run, then along y with B on each block row
    kx = _kron_basis(c)
    rows = xs.reshape(nby * bs * nbx, bs * c)
    y = np.empty((nby, bs, nbx * bs * c), np.float32)
    _small_gemms(rows, kx.T, y.reshape(nby * bs * nbx, bs * c))
    z = np.empty_like(y)
    for i in range(nby):  # (L x bs) @ (bs x bs) with the transposed views: no copies
        _small_gemms(y[i].T, _BASIS.T, z[i].T)
    y = z.reshape(nby, bs, nbx, bs, c)  # (block row, v, block col, u, C)
    e = y * y
    r0, s1 = _RES_ORDER, _SMOOTH_ORDER + 1
    total = e.sum(axis=(1, 3))
    res = e[:, r0:, :, r0:].sum(axis=(1, 3))
    smooth = e[:, :s1, :, :s1].sum(axis=(1, 3))
    nres = (bs - r0) ** 2
    ntex = bs * bs - nres - s1 * s1
    nvar = res / np.float32(nres)
    tex = np.maximum(total - smooth - res, 0.0) / np.float32(ntex)
    bmean = y[:, 0, :, 0] / np.float32(bs)
    return bmean.reshape(-1, c), nvar.reshape(-1, c), tex.reshape(-1, c)


#: rows per GEMM call: OpenBLAS runs a GEMM single-threaded below m * n * k = 262144, and
#: its threads only cost here (thin matrices; on a loaded 2-core machine the threaded
#: calls were 6x slower than one thread)
_GEMM_MNK = 200_000


def _small_gemms(a: np.ndarray, b: np.ndarray, out: np.ndarray) -> None:
    """``out = a @ b`` in row chunks small enough that BLAS does not spawn threads."""
    step = max(1, _GEMM_MNK // (b.shape[0] * b.shape[1]))
    for r in range(0, a.shape[0], step):
        np.matmul(a[r : r + step], b, out=out[r : r + step])


@functools.cache
def _kron_basis(c: int) -> np.ndarray:
    return np.kron(_BASIS, np.eye(c, dtype=np.float32)).astype(np.float32)


def _chi2_median_factor(dof: int) -> float:
    """median(chi2_dof) / dof (Wilson-Hilferty)."""
    return float((1.0 - 2.0 / (9.0 * dof)) ** 3)


@dataclass(frozen=True)
class _Bins:
    """Per intensity bin, for the least textured blocks (``sel``) and for all (``all``):
    mean intensity, residual variance (chi-square-corrected median), blocks used."""

    i_sel: np.ndarray
    v_sel: np.ndarray
    n_sel: np.ndarray
    i_all: np.ndarray
    v_all: np.ndarray
    n_all: np.ndarray


def _bin_channel(mean: np.ndarray, nvar: np.ndarray, tex: np.ndarray, samples: int) -> _Bins:
    nbins = int(min(_MAX_BINS, max(1, mean.size // (_MIN_PER_BIN * 4))))
    idx = np.minimum((np.clip(mean, 0.0, 1.0) * nbins).astype(np.int64), nbins - 1)
    order = np.argsort(idx, kind="stable")
    bounds = np.searchsorted(idx[order], np.arange(nbins + 1))
    corr = _chi2_median_factor(samples)
    rows: list[tuple[float, float, int, float, float, int]] = []
    for bi in range(nbins):
        allb = order[bounds[bi] : bounds[bi + 1]]
        if allb.size < _MIN_PER_BIN:
            continue
        keep = max(_MIN_KEEP, math.ceil(_KEEP_FRACTION * allb.size))
        sel = allb[np.argpartition(tex[allb], keep - 1)[:keep]] if keep < allb.size else allb
        rows.append(
            (
                float(mean[sel].mean()),
                float(np.median(nvar[sel])) / corr,
                sel.size,
                float(mean[allb].mean()),
                float(np.median(nvar[allb])) / corr,
                allb.size,
            )
        )
    cols = np.asarray(rows, dtype=np.float64).reshape(-1, 6).T
    return _Bins(*cols)


# --- clipped Gaussian moments --------------------------------------------------------


def _ncdf(z: np.ndarray) -> np.ndarray:
    """Standard normal CDF via erfc (Abramowitz-Stegun 7.1.26, |error| < 1.5e-7, and relative
    in the tails since the approximation carries the exp(-x^2) factor)."""
    x = np.abs(z) / math.sqrt(2.0)
    t = 1.0 / (1.0 + 0.3275911 * x)
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))))
    half_erfc = 0.5 * poly * np.exp(-x * x)
    return np.where(z >= 0, 1.0 - half_erfc, half_erfc)


def _npdf(z: np.ndarray) -> np.ndarray:
    return np.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi)


def _clipped_moments(mu: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean and variance of ``clip(N(mu, s^2), 0, 1)``, and the probability of 0 < X < 1."""
    s = np.maximum(s, 1e-12)
    lo, hi = -mu / s, (1.0 - mu) / s
    c_lo, c_hi = _ncdf(lo), _ncdf(hi)
    f_lo, f_hi = _npdf(lo), _npdf(hi)
    inside = c_hi - c_lo
    m1 = mu * inside + s * (f_lo - f_hi) + (1.0 - c_hi)
    m2 = (mu * mu + s * s) * inside + s * mu * f_lo - s * (1.0 + mu) * f_hi + (1.0 - c_hi)
    return m1, np.maximum(m2 - m1 * m1, 0.0), inside


def _unclip(m_obs: np.ndarray, v_obs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Invert the clipped-Gaussian moments per bin: (mean, variance) before clipping, and
    the fraction of the variance clipping kept (1 far from the bounds)."""
    mu = m_obs.astype(np.float64).copy()
    s = np.sqrt(np.maximum(v_obs, 0.0))
    live = s > 0
    if not np.any(live):
        return mu, np.zeros_like(mu), np.ones_like(mu)
    for _ in range(60):
        m, v, inside = _clipped_moments(mu, s)
        ratio = np.where(live, v_obs / np.maximum(v, 1e-300), 1.0)
        # s: fixed point of s^2 = v_obs / kept; mu: Newton step (dm/dmu = P(inside))
        s = s * np.sqrt(np.clip(ratio, 0.25, 4.0))
        mu = mu + (m_obs - m) / np.maximum(inside, 0.1)
        if np.all(np.abs(ratio - 1.0) < 1e-5) and np.all(np.abs(m_obs - m) < 1e-7):
            break
    _, v, _ = _clipped_moments(mu, s)
    keep = np.where(live, v / np.maximum(s * s, 1e-300), 1.0)
    return mu, s * s, keep


def _nnls_line(i: np.ndarray, v: np.ndarray, w: np.ndarray) -> tuple[float, float]:
    """argmin sum w (a i + b - v)^2 over a, b >= 0 (two parameters: check the faces)."""
    sw = np.sqrt(w)
    design = np.stack([i, np.ones_like(i)], axis=1)
    cands: list[tuple[float, float]] = []
    if i.size >= 2 and np.ptp(i) > 1e-6:
        sol = np.linalg.lstsq(design * sw[:, None], v * sw, rcond=None)[0]
        if sol[0] >= 0 and sol[1] >= 0:
            cands.append((float(sol[0]), float(sol[1])))
    wsum = float(w.sum())
    cands.append((0.0, max(0.0, float((w * v).sum()) / wsum) if wsum > 0 else 0.0))
    wii = float((w * i * i).sum())
    cands.append((max(0.0, float((w * i * v).sum()) / wii) if wii > 0 else 0.0, 0.0))
    return min(cands, key=lambda ab: float((w * (ab[0] * i + ab[1] - v) ** 2).sum()))


def _fit_nlf(bins: _Bins, samples: int, qvar: float) -> tuple[float, float]:
    """Weighted, outlier-resistant NNLS fit of ``sigma^2 = a I + b`` over the bins.

    Texture selection is unbiased only while the noise is Gaussian: where clipping took a
    visible part of a bin's variance, the least textured blocks are also the most clipped
    ones (clipping flattens both), so those bins use the median over all their blocks.
    """
    if bins.i_sel.size == 0:
        return 0.0, 0.0
    i_b, v_b, n_b = bins.i_sel, bins.v_sel, bins.n_sel
    _, _, kept_sel = _unclip(i_b, v_b)
    clipped = kept_sel < _CLIP_ALL
    i_b = np.where(clipped, bins.i_all, i_b)
    v_b = np.where(clipped, bins.v_all, v_b)
    n_b = np.where(clipped, bins.n_all, n_b)
    mu, var, kept = _unclip(i_b, v_b)
    # a bin that mixes clipped and unclipped blocks looks unclipped as a whole: trust it as
    # little as its most clipped (least textured) part says
    kept = np.minimum(kept, kept_sel)
    ok = kept >= _MIN_RETENTION
    if not np.any(ok):
        ok = kept >= kept.max()
    mu, var, kept, n = np.clip(mu[ok], 0.0, 1.0), var[ok], kept[ok], n_b[ok] * samples
    # the rounding noise is in every bin alike: fit var - qvar = a I + b with a, b >= 0 on
    # the unclamped differences (clamping each bin at 0 would bias bins that read below the
    # rounding noise, e.g. JPEG-smoothed areas, upwards)
    target = var - qvar
    floor = max(qvar, (0.1 / 255.0) ** 2)
    a, b = _nnls_line(mu, target, n * kept**2 / (var + floor) ** 2)
    for _ in range(_FIT_ITERATIONS):
        f = a * mu + b + qvar
        w = n * kept**2 / (f + floor) ** 2
        ratio = (var + floor) / (f + floor)
        w = w / (np.maximum(ratio - _OUTLIER_RATIO, 0.0) + 1.0) ** 2
        a, b = _nnls_line(mu, target, w)
    return a, b


# --- map helpers ---------------------------------------------------------------------

_MAP_FACTOR = 4  # the map's NLF is evaluated at 1/4 resolution, then upsampled


def _blur_small(x: np.ndarray) -> np.ndarray:
    """Box-blurred copy at 1/4 resolution: 4x4 block means (partial blocks at the right
    and bottom edges average what they have), then a 3x3 mean on that grid, i.e. a ~12 px
    window at full resolution. One pass over the full-resolution image."""
    f = _MAP_FACTOR
    g = _sum_blocks(_sum_blocks(x, f, axis=0), f, axis=1)
    h, w, _ = x.shape
    ny = np.minimum(np.arange(0, h, f) + f, h) - np.arange(0, h, f)
    nx = np.minimum(np.arange(0, w, f) + f, w) - np.arange(0, w, f)
    g /= (ny[:, None] * nx[None, :]).astype(np.float32)[:, :, None]
    gp = np.pad(g, ((1, 1), (1, 1), (0, 0)), mode="edge")
    hsum = gp[:, :-2] + gp[:, 1:-1] + gp[:, 2:]
    return np.asarray((hsum[:-2] + hsum[1:-1] + hsum[2:]) / np.float32(9.0), dtype=np.float32)


def _sum_blocks(x: np.ndarray, f: int, axis: int) -> np.ndarray:
    """Sums of runs of ``f`` along axis 0 or 1 (the last run may be shorter), float32."""
    n = x.shape[axis]
    full = n // f * f
    head = x[:full] if axis == 0 else x[:, :full]
    shape = (*x.shape[:axis], n // f, f, *x.shape[axis + 1 :])
    out = head.reshape(shape).sum(axis=axis + 1, dtype=np.float32)
    if full < n:
        tail = x[full:] if axis == 0 else x[:, full:]
        out = np.concatenate([out, tail.sum(axis=axis, keepdims=True, dtype=np.float32)], axis=axis)
    return out


def _upsample(g: np.ndarray, h: int, w: int) -> np.ndarray:
    """Bilinear upsampling of the 1/_MAP_FACTOR grid ``g`` (block centres) to (h, w).

    Output position ``ph + f k`` sits at grid coordinate ``k + (ph + 0.5) / f - 0.5``: per
    phase ``ph`` the two taps are a constant offset from ``k`` with constant weights, so each
    phase is two shifted slices of the edge-padded grid (edge padding is the clamp at the
    borders). Written one phase at a time into strided views of the output."""
    f = _MAP_FACTOR
    cols = np.empty((g.shape[0], w, g.shape[2]), np.float32)
    _upsample_axis(np.pad(g, ((0, 0), (1, 1), (0, 0)), mode="edge"), cols, w, axis=1)
    out = np.empty((h, w, g.shape[2]), np.float32)
    _upsample_axis(np.pad(cols, ((1, 1), (0, 0), (0, 0)), mode="edge"), out, h, axis=0)
    assert f >= 1
    return out


def _upsample_axis(padded: np.ndarray, out: np.ndarray, n: int, axis: int) -> None:
    f = _MAP_FACTOR
    for ph in range(min(f, n)):
        t = (ph + 0.5) / f - 0.5
        d = math.floor(t)
        wt = np.float32(t - d)
        cnt = len(range(ph, n, f))
        if axis == 0:
            dst, lo, hi = out[ph::f], padded[d + 1 : d + 1 + cnt], padded[d + 2 : d + 2 + cnt]
        else:
            dst, lo, hi = out[:, ph::f], padded[:, d + 1 : d + 1 + cnt], padded[:, d + 2 : d + 2 + cnt]
        np.multiply(lo, np.float32(1.0) - wt, out=dst)
        dst += hi * wt
