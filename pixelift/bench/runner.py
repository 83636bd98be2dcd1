"""The provider-comparison matrix: pixelift's providers and precisions against the peers.

Every configuration runs in a fresh process (``python -m pixelift.bench.worker``) with a
fixed thread count; peers run interleaved with pixelift's providers on the same input tile,
so the ratios compare neighbours in time on a noisy machine. See bench/README.md in the
repository for the method.
"""

from __future__ import annotations

import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pixelift import limits
from pixelift.bench.stats import trusted_ratio
from pixelift.service.state import ENV_SERVER
from pixelift.versions import installed_versions

WORKER = "pixelift.bench.worker"
DEFAULT_MODELS = ("span-x2-ch48", "realesrgan-animevideov3-x4")
DEFAULT_TILES = (128, 256)
DEFAULT_PROVIDERS = ("cpu", "openvino")
DEFAULT_PEERS = ("torch", "ncnn")
DEFAULT_SCALING_MP = (1.0, 4.0)
FULL_SCALING_MP = (1.0, 4.0, 12.0, 24.0)
SCALING_MODEL = "span-x2-ch48"
REFERENCE = "torch-fp32"
SCHEMA = 1

#: the modules a peer imports (both come with the export extra)
PEER_NEEDS = {"torch": ("torch", "spandrel"), "ncnn": ("ncnn",)}
#: the modules a provider imports beyond onnxruntime
PROVIDER_NEEDS = {"openvino": ("openvino",)}
#: the modules building a missing artifact imports (pixelift.export), per target
BUILD_NEEDS = {
    "onnx-fp32": ("torch", "spandrel", "onnx"),
    "onnx-fp16": ("onnx", "onnxconverter_common"),
    "onnx-int8": ("onnx",),
    "openvino-fp32": ("openvino",),
    "openvino-fp16": ("openvino",),
    "openvino-int8": ("openvino", "nncf"),
}
#: the extra that installs a module; anything not named here comes with ``export``
EXTRA_OF = {"matplotlib": "bench", "openvino": "openvino"}


@dataclass
class Matrix:
    models: tuple[str, ...] = DEFAULT_MODELS
    providers: tuple[str, ...] = DEFAULT_PROVIDERS
    precisions: tuple[str, ...] = ("fp32", "bf16")
    tiles: tuple[int, ...] = DEFAULT_TILES
    peers: tuple[str, ...] = DEFAULT_PEERS
    threads: int = 2
    warmup: int = 2
    min_repeats: int = 3
    max_repeats: int = 12
    budget_s: float = 5.0
    scaling_mp: tuple[float, ...] = DEFAULT_SCALING_MP
    scaling_model: str = SCALING_MODEL
    ceiling_n: int = 4096
    extra: dict[str, Any] = field(default_factory=dict)


def precision_support() -> tuple[dict[str, tuple[str, ...]], str]:
    """Precisions per CPU provider, read from pixelift's capability table, and a sentence saying so."""
    from pixelift import precision as P

    support = {p: tuple(q for q in P.PRECISIONS if P.rows(p, q)) for p in P.CPU_PROVIDERS}
    note = (
        "every (provider, precision) row of pixelift.precision.CAPABILITIES for the CPU providers; "
        "fp16/int8 artifacts are built (and their fidelity measured) on first use; "
        "bf16 is OpenVINO's inference hint on the fp32 artifact"
    )
    return support, note + "."


def artifact_for(model: str, provider: str, precision: str, target: str) -> tuple[Path, dict[str, Any]]:
    """The artifact and provider options a capability row needs, built if missing."""
    from pixelift import precision as P
    from pixelift.artifacts import find

    cap = next(c for c in P.rows(provider, precision) if c.target == target)
    art = find(model, cap.target)
    if art is None:
        from pixelift.export.targets import export_precision

        export_precision(model, P.TARGETS[cap.target].precision)
        art = find(model, cap.target)
    if art is None:
        raise RuntimeError(f"{model}: no {target} artifact for {provider} at {precision}")
    return art.path, dict(cap.options)


def missing_modules(modules: Iterable[str]) -> list[str]:
    """The modules of ``modules`` that cannot be imported here (found without importing them)."""
    return [m for m in dict.fromkeys(modules) if importlib.util.find_spec(m) is None]


def install_hint(modules: Iterable[str]) -> str:
    """``pip install 'pixelift[...]'`` naming the extras that bring ``modules``."""
    extras = dict.fromkeys(EXTRA_OF.get(m, "export") for m in modules)
    return f"pip install 'pixelift[{','.join(extras)}]'"


