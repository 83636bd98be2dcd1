"""Reduced precision: the capability table, the fidelity gates and ``auto`` selection.

Torch-free and onnx-free: only onnxruntime / OpenVINO run here.

* **Targets** are files in the artifact cache (format + stored precision).
* **The capability table** (:data:`CAPABILITIES`) says which provider runs which target at
  which compute precision, with which provider options. Export validation measures every
  row it can run; the loader reads the same rows to open a session.
* **Fidelity** of a (model, provider, precision) row is the worst PSNR, over held-out real
  image crops (never the calibration crops), of its output vs the fp32 artifact's output
  on onnxruntime CPU. It is stored in the manifest of the row's target artifact under
  ``fidelity["<provider>:<precision>"]``, with the measured seconds per crop.
* ``auto`` picks the fastest measured row whose fidelity meets the gate
  (:data:`HIGH_FIDELITY_DB`, or :data:`FAST_DB` with ``fast=True``); fp32 always qualifies.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pixelift.artifacts import ONNX_FP32, Artifact, FidelityRecord, find, update_manifest
from pixelift.artifacts import TARGETS as ALL_TARGETS
from pixelift.artifacts.manifest import fidelity_records
from pixelift.artifacts.targets import Target
from pixelift.errors import PixeliftError
from pixelift.ids import inside, validate_id
from pixelift.logs import EVENT
from pixelift.metrics import psnr
from pixelift.models.spec import ModelSpec
from pixelift.paths import atomic_write_bytes, writable
from pixelift.providers.base import ProbeResult
from pixelift.providers.microbench import time_session
from pixelift.providers.table import cpu_backends, provider_options

log = logging.getLogger(__name__)

PRECISIONS = ("fp32", "bf16", "fp16", "int8")
CHOICES = ("auto", *PRECISIONS)
HIGH_FIDELITY_DB = 50.0
FAST_DB = 40.0
REFERENCE = "cpu:fp32"  # the fp32 artifact on onnxruntime CPU: what fidelity is measured against


#: the targets measured as rows of the capability table (the SE-sync graph is a helper)
TARGETS: dict[str, Target] = {n: t for n, t in ALL_TARGETS.items() if t.measured}


@dataclass(frozen=True)
class Capability:
    """Provider ``provider`` runs target ``target`` at compute precision ``precision``."""

    provider: str
    precision: str
    target: str
    #: option names and values over the provider's defaults (recorded as such with fidelity)
    options: dict[str, Any] = field(default_factory=dict)
    note: str = ""
    #: a capability the provider's probe must report, else the row is not offered: OpenVINO's bf16
    #: hint on a CPU without BF16 silently computes f32, and was chosen as "bf16" on ties
    needs: str | None = None

    def __post_init__(self) -> None:
        provider_options(self.provider, self.options)  # a row with a bad option fails at import

    @property
    def key(self) -> str:
        return f"{self.provider}:{self.precision}"


#: THE capability table, read by export validation (which rows to measure) and by the
#: loader (which artifact and options a provider/precision pair needs). For one
#: (provider, precision) the first row whose artifact exists is used.
CAPABILITIES: tuple[Capability, ...] = (
    Capability("cpu", "fp32", "onnx-fp32"),
    Capability("cpu", "int8", "onnx-int8", note="U8S8: S8S8 measured 4x slower for SPAN"),
    Capability("cpu", "fp16", "onnx-fp16", note="x86 onnxruntime has few fp16 kernels: correct but slow"),
    Capability("openvino", "fp32", "onnx-fp32", {"precision": "f32"}),
    Capability("openvino", "fp32", "openvino-fp32", {"precision": "f32"}),
    Capability(
        "openvino", "bf16", "onnx-fp32", {"precision": "bf16"}, "an inference hint; fast with avx512_bf16/AMX", "BF16"
    ),
    Capability("openvino", "fp16", "openvino-fp16", {"precision": "f16"}, "CPUs with avx512_bf16 run f16 as bf16"),
    Capability("openvino", "fp16", "onnx-fp16", {"precision": "f16"}),
    # the ops left unquantized run in bf16 where the CPU has it (else f32): measured faster
    # than the f32 hint at the same fidelity (SPAN 55.9 vs 59.0 ms, Compact 103 vs 370 ms at 256 px)
    Capability("openvino", "int8", "onnx-int8", {"precision": "bf16"}, "the QDQ ONNX, run by OpenVINO"),
    Capability("openvino", "int8", "openvino-int8", {"precision": "bf16"}, "NNCF-quantized IR"),
    Capability("ncnn", "fp32", "ncnn-fp32"),
    # bf16 storage, fp32 arithmetic: faster than fp32 storage on AVX2-only CPUs too (SPAN 4.24 vs
    # 4.88 us/px at 256 px; 53 dB vs the fp32 ONNX on the held-out crops)
    Capability("ncnn", "bf16", "ncnn-fp32", {"storage": "bf16"}, "bf16 storage, fp32 arithmetic"),
    Capability("ncnn", "fp16", "ncnn-fp32", {"storage": "fp16"}, "fp16 storage and arithmetic (ARM)", "FP16"),
    Capability("cuda", "fp32", "onnx-fp32"),
    Capability("cuda", "fp16", "onnx-fp16"),
    Capability("tensorrt", "fp32", "onnx-fp32"),
    Capability("tensorrt", "fp16", "onnx-fp32", {"fp16": True}, "TensorRT builds fp16 kernels itself"),
    Capability("coreml", "fp32", "onnx-fp32"),
    Capability("coreml", "fp16", "onnx-fp16"),
    Capability("coreml-native", "fp16", "coreml-fp16", note="the coremltools ML Program; macOS only"),
)

#: the CPU backends, whose rows are measured for fidelity and speed
CPU_PROVIDERS = cpu_backends()


def rows(provider: str | None = None, precision: str | None = None) -> list[Capability]:
    return [
        c
        for c in CAPABILITIES
        if (provider is None or c.provider == provider) and (precision is None or c.precision == precision)
    ]


def gate_db(fast: bool = False) -> float:
    return FAST_DB if fast else HIGH_FIDELITY_DB


# --- selection -------------------------------------------------------------------------


@dataclass(frozen=True)
class Measured:
    """One measured row: what ``auto`` chooses from."""

    capability: Capability
    psnr_db: float
    seconds: float
    finite: bool = True

    def meets(self, gate: float) -> bool:
        return self.finite and (self.capability.precision == "fp32" or self.psnr_db >= gate)


def choose_auto(
    measured: Iterable[Measured], gate: float, weight: Callable[[Measured], float] | None = None
) -> tuple[Measured, list[tuple[str, str]]]:
    """The fastest row that meets ``gate``; and (row, why) for every row passed over. ``weight``
    scales a row's measured seconds (the tiling its backend's footprint implies); none: 1."""

    def cost(m: Measured) -> float:
        return m.seconds * (weight(m) if weight is not None else 1.0)

    def slower(m: Measured) -> str:
        w = weight(m) if weight is not None else 1.0
        return f"slower: {m.seconds * 1000:.1f} ms" + (f" x{w:.2f} tiling" if w != 1.0 else "")

    ms = sorted(measured, key=cost)
    passed: list[tuple[str, str]] = []
    best: Measured | None = None
    for m in ms:
        if not m.meets(gate):
            why = "NaN/Inf on held-out images" if not m.finite else f"fidelity {m.psnr_db} dB < gate {gate} dB"
            passed.append((f"{m.capability.key}@{m.capability.target}", why))
        elif best is None:
            best = m
        else:
            passed.append((f"{m.capability.key}@{m.capability.target}", slower(m)))
    if best is None:
        raise PixeliftError(f"no measured precision row meets the {gate} dB gate (fp32 was not measured here)")
    return best, passed


# --- held-out images -------------------------------------------------------------------


def _aligned(n: int, alignment: int) -> int:
    return max(alignment, n - n % alignment)


def heldout_images(
    alignment: int = 1, folder: Path | None = None, arch: str | None = None
) -> list[tuple[str, np.ndarray]]:
    """Held-out real-image crops as ``arch``'s graph input: see :class:`pixelift.calibration.CalibrationSource`."""
    from pixelift.calibration import CalibrationSource

    return CalibrationSource(folder).heldout(alignment, arch=arch)


