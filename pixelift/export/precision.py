"""Reduced-precision export targets derived from the verified fp32 ONNX artifact.

* ``onnx-fp16``: onnxconverter-common's float16 converter with fp32 inputs/outputs kept
  (``keep_io_types=True``); a model that gives NaN/Inf on real images is marked
  ``fp16_overflow`` in its manifest and never chosen.
* ``onnx-int8``: onnxruntime static QDQ, U8 activations / S8 per-channel weights (U8S8;
  S8S8 measured 4x slower for SPAN on x86), calibrated on a :class:`CalibrationSource`.
  Each technique over naive MinMax is measured and recorded (``int8_study``).
* ``openvino-fp32`` / ``openvino-fp16``: OpenVINO IR (``ov.convert_model`` + ``ov.save_model``).

After writing, every runnable row of :data:`pixelift.precision.CAPABILITIES` is measured on
held-out crops and its fidelity stored in the target's manifest. Needs onnx (export extra);
never torch.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pixelift import precision as P
from pixelift.artifacts import Artifact, find, locked, publish
from pixelift.calibration import CalibrationSource
from pixelift.metrics import psnr

log = logging.getLogger(__name__)

#: above this many convolutions, sensitivity is measured per contiguous group, not per conv
MAX_GROUPS = 32
#: the greedy sensitivity search stops once the selection crops reach this (1 dB of margin
#: over the fast gate: held-out crops land within about a dB of the selection crops)
TARGET_DB = P.FAST_DB + 1.0
#: at most this many conv groups are kept in higher precision
MAX_EXCLUDED = 8
#: Percentile for histogram calibration; 99.99 beat 99.999, entropy and MinMax on SPAN.
PERCENTILE = 99.99


def _fp32(model_id: str) -> Artifact:
    from pixelift.export import to_onnx

    return to_onnx(model_id)


def _base_manifest(fp32: Artifact, target: str, **extra: Any) -> dict[str, Any]:
    t = P.TARGETS[target]
    keep = ("model_id", "spec", "sources", "tools", "opset", "trace_size", "dynamic_axes")
    return {
        **{k: fp32.manifest[k] for k in keep if k in fp32.manifest},
        "target": target,
        "format": t.format,
        "precision": t.precision,
        "file": t.file,
        "derived_from": {"target": fp32.target, "sha256": fp32.manifest["sha256"]},
        # parity of a reduced-precision artifact is its fidelity record, not the 60 dB check
        "parity": {"passed": True, "checks": [], "note": "see fidelity (vs the onnx-fp32 artifact)"},
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        **extra,
    }


def _fresh(model_id: str, target: str, fp32: Artifact, recipe: int = 1) -> Artifact | None:
    """The cached ``target`` if it derives from this fp32 artifact with this ``recipe``
    version (a builder bumps its version when what it builds changes)."""
    art = find(model_id, target)
    if (
        art is not None
        and art.manifest.get("derived_from", {}).get("sha256") == fp32.manifest["sha256"]
        and art.manifest.get("recipe", 1) == recipe
    ):
        art.verify()
        return art
    return None


@contextlib.contextmanager
def _building(model_id: str, target: str, fp32: Artifact, *, force: bool) -> Iterator[Artifact | None]:
    """Hold ``target``'s lock from the cache check to the publish: yields the cached artifact (None: build
    it, inside the block). Two processes asking at once build it once; the second waits and reuses it."""
    with locked(model_id, target):
        yield None if force else _fresh(model_id, target, fp32)


# --- fp16 ------------------------------------------------------------------------------


def convert_fp16(src: Path, dest: Path) -> None:
    import onnx
    from onnxconverter_common import float16

    model = onnx.load(str(src))
    # stale fp32 value_info makes ops the converter keeps in fp32 (Resize) mistyped
    del model.graph.value_info[:]
    m16 = float16.convert_float_to_float16(model, keep_io_types=True)
    onnx.checker.check_model(m16)
    onnx.save(m16, str(dest))


def to_fp16(model_id: str, *, force: bool = False) -> Artifact:
    fp32 = _fp32(model_id)
    with _building(model_id, "onnx-fp16", fp32, force=force) as cached:
        if cached is not None:
            return cached
        with tempfile.TemporaryDirectory(prefix="pixelift-fp16-") as tmp:
            path = Path(tmp) / "model.onnx"
            convert_fp16(fp32.path, path)
            overflow = _nonfinite(path, fp32)
            if overflow:
                log.warning("%s: fp16 gives NaN/Inf on real images; marked fp16_overflow, never chosen", model_id)
            manifest = _base_manifest(
                fp32, "onnx-fp16", fp16_overflow=overflow, converter="onnxconverter-common float16, keep_io_types=True"
            )
            art = publish(model_id, "onnx-fp16", path, manifest)
    P.measure_model(model_id, precisions=("fp16",), force=True)
    return find(model_id, "onnx-fp16") or art


def _nonfinite(path: Path, fp32: Artifact) -> bool:
    from pixelift.providers import get_provider

    sess = get_provider("cpu").open(path)
    src = CalibrationSource()
    alignment, arch = fp32.manifest.alignment, _arch(fp32)
    images = [x for _, x in src.heldout(alignment, arch=arch)] + src.calibration(alignment, count=2, arch=arch)
    return any(not np.all(np.isfinite(sess.run(x[None]))) for x in images)


# --- int8 ------------------------------------------------------------------------------


#: crops per calibration pass: onnxruntime keeps every intermediate tensor of a pass in
#: memory (x4plus: 11 GB for 8 crops of 64 px in one pass)
CALIB_STRIDE = 2


class _Reader:
    """onnxruntime's CalibrationDataReader, with the ``set_range`` its strided collection uses."""

    def __init__(self, crops: Sequence[np.ndarray], name: str = "input") -> None:
        self._feeds = [{name: c[None]} for c in crops]
        self._it = iter(self._feeds)

    def __len__(self) -> int:
        return len(self._feeds)

    def set_range(self, start_index: int, end_index: int) -> None:
        self._it = iter(self._feeds[start_index:end_index])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._it, None)


