"""What this machine has: OS, CPU features, NVIDIA GPUs, Apple chip. Read-only and cheap.

Nothing here builds a session or loads a model. NVIDIA GPUs are read from NVML (the
driver's own library, through ctypes) or, failing that, ``nvidia-smi``; decisions use
what the hardware reports (memory, count), never lists of product names.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import hashlib
import os
import platform
import shutil
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

# CPU flags that matter for inference speed (x86 names as in /proc/cpuinfo; ARM: asimd, sve, i8mm, bf16).
INTERESTING_FLAGS = (
    "avx2",
    "fma",
    "avx512f",
    "avx512_vnni",
    "avx_vnni",
    "avx512_bf16",
    "avx512_fp16",
    "amx_tile",
    "amx_bf16",
    "amx_int8",
    "asimd",
    "asimddp",
    "sve",
    "i8mm",
    "bf16",
)


@dataclass(frozen=True)
class GPU:
    vendor: str
    name: str
    memory_bytes: int | None
    index: int


@dataclass(frozen=True)
class MachineFacts:
    os: str
    os_release: str
    arch: str
    python: str
    cpu_model: str
    cpu_count: int
    cpu_features: tuple[str, ...]
    memory_bytes: int | None
    gpus: tuple[GPU, ...] = ()
    apple_chip: str | None = None

    @property
    def nvidia_gpus(self) -> tuple[GPU, ...]:
        return tuple(g for g in self.gpus if g.vendor == "NVIDIA")

    @property
    def apple_silicon(self) -> bool:
        return self.os == "Darwin" and self.arch == "arm64"

    def fingerprint(self) -> str:
        """Stable id of this machine's compute for caches of measured choices."""
        key = "|".join([self.os, self.arch, self.cpu_model, str(self.cpu_count), ",".join(self.cpu_features)])
        key += "|" + ",".join(f"{g.vendor}:{g.name}:{g.memory_bytes}" for g in self.gpus)
        return hashlib.sha256(key.encode()).hexdigest()[:16]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _read(path: str) -> str:
    try:
        return Path(path).read_text(errors="replace")
    except OSError:
        return ""


def _sysctl(name: str) -> str:
    exe = shutil.which("sysctl")
    if not exe:
        return ""
    try:
        return subprocess.run([exe, "-n", name], capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def cpu_info() -> tuple[str, tuple[str, ...]]:
    """(model name, interesting feature flags)."""
    text = _read("/proc/cpuinfo")
    model, flags = "", set[str]()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key in ("model name", "Model", "Hardware") and not model:
            model = value.strip()
        elif key in ("flags", "Features") and not flags:
            flags = set(value.split())
    if not text and platform.system() == "Darwin":
        model = _sysctl("machdep.cpu.brand_string")
        flags = {f.lower() for f in _sysctl("machdep.cpu.features").split()}
        if _sysctl("hw.optional.arm.FEAT_BF16") == "1":
            flags.add("bf16")
        if _sysctl("hw.optional.arm.FEAT_I8MM") == "1":
            flags.add("i8mm")
        if platform.machine() == "arm64":
            flags.add("asimd")
    return model or platform.processor() or "unknown", tuple(f for f in INTERESTING_FLAGS if f in flags)


def memory_bytes() -> int | None:
    for line in _read("/proc/meminfo").splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) * 1024
    mem = _sysctl("hw.memsize")
    return int(mem) if mem.isdigit() else None


def _nvml_gpus() -> tuple[GPU, ...] | None:
    """GPUs from NVML, or None when the NVIDIA driver library is not present."""
    name = "nvml.dll" if os.name == "nt" else "libnvidia-ml.so.1"
    try:
        nvml = ctypes.CDLL(name)
    except OSError:
        # elsewhere the loader has already searched where find_library would look (ldconfig's
        # cache, LD_LIBRARY_PATH), and find_library runs ldconfig: 0.013 s of every start
        found = ctypes.util.find_library("nvidia-ml") if os.name == "nt" else None
        if not found:
            return None
        try:
            nvml = ctypes.CDLL(found)
        except OSError:
            return None
    if nvml.nvmlInit_v2() != 0:
        return None
    try:
        count = ctypes.c_uint()
        if nvml.nvmlDeviceGetCount_v2(ctypes.byref(count)) != 0:
            return ()
        gpus = []
        for i in range(count.value):
            handle = ctypes.c_void_p()
            if nvml.nvmlDeviceGetHandleByIndex_v2(i, ctypes.byref(handle)) != 0:
                continue
            buf = ctypes.create_string_buffer(96)
            nvml.nvmlDeviceGetName(handle, buf, 96)

            class _Mem(ctypes.Structure):
                _fields_ = [("total", ctypes.c_ulonglong), ("free", ctypes.c_ulonglong), ("used", ctypes.c_ulonglong)]

            mem = _Mem()
            total = mem.total if nvml.nvmlDeviceGetMemoryInfo(handle, ctypes.byref(mem)) == 0 else None
            gpus.append(GPU("NVIDIA", buf.value.decode(errors="replace"), total, i))
        return tuple(gpus)
    finally:
        nvml.nvmlShutdown()


def _nvidia_smi_gpus() -> tuple[GPU, ...]:
    exe = shutil.which("nvidia-smi")
    if not exe:
        return ()
    try:
        out = subprocess.run(
            [exe, "--query-gpu=index,name,memory.total", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return ()
    gpus = []
    for line in out.strip().splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 3 and parts[0].isdigit():
            mem = int(parts[2]) * (1 << 20) if parts[2].isdigit() else None
            gpus.append(GPU("NVIDIA", parts[1], mem, int(parts[0])))
    return tuple(gpus)


def nvidia_gpus() -> tuple[GPU, ...]:
    gpus = _nvml_gpus()
    return gpus if gpus is not None else _nvidia_smi_gpus()


@functools.cache
def read_machine() -> MachineFacts:
    model, flags = cpu_info()
    system = platform.system()
    return MachineFacts(
        os=system,
        os_release=platform.release(),
        arch=platform.machine(),
        python=platform.python_version(),
        cpu_model=model,
        cpu_count=len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1),
        cpu_features=flags,
        memory_bytes=memory_bytes(),
        gpus=nvidia_gpus(),
        apple_chip=_sysctl("machdep.cpu.brand_string") or None if system == "Darwin" else None,
    )
