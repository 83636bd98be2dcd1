"""Reduced precision: capability table, gates, auto selection, fp16/int8/IR artifacts.

Small models only (span-x2-ch48, realesrgan-animevideov3-x4, waifu2x-photo-x2); no timing assertions.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from pixelift import precision as P
from pixelift.errors import PixeliftError
from pixelift.samples import art_image, sample_photo, to_chw

HAS_OV = P.probe_available("openvino")


def _m(provider: str, precision: str, db: float, s: float, finite: bool = True) -> P.Measured:
    cap = next(c for c in P.CAPABILITIES if c.provider == provider and c.precision == precision)
    return P.Measured(cap, db, s, finite)


def test_capability_table_is_consistent() -> None:
    assert {c.target for c in P.CAPABILITIES} <= set(P.TARGETS)
    assert {c.precision for c in P.CAPABILITIES} <= set(P.PRECISIONS)
    # the one table the loader reads: bf16 is an OpenVINO inference hint on the fp32 ONNX
    (bf16,) = P.rows("openvino", "bf16")
    assert bf16.target == "onnx-fp32" and bf16.options == {"precision": "bf16"}
    assert P.rows("cpu", "int8")[0].target == "onnx-int8"
    # every target of the store has exactly one builder in the export registry
    from pixelift.artifacts import TARGETS
    from pixelift.export.targets import builders

    assert set(builders()) == set(TARGETS)


def test_auto_picks_fastest_that_meets_gate() -> None:
    rows = [
        _m("cpu", "fp32", 200.0, 0.30),
        _m("openvino", "bf16", 54.6, 0.15),
        _m("cpu", "int8", 43.0, 0.10),
        _m("openvino", "int8", 38.0, 0.08),
        _m("cpu", "fp16", 90.0, 0.01, finite=False),  # overflow: never chosen, even if fastest
    ]
    best, passed = P.choose_auto(rows, P.gate_db(fast=False))
    assert (best.capability.provider, best.capability.precision) == ("openvino", "bf16")
    reasons = dict(passed)
    assert "NaN/Inf" in reasons["cpu:fp16@onnx-fp16"]
    assert "38.0 dB < gate 50.0" in reasons["openvino:int8@onnx-int8"]
    best, _ = P.choose_auto(rows, P.gate_db(fast=True))
    assert (best.capability.provider, best.capability.precision) == ("cpu", "int8")
    # fp32 always qualifies: with nothing else measured it is the answer
    best, _ = P.choose_auto([_m("cpu", "fp32", 200.0, 1.0), _m("openvino", "bf16", 49.9, 0.1)], 50.0)
    assert best.capability.precision == "fp32"


def test_fp16_never_nan_and_fidelity_recorded() -> None:
    from pixelift.export.precision import to_fp16
    from pixelift.providers import get_provider

    for model_id in ("span-x2-ch48", "realesrgan-animevideov3-x4"):
        art = to_fp16(model_id)
        assert art.manifest["fp16_overflow"] is False
        sess = get_provider("cpu").open(art.path)
        for img in (sample_photo()[:160, :192], art_image(96, 128)):
            y = sess.run(to_chw(img)[None])
            assert y.dtype == np.float32  # fp32 I/O kept
            assert np.all(np.isfinite(y)), model_id
        rec = art.manifest.fidelity["cpu:fp16"]
        assert rec.finite and rec.psnr_db is not None and rec.psnr_db >= P.HIGH_FIDELITY_DB, rec
        assert rec.per_image_db is not None and set(rec.per_image_db) == {n for n, _ in P.heldout_images()}


@pytest.mark.slow
def test_a_derived_target_asked_for_twice_at_once_is_built_once(
    monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """The cache check and the build of a derived target (fp16 here; int8 and OpenVINO IR share the code)
    happen under the artifact's lock: a second caller waits for the first and reuses its artifact."""
    import threading
    import time

    from pixelift.export import precision as EP

    monkeypatch.setenv("PIXELIFT_HOME", str(tmp_path_factory.mktemp("own-home")))
    real = EP.convert_fp16
    calls: list[int] = []

    def slow_convert(src: Path, dest: Path) -> None:
        calls.append(threading.get_ident())
        time.sleep(1.0)  # the other caller reaches the cache check meanwhile
        real(src, dest)

    monkeypatch.setattr(EP, "convert_fp16", slow_convert)
    EP._fp32("span-x2-ch48")  # built once, before the race
    start = threading.Barrier(2)
    got: list[object] = []
    errors: list[BaseException] = []

    def ask() -> None:
        start.wait()
        try:
            got.append(EP.to_fp16("span-x2-ch48"))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=ask) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert len(calls) == 1, "built twice"
    a, b = got
    assert a.manifest["sha256"] == b.manifest["sha256"]  # type: ignore[attr-defined]