def quantize(
    pre: Path,
    dest: Path,
    crops: Sequence[np.ndarray],
    *,
    method: str = "percentile",
    conv_only: bool = True,
    exclude: Sequence[str] = (),
    cache: Path | None = None,
) -> None:
    """Static QDQ U8S8 per-channel. ``method``: minmax | percentile | entropy. ``cache``: a
    calibration-range file, written on first use and reused after (same method and op set)."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    calib = {
        "minmax": CalibrationMethod.MinMax,
        "percentile": CalibrationMethod.Percentile,
        "entropy": CalibrationMethod.Entropy,
    }
    quantize_static(
        str(pre),
        str(dest),
        _Reader(crops),
        quant_format=QuantFormat.QDQ,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        per_channel=True,
        calibrate_method=calib[method],
        op_types_to_quantize=["Conv", "ConvTranspose"] if conv_only else None,
        nodes_to_exclude=list(exclude),
        calibration_cache_path=str(cache) if cache is not None else None,
        extra_options={
            "CalibStridedMinMax": CALIB_STRIDE if len(crops) % CALIB_STRIDE == 0 else None,
            **({"CalibPercentile": PERCENTILE} if method == "percentile" else {}),
        },
    )


def _score(path: Path, images: Sequence[np.ndarray], refs: Sequence[np.ndarray]) -> float:
    from pixelift.providers import get_provider

    sess = get_provider("cpu").open(path)
    return round(min(psnr(r, np.clip(sess.run(x[None]), 0, 1)) for x, r in zip(images, refs, strict=True)), 2)


RECIPES: tuple[tuple[str, dict[str, Any]], ...] = (
    ("naive MinMax, all ops", {"method": "minmax", "conv_only": False, "exclude": "none"}),
    ("+ percentile calibration", {"method": "percentile", "conv_only": False, "exclude": "none"}),
    ("+ entropy instead of percentile", {"method": "entropy", "conv_only": False, "exclude": "none"}),
    (
        "+ quantize only Conv (Add/Mul/Sigmoid stay fp32)",
        {"method": "percentile", "conv_only": True, "exclude": "none"},
    ),
    ("+ first and last conv in fp32", {"method": "percentile", "conv_only": True, "exclude": "first-last"}),
    ("+ most sensitive convs in fp32", {"method": "percentile", "conv_only": True, "exclude": "sensitive"}),
)


def to_int8(
    model_id: str,
    *,
    source: CalibrationSource | None = None,
    crops: int = 8,
    study: bool = True,
    sensitive: int = MAX_EXCLUDED,
    force: bool = False,
) -> Artifact:
    """Quantize to ``onnx-int8``. ``study=True`` measures each recipe in :data:`RECIPES`
    (scored on calibration crops, never on the held-out set) and keeps the best; the last
    keeps conv groups in fp32, most sensitive first, until :data:`TARGET_DB` or ``sensitive``
    groups. ``study=False`` uses the first-and-last recipe only."""

    fp32 = _fp32(model_id)
    with _building(model_id, "onnx-int8", fp32, force=force) as cached:
        if cached is not None:
            return cached
        art = _build_int8(model_id, fp32, source, crops, study, sensitive)
    P.measure_model(model_id, precisions=("int8",), force=True)
    return find(model_id, "onnx-int8") or art


def _build_int8(
    model_id: str, fp32: Artifact, source: CalibrationSource | None, crops: int, study: bool, sensitive: int
) -> Artifact:
    import onnx
    from onnxruntime.quantization.shape_inference import quant_pre_process

    source, calib, sel, refs = int8_inputs(source, crops, fp32)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="pixelift-int8-") as tmp:
        pre = Path(tmp) / "pre.onnx"
        # symbolic shape inference fails on Compact (dynamic Resize): skip it
        quant_pre_process(str(fp32.path), str(pre), skip_symbolic_shape=True)
        convs = [n.name for n in onnx.load(str(pre)).graph.node if n.op_type in ("Conv", "ConvTranspose")]
        first_last = [convs[0], convs[-1]] if convs else []
        results: list[dict[str, Any]] = []
        best: tuple[float, Path, dict[str, Any]] | None = None

        def attempt(label: str, r: dict[str, Any], excluded: list[str], name: str) -> float:
            nonlocal best
            out = Path(tmp) / f"{name}.onnx"
            quantize(
                pre, out, calib, method=r["method"], conv_only=r["conv_only"], exclude=excluded, cache=_cache(tmp, r)
            )
            db = _score(out, sel, refs)
            rec = {"technique": label, **r, "excluded": excluded, "psnr_db_calib_select": db}
            results.append(rec)
            log.info("%s int8 %s: %s dB", model_id, label, db)
            if best is None or db > best[0]:
                best = (db, out, rec)
            return db

        recipes = RECIPES if study else RECIPES[4:5]
        for i, (label, r) in enumerate(recipes):
            if r["exclude"] != "none" and results:
                # the later recipes build on the calibration method that measured best
                calibrated = [x for x in results if x["exclude"] == "none"]
                r = {**r, "method": max(calibrated or results, key=lambda x: x["psnr_db_calib_select"])["method"]}
            exclude = list(first_last) if r["exclude"] in ("first-last", "sensitive") else []
            if r["exclude"] != "sensitive":
                attempt(label, r, exclude, f"q{i}-0")
                continue
            if sensitive <= 0 or (best is not None and best[0] >= TARGET_DB):
                continue

            def only(group: list[str], k: int, r: dict[str, Any] = r) -> float:
                out = Path(tmp) / f"sens{k}.onnx"
                others = [c for c in convs if c not in group]
                quantize(pre, out, calib, method=r["method"], conv_only=True, exclude=others, cache=_cache(tmp, r))
                db = _score(out, sel, refs)
                out.unlink()
                return db

            def step(k: int, excluded: list[str], r: dict[str, Any] = r, i: int = i) -> float:
                return attempt(f"+ {k} most sensitive conv group(s) in fp32", r, excluded, f"q{i}-{k - 1}")

            keep_greedily(rank_groups(convs, exclude, only), exclude, sensitive, TARGET_DB, step)
        assert best is not None
        final = Path(tmp) / "model.onnx"
        best[1].rename(final)
        manifest = _base_manifest(
            fp32,
            "onnx-int8",
            int8={
                "format": "QDQ",
                "activations": "uint8",
                "weights": "int8 per-channel",
                "calibration": source.describe(),
                "calibration_crops": len(calib),
                "chosen": best[2],
                "seconds": round(time.perf_counter() - t0, 1),
            },
            int8_study=results,
        )
        return publish(model_id, "onnx-int8", final, manifest)


def conv_groups(names: Sequence[str], max_groups: int = MAX_GROUPS) -> list[list[str]]:
    """Contiguous groups of conv names, at most ``max_groups`` (one conv per group when few)."""
    n = len(names)
    if n <= max_groups:
        return [[c] for c in names]
    bounds = [round(i * n / max_groups) for i in range(max_groups + 1)]
    return [list(names[a:b]) for a, b in itertools.pairwise(bounds) if b > a]


def _arch(art: Artifact) -> str:
    return str(art.manifest.spec["architecture"])


def int8_inputs(
    source: CalibrationSource | None, crops: int, fp32: Artifact
) -> tuple[CalibrationSource, list[np.ndarray], list[np.ndarray], list[np.ndarray]]:
    """What both int8 routes start from: the source (default: the bundled photos), ``crops``
    calibration crops, and the selection crops with their fp32 outputs."""
    source = source or CalibrationSource()
    calib = source.calibration(fp32.manifest.alignment, count=crops, arch=_arch(fp32))
    return (source, calib, *selection_set(source, fp32.manifest.alignment, fp32))


def selection_set(
    source: CalibrationSource, alignment: int, fp32: Artifact
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Crops that choose between int8 recipes, and their fp32 outputs: calibration crops at
    another seed (held-out crops only report fidelity, so they never steer a choice)."""
    from pixelift.providers import get_provider

    sel = CalibrationSource(source.folder, seed=source.seed + 7).calibration(
        alignment, count=3, size=80, arch=_arch(fp32)
    )
    ref_sess = get_provider("cpu").open(fp32.path)
    return sel, [np.clip(ref_sess.run(x[None]), 0, 1) for x in sel]