# --- measuring -------------------------------------------------------------------------


def measure(
    cap: Capability,
    target_path: Path,
    reference: dict[str, np.ndarray],
    images: Sequence[tuple[str, np.ndarray]],
    *,
    timing_input: np.ndarray | None = None,
) -> FidelityRecord:
    """Fidelity record of one capability row: worst PSNR vs ``reference`` outputs, finiteness, seconds."""
    from pixelift.providers import get_provider

    sess = get_provider(cap.provider).open(target_path, provider_options(cap.provider, cap.options))
    per_image: dict[str, float] = {}
    finite = True
    for name, x in images:
        y = sess.run(x[None])
        if not np.all(np.isfinite(y)):
            finite = False
            per_image[name] = float("nan")
            continue
        # on the image actually written: both clipped to 0..1
        per_image[name] = round(float(min(psnr(np.clip(reference[name], 0, 1), np.clip(y, 0, 1)), 200.0)), 2)
    vals = [v for v in per_image.values() if not math.isnan(v)]
    t_in = timing_input if timing_input is not None else images[0][1][None]
    return FidelityRecord(
        provider=cap.provider,
        precision=cap.precision,
        target=cap.target,
        options=cap.options,
        # bf16/fp16 fidelity and every timing depend on the CPU: a cache copied to another
        # machine measures again there
        machine=_fingerprint(),
        psnr_db=min(vals) if vals and finite else None,
        per_image_db=per_image,
        finite=finite,
        seconds=round(time_session(sess, t_in), 5),
        timing_input=tuple(t_in.shape),
        reference=REFERENCE,
        images="held-out crops (not used for calibration)",
    )


