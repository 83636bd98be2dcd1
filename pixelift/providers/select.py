"""Provider selection that explains itself, and falls back out loud.

Default order: the accelerator providers in table order (tensorrt > cuda > coreml) > the
accelerator devices of other providers (openvino GPU/NPU; ncnn GPU, which opens only its own
artifact, is tried by :mod:`pixelift.runtime.session` when none of these is present) > the faster of the CPU
backends (openvino-CPU and onnxruntime-CPU) for that model (a measured micro-benchmark, cached per model and
machine). Every candidate that is passed over is recorded with its reason; a session
that fails to open or fails its first run falls back to the next candidate with a
warning, or raises :class:`ProviderError` in strict mode.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pixelift import stamps
from pixelift.errors import ProviderOptionError
from pixelift.providers import probe_cache
from pixelift.providers.base import ProbeResult, ProviderError, Role, Session
from pixelift.providers.machine import MachineFacts, read_machine
from pixelift.providers.options import ProviderOptions
from pixelift.providers.table import PROVIDERS, opening, opens, provider_options, with_role

if TYPE_CHECKING:
    import numpy as np

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Request:
    """``provider`` is ``auto``, a provider name, or ``name:DEVICE`` (e.g. ``openvino:GPU``).

    ``options`` are one provider's typed options (:func:`provider_options`): they apply to
    that provider's candidates; every other candidate opens with its own defaults."""

    provider: str = "auto"
    strict: bool = False
    options: ProviderOptions | None = None

    def __post_init__(self) -> None:
        if self.options is not None and not isinstance(self.options, ProviderOptions):
            raise ProviderOptionError(f"request options must be typed provider options, not {self.options!r}")
        named = PROVIDERS.get(self.provider.partition(":")[0])
        if self.options is not None and named is not None:
            provider_options(named.name, self.options)  # another provider's options are refused


@dataclass(frozen=True)
class Candidate:
    label: str  # "cuda", "openvino:GPU", ...
    provider: str
    options: ProviderOptions
    why: str


@dataclass(frozen=True)
class Plan:
    candidates: tuple[Candidate, ...]
    rejected: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Selection:
    provider: str
    options: ProviderOptions
    session: Session
    rejected: tuple[tuple[str, str], ...]  # (candidate, why) for each better-ranked one passed over
    why: str = ""


CpuRanker = Callable[[], tuple[list[str], str]]


_PROBES: dict[tuple[object, ...], dict[str, ProbeResult]] = {}
PROBE_FAILED = "probe failed"  # such a result is not kept for the next process
#: the probe functions the table was loaded with: a probe replaced since (a test's fake) is never kept
_TABLE_PROBES = {name: getattr(type(p), "probe", None) for name, p in PROVIDERS.items()}


def probe_all(facts: MachineFacts | None = None) -> dict[str, ProbeResult]:
    """Every provider's probe. Probes have no side effects and a machine does not change under
    a running process, so this machine's results are kept for the process (the key follows the
    table and each probe function, so a provider added or faked is probed anew)."""
    if facts is not None:
        return _probe(facts)
    key = tuple((name, p, getattr(p.probe, "__func__", p.probe)) for name, p in PROVIDERS.items())
    got = _PROBES.get(key)
    if got is None:
        got = _PROBES[key] = _kept_or_probed(read_machine())
    return dict(got)


def _kept_or_probed(facts: MachineFacts) -> dict[str, ProbeResult]:
    """This machine's probes, from the previous process where nothing they read has changed
    (:mod:`pixelift.providers.probe_cache`); a probe replaced on its instance (a test's fake) is
    always run."""
    genuine = all(
        "probe" not in vars(p) and _TABLE_PROBES.get(n) is getattr(type(p), "probe", None) for n, p in PROVIDERS.items()
    )
    k = probe_cache.key(facts, PROVIDERS) if genuine else None
    kept = probe_cache.load(k) if k is not None else None
    if kept is not None and set(kept) == set(PROVIDERS):
        return kept
    got = _probe(facts)
    if k is not None and not any(r.reason.startswith(PROBE_FAILED) for r in got.values()):
        probe_cache.store(k, got)
    return got


def _probe(facts: MachineFacts) -> dict[str, ProbeResult]:
    out = {}
    for name, provider in PROVIDERS.items():
        try:
            out[name] = provider.probe(facts)
        except Exception as exc:  # a probe must never take the program down
            out[name] = ProbeResult(False, f"{PROBE_FAILED}: {type(exc).__name__}: {exc}")
    return out


def _label(name: str, device: str | None) -> str:
    return f"{name}:{device}" if device else name


def requested_unavailable(request: Request, probes: dict[str, ProbeResult]) -> tuple[str, str] | None:
    """``(label, why)`` when the provider (or device) the request names cannot run here;
    :class:`ProviderError` under ``strict``; None for ``auto`` or an available one."""
    if request.provider == "auto":
        return None
    name, _, device_text = request.provider.partition(":")
    device = device_text.upper() or None
    if name not in PROVIDERS:
        raise ProviderError(f"unknown provider {name!r}; choose from auto, {', '.join(PROVIDERS)}")
    probe = probes[name]
    if probe.available and (device is None or device in probe.devices):
        return None
    label = _label(name, device)
    have = ", ".join(probe.devices) or "none"
    why = probe.reason if not probe.available else f"no {device} device (have {have}; {probe.reason})"
    if request.strict:
        raise ProviderError(f"provider {label} (strict): {why}")
    log.warning("provider %s is not available (%s); falling back to automatic selection", label, why)
    return label, why


