"""Probe results kept across processes: a CLI call that runs on ncnn need not import OpenVINO
(0.13 s) or onnxruntime to learn again what this machine has.

The key is everything a probe reads that can change between runs: the machine's fingerprint
(CPU, its features, GPUs and their memory), the installed packages (the site-packages
folders change whenever pip installs or removes one), the environment the backends read,
the GPU/NPU device nodes the drivers create, and the provider table itself. A stored result
is also dropped after :data:`MAX_AGE_S`. ``pixelift doctor`` always probes afresh.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
import sysconfig
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pixelift.paths import atomic_write_bytes, writable
from pixelift.providers.base import ProbeResult
from pixelift.providers.machine import MachineFacts

log = logging.getLogger(__name__)

MAX_AGE_S = 24 * 3600
#: environment variables the backends' probes read (library paths, visible devices)
ENV_PREFIXES = ("CUDA_", "NVIDIA_", "OV_", "ORT_", "LD_LIBRARY_PATH", "DYLD_", "PATH", "VK_")
#: device nodes a GPU/NPU driver creates (Intel GPU and NPU for OpenVINO, NVIDIA), and where
#: Vulkan drivers register (ncnn:GPU): installing one changes the listing
DEVICE_DIRS = ("/dev/dri", "/dev/accel", "/usr/share/vulkan/icd.d", "/etc/vulkan/icd.d")


def _file() -> Path:
    return writable("providers") / "probes.json"


def _mtime(path: str) -> str:
    try:
        return str(Path(path).stat().st_mtime_ns)
    except OSError:
        return "-"


def _listing(path: str) -> str:
    try:
        return ",".join(sorted(os.listdir(path)))
    except OSError:
        return "-"


def key(facts: MachineFacts, providers: Mapping[str, Any]) -> str:
    paths = sysconfig.get_paths()
    parts = [
        facts.fingerprint(),
        sys.prefix,
        *(f"{p}:{_mtime(p)}" for p in sorted({paths["purelib"], paths["platlib"]})),
        *(f"{k}={v}" for k, v in sorted(os.environ.items()) if k.startswith(ENV_PREFIXES)),
        *(f"{d}:{_listing(d)}" for d in DEVICE_DIRS),
        ",".join(n for n in os.listdir("/dev") if n.startswith("nvidia")) if os.path.isdir("/dev") else "",
        *(f"{n}={type(p).__module__}.{type(p).__qualname__}" for n, p in providers.items()),
    ]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()


def load(k: str) -> dict[str, ProbeResult] | None:
    try:
        stored = json.loads(_file().read_text())
        if stored.get("key") != k or time.time() - float(stored["at"]) > MAX_AGE_S:
            return None
        return {
            name: ProbeResult(
                bool(r["available"]),
                str(r["reason"]),
                tuple(r["devices"]),
                dict(r["details"]),
                tuple(r["capabilities"]),
            )
            for name, r in stored["probes"].items()
        }
    except (OSError, ValueError, KeyError, TypeError):
        return None


def store(k: str, probes: Mapping[str, ProbeResult]) -> None:
    body = {
        "key": k,
        "at": time.time(),
        "probes": {
            name: {
                "available": r.available,
                "reason": r.reason,
                "devices": list(r.devices),
                "details": r.details,
                "capabilities": list(r.capabilities),
            }
            for name, r in probes.items()
        },
    }
    try:
        atomic_write_bytes(_file(), json.dumps(body, indent=1, sort_keys=True).encode())
    except (OSError, TypeError, ValueError) as exc:  # details that are not JSON, a read-only home
        log.debug("probe results not kept (%s): probed again next run", exc)