def peer_status(peers: tuple[str, ...]) -> dict[str, str]:
    """'' when the peer can run, else why not."""
    out = {}
    for p in peers:
        if p not in PEER_NEEDS:
            out[p] = f"unknown peer {p!r} (known: {', '.join(PEER_NEEDS)})"
        elif missing := missing_modules(PEER_NEEDS[p]):
            out[p] = f"not installed: {', '.join(missing)} ({install_hint(missing)})"
        else:
            out[p] = ""
    return out


def preflight(m: Matrix, plots: bool = False) -> list[str]:
    """What this run needs and this install lacks, one line each naming the extra to install
    (empty when it can run). Checked before anything runs, so a runtime-only install is told
    what to install instead of skipping every configuration."""
    from pixelift import precision as P
    from pixelift.artifacts import find

    out = []
    if plots and (missing := missing_modules(["matplotlib"])):
        out.append(f"the report's plots need matplotlib: {install_hint(missing)}")
    providers = []
    for p in m.providers:
        if missing := missing_modules(PROVIDER_NEEDS.get(p, ())):
            out.append(f"provider {p} needs {', '.join(missing)}: {install_hint(missing)} (or --providers cpu)")
        else:
            providers.append(p)
    out += [f"peer {p}: {why} (or --peers none)" for p, why in peer_status(m.peers).items() if why]
    rows = [c.target for p in providers for q in m.precisions for c in P.rows(p, q)]
    wanted = {model: ["onnx-fp32", *rows] for model in m.models}
    if m.scaling_mp:
        wanted.setdefault(m.scaling_model, ["onnx-fp32"])
    for model, targets in wanted.items():
        todo = [t for t in dict.fromkeys(targets) if find(model, t) is None]
        if missing := missing_modules(mod for t in todo for mod in BUILD_NEEDS.get(t, ())):
            out.append(
                f"{model}: {', '.join(todo)} not built here, and building needs {', '.join(missing)}: "
                f"{install_hint(missing)}"
            )
    return out


def _where(run: dict[str, Any]) -> str:
    """'model label tile px' for a tile configuration, 'model N MP' for a scaling photo."""
    parts = [run["model"], run.get("label"), run.get("tile") and f"{run['tile']} px"]
    parts.append(run.get("target_mp") is not None and f"{run['target_mp']} MP")
    return " ".join(str(p) for p in parts if p)


def unmeasured(res: dict[str, Any]) -> str | None:
    """None when the run measured something (a tile configuration or a scaling photo), else why not."""
    runs = [*res["results"], *res["scaling"]]
    if any(r.get("ok") for r in runs):
        return None
    errors = list(dict.fromkeys(f"{_where(r)}: {' '.join(str(r.get('error')).split())}" for r in runs))
    why = "; ".join(errors[:3]) + (f"; and {len(errors) - 3} more" if len(errors) > 3 else "")
    return f"no configuration produced a measurement: {why or 'the matrix is empty'}"


def versions() -> dict[str, str]:
    found = installed_versions(("pixelift", "numpy", "onnxruntime", "openvino", "onnx", "torch", "spandrel", "ncnn"))
    return {"python": sys.version.split()[0]} | {k: v or "missing" for k, v in found.items()}


def child_env(threads: int) -> dict[str, str]:
    env = dict(os.environ)
    for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
        env[k] = str(threads)
    # every side's arrays as the pixelift CLI has them (without huge pages), so a peer's pipeline
    # is not timed with first touches the CLI it is compared with does not pay
    env.setdefault(limits.ENV_NUMPY_HUGE_PAGES, "0")
    env[ENV_SERVER] = "off"  # a pixelift CLI it times runs in its own process, not in a service left running
    # the folder holding this pixelift, so the worker imports the same one (checkout or install)
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).resolve().parents[2]), env.get("PYTHONPATH", "")])
    return env