def plan(
    request: Request, probes: dict[str, ProbeResult], cpu_ranker: CpuRanker | None = None, suffix: str | None = None
) -> Plan:
    """The candidates, best first, and the providers passed over with why. ``suffix``: the
    model file's; a provider that cannot open such files is no candidate (named when requested)."""

    def options(pname: str, device: str | None = None) -> ProviderOptions:
        return provider_options(pname, {"device": device} if device else None, base=request.options)

    cands: list[Candidate] = []
    rejected: list[tuple[str, str]] = []
    name, _, device_text = request.provider.partition(":")
    device = device_text.upper() or None
    if request.provider != "auto":
        missing = requested_unavailable(request, probes)
        if missing is None and not opens(name, suffix):
            missing = (_label(name, device), f"{name} opens {', '.join(PROVIDERS[name].suffixes)} files, not {suffix}")
        if missing is None:
            cands.append(Candidate(_label(name, device), name, options(name, device), "requested"))
        else:
            rejected.append(missing)
        if request.strict:
            return Plan(tuple(cands), tuple(rejected))
    for pname in opening(suffix, with_role(Role.ACCELERATOR)):
        if any(c.provider == pname for c in cands) or any(label == pname for label, _ in rejected):
            continue  # the requested one, already judged above
        probe = probes[pname]
        if probe.available:
            cands.append(Candidate(pname, pname, options(pname), probe.reason))
        else:
            rejected.append((pname, probe.reason))
    for pname, provider in PROVIDERS.items():  # devices of other providers that rank as accelerators
        if not opens(pname, suffix):
            continue
        probe = probes[pname]
        for dev in provider.accelerator_devices:
            label = _label(pname, dev)
            if probe.available and dev in probe.devices:
                if not any(c.label == label for c in cands):
                    cands.append(Candidate(label, pname, options(pname, dev), f"{pname} {dev} device"))
            elif not any(seen == label for seen, _ in rejected):
                rejected.append((label, probe.reason if not probe.available else f"no {pname} {dev} device"))
    cpu_names = opening(suffix, with_role(Role.CPU))
    cpu_backends = [n for n in cpu_names if probes.get(n) and probes[n].available]
    for n in cpu_names:
        if n not in cpu_backends:
            rejected.append((n, probes[n].reason if n in probes else "not installed"))
    why = "only CPU backend available"
    if len(cpu_backends) > 1 and cpu_ranker is not None:
        cpu_backends, why = cpu_ranker()
    for n in cpu_backends:
        if not any(c.label == n for c in cands):
            cands.append(Candidate(n, n, options(n), why))
    return Plan(tuple(cands), tuple(rejected))


def _first_run_check(session: Session, probe_input: np.ndarray, scale: int | None) -> None:
    import numpy as np

    y = session.run(probe_input)
    if not np.all(np.isfinite(y)):
        raise ProviderError("first run produced NaN/Inf")
    if scale is not None and y.shape[2:] != tuple(s * scale for s in probe_input.shape[2:]):
        raise ProviderError(f"first run produced shape {y.shape} for input {probe_input.shape}")


def _first_run_key(
    model_path: Path, cand: Candidate, session: Session, probe_input: np.ndarray, scale: int | None
) -> str | None:
    """What a passed first run depends on: the graph file, the backend (its session class and
    version), the options, the input and this machine; None when the file cannot be read."""
    try:
        graph = stamps.file_key(model_path)
    except OSError:
        return None
    runtime = "|".join(stamps.version(d) for d in ("onnxruntime", "onnxruntime-gpu", "openvino"))
    kind = f"{type(session).__module__}.{type(session).__qualname__}"
    return (
        f"{graph}|{cand.label}|{kind}|{cand.options!r}|{probe_input.shape}|{scale}|{runtime}|"
        f"{read_machine().fingerprint()}"
    )


def open_session(
    model_path: Path,
    request: Request,
    *,
    probe_input: np.ndarray | None = None,
    scale: int | None = None,
    probes: dict[str, ProbeResult] | None = None,
    cpu_ranker: CpuRanker | None = None,
    reason: str | None = None,
) -> Selection:
    """Open a session on the best candidate that works; log and record every rejection. ``reason``: why the
    request names its provider, when the caller chose it (a measured precision row), not the user."""
    the_plan = plan(request, probes if probes is not None else probe_all(), cpu_ranker, model_path.suffix)
    rejected = list(the_plan.rejected)
    for cand in the_plan.candidates:
        stage = "open"
        try:
            session = PROVIDERS[cand.provider].open(model_path, cand.options)
            if probe_input is not None:
                stage = "first run"
                key = _first_run_key(model_path, cand, session, probe_input, scale)
                if key is None or not stamps.recall("first-run", key):
                    _first_run_check(session, probe_input, scale)
                    if key is not None:
                        stamps.remember("first-run", key)
        except Exception as exc:  # any backend failure is a reason to fall back
            why = f"failed at {stage}: {type(exc).__name__}: {exc}"
            if request.strict:
                raise ProviderError(f"provider {cand.label} (strict) {why}") from exc
            log.warning("provider %s %s; falling back", cand.label, why)
            rejected.append((cand.label, why))
            continue
        for label, why in rejected:
            log.info("provider %s passed over: %s", label, why)
        log.info("provider %s selected for %s (%s)", cand.label, model_path.name, reason or cand.why)
        return Selection(cand.label, cand.options, session, tuple(rejected), cand.why)
    raise ProviderError("no provider could run the model: " + "; ".join(f"{n}: {w}" for n, w in rejected))
