"""The ncnn provider: the zoo's original graphs as an artifact, a session that keeps the
model contract, capability rows that auto measures, and every request it can get.

Small models only (span-x2-ch48, waifu2x-photo-x2 for a border); thresholds in dB on real photos.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest

from pixelift import precision as P
from pixelift.errors import ExportError, InferenceOutOfMemoryError
from pixelift.metrics import psnr
from pixelift.samples import sample_photo, to_chw

pytest.importorskip("ncnn")

SPAN = "span-x2-ch48"
BORDERED = "waifu2x-photo-x2"  # border 7: the session pads, runs and crops like the original app


def _ncnn(model_id: str):  # type: ignore[no-untyped-def]
    from pixelift.export.ncnn import to_ncnn

    return to_ncnn(model_id)


@pytest.mark.parametrize("model_id", [SPAN, BORDERED])
def test_the_ncnn_target_is_the_verified_original(model_id: str) -> None:
    from pixelift.models import get
    from pixelift.models.sources import NcnnPackageSource
    from pixelift.paths import sha256_file

    art = _ncnn(model_id)
    src_param, src_bin = get(model_id).source(NcnnPackageSource).files()  # type: ignore[union-attr]
    assert sha256_file(art.path) == sha256_file(src_param)
    assert sha256_file(art.file("model.bin")) == sha256_file(src_bin)
    contract = json.loads(art.file("contract.json").read_text())
    assert contract["border"] == get(model_id).border and contract["scale"] == get(model_id).scale
    assert art.parity_passed and all(c["psnr_db"] >= 60.0 for c in art.manifest["parity"]["checks"])


@pytest.mark.parametrize(
    ("model_id", "why"),
    [("ffdnet-rgb", "no ncnn original"), ("realcugan-se-x2", "SE-sync ONNX graph")],
)
def test_models_without_a_usable_original_have_no_ncnn_target(model_id: str, why: str) -> None:
    with pytest.raises(ExportError, match=why):
        _ncnn(model_id)


@pytest.mark.parametrize("model_id", [SPAN, BORDERED])
def test_ncnn_enhances_like_onnx_whole_and_tiled(model_id: str) -> None:
    from pixelift import Enhancer
    from pixelift.runtime.enhancer import TileOptions

    _ncnn(model_id)
    img = sample_photo()[40:200, 24:216]  # 160x192 of a real photo
    ref = Enhancer(model_id, provider="cpu", precision="fp32", tiles=TileOptions(tile=None)).enhance(img)
    whole_enh = Enhancer(model_id, provider="ncnn", precision="fp32", strict=True, tiles=TileOptions(tile=None))
    whole = whole_enh.enhance(img)
    assert whole_enh.loaded()[0].provider == "ncnn" and whole_enh.loaded()[0].precision == "fp32"
    tiled = Enhancer(model_id, provider="ncnn", precision="fp32", strict=True, tiles=TileOptions(tile=64)).enhance(img)
    assert whole.shape == ref.shape == tiled.shape
    assert psnr(ref.astype(np.float32) / 255, whole.astype(np.float32) / 255) >= 50.0
    assert psnr(whole.astype(np.float32) / 255, tiled.astype(np.float32) / 255) >= 50.0


def test_ncnn_rows_are_measured_and_bf16_storage_keeps_fidelity() -> None:
    _ncnn(SPAN)
    records = P.measure_model(SPAN, providers=("ncnn",))
    bf16 = records["ncnn:bf16@ncnn-fp32"]
    fp32 = records["ncnn:fp32@ncnn-fp32"]
    assert fp32.psnr_db is not None and fp32.psnr_db >= 60.0, fp32  # the original vs the ONNX export
    assert bf16.finite and bf16.psnr_db is not None and bf16.psnr_db >= P.HIGH_FIDELITY_DB, bf16
    assert bf16.per_image_db is not None and set(bf16.per_image_db) == {n for n, _ in P.heldout_images()}


def test_the_fp16_row_needs_fp16_hardware(monkeypatch: pytest.MonkeyPatch) -> None:
    """ncnn's fp16 storage on x86 silently computes fp32: the row is offered only where the probe
    reports FP16 (ARM), as OpenVINO's bf16 row needs BF16."""
    from dataclasses import replace

    from pixelift.providers import PROVIDERS
    from pixelift.providers.select import probe_all

    (row,) = P.rows("ncnn", "fp16")
    real = probe_all()["ncnn"]
    for caps, offered in ((("FP32", "BF16_STORAGE"), False), (("FP32", "BF16_STORAGE", "FP16"), True)):
        monkeypatch.setattr(PROVIDERS["ncnn"], "probe", lambda facts, c=caps: replace(real, capabilities=c))
        assert P.runnable(row) == offered