def _cpu_reports_bf16() -> bool:
    from pixelift.providers.select import probe_all

    return "BF16" in probe_all()["openvino"].capabilities


@pytest.mark.skipif(not HAS_OV, reason="needs openvino (the openvino extra)")
def test_bf16_is_offered_only_where_the_cpu_computes_it(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """OpenVINO's bf16 hint on a CPU without BF16 silently computes f32: that row is not offered
    (auto never reports "bf16" for f32 work), an explicit bf16 says why and runs fp32, and
    --strict raises. Both kinds of CPU are simulated through the probe's capabilities."""
    from dataclasses import replace

    from pixelift.export import to_onnx
    from pixelift.providers import PROVIDERS, ProviderError, Request
    from pixelift.providers.select import probe_all
    from pixelift.runtime import session

    to_onnx("span-x2-ch48")
    real = probe_all()["openvino"]
    for caps, offered in ((("FP32", "INT8"), False), (("FP32", "BF16", "INT8"), True)):
        # a new probe function is probed anew (probe_all keys its cache on it)
        monkeypatch.setattr(PROVIDERS["openvino"], "probe", lambda facts, c=caps: replace(real, capabilities=c))
        session.clear_cache()
        keys = {r.split("@")[0] for r in P.measure_model("span-x2-ch48")}
        assert ("openvino:bf16" in keys) == offered, keys
        with caplog.at_level(logging.WARNING, logger="pixelift"):
            lm = session.load("span-x2-ch48", Request("openvino"), precision="bf16")
        assert lm.precision == ("bf16" if offered else "fp32")
        if not offered:
            assert "needs BF16" in caplog.text
            with pytest.raises(ProviderError, match="needs BF16"):
                session.clear_cache()
                session.load("span-x2-ch48", Request("openvino", strict=True), precision="bf16")
        caplog.clear()
    session.clear_cache()


@pytest.mark.skipif(not HAS_OV or not _cpu_reports_bf16(), reason="needs openvino on a CPU with BF16")
def test_bf16_openvino_fidelity_and_gate() -> None:
    from pixelift import Enhancer
    from pixelift.export import find
    from pixelift.models import get

    e = Enhancer("waifu2x-photo-x2", precision="bf16", provider="openvino")
    out = e.enhance(sample_photo()[:48, :40])
    assert out.shape == (96, 80, 3)
    lm = e.loaded()[0]
    assert lm.precision == "bf16" and lm.provider == "openvino"
    rec = find("waifu2x-photo-x2", "onnx-fp32").manifest.fidelity["openvino:bf16"]
    assert rec.finite and rec.psnr_db is not None and rec.psnr_db > P.FAST_DB  # measured 5x dB
    # auto runs exactly the row the gate and the stored measurements pick
    e = Enhancer("waifu2x-photo-x2", precision="auto")
    lm = e.loaded()[0]
    records = P.measure_model("waifu2x-photo-x2")  # the stored records: nothing is measured again
    rows = [
        m
        for m in P.measured_rows(records)
        if get("waifu2x-photo-x2").half_safe is not False or m.capability.precision != "fp16"
    ]
    best, _ = P.choose_auto(rows, P.gate_db())
    assert (lm.provider, lm.precision, lm.artifact.target) == (
        best.capability.provider,
        best.capability.precision,
        best.capability.target,
    )
    assert best.capability.precision == "fp32" or best.psnr_db >= P.HIGH_FIDELITY_DB


def test_int8_beats_naive_minmax_and_warns_below_gate(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pixelift import Enhancer
    from pixelift.cli import main
    from pixelift.export.precision import to_int8

    art = to_int8("span-x2-ch48")
    study = {s["technique"]: s["psnr_db_calib_select"] for s in art.manifest["int8_study"]}
    naive = study["naive MinMax, all ops"]
    chosen = art.manifest["int8"]["chosen"]["psnr_db_calib_select"]
    # measured: naive 34.5 dB -> percentile 37.4 -> conv-only 37.5 -> first/last fp32 38.1 -> sensitive 44.3
    assert chosen >= naive + 3.0, study
    rec = art.manifest.fidelity["cpu:int8"]
    assert rec.finite and rec.psnr_db is not None and rec.psnr_db > naive - 3.0
    # a gate just above the measured fidelity: asking for int8 runs it and says so, every time
    gate = round(rec.psnr_db + 1.0, 2)
    monkeypatch.setattr(P, "HIGH_FIDELITY_DB", gate)
    from pixelift.runtime.session import clear_cache

    clear_cache()
    with caplog.at_level(logging.WARNING, logger="pixelift"):
        lm = Enhancer("span-x2-ch48", precision="int8", provider="cpu").loaded()[0]
    clear_cache()
    assert (lm.precision, lm.provider) == ("int8", "cpu")
    assert any(
        f"{rec.psnr_db} dB vs fp32" in r.getMessage() and f"below the {gate} dB gate" in r.getMessage()
        for r in caplog.records
    )
    res = CliRunner().invoke(main, ["models", "show", "span-x2-ch48"])
    assert res.exit_code == 0, res.output
    assert "fidelity: cpu:int8@onnx-int8:" in res.output and "int8 study: naive MinMax" in res.output


def test_conv_groups_are_contiguous_and_bounded() -> None:
    from pixelift.export.precision import MAX_GROUPS, conv_groups

    few = [f"c{i}" for i in range(5)]
    assert conv_groups(few) == [[c] for c in few]
    many = [f"c{i}" for i in range(351)]  # x4plus
    groups = conv_groups(many)
    assert len(groups) == MAX_GROUPS
    assert [c for g in groups for c in g] == many  # every conv once, in order
    assert max(map(len, groups)) - min(map(len, groups)) <= 1


def _m_target(provider: str, precision: str, target: str, db: float, s: float) -> P.Measured:
    cap = next(c for c in P.CAPABILITIES if (c.provider, c.precision, c.target) == (provider, precision, target))
    return P.Measured(cap, db, s)


def test_auto_weighs_both_int8_routes() -> None:
    """QDQ-ONNX-on-OpenVINO and the NNCF IR are separate rows: the measurement decides."""
    assert {c.target for c in P.rows("openvino", "int8")} == {"onnx-int8", "openvino-int8"}
    rows = [
        _m_target("cpu", "fp32", "onnx-fp32", 200.0, 0.30),
        _m_target("openvino", "bf16", "onnx-fp32", 57.7, 0.092),
        _m_target("openvino", "int8", "onnx-int8", 39.8, 0.103),
        _m_target("openvino", "int8", "openvino-int8", 40.6, 0.070),
    ]
    best, passed = P.choose_auto(rows, P.gate_db(fast=True))
    assert best.capability.target == "openvino-int8"
    best, _ = P.choose_auto(rows, P.gate_db(fast=False))
    assert best.capability.precision == "bf16"
    # a faster route below the gate loses to a slower one above it
    rows[3] = _m_target("openvino", "int8", "openvino-int8", 39.9, 0.070)
    best, passed = P.choose_auto(rows, P.gate_db(fast=True))
    assert best.capability.precision == "bf16"
    assert "39.9 dB < gate 40.0" in dict(passed)["openvino:int8@openvino-int8"]


@pytest.mark.skipif(not HAS_OV, reason="needs openvino")
def test_openvino_int8_nncf_beats_defaults_by_measured_sensitivity() -> None:
    from pixelift.export.openvino_int8 import TARGET_DB, to_openvino_int8

    art = to_openvino_int8("span-x2-ch48")
    assert art.path.suffix == ".xml" and art.file("model.bin").is_file()
    art.verify()
    assert "FakeQuantize" in art.path.read_text()  # really quantized
    study = art.manifest["int8_study"]
    defaults = study[0]["psnr_db_calib_select"]
    info = art.manifest["int8"]
    # measured: NNCF defaults 27.7 dB -> conv only + first/last kept 38.0 -> + SmoothQuant 42.2
    assert study[0]["technique"].startswith("NNCF defaults")
    assert "SmoothQuant" in study[2]["technique"]
    assert info["psnr_db_calib_select"] >= defaults + 8.0, study
    # the greedy search stops as soon as the target is reached, or at its budget
    assert info["psnr_db_calib_select"] >= TARGET_DB or len(study) == 3 + len(info["sensitivity"][:8])
    assert all(s["psnr_db_calib_select"] < TARGET_DB for s in study[1:-1])
    ranked = [r["psnr_db_only_this_quantized"] for r in info["sensitivity"]]
    assert ranked == sorted(ranked)  # most sensitive first
    rec = art.manifest.fidelity["openvino:int8"]
    # held-out crops (never used to choose): 40.2 dB measured with the bf16 hint for the
    # unquantized ops; the gate decides whether auto may use it, the test checks the record
    assert rec.finite and rec.psnr_db is not None and rec.psnr_db > defaults + 5.0, rec


@pytest.mark.skipif(not HAS_OV, reason="needs openvino (the openvino extra)")
def test_openvino_ir_targets() -> None:
    from pixelift.export.targets import export_precision

    for fp16 in (False, True):
        # export_precision builds every target stored at that precision
        built = export_precision("realesrgan-animevideov3-x4", "fp16" if fp16 else "fp32")
        (art,) = [a for a in built if a.target == ("openvino-fp16" if fp16 else "openvino-fp32")]
        assert art.path.suffix == ".xml" and art.file("model.bin").is_file()
        art.verify()
        key = "openvino:fp16" if fp16 else "openvino:fp32"
        rec = art.manifest.fidelity[key]
        assert rec.finite and rec.psnr_db is not None and rec.psnr_db >= P.HIGH_FIDELITY_DB, rec


def test_cli_precision_option() -> None:
    from pixelift.cli import main

    res = CliRunner().invoke(main, ["enhance", "--help"])
    assert "--precision" in res.output and "--fast" in res.output
    res = CliRunner().invoke(main, ["enhance", "x.png", "--precision", "int4"])
    assert res.exit_code == 2 and "'int4' is not one of" in res.output


def test_coreml_package_spec() -> None:
    """Conversion and structure run on Linux too (coremltools is in the coreml extra, installed by CI)."""
    pytest.importorskip("coremltools", reason="needs coremltools (the coreml extra)")
    from pixelift.export import coreml
    from pixelift.models import get

    art = coreml.to_coreml("realesrgan-animevideov3-x4")
    pkg = art.path
    assert pkg.suffix == ".mlpackage" and pkg.is_dir()
    art.verify()  # a package directory hashes like a file
    (pkg / "Manifest.json").write_bytes((pkg / "Manifest.json").read_bytes() + b" ")
    with pytest.raises(PixeliftError, match="sha256 does not match"):
        art.verify()
    assert coreml.to_coreml("realesrgan-animevideov3-x4").path == pkg  # rebuilt in place
    find_again = coreml.to_coreml("realesrgan-animevideov3-x4")
    find_again.verify()
    facts = coreml.validate(pkg, get("realesrgan-animevideov3-x4"))
    assert facts["input_ranges"][2] == [16, 1024] and "cast" in facts["ops"] and "conv" in facts["ops"]


@pytest.mark.skipif(sys.platform != "darwin", reason="Core ML prediction runs only on macOS")
def test_coreml_prediction_matches_fp32() -> None:  # pragma: no cover - macOS only
    ct = pytest.importorskip("coremltools", reason="needs coremltools (the coreml extra)")

    from pixelift.export import coreml, find
    from pixelift.metrics import psnr
    from pixelift.providers import get_provider

    pkg = coreml.to_coreml("realesrgan-animevideov3-x4").path
    x = to_chw(sample_photo()[:64, :80])[None]
    y = ct.models.MLModel(str(pkg)).predict({"input": x})["output"]
    ref = get_provider("cpu").open(find("realesrgan-animevideov3-x4", "onnx-fp32").path).run(x)
    assert psnr(ref, y) >= P.FAST_DB


def test_fidelity_records_are_per_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    """A cache copied to another machine measures bf16 fidelity and speed again there."""
    from pixelift.export import to_onnx

    to_onnx("span-x2-ch48")
    first = P.measure_model("span-x2-ch48", providers=("cpu",), precisions=("fp32",))
    rec = next(iter(first.values()))
    assert rec.machine == P._fingerprint()
    calls: list[str] = []
    real_measure = P.measure

    def counting(*a, **k):  # type: ignore[no-untyped-def]
        calls.append("measure")
        return real_measure(*a, **k)

    monkeypatch.setattr(P, "measure", counting)
    P.measure_model("span-x2-ch48", providers=("cpu",), precisions=("fp32",))
    assert calls == []  # same machine: the stored record is used
    here = P._fingerprint()
    monkeypatch.setattr(P, "_fingerprint", lambda: "another-machine")
    again = P.measure_model("span-x2-ch48", providers=("cpu",), precisions=("fp32",))
    assert calls == ["measure"] and next(iter(again.values())).machine == "another-machine"
    # each machine keeps its own: neither measures again (a Ray worker pinned to one core and the
    # command line had overwritten each other's records, so every run of either measured)
    P.measure_model("span-x2-ch48", providers=("cpu",), precisions=("fp32",))
    monkeypatch.setattr(P, "_fingerprint", lambda: here)
    back = P.measure_model("span-x2-ch48", providers=("cpu",), precisions=("fp32",))
    assert calls == ["measure"] and next(iter(back.values())).machine == here


@pytest.mark.skipif(not HAS_OV, reason="needs openvino (the openvino extra)")
def test_auto_precision_falls_back_row_by_row_when_a_backend_breaks(monkeypatch: pytest.MonkeyPatch) -> None:
    """If the chosen row is an OpenVINO IR and OpenVINO fails, the next row opens its *own*
    artifact (onnxruntime cannot read an IR) instead of handing the IR to onnxruntime."""
    from pixelift.export.targets import export_precision
    from pixelift.providers import PROVIDERS, ProbeResult, Request
    from pixelift.runtime import session

    export_precision("span-x2-ch48", "fp16")  # builds openvino-fp16 (an IR) and onnx-fp16
    session.clear_cache()

    def broken(*_a: object, **_k: object) -> None:
        raise RuntimeError("GPU driver reset")

    monkeypatch.setattr(PROVIDERS["openvino"], "open", broken)
    # OpenVINO's rows first (ncnn's, often faster here, are out of this test)
    monkeypatch.setattr(PROVIDERS["ncnn"], "probe", lambda facts: ProbeResult(False, "not in this test"))
    lm = session.load("span-x2-ch48", Request(), precision="auto")
    assert lm.provider == "cpu" and lm.artifact.path.suffix == ".onnx"
    rejected = dict(lm.selection.rejected)
    assert any(k.startswith("openvino:") and "GPU driver reset" in v for k, v in rejected.items())
    with pytest.raises(Exception, match="GPU driver reset"):
        session.clear_cache()
        session.load("span-x2-ch48", Request("openvino", strict=True), precision="auto")
    session.clear_cache()


def test_zoo_precision_report_reads_the_manifests() -> None:
    """The closing-note table (bench/zoo_precision.py) comes from the stored fidelity records."""
    from bench.zoo_precision import collect, markdown
    from pixelift.export.targets import export_precision

    export_precision("span-x2-ch48", "int8")
    P.measure_model("span-x2-ch48", precisions=("fp32", "int8"))  # the reference row, whatever ran before
    row = collect("span-x2-ch48")
    assert row["targets"]["onnx-fp32"] and row["targets"]["onnx-int8"]
    rec = row["cells"]["cpu:int8@onnx-int8"]
    assert rec.per_image_db is not None and rec.psnr_db == min(rec.per_image_db.values())  # worst held-out crop
    if HAS_OV:
        assert "openvino:int8@openvino-int8" in row["cells"]
    assert row["auto@40"] and row["auto@50"]
    table = markdown([row])
    assert table.splitlines()[2].startswith("| span-x2-ch48 | ")
    assert f"| {rec.psnr_db} |" in table


def test_export_json_stdout_is_only_json(monkeypatch: pytest.MonkeyPatch) -> None:
    """onnxruntime's calibrator print()s progress; with --json that must not reach stdout."""
    import json

    import pixelift.export.targets as EP
    from pixelift.cli import main

    def noisy(model_id: str, precision: str, **_k: object) -> list[object]:
        print("Collecting tensor data and making histogram ...")
        return []

    monkeypatch.setattr(EP, "export_precision", noisy)
    res = CliRunner().invoke(main, ["export", "span-x2-ch48", "--precision", "int8", "--json"])
    assert res.exit_code == 0, res.output
    lines = res.stdout.splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["status"] == "ok"
    assert "Collecting tensor data" in res.stderr


def test_export_coreml_failure_is_reported_and_the_batch_goes_on(monkeypatch: pytest.MonkeyPatch) -> None:
    import json

    from pixelift.cli import main
    from pixelift.export import coreml

    def fails(spec: object, **_k: object) -> None:
        raise RuntimeError("unsupported op: pixel_unshuffle")

    monkeypatch.setattr(coreml, "to_coreml", fails)
    res = CliRunner().invoke(main, ["export", "span-x2-ch48", "waifu2x-photo-x2", "--coreml", "--json"])
    assert res.exit_code == 1  # asked for, not delivered: a failure, but not a crash
    rows = [json.loads(line) for line in res.stdout.splitlines()]
    assert [r["target"] for r in rows] == ["span-x2-ch48", "waifu2x-photo-x2"]
    assert all(r["status"] == "error" and "pixel_unshuffle" in r["coreml_error"] for r in rows)
    assert all(r["path"].endswith("model.onnx") for r in rows)  # the ONNX export itself stands


def test_coreml_trace_turns_negative_pads_into_slices() -> None:
    """Real-CUGAN crops with F.pad(x, negative); coremltools refuses that, so the Core ML trace
    slices instead. The traced module must equal the eager one, at another size than traced."""
    import torch

    from pixelift.export.coreml import _negative_pads_as_slices
    from tests.torch_helpers import model, run_torch

    module = model("realcugan-se-x2")
    with torch.no_grad():
        plain = torch.jit.trace(module, torch.rand(1, 3, 64, 64))
        with _negative_pads_as_slices():
            traced = torch.jit.trace(module, torch.rand(1, 3, 64, 64))

    def pads(t: torch.jit.ScriptModule) -> int:
        return sum(n.kind() == "aten::pad" for n in t.inlined_graph.nodes())

    assert (pads(plain), pads(traced)) == (4, 1)  # three crops became slices; the input's pad stays
    x = to_chw(art_image(48, 40))
    ref = run_torch(module, x)
    with torch.no_grad():
        got = traced(torch.from_numpy(x)[None]).numpy()[0]
    assert got.shape == ref.shape and float(np.abs(got - ref).max()) < 1e-5
    # positive pads still pad
    with _negative_pads_as_slices():
        y = torch.nn.functional.pad(torch.zeros(1, 1, 2, 2), (1, 1, 1, 1))
    assert y.shape == (1, 1, 4, 4)


# --- fidelity records: typed, written as before, validated on read ----------------------------------

_RECORD = {
    "provider": "openvino",
    "precision": "bf16",
    "target": "onnx-fp32",
    "options": {"precision": "bf16"},
    "psnr_db": 54.61,
    "per_image_db": {"heldout0-0-80x80": 54.61, "heldout0-1-80x80": 57.2},
    "finite": True,
    "seconds": 0.01234,
    "timing_input": [1, 3, 80, 80],
    "reference": "cpu:fp32",
    "images": "held-out crops (not used for calibration)",
    "machine": "8e37a28d944e4596",
}
_FAILED = {
    "provider": "cpu",
    "precision": "fp16",
    "target": "onnx-fp16",
    "error": "NOT_IMPLEMENTED: Conv(16)",
    "options": {},
    "machine": "8e37a28d944e4596",
    "psnr_db": None,
    "finite": False,
    "seconds": None,
}


def _manifest_text(fidelity: object, parity: object = None) -> str:
    import json

    body = {
        "schema": 1,
        "model_id": "span-x2-ch48",
        "target": "onnx-fp32",
        "file": "model.onnx",
        "sha256": "0" * 64,
        "spec": {"id": "span-x2-ch48"},
        "parity": parity if parity is not None else {"passed": True, "checks": []},
        "fidelity": fidelity,
    }
    return json.dumps(body)


def test_fidelity_records_read_typed_and_write_the_same_json() -> None:
    from pathlib import Path

    from pixelift.artifacts import FidelityRecord, Manifest

    m = Manifest.parse(
        _manifest_text({"openvino:bf16": _RECORD, "cpu:fp16": _FAILED}),
        Path("manifest.json"),
        model_id="span-x2-ch48",
        target="onnx-fp32",
    )
    ok, failed = m.fidelity["openvino:bf16"], m.fidelity["cpu:fp16"]
    assert isinstance(ok, FidelityRecord) and ok.usable and ok.psnr_db == 54.61 and ok.timing_input == (1, 3, 80, 80)
    assert not failed.usable and failed.error == "NOT_IMPLEMENTED: Conv(16)"
    assert ok.to_json() == _RECORD and failed.to_json() == _FAILED  # the on-disk JSON is unchanged
    assert [m.capability.key for m in P.measured_rows(m.fidelity)] == ["openvino:bf16"]  # the failed row never runs


@pytest.mark.parametrize(
    ("fidelity", "why"),
    [
        ({"openvino:bf16": {**_RECORD, "psnr_db": "high"}}, "psnr_db must be a number"),
        ({"openvino:bf16": {**_RECORD, "finite": "yes"}}, "finite must be true or false"),
        ({"openvino:bf16": {k: v for k, v in _RECORD.items() if k != "target"}}, "target must be a string"),
        ({"cpu:bf16": _RECORD}, "'cpu:bf16' describes openvino:bf16"),
        ({"openvino:bf16": {**_RECORD, "timing_input": [1, "3"]}}, "timing_input"),
        ({"openvino:bf16": [1, 2]}, "fidelity record must be an object"),
        ([], "fidelity must be an object"),
    ],
)
def test_a_bad_fidelity_record_is_a_damaged_manifest(fidelity: object, why: str) -> None:
    from pathlib import Path

    from pixelift.artifacts import Manifest
    from pixelift.errors import DamagedArtifactError

    with pytest.raises(DamagedArtifactError, match=f"damaged manifest .*{why}.*pixelift export --force"):
        Manifest.parse(_manifest_text(fidelity), Path("m.json"), model_id="span-x2-ch48", target="onnx-fp32")


def test_the_parity_block_is_typed_and_checked() -> None:
    from pathlib import Path

    from pixelift.artifacts import Manifest
    from pixelift.errors import DamagedArtifactError

    check = {"reference": "torch", "candidate": "onnxruntime-cpu", "image": "photo", "psnr_db": 71.3}
    check |= {"max_abs": 1e-4, "threshold_db": 60.0, "passed": True}
    m = Manifest.parse(
        _manifest_text({}, {"passed": True, "checks": [check]}),
        Path("m.json"),
        model_id="span-x2-ch48",
        target="onnx-fp32",
    )
    assert m.parity_passed and m.parity.worst_db == 71.3 and m.parity.checks[0].to_json() == check
    with pytest.raises(DamagedArtifactError, match="max_abs must be a number"):
        bad = {"passed": True, "checks": [{**check, "max_abs": None}]}
        Manifest.parse(_manifest_text({}, bad), Path("m.json"), model_id="span-x2-ch48", target="onnx-fp32")


def test_a_capability_row_with_an_option_its_provider_lacks_fails_when_declared() -> None:
    from pixelift.errors import ProviderOptionError

    with pytest.raises(
        ProviderOptionError, match="cpu has no option precision; it accepts: threads, graph_optimization"
    ):
        P.Capability("cpu", "bf16", "onnx-fp32", {"precision": "bf16"})
    with pytest.raises(ProviderOptionError, match="precision='f8': choose from f32, bf16, f16"):
        P.Capability("openvino", "fp16", "onnx-fp32", {"precision": "f8"})


def test_fast_without_an_int8_artifact_says_how_to_build_one(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """``--fast`` never quantizes behind the user's back (minutes, GBs for ESRGAN): it runs the
    fastest measured row and says which command builds the int8 one."""
    from pixelift.providers import Request
    from pixelift.runtime import session

    real = P.measure_model
    monkeypatch.setattr(
        P, "measure_model", lambda m, **k: {key: r for key, r in real(m, **k).items() if r.precision != "int8"}
    )
    session.clear_cache()
    try:
        with caplog.at_level(logging.WARNING, logger="pixelift"):
            lm = session.load("span-x2-ch48", Request(), precision="auto", fast=True)
        assert lm.precision != "int8"
        said = [r.getMessage() for r in caplog.records if "--fast found no int8" in r.getMessage()]
        assert said and "pixelift export --precision int8 span-x2-ch48" in said[0], said
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="pixelift"):
            session.clear_cache()
            session.load("span-x2-ch48", Request(), precision="auto", fast=False)
        assert not any("--fast" in r.getMessage() for r in caplog.records)
    finally:
        session.clear_cache()


def test_deep_images_keep_their_depth_under_auto() -> None:
    """auto's reduced precisions are gated on 8-bit crops; bf16 keeps 8 significant bits, so a 16-bit
    highlight ramp came back in 26 levels (1/256 steps). A 16-bit or float image runs at fp32 under
    auto (said in an info note); an explicit reduced precision is kept and said as a warning."""
    from pixelift import Enhancer
    from pixelift.runtime.imageio import ImageData

    ramp = np.round(np.tile(np.linspace(0.55, 0.65, 400), (48, 1)) * 65535).astype(np.uint16)
    image = ImageData.from_arrays(np.stack([ramp] * 3, axis=-1))
    enh = Enhancer("span-x2-ch48", provider="openvino" if HAS_OV else "cpu")
    out, res = enh.enhance_data(image)
    row = out.color[out.color.shape[0] // 2, :, 0]
    assert len(np.unique(row)) > 500 and out.color.dtype == np.uint16
    assert all(lm.precision == "fp32" for lm in enh.loaded(deep=True))
    _, res8 = enh.enhance_data(ImageData.from_arrays((np.stack([ramp] * 3, axis=-1) >> 8).astype(np.uint8)))
    assert not any("bits per sample" in n for n in res8.notes)  # an 8-bit image runs at auto's choice
    if "bf16" in {lm.precision for lm in enh.loaded()}:
        assert any("more than 8 bits per sample" in n for n in res.notes)
        forced = Enhancer("span-x2-ch48", provider="openvino", precision="bf16")
        _, res_bf16 = forced.enhance_data(image)
        assert any(n.startswith("bf16 keeps fewer significant bits") for n in res_bf16.notes)
