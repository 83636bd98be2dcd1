"""Providers: probes, ranking, fallback and strict mode.

This machine has only a CPU. onnxruntime CPU and OpenVINO run for real; CUDA, TensorRT and
CoreML are tested through injected fakes: a fake machine (MachineFacts), a fake
onnxruntime build list, and fake engines that fail to open, fail at first run or run out
of memory. No test here pretends a GPU ran.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

from pixelift import models
from pixelift.cli import main
from pixelift.errors import InferenceOutOfMemoryError, ProviderOptionError
from pixelift.export import to_onnx
from pixelift.metrics import psnr
from pixelift.providers import (
    PROVIDERS,
    ProbeResult,
    ProviderError,
    ProviderOptions,
    Request,
    Role,
    coreml,
    cuda,
    microbench,
    open_session,
    ort,
    plan,
    provider_options,
    read_machine,
    tensorrt,
)
from pixelift.providers.base import SilentFallbackError
from pixelift.providers.machine import GPU, MachineFacts
from pixelift.providers.openvino import OpenVINOOptions
from pixelift.samples import content_crop, to_chw

LINUX = MachineFacts("Linux", "6", "x86_64", "3.11", "Test CPU", 2, ("avx2", "avx512f"), 8 << 30)
LINUX_GPU = replace(LINUX, gpus=(GPU("NVIDIA", "Some GPU", 24 << 30, 0),))
MAC = MachineFacts("Darwin", "24", "arm64", "3.11", "Apple M3", 8, ("asimd", "bf16"), 16 << 30, apple_chip="Apple M3")


# --- probes: the hardware decides, from injected facts -------------------------------------


def test_cuda_probe_needs_a_gpu_and_a_gpu_build(monkeypatch: pytest.MonkeyPatch) -> None:
    p = PROVIDERS["cuda"]
    assert not p.probe(LINUX).available and "no NVIDIA GPU" in p.probe(LINUX).reason
    monkeypatch.setattr(ort, "build_eps", lambda: ("CPUExecutionProvider",))
    r = p.probe(LINUX_GPU)
    assert not r.available and "onnxruntime-gpu" in r.reason and "24576 MiB" in r.devices[0]
    monkeypatch.setattr(ort, "build_eps", lambda: ("CUDAExecutionProvider", "CPUExecutionProvider"))
    assert p.probe(LINUX_GPU).available


def test_tensorrt_probe_also_needs_its_libraries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ort, "build_eps", lambda: ("TensorrtExecutionProvider", "CUDAExecutionProvider"))
    monkeypatch.setattr(tensorrt, "tensorrt_libs_found", lambda: False)
    r = PROVIDERS["tensorrt"].probe(LINUX_GPU)
    assert not r.available and "libnvinfer" in r.reason
    monkeypatch.setattr(tensorrt, "tensorrt_libs_found", lambda: True)
    assert PROVIDERS["tensorrt"].probe(LINUX_GPU).available


def test_coreml_probe_reads_the_platform(monkeypatch: pytest.MonkeyPatch) -> None:
    assert "Apple Silicon" in PROVIDERS["coreml"].probe(LINUX).reason
    monkeypatch.setattr(ort, "build_eps", lambda: ("CoreMLExecutionProvider", "CPUExecutionProvider"))
    r = PROVIDERS["coreml"].probe(MAC)
    assert r.available and "Apple M3" in r.reason


def test_real_probes_on_this_machine() -> None:
    """The real probes agree with what is installed and present here, whatever that is."""
    facts = read_machine()
    assert facts.cpu_count >= 1 and facts.os
    assert PROVIDERS["cpu"].probe(facts).available == ort.installed()
    ov = PROVIDERS["openvino"].probe(facts)
    assert ov.available == (importlib.util.find_spec("openvino") is not None)
    assert ("CPU" in ov.devices) if ov.available else ("pip install 'pixelift[openvino]'" in ov.reason)
    cuda_ok = bool(facts.nvidia_gpus) and "CUDAExecutionProvider" in ort.build_eps()
    assert PROVIDERS["cuda"].probe(facts).available == cuda_ok
    assert PROVIDERS["coreml"].probe(facts).available == (facts.apple_silicon and coreml.EP in ort.build_eps())


# --- ranking and reasons ---------------------------------------------------------------------


def _probes(**available: bool) -> dict[str, ProbeResult]:
    out = {}
    for name in PROVIDERS:
        ok = available.get(name, False)
        devices = ("CPU", "GPU") if name == "openvino" and available.get("openvino_gpu") else ("CPU",)
        out[name] = ProbeResult(ok, f"{name} {'ok' if ok else 'missing'}", devices if ok else ())
    return out


def test_default_order_and_every_rejection_has_a_reason() -> None:
    everything = _probes(tensorrt=True, cuda=True, coreml=True, openvino=True, openvino_gpu=True, cpu=True)
    p = plan(Request(), everything, cpu_ranker=lambda: (["openvino", "cpu"], "measured"))
    assert [c.label for c in p.candidates] == ["tensorrt", "cuda", "coreml", "openvino:GPU", "openvino", "cpu"]
    # an ONNX file: ncnn (which opens only its .param graphs) is no candidate, missing or not
    laptop = plan(
        Request(),
        _probes(openvino=True, cpu=True),
        cpu_ranker=lambda: (["cpu", "openvino"], "measured"),
        suffix=".onnx",
    )
    assert [c.label for c in laptop.candidates] == ["cpu", "openvino"]
    assert dict(laptop.rejected) == {
        "tensorrt": "tensorrt missing",
        "cuda": "cuda missing",
        "coreml": "coreml missing",
        "openvino:GPU": "no openvino GPU device",
        "openvino:NPU": "no openvino NPU device",
    }


def test_explicit_provider_unavailable_falls_back_or_raises_in_strict_mode() -> None:
    probes = _probes(openvino=True, cpu=True)
    p = plan(Request("cuda"), probes, cpu_ranker=lambda: (["openvino", "cpu"], "m"))
    assert p.rejected[0] == ("cuda", "cuda missing") and p.candidates[0].label == "openvino"
    with pytest.raises(ProviderError, match=r"cuda.*strict"):
        plan(Request("cuda", strict=True), probes)
    with pytest.raises(ProviderError, match="no GPU device"):
        plan(Request("openvino:GPU", strict=True), probes)
    with pytest.raises(ProviderError, match="unknown provider"):
        plan(Request("vulkan"), probes)


# --- fallback when a session fails -------------------------------------------------------------


class FakeSession:
    def __init__(self, provider: str, fail_run: Exception | None = None, scale: int = 2) -> None:
        self.provider, self.fail_run, self.scale = provider, fail_run, scale
        self.input_names, self.output_names = ("input",), ("output",)

    def run(self, x: np.ndarray) -> np.ndarray:
        if self.fail_run is not None:
            raise self.fail_run
        return np.repeat(np.repeat(x, self.scale, 2), self.scale, 3)

    def run_feeds(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        return [self.run(feeds["input"])]


class FakeProvider:
    role = Role.ACCELERATOR
    devices: tuple[str, ...] = ()
    accelerator_devices: tuple[str, ...] = ()
    options_type: type[ProviderOptions] = ProviderOptions
    suffixes: tuple[str, ...] = (".onnx",)

    def __init__(self, name: str, *, open_error: Exception | None = None, run_error: Exception | None = None) -> None:
        self.name, self.open_error, self.run_error = name, open_error, run_error
        self.opened = 0

    def probe(self, facts: MachineFacts) -> ProbeResult:
        return ProbeResult(True, f"fake {self.name}", ("FAKE",))

    def open(self, model_path: Path, options: ProviderOptions | None = None) -> FakeSession:
        self.opened += 1
        if self.open_error is not None:
            raise self.open_error
        return FakeSession(self.name, self.run_error)


@pytest.fixture
def fake_table(monkeypatch: pytest.MonkeyPatch) -> dict[str, FakeProvider]:
    from pixelift.providers import select, table

    fakes = {
        "tensorrt": FakeProvider("tensorrt", open_error=RuntimeError("engine build failed")),
        "cuda": FakeProvider("cuda", run_error=RuntimeError("CUDA error: illegal memory access")),
        "coreml": FakeProvider("coreml", run_error=InferenceOutOfMemoryError("out of memory")),
        "openvino": FakeProvider("openvino"),
        "cpu": FakeProvider("cpu"),
    }
    fakes["openvino"].role = fakes["cpu"].role = Role.CPU
    monkeypatch.setattr(table, "PROVIDERS", fakes)
    monkeypatch.setattr(select, "PROVIDERS", fakes)
    return fakes


def test_open_and_first_run_failures_fall_back_out_loud(
    fake_table: dict[str, FakeProvider], caplog: pytest.LogCaptureFixture
) -> None:
    """tensorrt fails to open, cuda fails at first run, coreml runs out of memory: openvino wins."""
    probes = {n: p.probe(LINUX) for n, p in fake_table.items()}
    x = np.zeros((1, 3, 8, 8), np.float32)
    with caplog.at_level(logging.WARNING):
        sel = open_session(
            Path("m.onnx"),
            Request(),
            probe_input=x,
            scale=2,
            probes=probes,
            cpu_ranker=lambda: (["openvino", "cpu"], "m"),
        )
    assert sel.provider == "openvino"
    why = dict(sel.rejected)
    assert "failed at open" in why["tensorrt"] and "engine build failed" in why["tensorrt"]
    assert "failed at first run" in why["cuda"] and "illegal memory access" in why["cuda"]
    assert "InferenceOutOfMemoryError" in why["coreml"]
    assert caplog.text.count("falling back") == 3


def test_strict_raises_instead_of_falling_back(fake_table: dict[str, FakeProvider]) -> None:
    probes = {n: p.probe(LINUX) for n, p in fake_table.items()}
    x = np.zeros((1, 3, 8, 8), np.float32)
    with pytest.raises(ProviderError, match=r"cuda.*strict.*first run"):
        open_session(Path("m.onnx"), Request("cuda", strict=True), probe_input=x, scale=2, probes=probes)
    assert fake_table["openvino"].opened == 0
    sel = open_session(Path("m.onnx"), Request("openvino", strict=True), probe_input=x, scale=2, probes=probes)
    assert sel.provider == "openvino" and sel.rejected == ()


def test_first_run_with_wrong_shape_or_nan_is_a_failure(fake_table: dict[str, FakeProvider]) -> None:
    probes = {n: p.probe(LINUX) for n, p in fake_table.items()}
    x = np.zeros((1, 3, 8, 8), np.float32)
    with pytest.raises(ProviderError, match="shape"):
        open_session(Path("m.onnx"), Request("openvino", strict=True), probe_input=x, scale=4, probes=probes)
    fake_table["cpu"].run_error = None
    nan = FakeSession("cpu")
    nan.run = lambda x: np.full((1, 3, 16, 16), np.nan, np.float32)  # type: ignore[method-assign]
    fake_table["cpu"].open = lambda *_a, **_k: nan  # type: ignore[method-assign]
    with pytest.raises(ProviderError, match="NaN"):
        open_session(Path("m.onnx"), Request("cpu", strict=True), probe_input=x, scale=2, probes=probes)


def test_silent_onnxruntime_cpu_fallback_is_detected(tmp_path: Path) -> None:
    """onnxruntime-gpu without CUDA libraries quietly builds a CPU session; we refuse it."""

    class QuietCpuSession:
        def get_providers(self) -> list[str]:
            return ["CPUExecutionProvider"]

    def factory(path: str, sess_options: Any, providers: list[Any]) -> QuietCpuSession:
        assert providers[0][0] == "CUDAExecutionProvider"
        return QuietCpuSession()

    with pytest.raises(SilentFallbackError, match="did not enable CUDAExecutionProvider"):
        ort.open_ort(to_onnx("span-x2-ch48").path, "cuda", "CUDAExecutionProvider", {}, factory=factory)


# --- typed options: each provider declares them; selection and open() check them ----------------


@pytest.mark.parametrize("name", list(PROVIDERS))
def test_every_provider_refuses_an_unknown_option_naming_the_ones_it_accepts(name: str, tmp_path: Path) -> None:
    provider = PROVIDERS[name]
    accepted = provider.options_type.names()
    assert accepted, f"{name} declares no options"
    with pytest.raises(ProviderOptionError) as err:
        provider_options(name, {"no_such_option": 1})
    assert f"{name} has no option no_such_option; it accepts: {', '.join(accepted)}" in str(err.value)
    # open() validates before it touches the backend or the file (which does not exist here)
    with pytest.raises(ProviderOptionError, match="no_such_option"):
        provider.open(tmp_path / "absent.onnx", {"no_such_option": 1})  # type: ignore[arg-type]
    other = next(p for p in PROVIDERS.values() if p.options_type is not provider.options_type)
    with pytest.raises(ProviderOptionError, match=f"not {name} ones"):
        provider.open(tmp_path / "absent.onnx", other.options_type())


@pytest.mark.parametrize("name", list(PROVIDERS))
def test_every_declared_option_refuses_a_bad_value(name: str) -> None:
    import dataclasses

    kind = PROVIDERS[name].options_type
    assert provider_options(name) == kind()  # the defaults pass their own checks
    for f in dataclasses.fields(kind):
        with pytest.raises(ProviderOptionError, match=rf"{name} option {f.name}=.*expected"):
            provider_options(name, {f.name: object()})
        if "choices" in f.metadata:
            with pytest.raises(ProviderOptionError, match=rf"{f.name}='NOPE': choose from"):
                provider_options(name, {f.name: "NOPE"})
            assert all(provider_options(name, {f.name: c}) for c in f.metadata["choices"])
        if "minimum" in f.metadata:
            with pytest.raises(ProviderOptionError, match=f"must be at least {f.metadata['minimum']}"):
                provider_options(name, {f.name: f.metadata["minimum"] - 1})
        if f.type in ("int", "int | None"):
            with pytest.raises(ProviderOptionError, match="expected int"):
                provider_options(name, {f.name: True})  # a bool is not a count


def test_request_options_reach_only_their_own_provider() -> None:
    from pixelift.providers.cpu import CpuOptions
    from pixelift.providers.cuda import CudaOptions
    from pixelift.providers.openvino import OpenVINOOptions

    everything = _probes(cuda=True, openvino=True, openvino_gpu=True, cpu=True)
    req = Request(options=OpenVINOOptions(precision="bf16"))
    got = {c.label: c.options for c in plan(req, everything, cpu_ranker=lambda: (["openvino", "cpu"], "m")).candidates}
    assert got == {
        "cuda": CudaOptions(),
        "openvino:GPU": OpenVINOOptions(device="GPU", precision="bf16"),
        "openvino": OpenVINOOptions(precision="bf16"),
        "cpu": CpuOptions(),
    }
    with pytest.raises(ProviderOptionError, match="are openvino options, not cpu ones"):
        Request("cpu", options=OpenVINOOptions())
    with pytest.raises(ProviderOptionError, match="typed provider options"):
        Request("cpu", options={"threads": 2})  # type: ignore[arg-type]


def test_open_session_hands_each_candidate_its_typed_options(fake_table: dict[str, FakeProvider]) -> None:
    seen: list[object] = []
    cpu = fake_table["cpu"]
    cpu.open = lambda path, options=None: seen.append(options) or FakeSession("cpu")  # type: ignore[method-assign]
    sel = open_session(
        Path("m.onnx"), Request("cpu", strict=True), probes={n: p.probe(LINUX) for n, p in fake_table.items()}
    )
    assert sel.options == ProviderOptions() and seen == [ProviderOptions()]


# --- options by their documented names -----------------------------------------------------------

# From the onnxruntime docs: OrtCUDAProviderOptions, OrtTensorRTProviderOptions (+ the trt_profile_*
# and trt_timing_cache_enable provider options), and the CoreML EP provider-options API.
DOC_CUDA = {
    "device_id",
    "gpu_mem_limit",
    "arena_extend_strategy",
    "cudnn_conv_algo_search",
    "do_copy_in_default_stream",
    "has_user_compute_stream",
    "user_compute_stream",
    "default_memory_arena_cfg",
    "tunable_op_enable",
    "tunable_op_tuning_enable",
    "tunable_op_max_tuning_duration_ms",
}
DOC_TRT = {
    "device_id",
    "trt_max_workspace_size",
    "trt_fp16_enable",
    "trt_int8_enable",
    "trt_engine_cache_enable",
    "trt_engine_cache_path",
    "trt_timing_cache_enable",
    "trt_profile_min_shapes",
    "trt_profile_opt_shapes",
    "trt_profile_max_shapes",
    "trt_max_partition_iterations",
    "trt_min_subgraph_size",
    "trt_dla_enable",
    "trt_dla_core",
}
DOC_COREML = {
    "ModelFormat",
    "MLComputeUnits",
    "RequireStaticInputShapes",
    "EnableOnSubgraphs",
    "SpecializationStrategy",
    "ProfileComputePlan",
    "AllowLowPrecisionAccumulationOnGPU",
    "ModelCacheDirectory",
}


def test_provider_options_use_documented_names_and_values(tmp_path: Path) -> None:
    c = cuda.cuda_options(device_id=1, memory_limit=2 << 30, conv_algo_search="EXHAUSTIVE")
    assert set(c) <= DOC_CUDA and c["device_id"] == "1" and c["cudnn_conv_algo_search"] == "EXHAUSTIVE"
    assert c["arena_extend_strategy"] in ("kNextPowerOfTwo", "kSameAsRequested")
    t = tensorrt.tensorrt_options(fp16=True, cache_dir=tmp_path, min_tile=32, opt_tile=256, max_tile=512, max_batch=2)
    assert set(t) <= DOC_TRT and t["trt_fp16_enable"] == "1" and t["trt_engine_cache_path"] == str(tmp_path)
    assert (t["trt_profile_min_shapes"], t["trt_profile_max_shapes"]) == ("input:1x3x32x32", "input:2x3x512x512")
    m = coreml.coreml_options("CPU_AND_NE", tmp_path)
    assert set(m) <= DOC_COREML and m["ModelFormat"] == "MLProgram" and m["MLComputeUnits"] == "CPUAndNeuralEngine"
    assert m["RequireStaticInputShapes"] == "1"
    with pytest.raises(ValueError):
        cuda.cuda_options(conv_algo_search="FAST")


def test_coreml_static_shapes_pin_the_free_dimensions() -> None:
    """One session per tile shape, with batch/height/width pinned (run here on the CPU EP)."""
    path = to_onnx("span-x2-ch48").path
    opened: list[dict[str, int]] = []

    def opener(p: Path, provider: str, ep: str, options: dict[str, str], free_dims: dict[str, int]) -> ort.OrtSession:
        opened.append(free_dims)
        return ort.open_ort(p, provider, ort.CPU_EP, {}, free_dims=free_dims)

    sess = coreml.StaticShapeSession(path, coreml.coreml_options(), opener)
    x = to_chw(content_crop("photo", 40, 48))[None]
    y1 = sess.run(x)
    sess.run(x)
    assert y1.shape == (1, 3, 80, 96)
    assert opened == [{"batch": 1, "height": 64, "width": 64}, {"batch": 1, "height": 40, "width": 48}]


def test_coreml_keeps_a_bounded_number_of_shapes_and_trims_its_cache(tmp_path: Path) -> None:
    """A warm service sees photos of many sizes: the sessions kept per model are the
    MAX_SHAPES most recently used, and the compiled-model folder is trimmed to its budget
    after each new shape (a fake opener stands in for CoreML, writing what its cache would)."""
    path = to_onnx("span-x2-ch48").path
    cache = tmp_path / "coreml"
    opened: list[tuple[int, int]] = []

    def opener(p: Path, provider: str, ep: str, options: dict[str, str], free_dims: dict[str, int]) -> ort.OrtSession:
        h, w = free_dims["height"], free_dims["width"]
        opened.append((h, w))
        compiled = Path(options["ModelCacheDirectory"]) / f"model-{h}x{w}"
        compiled.mkdir(parents=True)
        (compiled / "weights.bin").write_bytes(b"w" * 1000)
        return ort.open_ort(p, provider, ort.CPU_EP, {}, free_dims=free_dims)

    sess = coreml.StaticShapeSession(path, coreml.coreml_options(cache_dir=cache), opener, cache_budget=2500)
    sides = [24, 32, 40, 48, 56]
    for side in sides:
        sess.run(np.full((1, 3, side, side), 0.5, np.float32))
    assert list(sess._sessions) == [(1, 3, s, s) for s in sides[1:]]  # 64 (the open) and 24 went out
    assert len(list(cache.iterdir())) == 2  # 2 x 1000 bytes within 2500: the newest two
    sess.run(np.full((1, 3, 32, 32), 0.5, np.float32))
    assert opened.count((32, 32)) == 1  # still kept: not opened again


# --- the two CPU backends agree, on every family ---------------------------------------------------

FAMILY_REPS = [
    "realesrgan-animevideov3-x4",
    "span-x4-ch48",
    "realcugan-se-x2",
    "waifu2x-photo-x2",
    "waifu2x-cunet-x2-noise1",
    pytest.param("realesrgan-x4plus-anime", marks=pytest.mark.slow),
]


HAS_OV = importlib.util.find_spec("openvino") is not None


@pytest.mark.skipif(not HAS_OV, reason="needs openvino (the openvino extra)")
@pytest.mark.parametrize("model_id", FAMILY_REPS)
def test_onnxruntime_and_openvino_agree_at_f32(model_id: str) -> None:
    """>= 60 dB between onnxruntime CPU and OpenVINO CPU (f32 forced) on a real crop."""
    spec = models.get(model_id)
    path = to_onnx(model_id).path
    a = 4 * spec.alignment
    x = to_chw(content_crop(spec.content, 12 * a // spec.alignment * spec.alignment, 10 * a))[None]
    y_ort = PROVIDERS["cpu"].open(path).run(x)
    y_ov = PROVIDERS["openvino"].open(path, OpenVINOOptions(precision="f32")).run(x)
    assert psnr(y_ort, y_ov) >= 60


# --- the measured CPU choice ---------------------------------------------------------------------


def test_cpu_choice_is_measured_once_per_model_and_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_times = {"openvino": 0.02, "cpu": 0.03}
    calls: list[str] = []

    def opener(name: str) -> FakeSession:
        calls.append(name)
        return FakeSession(name)

    monkeypatch.setattr(microbench, "time_session", lambda s, x, runs=3: fake_times[s.provider])
    x = np.zeros((1, 3, 8, 8), np.float32)
    first = microbench.faster_cpu_backend(Path("m"), "sha-a", "machine-1", x, opener, ("openvino", "cpu"))
    assert (first.winner, first.measured) == ("openvino", True) and "20.0 ms" in first.reason()
    again = microbench.faster_cpu_backend(Path("m"), "sha-a", "machine-1", x, opener, ("openvino", "cpu"))
    assert (again.winner, again.measured) == ("openvino", False) and calls == ["openvino", "cpu"]
    fake_times.update(openvino=0.05)
    other = microbench.faster_cpu_backend(Path("m"), "sha-a", "machine-2", x, opener, ("openvino", "cpu"))
    assert (other.winner, other.measured) == ("cpu", True)


# --- doctor ----------------------------------------------------------------------------------------


def test_doctor_reports_machine_providers_and_versions() -> None:
    res = CliRunner().invoke(main, ["doctor", "--json"])
    assert res.exit_code == 0, res.output
    info = json.loads(res.output)
    assert info["machine"]["cpu_count"] >= 1 and "cpu_features" in info["machine"]
    assert set(info["providers"]) == set(PROVIDERS)
    assert info["providers"]["cpu"]["available"] is True
    assert all(p["reason"] for p in info["providers"].values())
    assert info["packages"]["onnxruntime"] and info["packages"]["pixelift"]
    text = CliRunner().invoke(main, ["doctor"])
    assert text.exit_code == 0 and "cuda" in text.output and "onnxruntime" in text.output


def test_the_cli_turns_numpys_huge_pages_off_unless_the_user_set_them() -> None:
    """In a fresh process (numpy reads the variable when imported): off by default, the user's value wins."""
    env = {k: v for k, v in os.environ.items() if k != "NUMPY_MADVISE_HUGEPAGE"}
    for value, want in ((None, False), ("1", True), ("0", False)):
        run_env = env if value is None else {**env, "NUMPY_MADVISE_HUGEPAGE": value}
        r = subprocess.run([sys.executable, "-m", "pixelift.cli", "doctor", "--json"], env=run_env, capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)["numpy_huge_pages"] is want, value