@pytest.mark.parametrize("strict", [False, True])
@pytest.mark.parametrize("precision", ["auto", "fp32", "bf16", "fp16", "int8"])
def test_every_request_for_ncnn_has_a_defined_outcome(
    precision: str, strict: bool, caplog: pytest.LogCaptureFixture
) -> None:
    """--provider ncnn x precision x strict, for a model with an original and one without."""
    from pixelift.providers import ProviderError, Request
    from pixelift.runtime import session

    _ncnn(SPAN)
    session.clear_cache()
    runs_here = precision in ("auto", "fp32", "bf16")  # fp16 needs ARM; int8 is not an ncnn row
    if strict and not runs_here:
        with pytest.raises(ProviderError, match=f"no {precision} artifact runnable on ncnn"):
            session.load(SPAN, Request("ncnn", strict=True), precision=precision)
    else:
        with caplog.at_level(logging.WARNING, logger="pixelift"):
            lm = session.load(SPAN, Request("ncnn", strict=strict), precision=precision)
        assert lm.provider == "ncnn"  # a precision ncnn lacks runs ncnn's fp32, and says so
        assert lm.precision == {"auto": lm.precision, "fp32": "fp32", "bf16": "bf16"}.get(precision, "fp32")
        assert lm.precision in ("fp32", "bf16")
        if not runs_here:
            assert lm.precision == "fp32" and f"no {precision} artifact runnable on ncnn" in caplog.text
        y = lm.selection.session.run(to_chw(sample_photo()[:32, :40])[None])
        assert y.shape == (1, 3, 64, 80)
    # a model with no ncnn original: automatic selection, recorded; strict raises
    session.clear_cache()
    if strict:
        why = "ffdnet-rgb has none" if runs_here else f"no {precision} artifact runnable on ncnn"
        with pytest.raises(ProviderError, match=why):
            session.load("ffdnet-rgb", Request("ncnn", strict=True), precision=precision)
    else:
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="pixelift"):
            lm = session.load("ffdnet-rgb", Request("ncnn"), precision=precision)
        assert lm.provider != "ncnn" and any(label == "ncnn" for label, _ in lm.selection.rejected)
        said = [r.getMessage() for r in caplog.records if "ffdnet-rgb" in r.getMessage() and "one time" not in r.getMessage()]
        if precision in ("auto", "fp32"):  # one decision, one line (it was three, each nesting the last)
            assert len(said) == 1 and "falling back" in said[0] and "(ffdnet-rgb:" not in said[0], said
    session.clear_cache()


def test_selection_offers_a_provider_only_the_files_it_opens() -> None:
    from pixelift.providers import Request, plan, probe_all

    auto_onnx = plan(Request(), probe_all(), suffix=".onnx")
    assert "ncnn" not in {c.provider for c in auto_onnx.candidates}
    asked = plan(Request("ncnn"), probe_all(), suffix=".onnx")
    assert "ncnn" not in {c.provider for c in asked.candidates}
    assert any(label == "ncnn" and ".param" in why for label, why in asked.rejected)
    assert [c.provider for c in plan(Request(), probe_all(), suffix=".param").candidates] == ["ncnn"]