def run_child(cfg: dict[str, Any], threads: int, timeout: float = 900) -> dict[str, Any]:
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(
            # -P: neither the working directory nor a script's folder goes on sys.path
            [sys.executable, "-P", "-m", WORKER, json.dumps(cfg)],
            capture_output=True,
            text=True,
            env=child_env(threads),
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        return {"ok": False, "error": f"timed out after {timeout} s", "wall_s": time.perf_counter() - t0}
    line = next((ln for ln in reversed(proc.stdout.splitlines()) if ln.startswith("RESULT ")), None)
    if line is None:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        res = {"ok": False, "error": f"worker exited {proc.returncode}: {' | '.join(tail)}"}
    else:
        res = json.loads(line[len("RESULT ") :])
    res["wall_s"] = time.perf_counter() - t0
    return res


def bench_input(tile: int, alignment: int = 1) -> np.ndarray:
    """A real photo tile (NCHW float32): a centre crop of the bundled photo, resized if larger."""
    from PIL import Image

    from pixelift.samples import sample_photo

    side = max(alignment, tile - tile % alignment)
    img = sample_photo()
    h, w = img.shape[:2]
    if side <= min(h, w):
        top, left = (h - side) // 2, (w - side) // 2
        img = img[top : top + side, left : left + side]
    else:
        img = np.asarray(Image.fromarray(img).resize((side, side), Image.Resampling.LANCZOS))
    return np.ascontiguousarray(img.transpose(2, 0, 1)[None].astype(np.float32) / 255.0)


def _artifact(model: str) -> Path:
    if importlib.util.find_spec("torch") is not None:
        from pixelift.export import to_onnx

        return to_onnx(model).path
    from pixelift.artifacts import find

    art = find(model, "onnx-fp32")
    if art is None:
        raise RuntimeError(f"{model} is not exported and torch is missing: run `pixelift export {model}`")
    return art.path


def _psnr(a: np.ndarray, b: np.ndarray) -> float | None:
    from pixelift.metrics import psnr

    if a.shape != b.shape:
        return None
    v = psnr(np.clip(a, 0, 1), np.clip(b, 0, 1))
    return None if v == float("inf") else round(v, 2)


def configs_for(m: Matrix, peers_ok: list[str]) -> list[dict[str, Any]]:
    """Interleaved order: the reference first, then pixelift and peers alternating."""
    from pixelift import precision as P

    # one config per capability row; a (provider, precision) pair with several artifacts
    # (openvino int8: the QDQ ONNX and the NNCF IR) labels the later ones with the target
    ours = [
        {
            "runtime": "pixelift",
            "provider": p,
            "precision": q,
            "target": cap.target,
            "label": f"{p}-{q}" if i == 0 else f"{p}-{q}@{cap.target}",
        }
        for q in m.precisions
        for p in m.providers
        for i, cap in enumerate(P.rows(p, q))
    ]
    theirs = []
    if "ncnn" in peers_ok:
        theirs += [
            {"runtime": "ncnn", "provider": "ncnn", "precision": q, "label": f"ncnn-{q}"} for q in ("fp32", "bf16")
        ]
    out: list[dict[str, Any]] = []
    if "torch" in peers_ok:
        out.append({"runtime": "torch", "provider": "torch", "precision": "fp32", "label": REFERENCE})
    while ours or theirs:
        if ours:
            out.append(ours.pop(0))
        if theirs:
            out.append(theirs.pop(0))
    return out


def run_matrix(m: Matrix, log: Callable[[str], None] = print) -> dict[str, Any]:
    from pixelift import models
    from pixelift.providers import read_machine

    t_start = time.perf_counter()
    facts = read_machine()
    pstat = peer_status(m.peers)
    for p, why in pstat.items():
        if why:
            log(f"peer {p}: MISSING ({why}); benching without it")
    peers_ok = [p for p, why in pstat.items() if not why]
    _, prec_note = precision_support()
    log(f"precisions: {prec_note}")
    base: dict[str, Any] = {"threads": m.threads, "warmup": m.warmup, "min_repeats": m.min_repeats}
    base |= {"max_repeats": m.max_repeats, "budget_s": m.budget_s}
    ceilings = []
    log(f"ceiling: sgemm {m.ceiling_n} on {m.threads} threads")
    ceilings.append(run_child({"kind": "ceiling", "n": m.ceiling_n}, m.threads))
    rows: list[dict[str, Any]] = []
    autos: dict[str, Any] = {}
    flops_info: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="pixelift-bench-") as tmp:
        for model in m.models:
            spec = models.get(model)
            try:
                art = _artifact(model)
            except Exception as exc:
                log(f"{model}: skipped: {exc}")
                rows.append({"model": model, "ok": False, "error": str(exc)})
                continue
            autos[model] = run_child({"kind": "auto", "model": model}, m.threads)
            for tile in m.tiles:
                x = bench_input(tile, spec.alignment)
                side = x.shape[-1]
                inp = Path(tmp) / f"in-{side}.npy"
                np.save(inp, x)
                try:
                    from pixelift.bench.flops import conv_flops

                    fl: dict[str, Any] = conv_flops(art, side, side)
                except Exception as exc:  # no onnx installed, or shape inference failed
                    fl = {"flops": None, "error": f"{type(exc).__name__}: {exc}"}
                flops_info[f"{model}@{side}"] = fl
                ref = None
                group = []
                for c in configs_for(m, peers_ok):
                    out_path = Path(tmp) / f"out-{c['label']}.npy"
                    cfg = {**base, **c, "kind": "tile", "model": model, "artifact": str(art)}
                    cfg |= {"input": str(inp), "output": str(out_path)}
                    res: dict[str, Any] | None = None
                    if c["runtime"] == "pixelift":
                        try:
                            path, options = artifact_for(model, c["provider"], c["precision"], c["target"])
                            cfg |= {"artifact": str(path), "options": options}
                        except Exception as exc:  # a failed build fails this row, not the run
                            res = {"ok": False, "error": f"{c['target']}: {type(exc).__name__}: {exc}"}
                    res = res or run_child(cfg, m.threads)
                    row: dict[str, Any] = {
                        "model": model,
                        "scale": spec.scale,
                        "tile": side,
                        **c,
                        "threads": m.threads,
                        **res,
                    }
                    if res.get("ok"):
                        ts = res["times"]
                        med = statistics.median(ts)
                        row |= {"s_min": min(ts), "s_median": med, "s_max": max(ts), "repeats": len(ts)}
                        row["mp_per_s"] = side * side / 1e6 / med
                        row["gflops"] = fl["flops"] / med / 1e9 if fl.get("flops") else None
                        row["mflop_per_px"] = fl["flops"] / side / side / 1e6 if fl.get("flops") else None
                        y = np.load(out_path)
                        if c["label"] == REFERENCE:
                            ref = y
                        row["fidelity_db"] = _psnr(y, ref) if ref is not None and c["label"] != REFERENCE else None
                        out_path.unlink(missing_ok=True)
                        log(
                            f"{model} {side}px {c['label']:>14}: {med * 1000:8.1f} ms/tile "
                            f"(min {min(ts) * 1000:.1f}, max {max(ts) * 1000:.1f}, n={len(ts)}), "
                            f"setup {res['setup_s']:.2f} s, rss {res['rss_peak_mb']:.0f} MB"
                            + (f", {row['fidelity_db']} dB" if row.get("fidelity_db") is not None else "")
                        )
                    else:
                        log(f"{model} {side}px {c['label']:>14}: FAILED {res.get('error')}")
                    row.pop("times", None) if not res.get("ok") else None
                    group.append(row)
                peer_times = {r["label"]: r["times"] for r in group if r["runtime"] != "pixelift" and r.get("ok")}
                for r in group:
                    if r["runtime"] == "pixelift" and r.get("ok"):
                        r["ratio"], r["noisy"] = {}, {}
                        for k, peer in peer_times.items():
                            peer_ratio, noise = trusted_ratio(peer, r["times"])
                            if noise is None:
                                r["ratio"][k] = peer_ratio
                            else:
                                r["noisy"][k] = noise
                                log(f"WARNING: {model} {side}px {r['label']} vs {k}: no ratio, {noise}")
                rows.extend(group)
    log("ceiling: sgemm again (end of run)")
    ceilings.append(run_child({"kind": "ceiling", "n": m.ceiling_n}, m.threads))
    good = [c["gflops"] for c in ceilings if c.get("ok")]
    ceiling_gflops = statistics.median(good) if good else None
    for r in rows:
        if r.get("gflops") and ceiling_gflops:
            r["pct_ceiling"] = 100.0 * r["gflops"] / ceiling_gflops
    scaling = []
    for mp in m.scaling_mp:
        res = run_child({"kind": "scaling", "model": m.scaling_model, "mp": mp, "provider": "auto"}, m.threads)
        scaling.append({"model": m.scaling_model, "target_mp": mp, **res})
        if res.get("ok"):
            log(
                f"scaling {m.scaling_model} {res['mp']:.1f} MP via {res['provider']}: {res['seconds']:.2f} s, "
                f"peak rss {res['rss_peak_mb']:.0f} MB"
            )
        else:
            log(f"scaling {mp} MP: FAILED {res.get('error')}")
    return {
        "schema": SCHEMA,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "wall_s": time.perf_counter() - t_start,
        "machine": facts.to_dict(),
        "versions": versions(),
        "matrix": {k: v for k, v in m.__dict__.items() if k != "extra"},
        "precision_note": prec_note,
        "peers": pstat,
        "ceiling": {"gflops": ceiling_gflops, "runs": ceilings},
        "flops": flops_info,
        "auto": autos,
        "results": rows,
        "scaling": scaling,
    }