def _cache(tmp: str | Path, recipe: dict[str, Any]) -> Path:
    """One calibration per (method, op set): every later recipe and sensitivity probe reuses it."""
    return Path(tmp) / f"ranges-{recipe['method']}-{'conv' if recipe['conv_only'] else 'all'}.json"


def rank_groups(
    convs: Sequence[str], already: Sequence[str], only: Callable[[list[str], int], float]
) -> list[tuple[float, list[str]]]:
    """Conv groups not in ``already``, most sensitive first: ``(only(group, k), group)``, where
    ``only`` scores the model with that group alone quantized. A group is one conv unless the
    model has more than :data:`MAX_GROUPS` convs. Shared by both int8 routes."""
    groups = [g for g in conv_groups(convs) if not set(g) & set(already)]
    return sorted(((only(g, k), g) for k, g in enumerate(groups)), key=lambda t: t[0])


def keep_greedily(
    ranking: Sequence[tuple[float, list[str]]],
    excluded: Sequence[str],
    limit: int,
    target_db: float,
    attempt: Callable[[int, list[str]], float],
) -> None:
    """Keep the ``limit`` most sensitive groups in higher precision, one more per
    ``attempt(k, excluded)``, and stop as soon as an attempt reaches ``target_db``: no more
    convs stay unquantized than the target needs."""
    kept = list(excluded)
    for k, (_, group) in enumerate(ranking[:limit], start=1):
        kept = [*kept, *group]
        if attempt(k, kept) >= target_db:
            return


# --- OpenVINO IR -----------------------------------------------------------------------


def to_openvino_ir(model_id: str, *, fp16: bool = False, force: bool = False) -> Artifact:
    import openvino as ov

    target = "openvino-fp16" if fp16 else "openvino-fp32"
    fp32 = _fp32(model_id)
    with _building(model_id, target, fp32, force=force) as cached:
        if cached is not None:
            return cached
        with tempfile.TemporaryDirectory(prefix="pixelift-ir-") as tmp:
            xml = Path(tmp) / "model.xml"
            ov.save_model(ov.convert_model(str(fp32.path)), str(xml), compress_to_fp16=fp16)
            manifest = _base_manifest(fp32, target, openvino=ov.get_version())
            art = publish(model_id, target, xml, manifest, extra={"model.bin": xml.with_suffix(".bin")})
    P.measure_model(model_id, precisions=("fp32", "fp16"), force=True)
    return find(model_id, target) or art