def test_auto_builds_the_ncnn_target_on_first_use_and_can_choose_it() -> None:
    from pixelift.artifacts import find, remove
    from pixelift.providers import Request
    from pixelift.runtime import session

    _ncnn(SPAN)
    remove(SPAN, "ncnn-fp32")
    session.clear_cache()
    session.load(SPAN, Request(), precision="auto", auto_export=False)
    assert find(SPAN, "ncnn-fp32") is None  # never built when building is off
    session.clear_cache()
    lm = session.load(SPAN, Request(), precision="auto")
    assert find(SPAN, "ncnn-fp32") is not None
    measured = {r.split("@")[0] for r in P.measure_model(SPAN)}
    assert {"ncnn:fp32", "ncnn:bf16"} <= measured
    # auto ran the fastest row per photo that meets the gate, whichever backend that is
    rows = [m for m in P.measured_rows(P.measure_model(SPAN)) if m.meets(P.HIGH_FIDELITY_DB)]
    weight = session.photo_weight(lm.spec, rows)
    best = min(rows, key=lambda m: m.seconds * weight(m))
    assert (lm.provider, lm.precision) == (best.capability.provider, best.capability.precision)
    session.clear_cache()


def test_an_ncnn_allocation_failure_is_a_typed_out_of_memory_error() -> None:
    """Tiling retries smaller on InferenceOutOfMemoryError: ncnn reports a failed allocation as -100."""
    from pixelift.providers import get_provider

    sess = get_provider("ncnn").open(_ncnn(SPAN).path)

    class _Extractor:
        def input(self, *_: object) -> int:
            return 0

        def extract(self, _: str) -> tuple[int, None]:
            return -100, None

    class _Net:
        def create_extractor(self) -> _Extractor:
            return _Extractor()

    sess._net.net = _Net()  # type: ignore[attr-defined]
    with pytest.raises(InferenceOutOfMemoryError):
        sess.run(np.zeros((1, 3, 16, 16), np.float32))


def test_cli_enhance_on_ncnn_file_to_file(tmp_path: Path) -> None:
    from click.testing import CliRunner
    from PIL import Image

    from pixelift.cli import main

    _ncnn(SPAN)
    src = tmp_path / "photo.png"
    Image.fromarray(sample_photo()[:96, :128]).save(src)
    res = CliRunner().invoke(main, ["enhance", str(src), "--provider", "ncnn", "--json", "-o", str(tmp_path / "o.png")])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout.splitlines()[-1])["provider"][0].split("/")[0] == "ncnn"
    with Image.open(tmp_path / "o.png") as out:
        assert out.size == (256, 192)


def test_auto_weighs_each_row_by_the_tiling_its_footprint_implies() -> None:
    """ncnn holds ESRGAN at ~46 KB per input pixel (OpenVINO 8.6): on a 12 MP photo its tiles
    overlap more, so a raw 10% lead per crop is not a lead per photo."""
    from pixelift.models import get
    from pixelift.runtime import footprint

    budget = 5 << 30
    esrgan = {p: footprint.reference_overhead(get("realesrgan-x4plus"), p, budget) for p in ("openvino", "ncnn")}
    assert esrgan["ncnn"] > esrgan["openvino"] * 1.2 > 1.0
    span = {p: footprint.reference_overhead(get(SPAN), p, budget) for p in ("openvino", "ncnn")}
    assert span["ncnn"] == pytest.approx(span["openvino"], abs=0.01)  # both at the 768 px cap

    def m(provider: str, precision: str, s: float) -> P.Measured:
        return P.Measured(next(c for c in P.rows(provider, precision)), 55.0, s)

    rows = [m("openvino", "fp32", 0.190), m("ncnn", "bf16", 0.172)]
    assert P.choose_auto(rows, 50.0)[0].capability.provider == "ncnn"  # per crop
    best, passed = P.choose_auto(rows, 50.0, lambda r: esrgan[r.capability.provider])
    assert best.capability.provider == "openvino" and "tiling" in dict(passed)["ncnn:bf16@ncnn-fp32"]