def test_doctor_reports_the_compiled_model_caches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What the compile caches hold against their budget, and a bad budget refused by name."""
    from pixelift.providers import coreml
    from pixelift.providers import openvino as OV

    monkeypatch.setenv("PIXELIFT_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("PIXELIFT_STATE", str(tmp_path / "state"))  # doctor adds what the state folder holds
    monkeypatch.setenv("PIXELIFT_COMPILE_CACHE", "2G")
    (tmp_path / "home" / OV.CACHE_FOLDER).mkdir(parents=True)
    (tmp_path / "home" / OV.CACHE_FOLDER / "1.blob").write_bytes(b"x" * 3000)
    info = json.loads(CliRunner().invoke(main, ["doctor", "--json"]).output)["cache"]
    assert info["compile_cache_budget"] == 2 << 30 and info["home"] == str(tmp_path / "home")
    assert info["compiled_models_bytes"] == {"openvino": 3000, "coreml": 0}
    assert coreml.CACHE_FOLDER != OV.CACHE_FOLDER
    text = CliRunner().invoke(main, ["doctor"]).output
    assert "compiled models: coreml 0.0 MB, openvino 0.0 MB (PIXELIFT_COMPILE_CACHE: 2 GiB each)" in text
    monkeypatch.setenv("PIXELIFT_COMPILE_CACHE", "lots")
    res = CliRunner().invoke(main, ["doctor"])
    assert res.exit_code == 2 and "PIXELIFT_COMPILE_CACHE" in res.output


# --- coreml-native: Core ML packages through coremltools (prediction only on macOS) ----------------


def test_coreml_native_probe_and_session_with_a_fake_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The probe reads the OS and coremltools; the session feeds the package image by image. No Mac ran here."""
    from pixelift.providers import coreml_native
    from pixelift.providers.coreml_native import CoreMLNativeSession

    native = PROVIDERS["coreml-native"]
    assert "needs macOS" in native.probe(LINUX).reason
    real_find = importlib.util.find_spec
    for installed in (False, True):
        monkeypatch.setattr(
            coreml_native.importlib.util,
            "find_spec",
            lambda name, *a, ok=installed: (object() if ok else None) if name == "coremltools" else real_find(name, *a),
        )
        got = native.probe(MAC)
        assert got.available == installed
        assert installed or "pip install 'pixelift[coreml]'" in got.reason
    monkeypatch.undo()
    with pytest.raises(ValueError, match=r"runs \.mlpackage files, not model\.onnx"):
        native.open(tmp_path / "model.onnx")

    class FakeMLModel:
        calls = 0

        def predict(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            FakeMLModel.calls += 1
            x = feeds["input"]
            assert x.shape[0] == 1 and x.dtype == np.float32
            return {"output": np.repeat(np.repeat(x, 2, 2), 2, 3)}

    sess = CoreMLNativeSession(FakeMLModel())
    y = sess.run(np.zeros((2, 3, 8, 8), np.float32))
    assert y.shape == (2, 3, 16, 16) and FakeMLModel.calls == 2


def test_coreml_native_is_reached_through_the_capability_table_and_never_by_auto() -> None:
    from pixelift import precision as P

    # every row that runs coreml-native runs a Core ML package, never an ONNX file
    assert {P.TARGETS[r.target].file.rsplit(".", 1)[1] for r in P.rows("coreml-native")} == {"mlpackage"}
    every = {n: ProbeResult(True, f"{n} ok", ("CPU",)) for n in PROVIDERS}
    auto = plan(Request(), every, cpu_ranker=lambda: (["openvino", "cpu"], "m"))
    assert "coreml-native" not in {c.provider for c in auto.candidates}
    named = plan(Request("coreml-native", strict=True), every)
    assert [c.provider for c in named.candidates] == ["coreml-native"]


@pytest.mark.skipif(not HAS_OV, reason="needs openvino (the openvino extra)")
def test_openvino_static_shapes_match_dynamic_and_stay_bounded(caplog: pytest.LogCaptureFixture) -> None:
    """Tiles share a shape, so OpenVINO compiles the model reshaped to it (measured faster);
    outputs equal the dynamic compile's, the number kept is bounded (LRU), and a model that
    will not reshape runs dynamic instead of failing."""
    art = to_onnx("span-x2-ch48")
    ov = PROVIDERS["openvino"]
    dyn = ov.open(art.path, OpenVINOOptions(static_shapes=0))
    st = ov.open(art.path, OpenVINOOptions(static_shapes=2))
    shapes = [(40, 48), (48, 40), (40, 48), (32, 32)]
    for h, w in shapes:
        x = to_chw(content_crop("photo", h, w))[None]
        y = st.run(x)
        assert y.shape == (1, 3, 2 * h, 2 * w)
        assert psnr(dyn.run(x), y) >= 100.0  # f32 both: same maths, maybe other kernels
    assert list(st._static) == [(1, 3, 40, 48), (1, 3, 32, 32)]  # 48x40 was least recently used
    # each compilation holds its own activations: one large shape at a time, small ones beside it
    big = OpenVINOOptions(static_shapes=4)
    st4 = ov.open(art.path, big)
    for side in (40, 136, 144, 32):
        st4.run(np.full((1, 3, side, side), 0.5, np.float32))
    assert list(st4._static) == [(1, 3, 40, 40), (1, 3, 144, 144), (1, 3, 32, 32)]
    assert st._dynamic_request is None  # every shape ran static: the dynamic one never compiled

    class Unreshapable:
        def reshape(self, shapes: object) -> None:
            raise RuntimeError("this graph does not reshape")

    st._model = Unreshapable()  # type: ignore[attr-defined]
    with caplog.at_level(logging.WARNING, logger="pixelift"):
        x = to_chw(content_crop("photo", 24, 24))[None]
        assert psnr(dyn.run(x), st.run(x)) >= 100.0
    assert any("dynamic shapes from now on" in r.getMessage() for r in caplog.records)
    assert st._static_max == 0 and st._dynamic_request is not None


@pytest.mark.skipif(not HAS_OV, reason="needs openvino (the openvino extra)")
def test_openvino_bf16_pads_the_width_to_its_fast_multiple() -> None:
    """bf16 kernels run some widths several times slower (719 vs 704 px: 3x for Compact): a bf16
    session compiles and runs the width padded (reflect) to a multiple of 16 and crops the output.
    Exactly the padded run, cropped; within the bf16 gate of fp32 unpadded on a real photo; fp32
    sessions run the width as it is."""
    from pixelift.providers.openvino import BF16_WIDTH_MULTIPLE as M

    art = to_onnx("span-x2-ch48")
    ov = PROVIDERS["openvino"]
    bf16, f32 = ov.open(art.path, OpenVINOOptions(precision="bf16")), ov.open(art.path, OpenVINOOptions())
    assert (bf16.width_multiple, f32.width_multiple) == (M, 1)
    for h, w in ((40, 3 * M + 7), (24, M), (9, 1), (5, 5)):
        x = to_chw(content_crop("photo", h, w))[None]
        y = bf16.run(x)
        assert y.shape == (1, 3, 2 * h, 2 * w)
        pad = -w % M
        assert {s[-1] for s in bf16._static} >= {w + pad}  # compiled for the padded width only
        assert all(s[-1] % M == 0 for s in bf16._static)
        padded = np.pad(x, ((0, 0), (0, 0), (0, 0), (0, pad)), mode="reflect" if pad < w else "edge")
        assert np.array_equal(y, bf16.run_feeds({bf16.input_names[0]: padded})[0][..., : 2 * w])
        if w >= 32:
            assert psnr(f32.run(x), y) >= 50.0
    x = to_chw(content_crop("photo", 40, 3 * M + 7))[None]
    assert f32.run(x).shape == (1, 3, 80, 2 * (3 * M + 7)) and (1, 3, 40, 3 * M + 7) in f32._static


@pytest.mark.skipif(not HAS_OV, reason="needs openvino (the openvino extra)")
def test_openvino_compiles_only_what_it_runs() -> None:
    """A photo that fits one tile compiles one model, reshaped to it: not the dynamic-shape one
    too (a cold start's compile time). Without static shapes, the dynamic one compiles at open."""
    from pixelift.providers.openvino import OvSession, _core, openvino_config

    class CountingCore:
        def __init__(self) -> None:
            self.compiled: list[object] = []

        def read_model(self, path: str) -> Any:
            return _core().read_model(path)

        def compile_model(self, model: Any, device: str, config: dict[str, Any]) -> Any:
            shape = model.inputs[0].get_partial_shape()
            self.compiled.append(tuple(shape.to_shape()) if shape.is_static else "dynamic")
            return _core().compile_model(model, device, config)

    art = to_onnx("span-x2-ch48")
    x = to_chw(content_crop("photo", 40, 48))[None]
    core = CountingCore()
    session = OvSession(core, art.path, "CPU", openvino_config())
    assert core.compiled == []
    first, again = session.run(x), session.run(x)
    assert core.compiled == [(1, 3, 40, 48)] and np.array_equal(first, again)
    core = CountingCore()
    dynamic = OvSession(core, art.path, "CPU", openvino_config(), static_shapes=0)
    assert core.compiled == ["dynamic"]
    assert psnr(dynamic.run(x), first) >= 100.0 and core.compiled == ["dynamic"]


@pytest.mark.skipif(not HAS_OV, reason="needs openvino (the openvino extra)")
def test_openvino_compile_cache_stays_within_its_budget(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """OpenVINO caches a compiled model per input shape, so photos of many sizes would grow the
    cache without end: pixelift's folder is trimmed to PIXELIFT_COMPILE_CACHE, least recently
    used out; 0 turns the cache off; a cache_dir the user gives is never trimmed."""
    from pixelift.providers import openvino as OV

    art = to_onnx("span-x2-ch48")
    monkeypatch.setenv("PIXELIFT_HOME", str(tmp_path / "home"))
    folder = tmp_path / "home" / OV.CACHE_FOLDER

    def run_sizes(options: OpenVINOOptions, sides: list[int]) -> None:
        session = PROVIDERS["openvino"].open(art.path, options)
        for side in sides:
            session.run(np.full((1, 3, side, side), 0.5, np.float32))

    run_sizes(OpenVINOOptions(), [32])
    one = sum(f.stat().st_size for f in folder.iterdir())  # one compiled shape
    assert one > 0
    monkeypatch.setenv("PIXELIFT_COMPILE_CACHE", str(int(2.5 * one)))
    run_sizes(OpenVINOOptions(), [40, 48, 56, 64])
    files = list(folder.iterdir())
    assert len(files) == 2 and sum(f.stat().st_size for f in files) <= 2.5 * one
    mine = tmp_path / "mine"
    run_sizes(OpenVINOOptions(cache_dir=mine), [32, 40, 48])
    assert len(list(mine.iterdir())) == 3  # the user's folder: theirs to manage
    monkeypatch.setenv("PIXELIFT_COMPILE_CACHE", "0")
    assert "CACHE_DIR" not in OV.openvino_config()
    before = sorted(f.name for f in folder.iterdir())
    run_sizes(OpenVINOOptions(), [72])
    assert sorted(f.name for f in folder.iterdir()) == before


@pytest.mark.skipif(not HAS_OV, reason="needs openvino (the openvino extra)")
def test_openvino_session_takes_concurrent_callers_in_turn() -> None:
    """A service's jobs share warm sessions: two threads running one OpenVINO session at once
    get the outputs they would alone (an infer request runs one call at a time)."""
    import threading

    art = to_onnx("span-x2-ch48")
    session = PROVIDERS["openvino"].open(art.path, OpenVINOOptions())
    inputs = [to_chw(content_crop(name, 48, 48))[None] for name in ("photo", "art")]
    alone = [session.run(x) for x in inputs]
    errors: list[BaseException] = []
    results: dict[int, list[np.ndarray]] = {0: [], 1: []}
    start = threading.Barrier(2)

    def work(i: int) -> None:
        try:
            start.wait()
            for _ in range(6):
                results[i].append(session.run(inputs[i]))
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    for i in (0, 1):
        assert all(np.array_equal(y, alone[i]) for y in results[i])


def test_openvino_import_from_several_threads_at_once() -> None:
    """Threads that open OpenVINO at once (a service's first jobs) each get the whole package,
    never one another's half-initialised import (seen: 'partially initialized module' once in
    five fresh processes before the import took a lock)."""
    import subprocess
    import sys

    if not HAS_OV:
        pytest.skip("needs openvino (the openvino extra)")
    code = (
        "import threading\n"
        "from pixelift.providers.openvino import import_openvino\n"
        "start, errors = threading.Barrier(8), []\n"
        "def work():\n"
        "    start.wait()\n"
        "    try:\n"
        "        import_openvino().Core\n"
        "    except Exception as exc:\n"
        "        errors.append(repr(exc))\n"
        "threads = [threading.Thread(target=work) for _ in range(8)]\n"
        "[t.start() for t in threads]\n"
        "[t.join() for t in threads]\n"
        "print(errors)\n"
    )
    for _ in range(3):  # fresh processes: the race is at the first import only
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        assert done.stdout.strip() == "[]", done.stdout + done.stderr


def test_openvino_import_leaves_the_converter_and_its_telemetry_out(tmp_path: Path) -> None:
    """Opening a session imports OpenVINO without its model converter, whose import starts
    OpenVINO's telemetry (writes under ~/intel, may fork a sender): a probe has no side
    effects. ``openvino.convert_model`` still works, importing the converter when called."""
    import subprocess
    import sys

    if not HAS_OV:
        pytest.skip("needs openvino (the openvino extra)")
    code = (
        "import sys\n"
        "from pixelift.providers.openvino import import_openvino\n"
        "ov = import_openvino()\n"
        "print('ovc' if 'openvino.tools.ovc' in sys.modules else 'no-ovc')\n"
        "import onnx\n"
        "from onnx import TensorProto, helper\n"
        "x = helper.make_tensor_value_info('x', TensorProto.FLOAT, [1, 3, 4, 4])\n"
        "y = helper.make_tensor_value_info('y', TensorProto.FLOAT, [1, 3, 4, 4])\n"
        "g = helper.make_graph([helper.make_node('Relu', ['x'], ['y'])], 'g', [x], [y])\n"
        "onnx.save(helper.make_model(g), sys.argv[1])\n"
        "print(type(ov.convert_model(sys.argv[1])).__name__)\n"
    )
    env = {**os.environ, "HOME": str(tmp_path / "home")}
    (tmp_path / "home").mkdir()
    first = subprocess.run(
        [sys.executable, "-c", code.split("import onnx")[0]], env=env, capture_output=True, text=True, check=True
    )
    assert first.stdout.split() == ["no-ovc"], first.stderr
    assert not (tmp_path / "home" / "intel").exists()  # no telemetry state written
    if importlib.util.find_spec("onnx") is None:
        return
    model = tmp_path / "relu.onnx"
    done = subprocess.run([sys.executable, "-c", code, str(model)], env=env, capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["no-ovc", "Model"], done.stderr


def test_probe_results_are_kept_across_processes_until_what_they_read_changes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A new process reads the previous one's probes (no OpenVINO import to learn the devices
    again); a change in the environment, the packages or the machine, or age, probes afresh."""
    from pixelift.providers import PROVIDERS, probe_all, probe_cache, select

    def fresh_process() -> dict[str, ProbeResult]:
        select._PROBES.clear()
        return probe_all()

    first = fresh_process()
    probed: list[int] = []
    real = select._probe

    def counted(facts: object) -> dict[str, ProbeResult]:
        probed.append(1)
        return real(facts)  # type: ignore[arg-type]

    monkeypatch.setattr(select, "_probe", counted)
    assert fresh_process() == first and probed == []  # kept: no probe ran
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "7")  # what a probe reads changed
    fresh_process()
    assert probed == [1]
    assert fresh_process() == first and probed == [1]  # kept again, under the new key
    monkeypatch.setattr(probe_cache, "MAX_AGE_S", -1.0)
    fresh_process()
    assert probed == [1, 1]  # too old: probed afresh
    monkeypatch.undo()
    # a failed probe is never kept; a probe replaced on its class (a fake) is always run
    monkeypatch.setattr(type(PROVIDERS["openvino"]), "probe", lambda self, facts: 1 / 0)
    assert fresh_process()["openvino"].reason.startswith("probe failed")
    monkeypatch.undo()
    select._PROBES.clear()
