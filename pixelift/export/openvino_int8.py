"""``openvino-int8``: OpenVINO IR quantized with NNCF post-training quantization.

The other INT8 route is the QDQ ONNX (``onnx-int8``) run by OpenVINO; both are rows of
the capability table and ``auto`` takes whichever is faster at the gate on this machine.

NNCF's defaults cost 27-34 dB vs fp32 on SR models (shared/notes/cpu-baseline.md). What
this module does instead, each step measured and stored in ``int8_study``:

* only convolutions are quantized (eltwise Add/Multiply/Sigmoid, resize and concat stay in
  the compute precision), with the MIXED preset (asymmetric activations);
* the first and last convolution stay in higher precision;
* then convolutions are kept in higher precision greedily, most sensitive first, until the
  selection crops reach :data:`TARGET_DB` or :data:`MAX_EXCLUDED` groups are excluded.
  Sensitivity is measured, not guessed: the PSNR when *only* that group is quantized. Models
  with more than :data:`MAX_GROUPS` convolutions are measured in contiguous groups so the
  search stays bounded (x4plus has 351 convolutions).

Selection uses calibration crops at another seed; held-out crops only report fidelity.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pixelift import precision as P
from pixelift.artifacts import Artifact, find, publish
from pixelift.calibration import CalibrationSource
from pixelift.export.precision import MAX_EXCLUDED, TARGET_DB, keep_greedily, rank_groups
from pixelift.metrics import psnr

log = logging.getLogger(__name__)

TARGET = "openvino-int8"
PROBE_CROPS = 2
#: SmoothQuant alpha for convolutions: on Compact (first/last conv kept) alpha 0.15 / 0.5 / 0.8
#: gave 38.5 / 39.7 / 40.0 dB on held-out crops against 39.1 without; tried per model, kept
#: only where it measures better
SMOOTH_ALPHA = 0.8
#: bumped when the recipe changes, so cached artifacts are rebuilt
RECIPE = 2
CONV_TYPES = ("Convolution", "GroupConvolution", "ConvolutionBackpropData")
#: left unquantized: quantizing them measured worse fidelity and no speed (SPAN, Compact)
KEPT_TYPES = ["Multiply", "Add", "Subtract", "Sigmoid", "Concat", "Interpolate", "DepthToSpace", "PRelu"]


def _ignored(names: Sequence[str]) -> Any:
    import nncf

    # the OpenVINO frontend names a conv with a bias "<onnx name>/WithoutBiases"
    return nncf.IgnoredScope(names=list(names), types=KEPT_TYPES, validate=False)


def _quantize(
    model: Any,
    dataset: Any,
    subset: int,
    excluded: Sequence[str] | None,
    *,
    probe: bool = False,
    smooth: float | None = None,
) -> Any:
    """``excluded=None``: NNCF's defaults (every op, performance preset), the baseline.
    ``probe``: a sensitivity probe, which only ranks, so bias correction is skipped.
    ``smooth``: SmoothQuant alpha for convolutions (NNCF applies it for the transformer
    model type only; with our ignored scope nothing else about that type differs)."""
    import nncf
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, AdvancedSmoothQuantParameters

    nncf_log = logging.getLogger("nncf")
    level = nncf_log.level
    nncf_log.setLevel(logging.WARNING)  # NNCF logs every ignored node at INFO
    try:
        if excluded is None:
            return nncf.quantize(model, dataset, subset_size=subset)
        return nncf.quantize(
            model,
            dataset,
            preset=nncf.QuantizationPreset.MIXED,
            model_type=nncf.ModelType.TRANSFORMER if smooth is not None else None,
            subset_size=subset,
            ignored_scope=_ignored(excluded),
            advanced_parameters=AdvancedQuantizationParameters(
                disable_bias_correction=probe,
                smooth_quant_alphas=AdvancedSmoothQuantParameters(convolution=smooth or -1, matmul=-1),
            ),
        )
    finally:
        nncf_log.setLevel(level)


def _scorer(images: Sequence[np.ndarray], refs: Sequence[np.ndarray]) -> Any:
    import openvino as ov

    from pixelift.providers.openvino import openvino_config

    core = ov.Core()
    config = openvino_config(precision="f32")
    config.pop("CACHE_DIR", None)  # throwaway candidates: nothing to cache

    def score(model: Any) -> float:
        compiled = core.compile_model(model, "CPU", config)
        req = compiled.create_infer_request()
        out = compiled.outputs[0]
        dbs = [psnr(r, np.clip(req.infer({0: x[None]})[out], 0, 1)) for x, r in zip(images, refs, strict=True)]
        return round(float(min(dbs)), 2)

    return score


def to_openvino_int8(
    model_id: str,
    *,
    source: CalibrationSource | None = None,
    crops: int = 8,
    max_excluded: int = MAX_EXCLUDED,
    target_db: float = TARGET_DB,
    force: bool = False,
) -> Artifact:
    import nncf
    import openvino as ov

    from pixelift.export.precision import _base_manifest, _fp32, _fresh, int8_inputs

    fp32 = _fp32(model_id)
    if not force and (art := _fresh(model_id, TARGET, fp32, RECIPE)):
        return art
    source, calib, sel, refs = int8_inputs(source, crops, fp32)
    t0 = time.perf_counter()
    base = ov.Core().read_model(str(fp32.path))
    in_name = base.inputs[0].get_any_name()
    dataset = nncf.Dataset([{in_name: c[None]} for c in calib])
    convs = [op.get_friendly_name() for op in base.get_ordered_ops() if op.get_type_name() in CONV_TYPES]
    score = _scorer(sel, refs)
    study: list[dict[str, Any]] = []

    best: tuple[float, Any, list[str], float | None] | None = None
    smooth: float | None = None

    def attempt(label: str, excluded: list[str] | None) -> float:
        nonlocal best
        q = _quantize(base, dataset, len(calib), excluded, smooth=smooth)
        db = score(q)
        study.append({"technique": label, "kept": len(excluded or ()), "psnr_db_calib_select": db})
        log.info("%s openvino-int8 %s: %s dB", model_id, label, db)
        if best is None or db > best[0]:
            best = (db, q, list(excluded or ()), smooth if excluded is not None else None)
        return db

    attempt("NNCF defaults (every op, performance preset)", None)
    excluded = [convs[0], convs[-1]] if len(convs) > 2 else []
    db = attempt("conv only, MIXED preset, first and last conv kept", excluded)
    smooth = SMOOTH_ALPHA
    db_smooth = attempt(f"+ SmoothQuant on convolutions (alpha {SMOOTH_ALPHA})", excluded)
    if db_smooth > db:
        db = db_smooth
    else:
        smooth = None
    ranking: list[tuple[float, list[str]]] = []
    if db < target_db and max_excluded > 0:

        def only(group: list[str], _k: int) -> float:
            # probes only rank groups: statistics from PROBE_CROPS crops, no bias correction
            # (NNCF cannot reuse statistics between runs; a full run on x4plus costs ~16 s)
            others = [c for c in convs if c not in group]
            return float(
                score(_quantize(base, dataset, min(PROBE_CROPS, len(calib)), others, probe=True, smooth=smooth))
            )

        def step(k: int, kept: list[str]) -> float:
            return attempt(f"+ {k} most sensitive conv group(s) kept", kept)

        ranking = rank_groups(convs, excluded, only)
        keep_greedily(ranking, excluded, max_excluded, target_db, step)
    assert best is not None
    db, model, kept, smooth = best
    with tempfile.TemporaryDirectory(prefix="pixelift-ovint8-") as tmp:
        xml = Path(tmp) / "model.xml"
        ov.save_model(model, str(xml), compress_to_fp16=False)
        manifest = _base_manifest(
            fp32,
            TARGET,
            recipe=RECIPE,
            openvino=ov.get_version(),
            int8={
                "tool": f"nncf {nncf.__version__}",
                "preset": "MIXED",
                "quantized": "convolutions only",
                "calibration": source.describe(),
                "calibration_crops": len(calib),
                "kept_in_higher_precision": kept,
                "smooth_quant_alpha": smooth,
                "convolutions": len(convs),
                "sensitivity": [{"group": g, "psnr_db_only_this_quantized": s} for s, g in ranking],
                "target_db_calib_select": target_db,
                "psnr_db_calib_select": db,
                "seconds": round(time.perf_counter() - t0, 1),
            },
            int8_study=study,
        )
        art = publish(model_id, TARGET, xml, manifest, extra={"model.bin": xml.with_suffix(".bin")})
    P.measure_model(model_id, precisions=("int8",), force=True)
    return find(model_id, TARGET) or art
