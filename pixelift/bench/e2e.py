"""File to file: ``pixelift enhance`` against an ncnn pipeline doing the same job.

This is what a user gets, so it is the bench's headline. Each case makes a photo (the
bundled sample resized to N MP, JPEG quality 95) and then alternates, each run in a fresh
process timed from outside as a user waits for it:

* ``pixelift enhance IN -o OUT -m MODEL --precision auto`` (``--fast`` for the 40 dB
  gate), with a warm cache (one untimed run first builds and measures what it needs);
* the ncnn pipeline, ``python -m pixelift.bench.e2e ncnn ...``: Pillow decode, the ncnn
  runtime on the original ``.param/.bin`` (whole image up to :data:`NCNN_WHOLE_MP` where
  its activations fit most of the memory available, else tiles of :data:`NCNN_TILE` px,
  or the largest that fit, with :data:`NCNN_PREPAD` px of context, cut and pasted as
  realesrgan-ncnn-vulkan does), Pillow encode at the same quality, once with fp32 and
  once with bf16 storage (its two CPU modes).

The ratio is the faster ncnn mode's median over pixelift's median (> 1: pixelift faster).
It is printed only when every side's repeats agree within
:data:`pixelift.bench.stats.NOISE_SPREAD`; otherwise the case says the machine was too
noisy. Both outputs are compared (PSNR of pixelift's output against ncnn fp32's) so the
two sides are seen to do the same job.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pixelift.bench.stats import spread, trusted_ratio

NCNN_MODES = ("fp32", "bf16")
NCNN_WHOLE_MP = 2.0
NCNN_TILE = 512
NCNN_PREPAD = 10
#: the ncnn pipeline runs alone, so it may use most of the memory available: the largest tiles
#: that fit (fewest overlaps), the whole image where it fits (ESRGAN at 0.25 MP: 11.5 GB)
NCNN_MEMORY_SHARE = 0.8
JPEG_QUALITY = 95


@dataclass(frozen=True)
class Case:
    model: str
    mp: float
    fast: bool = False

    @property
    def label(self) -> str:
        return f"{self.model} {self.mp:g} MP" + (" --fast" if self.fast else "")


#: (model, MP) pairs: SPAN, Compact and RRDBNet (ESRGAN: 35.9 MFLOP per input pixel, so smaller)
DEFAULT_CASES = (
    Case("span-x2-ch48", 1.0),
    Case("span-x2-ch48", 1.0, fast=True),
    Case("realesrgan-animevideov3-x4", 1.0),
    Case("realesrgan-x4plus", 0.25),
)
FULL_CASES = (
    *DEFAULT_CASES,
    Case("span-x2-ch48", 12.0),
    Case("span-x2-ch48", 12.0, fast=True),
    Case("span-x2-ch48", 24.0),
    Case("realesrgan-animevideov3-x4", 12.0),
    Case("realesrgan-x4plus", 1.0),
)


@dataclass
class CaseResult:
    case: Case
    width: int = 0
    height: int = 0
    seconds: dict[str, list[float]] = field(default_factory=dict)  # side -> repeats
    errors: dict[str, str] = field(default_factory=dict)
    ratio: float | None = None
    why_no_ratio: str | None = None
    psnr_vs_ncnn_db: float | None = None
    best_ncnn: str | None = None
    route: str | None = None  # what --precision auto ran (provider:precision@target), from the measured rows

    def median(self, side: str) -> float | None:
        t = self.seconds.get(side)
        return statistics.median(t) if t else None

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["case"] = asdict(self.case) | {"label": self.case.label}
        d["spread"] = {k: round(spread(v), 3) for k, v in self.seconds.items()}
        return d


def make_photo(mp: float, folder: Path) -> tuple[Path, int, int]:
    from PIL import Image

    from pixelift.samples import sample_photo

    w = round((mp * 1e6 * 4 / 3) ** 0.5)
    h = round(mp * 1e6 / w)
    path = folder / f"photo-{mp:g}mp.jpg"
    if not path.exists():
        Image.fromarray(sample_photo()).resize((w, h), Image.Resampling.LANCZOS).save(path, quality=JPEG_QUALITY)
    return path, w, h


def _run(cmd: list[str], env: dict[str, str], timeout: float) -> tuple[float, str | None]:
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    except subprocess.TimeoutExpired:
        return time.perf_counter() - t0, f"timed out after {timeout:.0f} s"
    sec = time.perf_counter() - t0
    if proc.returncode != 0:
        tail = " | ".join((proc.stderr or proc.stdout).strip().splitlines()[-2:])
        return sec, f"exit {proc.returncode}: {tail}"
    return sec, None


def commands(case: Case, src: Path, out_dir: Path, threads: int) -> dict[str, list[str]]:
    py = sys.executable
    pix = [py, "-m", "pixelift.cli", "enhance", str(src), "-o", str(out_dir / "pixelift.jpg"), "-m", case.model]
    pix += ["--precision", "auto", "--overwrite", "-q", "--quality", str(JPEG_QUALITY)]
    sides = {"pixelift": pix + (["--fast"] if case.fast else [])}
    job = json.dumps(asdict(ncnn_job(case.model)))
    for mode in NCNN_MODES:
        out = str(out_dir / f"ncnn-{mode}.jpg")
        sides[f"ncnn-{mode}"] = [py, "-P", "-m", "pixelift.bench.e2e", "ncnn", str(src), out, "--job", job]
        sides[f"ncnn-{mode}"] += ["--mode", mode, "--threads", str(threads)]
    return sides


def run_case(case: Case, work: Path, *, repeats: int, threads: int, timeout: float = 1800) -> CaseResult:
    from pixelift.bench.runner import child_env

    src, w, h = make_photo(case.mp, work)
    res = CaseResult(case, w, h)
    env = child_env(threads)
    sides = commands(case, src, work, threads)
    for side, cmd in sides.items():  # warm-up: builds, measures and caches outside the timing
        _, err = _run(cmd, env, timeout)
        if err:
            res.errors[side] = err
    for _ in range(repeats):  # interleaved, so a slow minute of the machine hits every side
        for side, cmd in sides.items():
            if side in res.errors:
                continue
            sec, err = _run(cmd, env, timeout)
            if err:
                res.errors[side] = err
            else:
                res.seconds.setdefault(side, []).append(sec)
    res.route = auto_route(case)
    ncnn = [s for s in sides if s.startswith("ncnn") and s in res.seconds]
    if "pixelift" in res.seconds and ncnn:
        best = min(ncnn, key=lambda s: statistics.median(res.seconds[s]))
        res.best_ncnn = best
        res.ratio, res.why_no_ratio = trusted_ratio(res.seconds[best], res.seconds["pixelift"])
    if "pixelift" in res.seconds and "ncnn-fp32" in res.seconds:
        res.psnr_vs_ncnn_db = _psnr_files(work / "pixelift.jpg", work / "ncnn-fp32.jpg")
    return res


def auto_route(case: Case) -> str | None:
    """The row ``--precision auto`` chose for ``case`` on this machine (read from the records the
    warm-up measured; a CPU without bf16 or VNNI runs fp32, which explains most of a ratio)."""
    from pixelift import precision as P
    from pixelift.models import get
    from pixelift.runtime.session import photo_weight

    try:
        rows = P.measured_rows(P.measure_model(case.model))
        best, _ = P.choose_auto(rows, P.gate_db(case.fast), photo_weight(get(case.model), rows))
    except Exception as exc:  # the ratio stands without it
        return f"unknown ({exc})"
    return f"{best.capability.key}@{best.capability.target}"


def _psnr_files(a: Path, b: Path) -> float | None:
    """PSNR of two outputs the bench wrote itself (so no decompression-bomb limit: a 12 MP photo
    upscaled x4 is 192 MP), in bands of rows so a 192 MP pair needs no float copy of either."""
    from PIL import Image

    limit = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
        with Image.open(a) as ia, Image.open(b) as ib:
            x, y = np.asarray(ia.convert("RGB")), np.asarray(ib.convert("RGB"))
    finally:
        Image.MAX_IMAGE_PIXELS = limit
    if x.shape != y.shape:
        return None
    sq = sum(float(np.square(x[r : r + 256].astype(np.float32) - y[r : r + 256]).sum()) for r in range(0, len(x), 256))
    mse = sq / x.size / 255.0**2
    return round(10 * math.log10(1 / mse), 2) if mse > 0 else 200.0


def run_cases(
    cases: tuple[Case, ...], work: Path, *, repeats: int, threads: int, log: Any = print
) -> list[dict[str, Any]]:
    out = []
    for case in cases:
        log(f"file to file: {case.label} ...")
        r = run_case(case, work, repeats=repeats, threads=threads)
        meds = ", ".join(f"{k} {statistics.median(v):.2f} s (spread {spread(v):.0%})" for k, v in r.seconds.items())
        if r.ratio is not None:
            log(f"file to file: {case.label}: {meds}; pixelift ({r.route}) {r.ratio:.2f}x the faster ncnn mode")
        else:
            log(f"WARNING: file to file: {case.label}: {meds}; no ratio: {r.why_no_ratio or r.errors}")
        out.append(r.to_json())
    return out


# --------------------------------------------------------------------------- the ncnn pipeline


@dataclass(frozen=True)
class NcnnJob:
    """What the ncnn pipeline needs, resolved by the parent so the timed child imports only
    numpy, Pillow and ncnn (as a native ncnn tool would start)."""

    param: str
    bin: str
    input_blob: str
    output_blob: str
    scale: int
    alignment: int
    border: int
    residual: bool  # Real-CUGAN x4: the graph's output is added to the nearest-upsampled input
    #: the largest tile side whose activations (ncnn's measured bytes per pixel, per storage mode)
    #: fit :data:`NCNN_MEMORY_SHARE` of the memory available; 0: not measured, no limit. ESRGAN
    #: holds 46 KB/px in fp32: a 1 MP photo whole would need 46 GB
    fit_fp32: int = 0
    fit_bf16: int = 0


def ncnn_job(model: str) -> NcnnJob:
    from pixelift.models import get
    from pixelift.models.architectures import architecture
    from pixelift.models.ncnn import parse_param
    from pixelift.models.sources import NcnnPackageSource
    from pixelift.runtime.footprint import FALLBACK_MEMORY
    from pixelift.runtime.tiling import available_memory_bytes

    spec = get(model)
    source = spec.source(NcnnPackageSource)
    if source is None:
        raise ValueError(f"{model}: no ncnn original to compare with")
    param, binf = source.files()
    graph = parse_param(param.read_text(), source=str(param))
    residual = spec.options.get("ncnn_residual") == "nearest"
    budget = (available_memory_bytes() or FALLBACK_MEMORY) * NCNN_MEMORY_SHARE
    arch = architecture(spec.architecture)

    def fit(precision: str | None) -> int:
        per_px = arch.bytes_per_input_pixel_on("ncnn", precision)
        return 0 if per_px is None else math.isqrt(int(budget / per_px)) // spec.alignment * spec.alignment

    return NcnnJob(
        str(param),
        str(binf),
        graph.input_blob,
        graph.output_blob,
        spec.scale,
        spec.alignment,
        spec.border,
        residual,
        fit(None),
        fit("bf16"),
    )


def ncnn_pipeline(src: Path, dst: Path, job: NcnnJob, mode: str, threads: int) -> None:
    """Decode, ncnn (whole image, or tiles cut as realesrgan-ncnn-vulkan cuts them), encode."""
    import ncnn
    from PIL import Image

    net = ncnn.Net()
    opt = net.opt
    opt.use_vulkan_compute = False
    opt.num_threads = threads
    opt.use_fp16_packed = opt.use_fp16_storage = opt.use_fp16_arithmetic = False
    opt.use_bf16_storage = mode == "bf16"
    if net.load_param(job.param) != 0 or net.load_model(job.bin) != 0:
        raise RuntimeError(f"ncnn failed to load {job.param}")

    def run(chw: np.ndarray) -> np.ndarray:  # the model contract: border pad, run, centre crop
        b, s = job.border, job.scale
        x = np.ascontiguousarray(np.pad(chw, ((0, 0), (b, b), (b, b)), mode="reflect") if b else chw)
        ex = net.create_extractor()
        ex.input(job.input_blob, ncnn.Mat(x))
        _, m = ex.extract(job.output_blob)
        y = np.array(m)
        oh, ow = chw.shape[1] * s, chw.shape[2] * s
        top, left = (y.shape[1] - oh) // 2, (y.shape[2] - ow) // 2
        y = y[:, top : top + oh, left : left + ow]
        return y + chw.repeat(s, axis=1).repeat(s, axis=2) if job.residual else y

    with Image.open(src) as im:
        rgb = np.asarray(im.convert("RGB"))
    h, w = rgb.shape[:2]
    a, s = job.alignment, job.scale
    ah, aw = -(-h // a) * a, -(-w // a) * a
    chw = np.pad(rgb.transpose(2, 0, 1).astype(np.float32) / 255.0, ((0, 0), (0, ah - h), (0, aw - w)), mode="reflect")
    fit = job.fit_bf16 if mode == "bf16" else job.fit_fp32
    if h * w <= NCNN_WHOLE_MP * 1e6 and (not fit or ah * aw <= fit * fit):
        out = run(chw)
    else:
        p = -(-NCNN_PREPAD // a) * a
        side = NCNN_TILE if not fit else max(a, min(NCNN_TILE, (fit - 2 * p) // a * a))
        padded = np.pad(chw, ((0, 0), (p, p), (p, p)), mode="reflect")
        out = np.empty((3, ah * s, aw * s), np.float32)
        for y0 in range(0, ah, side):
            for x0 in range(0, aw, side):
                y1, x1 = min(y0 + side, ah), min(x0 + side, aw)
                tile = run(padded[:, y0 : y1 + 2 * p, x0 : x1 + 2 * p])
                out[:, y0 * s : y1 * s, x0 * s : x1 * s] = tile[:, p * s : (p + y1 - y0) * s, p * s : (p + x1 - x0) * s]
    img = np.clip(np.rint(out[:, : h * s, : w * s] * 255.0), 0, 255).astype(np.uint8).transpose(1, 2, 0)
    Image.fromarray(img).save(dst, quality=JPEG_QUALITY)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m pixelift.bench.e2e")
    sub = ap.add_subparsers(dest="cmd", required=True)
    n = sub.add_parser("ncnn", help="the ncnn pipeline on one file")
    n.add_argument("src", type=Path)
    n.add_argument("dst", type=Path)
    n.add_argument("--job", required=True, help="NcnnJob as JSON")
    n.add_argument("--mode", choices=NCNN_MODES, default="fp32")
    n.add_argument("--threads", type=int, default=2)
    a = ap.parse_args(argv)
    ncnn_pipeline(a.src, a.dst, NcnnJob(**json.loads(a.job)), a.mode, a.threads)


if __name__ == "__main__":
    main()