def _fingerprint() -> str:
    from pixelift.providers import read_machine

    return read_machine().fingerprint()


def reference_outputs(fp32_path: Path, images: Sequence[tuple[str, np.ndarray]]) -> dict[str, np.ndarray]:
    from pixelift.providers import get_provider

    sess = get_provider("cpu").open(fp32_path)
    return {name: sess.run(x[None]) for name, x in images}


def _side_file(art: Artifact) -> Path:
    return writable("measurements") / f"{art.sha256}.{_fingerprint()}.json"


def _side_records(art: Artifact) -> dict[str, FidelityRecord]:
    """This machine's fidelity records of an artifact, kept in the state folder where its manifest
    cannot hold them: a read-only cache, or a manifest that holds another machine's (a damaged file
    is as good as none: the rows are measured again)."""
    try:
        return fidelity_records(json.loads(_side_file(art).read_text()))
    except (OSError, ValueError):
        return {}


def _store_side_record(art: Artifact, key: str, rec: FidelityRecord) -> None:
    records = {k: r.to_json() for k, r in {**_side_records(art), key: rec}.items()}
    try:
        atomic_write_bytes(_side_file(art), json.dumps(records, indent=1, sort_keys=True).encode())
    except OSError as exc:
        log.warning(
            "%s: cannot record fidelity anywhere (%s); it is measured again next run", art.model_id, exc, extra=EVENT
        )


def missing_hint(precision: str, providers: Sequence[str], model_id: str) -> str:
    """What to do when no artifact of ``precision`` is runnable on ``providers``."""
    from pixelift.providers import get_provider, read_machine

    runners = {c.provider for c in rows(precision=precision) if c.provider in providers}
    if not runners:
        able = sorted({c.provider for c in rows(precision=precision)})
        return f"{precision} runs on {', '.join(able) or 'no provider'} only"
    fp32 = find(model_id, ONNX_FP32)
    if fp32 is not None:  # rows whose artifacts come from weights the model does not have: no export helps
        kinds = ModelSpec.from_dict(dict(fp32.manifest.spec)).source_kinds
        needed = {ALL_TARGETS[c.target].from_source for c in rows(precision=precision) if c.provider in runners}
        if None not in needed and not needed & kinds:
            return f"{', '.join(sorted(runners))} runs only artifacts made from {', '.join(map(str, needed))} weights; {model_id} has none"
        refused = [refusal(fp32, c.target) for c in rows(precision=precision) if c.provider in runners]
        if refused and all(refused):  # the builder said no to every one of them
            return str(refused[0])
    probes = {p: get_provider(p).probe(read_machine()) for p in sorted(runners)}
    if not any(p.available for p in probes.values()):
        return "; ".join(p.reason for p in probes.values())
    why = [_lacks(c, probes[c.provider]) for c in rows(precision=precision) if c.provider in probes]
    if all(why):  # every row here needs what the device lacks: no export would help
        return "; ".join(w for w in why if w)
    return f"run: pixelift export --precision {precision} {model_id}"


def _refusal_file(fp32: Artifact, target: str) -> Path:
    return inside(writable("refusals"), f"{validate_id(fp32.model_id)}--{validate_id(target, 'target')}.json")


def record_refusal(fp32: Artifact, target: str, why: str) -> None:
    """The builder refused ``target`` for the model of ``fp32``: said once, kept until ``fp32`` changes."""
    try:
        atomic_write_bytes(_refusal_file(fp32, target), json.dumps({"fp32": fp32.sha256, "why": why}).encode())
    except OSError as exc:
        log.debug("refusal of %s not recorded (%s)", target, exc)