def test_a_refused_ncnn_target_is_said_once_not_on_every_run(caplog: pytest.LogCaptureFixture) -> None:
    """An SE model has an ncnn original but no ncnn-fp32 target: auto says so once, then stops
    asking the builder (until the model's fp32 artifact changes)."""
    from pixelift.providers import ProviderError, Request
    from pixelift.runtime import session

    model = "realcugan-se-x2"
    for attempt in range(2):
        session.clear_cache()
        with caplog.at_level(logging.WARNING, logger="pixelift"):
            lm = session.load(model, Request(), precision="auto")
        assert lm.provider != "ncnn"
        said = "no ncnn-fp32 artifact" in caplog.text and "SE-sync" in caplog.text
        assert said == (attempt == 0), caplog.text
        caplog.clear()
    # asked for by name, the refusal is the reason given (not an export that would fail again)
    session.clear_cache()
    with pytest.raises(ProviderError, match="SE-sync"):
        session.load(model, Request("ncnn", strict=True), precision="bf16")
    session.clear_cache()


def test_the_per_photo_weight_follows_the_configured_budget_and_explicit_precisions(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """PIXELIFT_TILE_MEMORY sizes the tiles the weighting assumes, as it sizes the Enhancer's; an
    explicit precision with two backends (bf16: OpenVINO's hint where the CPU has BF16, ncnn's
    storage) is ordered per photo too, not per crop."""
    from dataclasses import replace

    from pixelift.models import get
    from pixelift.providers import PROVIDERS, Request
    from pixelift.providers.select import probe_all
    from pixelift.runtime import footprint, session

    esrgan = get("realesrgan-x4plus")
    def overheads() -> tuple[float, float]:
        return tuple(footprint.reference_overhead(esrgan, p, precision="bf16") for p in ("ncnn", "openvino"))  # type: ignore[return-value]

    monkeypatch.setenv("PIXELIFT_TILE_MEMORY", "1000G")  # both backends run the photo whole
    big = overheads()
    assert big[0] == pytest.approx(big[1])
    monkeypatch.setenv("PIXELIFT_TILE_MEMORY", "2G")
    small = overheads()
    assert small[0] > small[1] * 1.2 and small[0] > big[0]
    monkeypatch.delenv("PIXELIFT_TILE_MEMORY")

    # ESRGAN with bf16 on both backends, ncnn faster per crop: the per-photo order opens OpenVINO
    real = probe_all()["openvino"]
    monkeypatch.setattr(
        PROVIDERS["openvino"], "probe", lambda facts: replace(real, capabilities=("FP32", "BF16", "INT8"))
    )
    ov = P.Measured(P.rows("openvino", "bf16")[0], 55.0, 1.20)
    nc = P.Measured(P.rows("ncnn", "bf16")[0], 55.0, 1.00)
    monkeypatch.setattr(P, "measure_model", lambda *a, **k: {})
    monkeypatch.setattr(P, "measured_rows", lambda records: [nc, ov])
    opened: list[str] = []

    def first_row(model_id, spec, order, request, gate, passed):  # type: ignore[no-untyped-def]
        opened.extend(m.capability.provider for m in order)
        return None

    monkeypatch.setattr(session, "_open_first_row", first_row)
    monkeypatch.setattr(session, "_build_companions", lambda *a, **k: None)
    session.clear_cache()
    session.load("realesrgan-x4plus", Request(), precision="bf16")
    assert opened[:2] == ["openvino", "ncnn"]
    session.clear_cache()


# --- ncnn:GPU (Vulkan) --------------------------------------------------------------------
# CI installs Mesa's lavapipe (a Vulkan driver that computes on the CPU): the Vulkan path runs
# there for real, while the probe rightly refuses to call it a GPU. A test that needs a device
# to count as one says so by treating the CPU kind as hardware.


def _vulkan():  # type: ignore[no-untyped-def]
    from pixelift.providers import ncnn as N

    devices = N.vulkan_devices()
    if not devices:
        pytest.skip("no Vulkan device (CI installs mesa-vulkan-drivers: lavapipe)")
    return N, devices


@pytest.fixture
def lavapipe_as_gpu(monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """The probe counts a CPU Vulkan device as a GPU (a probe replaced on the instance is run afresh)."""
    from pixelift.providers import PROVIDERS
    from pixelift.runtime import session

    N, _ = _vulkan()
    monkeypatch.setattr(N, "SOFTWARE_KINDS", frozenset())
    monkeypatch.setattr(PROVIDERS["ncnn"], "probe", lambda facts: N.NcnnProvider.probe(PROVIDERS["ncnn"], facts))
    session.clear_cache()
    yield N
    session.clear_cache()


def test_a_cpu_vulkan_driver_is_listed_but_never_offered_as_a_gpu() -> None:
    from pixelift.providers.machine import read_machine

    N, devices = _vulkan()
    software = [d for d in devices if not d.hardware]
    if not software:
        pytest.skip("this machine has a hardware Vulkan GPU")
    probe = N.NcnnProvider().probe(read_machine())
    assert probe.available and "GPU" not in probe.devices
    assert "a CPU implementation, not offered" in probe.reason and str(software[0]) in probe.details["vulkan"]
    with pytest.raises(N.ProviderError, match="no Vulkan GPU"):  # no device named: the first GPU, and there is none
        N.NcnnProvider().open(_ncnn(SPAN).path, N.NcnnOptions(device="GPU"))


def test_vulkan_runs_the_original_graph_like_the_cpu() -> None:
    """On the Vulkan device itself: fp32 storage matches ncnn on the CPU; fp16 storage (where
    the device has it) stays above the 50 dB gate on a real photo; bf16 is refused (a CPU mode);
    a device index that does not exist is a clear error."""
    from pixelift.errors import ProviderOptionError

    N, devices = _vulkan()
    path = _ncnn(BORDERED).path
    x = to_chw(sample_photo()[40:136, 24:152])[None]
    ref = N.NcnnProvider().open(path, N.NcnnOptions(threads=2)).run(x)
    fp32 = N.NcnnProvider().open(path, N.NcnnOptions(device="GPU", gpu=0))
    assert fp32.provider == "ncnn:GPU"
    y = fp32.run(x)
    assert y.shape == ref.shape == (1, 3, 192, 256) and psnr(y, ref) >= 100.0
    fp16 = N.NcnnProvider().open(path, N.NcnnOptions(device="GPU", gpu=0, storage="fp16")).run(x)
    assert psnr(fp16, ref) >= P.HIGH_FIDELITY_DB
    with pytest.raises(ProviderOptionError, match="bf16 is a CPU mode"):
        N.NcnnProvider().open(path, N.NcnnOptions(device="GPU", gpu=0, storage="bf16"))
    with pytest.raises(N.ProviderError, match=f"no Vulkan device {len(devices)}"):
        N.NcnnProvider().open(path, N.NcnnOptions(device="GPU", gpu=len(devices)))
    with pytest.raises(ProviderOptionError, match="ncnn:GPU"):
        N.NcnnProvider().open(path, N.NcnnOptions(gpu=0))


@pytest.mark.parametrize("strict", [False, True])
@pytest.mark.parametrize("precision", ["auto", "fp32", "bf16", "fp16", "int8"])
def test_every_request_for_ncnn_gpu_has_a_defined_outcome(
    precision: str, strict: bool, lavapipe_as_gpu: object, caplog: pytest.LogCaptureFixture
) -> None:
    """--provider ncnn:GPU x precision x strict: fp32 (auto too: no fidelity is measured on the
    device) and fp16 storage run as asked; bf16 (a CPU mode) and int8 (no row) run fp32 and say
    so, or raise when strict; a model with no ncnn original goes to automatic selection, recorded."""
    from pixelift.providers import ProviderError, Request
    from pixelift.runtime import session

    _ncnn(SPAN)
    runs = {"auto": "fp32", "fp32": "fp32", "fp16": "fp16"}.get(precision)
    if strict and runs is None:
        with pytest.raises(ProviderError, match="ncnn:GPU"):
            session.load(SPAN, Request("ncnn:GPU", strict=True), precision=precision)
    else:
        with caplog.at_level(logging.WARNING, logger="pixelift"):
            lm = session.load(SPAN, Request("ncnn:GPU", strict=strict), precision=precision)
        assert lm.provider == "ncnn:GPU" and lm.precision == (runs or "fp32")
        if runs is None:
            assert f"no {precision} row that ran here; running fp32" in caplog.text
        x = to_chw(sample_photo()[:32, :40])[None]
        assert lm.selection.session.run(x).shape == (1, 3, 64, 80)
    session.clear_cache()
    if strict:
        with pytest.raises(ProviderError):
            session.load("ffdnet-rgb", Request("ncnn:GPU", strict=True), precision=precision)
    else:
        lm = session.load("ffdnet-rgb", Request("ncnn:GPU"), precision=precision)
        assert lm.provider != "ncnn:GPU" and any(label == "ncnn:GPU" for label, _ in lm.selection.rejected)


def test_ncnn_gpu_without_a_gpu_falls_back_out_loud(tmp_path: Path) -> None:
    """No hardware Vulkan device (lavapipe only, or none): the CLI runs automatic selection and
    says why; --strict refuses and writes nothing."""
    from click.testing import CliRunner
    from PIL import Image

    from pixelift.cli import main
    from pixelift.providers import PROVIDERS
    from pixelift.providers.machine import read_machine

    if "GPU" in PROVIDERS["ncnn"].probe(read_machine()).devices:
        pytest.skip("this machine has a hardware Vulkan GPU")
    _ncnn(SPAN)
    src = tmp_path / "photo.png"
    Image.fromarray(sample_photo()[:48, :64]).save(src)
    args = ["enhance", str(src), "-m", SPAN, "--provider", "ncnn:GPU", "--json"]
    res = CliRunner().invoke(main, [*args, "-o", str(tmp_path / "o.png")])
    assert res.exit_code == 0, res.output
    record = json.loads(res.stdout.splitlines()[-1])
    assert not record["provider"][0].startswith("ncnn:GPU") and "ncnn:GPU" in json.dumps(record)
    strict = CliRunner().invoke(main, [*args, "--strict", "-o", str(tmp_path / "s.png")])
    assert strict.exit_code != 0 and "ncnn:GPU" in strict.output and "Traceback" not in strict.output
    assert not (tmp_path / "s.png").exists()


def test_cli_enhance_on_ncnn_gpu_file_to_file(tmp_path: Path, lavapipe_as_gpu: object) -> None:
    from click.testing import CliRunner
    from PIL import Image

    from pixelift.cli import main

    _ncnn(SPAN)
    src = tmp_path / "photo.png"
    Image.fromarray(sample_photo()[:48, :64]).save(src)
    cmd = ["enhance", str(src), "-m", SPAN, "--provider", "ncnn:GPU", "--precision", "fp16", "--json"]
    res = CliRunner().invoke(main, [*cmd, "-o", str(tmp_path / "o.png")])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout.splitlines()[-1])["provider"][0].split("/")[0] == "ncnn:GPU"
    with Image.open(tmp_path / "o.png") as out:
        assert out.size == (128, 96)


def test_tiles_on_a_vulkan_device_fit_its_own_memory(lavapipe_as_gpu, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    """A GPU's memory is not the host's: auto tiles on ncnn:GPU are sized within the Vulkan heap
    budget ncnn reports (lavapipe: 1 GB), not the host's free memory; PIXELIFT_TILE_MEMORY still
    sets the budget outright."""
    from pixelift import Enhancer
    from pixelift.providers.base import device_memory
    from pixelift.runtime import footprint

    _ncnn(SPAN)
    enh = Enhancer(SPAN, provider="ncnn:GPU", precision="fp32", strict=True)
    (lm,) = enh.loaded()
    heap = device_memory(lm.selection.session)
    assert lm.provider == "ncnn:GPU" and heap is not None and heap > 0
    budget = min(footprint.tile_memory_budget(), heap)
    want = footprint.auto_tile(lm.spec, lm.provider, 3000, 4000, budget, precision="fp32")
    assert enh.tile_for(lm, 3000, 4000) == want
    if heap < footprint.tile_memory_budget():
        assert want is not None and want < footprint.auto_tile(
            lm.spec, lm.provider, 3000, 4000, footprint.tile_memory_budget(), precision="fp32"
        )  # type: ignore[operator]
    monkeypatch.setenv("PIXELIFT_TILE_MEMORY", "64G")
    assert Enhancer(SPAN, provider="ncnn:GPU", precision="fp32").tile_for(lm, 3000, 4000) == footprint.auto_tile(
        lm.spec, lm.provider, 3000, 4000, 64 << 30, precision="fp32"
    )
    # a CPU session's tiles are sized from the host's memory alone
    assert device_memory(Enhancer(SPAN, provider="ncnn", precision="fp32").loaded()[0].selection.session) is None


@pytest.mark.parametrize("precision", ["fp32", "auto", "fp16", "bf16"])
def test_auto_ranks_a_vulkan_gpu_before_the_cpu_backends(
    precision: str, lavapipe_as_gpu, caplog: pytest.LogCaptureFixture  # type: ignore[no-untyped-def]
) -> None:
    """With no accelerator that opens the ONNX, auto runs a model with an ncnn original on the
    Vulkan GPU (fp32 for auto, no fidelity being measured there; fp16 as asked); a precision the
    GPU has not (bf16), or a model without an ncnn original, goes to the CPU backends with the GPU
    recorded as passed over, and said once."""
    from pixelift.providers import Request
    from pixelift.runtime import session

    _ncnn(SPAN)
    lm = session.load(SPAN, Request(), precision=precision)
    if precision == "bf16":
        assert lm.provider != "ncnn:GPU" and lm.precision == "bf16"
        assert any(label == "ncnn:GPU" and "bf16" in why for label, why in lm.selection.rejected)
    else:
        assert lm.provider == "ncnn:GPU" and lm.precision == ("fp16" if precision == "fp16" else "fp32")
        assert session.load(SPAN, Request(), precision=precision) is lm  # kept, not reopened
        x = to_chw(sample_photo()[:32, :40])[None]
        assert lm.selection.session.run(x).shape == (1, 3, 64, 80)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="pixelift"):
        for _ in range(2):
            other = session.load("ffdnet-rgb", Request(), precision=precision)
            assert other.provider != "ncnn:GPU" and any(label == "ncnn:GPU" for label, _ in other.selection.rejected)
    assert caplog.text.count("provider ncnn:GPU passed over") <= 1


def test_a_vulkan_gpu_that_fails_gives_way_to_the_cpu_out_loud(
    lavapipe_as_gpu, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture  # type: ignore[no-untyped-def]
) -> None:
    from pixelift.providers import ProviderError, Request
    from pixelift.runtime import session

    N = lavapipe_as_gpu
    _ncnn(SPAN)
    real = N.NcnnNet.__init__

    def broken(self, *a, gpu=None, **k):  # type: ignore[no-untyped-def]
        if gpu is not None:
            raise ProviderError("vkCreateDevice failed (simulated)")
        real(self, *a, **k)

    monkeypatch.setattr(N.NcnnNet, "__init__", broken)
    with caplog.at_level(logging.WARNING, logger="pixelift"):
        lm = session.load(SPAN, Request(), precision="auto")
    assert lm.provider != "ncnn:GPU"
    assert any(label == "ncnn:GPU" and "simulated" in why for label, why in lm.selection.rejected)
    assert "ncnn:GPU" in caplog.text and "simulated" in caplog.text