def refusal(fp32: Artifact, target: str) -> str | None:
    """Why the builder refused ``target`` for this fp32 artifact; None when it has not."""
    try:
        d = json.loads(_refusal_file(fp32, target).read_text())
        return str(d["why"]) if d.get("fp32") == fp32.sha256 else None
    except (OSError, ValueError, KeyError, TypeError):
        return None


def probe_available(provider: str) -> bool:
    from pixelift.providers.select import probe_all

    probe = probe_all().get(provider)  # a probe that raised is recorded as unavailable
    return probe is not None and probe.available


def runnable(cap: Capability) -> bool:
    """Whether this machine offers row ``cap``: its provider is available and, where the row
    needs a device capability, the probe reports it."""
    from pixelift.providers.select import probe_all

    probe = probe_all().get(cap.provider)
    if probe is None or not probe.available:
        return False
    why = _lacks(cap, probe)
    if why:
        log.info("%s: not offered: %s", cap.key, why)
    return why is None


def _lacks(cap: Capability, probe: ProbeResult) -> str | None:
    """Why ``probe``'s device cannot run row ``cap`` as labelled; None when it can."""
    if cap.needs is None or cap.needs in probe.capabilities:
        return None
    return f"{cap.provider} needs {cap.needs}, which this device does not report ({', '.join(probe.capabilities)})"


def measure_model(
    model_id: str,
    *,
    providers: Sequence[str] = CPU_PROVIDERS,
    precisions: Sequence[str] = PRECISIONS,
    force: bool = False,
    folder: Path | None = None,
) -> dict[str, FidelityRecord]:
    """Measure (and store in each target's manifest) every runnable row of the capability
    table for the model's existing artifacts. Returns ``{"provider:precision@target": record}``."""
    fp32 = find(model_id, ONNX_FP32)
    if fp32 is None:
        raise PixeliftError(f"{model_id}: no onnx-fp32 artifact; run `pixelift export {model_id}` first")
    alignment = fp32.manifest.alignment
    images: list[tuple[str, np.ndarray]] = []  # read only when a row has to be measured
    ref: dict[str, np.ndarray] | None = None
    out: dict[str, FidelityRecord] = {}
    for cap in CAPABILITIES:
        if cap.provider not in providers or cap.precision not in precisions or not runnable(cap):
            continue
        art = find(model_id, cap.target)
        if art is None:
            continue
        here = _fingerprint()
        stored = art.manifest.fidelity.get(cap.key)
        have = stored if stored is not None and stored.machine == here else _side_records(art).get(cap.key)
        # a record is reused only for this machine and the row's current options
        if have is not None and have.machine == here and have.options == cap.options and not force:
            out[f"{cap.key}@{cap.target}"] = have
            continue
        if ref is None:
            log.warning(
                "%s: measuring its precisions on this machine now (one time: fidelity against fp32 and speed)",
                model_id,
                extra=EVENT,
            )
            images = heldout_images(alignment, folder, str(fp32.manifest.spec["architecture"]))
            ref = reference_outputs(fp32.path, images)
        try:
            rec = measure(cap, art.path, ref, images)
        except Exception as exc:  # a row that cannot run is recorded as such, never chosen
            log.warning("%s: %s on %s failed: %s", model_id, cap.key, cap.target, exc)
            rec = FidelityRecord(
                cap.provider, cap.precision, cap.target, cap.options, _fingerprint(), None, False, None, error=str(exc)
            )
        if stored is not None and stored.machine != here and not force:
            # another machine's record stays: a Ray worker pinned to fewer cores is another "machine",
            # and the two overwriting each other had every run of either measure again
            _store_side_record(art, cap.key, rec)
        else:
            try:
                update_manifest(art, "fidelity", {cap.key: rec.to_json()})
            except OSError as exc:  # a read-only cache: the record goes to the state folder instead
                log.info("%s: fidelity recorded beside the read-only cache (%s)", model_id, exc)
                _store_side_record(art, cap.key, rec)
        out[f"{cap.key}@{cap.target}"] = rec
    return out


def measured_rows(records: Mapping[str, FidelityRecord]) -> list[Measured]:
    out = []
    for rec in records.values():
        if rec.seconds is None or rec.error:
            continue
        cap = next(
            (
                c
                for c in CAPABILITIES
                if (c.provider, c.precision, c.target) == (rec.provider, rec.precision, rec.target)
            ),
            None,
        )
        if cap is None:  # a record of a row the table no longer has
            continue
        db = rec.psnr_db if rec.psnr_db is not None else float("-inf")
        out.append(Measured(cap, db, rec.seconds, rec.finite))
    return out
