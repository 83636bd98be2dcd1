"""Issue 10: every bad input, option and fault gets a clear answer and loses nothing."""

from __future__ import annotations

import json
import logging
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from pixelift import Enhancer, TileOptions
from pixelift.artifacts import ONNX_FP32, artifact_dir, find, resolve_artifact
from pixelift.cli import main
from pixelift.errors import (
    AlphaNotSupportedError,
    ArtifactMissingError,
    DamagedArtifactError,
    ImageReadError,
    ImageTooLargeError,
    InvalidIdError,
    InvalidImageError,
    PixeliftError,
    UsageError,
)
from pixelift.export import to_onnx
from pixelift.ids import inside, validate_id
from pixelift.providers import PROVIDERS, ProbeResult, ProviderError, probe_all
from pixelift.samples import sample_photo

MODEL = "span-x2-ch48"


@pytest.fixture(scope="module", autouse=True)
def _exported() -> None:
    to_onnx(MODEL)


def _png(path: Path, h: int = 24, w: int = 32) -> Path:
    Image.fromarray(sample_photo()[:h, :w]).save(path)
    return path


def _no_traceback(res: object) -> None:
    exc = getattr(res, "exception", None)
    assert exc is None or isinstance(exc, SystemExit), repr(exc)
    assert "Traceback" not in getattr(res, "output", "")


# --- 1. ids ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "..",
        ".hidden",
        "../x",
        "../../x",
        "/abs/path/victim",
        "a/b",
        "a\\b",
        "C:\\x",
        "Upper",
        "сon",  # Cyrillic 'с'
        "ｍodel",  # fullwidth
        "con",
        "nul.txt",
        "com1",
        "lpt9",
        "a" * 65,
        "x.",
        "a b",
        "x\x00y",
    ],
)
def test_id_rule_refuses(bad: str) -> None:
    with pytest.raises(InvalidIdError):
        validate_id(bad)
    with pytest.raises(InvalidIdError):
        artifact_dir(bad, ONNX_FP32)


@pytest.mark.parametrize("good", ["span-x2-ch48", "my_model.v2", "a", "0", "a" * 64, "x1.5-test"])
def test_id_rule_accepts(good: str) -> None:
    assert validate_id(good) == good


def test_paths_from_ids_stay_inside(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (root / "link").symlink_to(tmp_path)
    with pytest.raises(InvalidIdError):
        inside(root, "link", "escape")
    assert inside(root, "ok") == root / "ok"
    with pytest.raises(InvalidIdError):
        artifact_dir(MODEL, "../../etc")  # a target is validated against the target table too


def test_export_id_cannot_name_a_path(tmp_path: Path) -> None:
    victim = tmp_path / "victim.json"
    victim.write_text("keep")
    weights = tmp_path / "w.pth"
    weights.write_bytes(b"not really")
    for bad in (str(tmp_path / "victim"), "../../x", "a/b", "..\\x", ""):
        res = CliRunner().invoke(main, ["export", str(weights), "--id", bad])
        _no_traceback(res)
        assert res.exit_code == 2, res.output
        assert "--id" in res.output
    assert victim.read_text() == "keep"


def test_user_spec_files_are_validated_when_read_back(pixelift_home: Path, caplog: pytest.LogCaptureFixture) -> None:
    from pixelift import models

    d = pixelift_home / "models"
    d.mkdir(exist_ok=True)
    good = models.get(MODEL).to_dict()
    evil = {**good, "id": "../../evil"}
    (d / "evil.json").write_text(json.dumps(evil))
    (d / "empty.json").write_text("")
    (d / "other.json").write_text(json.dumps({**good, "id": "not-other"}))
    try:
        with caplog.at_level(logging.WARNING, logger="pixelift"):
            ids = [s.id for s in models.user_specs()]
        assert not {"../../evil", "evil", "empty", "other", "not-other"} & set(ids)
        assert "evil.json" in caplog.text and "empty.json" in caplog.text and "other.json" in caplog.text
        res = CliRunner().invoke(main, ["models", "--json"])
        assert res.exit_code == 0 and "evil" not in res.stdout
    finally:
        for f in ("evil.json", "empty.json", "other.json"):
            (d / f).unlink()


# --- 2. an absent accelerator ----------------------------------------------------------------------

ABSENT = [n for n, probe in probe_all().items() if not probe.available] + ["openvino:GPU", "openvino:NPU"]
PRECISIONS = ["auto", "fp32", "bf16", "fp16", "int8"]


@pytest.mark.slow
@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("provider", ABSENT)
def test_absent_provider_falls_back_loudly_or_raises_when_strict(
    provider: str, precision: str, caplog: pytest.LogCaptureFixture
) -> None:
    x = sample_photo()[:20, :24]
    with caplog.at_level(logging.WARNING, logger="pixelift"):
        enh = Enhancer(MODEL, provider=provider, precision=precision)
        out = enh.enhance(x)
    assert out.shape == (40, 48, 3)
    assert provider in caplog.text and "not available" in caplog.text
    rejected = [label for label, _ in enh.loaded()[0].selection.rejected]
    assert provider in rejected
    with pytest.raises(ProviderError, match=provider.split(":")[0]):
        Enhancer(MODEL, provider=provider, precision=precision, strict=True).enhance(x)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["cpu", "openvino", "ncnn"])
def test_present_provider_made_absent_by_a_fake(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from pixelift.runtime.session import clear_cache

    clear_cache()
    monkeypatch.setattr(PROVIDERS[name], "probe", lambda facts: ProbeResult(False, f"fake: no {name}"))
    x = sample_photo()[:20, :24]
    for precision in PRECISIONS:
        enh = Enhancer(MODEL, provider=name, precision=precision)
        assert enh.enhance(x).shape == (40, 48, 3)
        assert enh.loaded()[0].provider.split(":")[0] != name
        with pytest.raises(ProviderError, match=f"fake: no {name}"):
            Enhancer(MODEL, provider=name, precision=precision, strict=True).enhance(x)
    clear_cache()


def test_cli_strict_absent_provider_writes_nothing(tmp_path: Path) -> None:
    src = _png(tmp_path / "a.png")
    res = CliRunner().invoke(main, ["enhance", str(src), "--provider", "cuda", "--strict", "-o", str(tmp_path / "o.png")])
    _no_traceback(res)
    assert res.exit_code == 1 and "cuda" in res.output and "strict" in res.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png"]


def test_cli_fallback_is_one_visible_warning(tmp_path: Path) -> None:
    a, b = _png(tmp_path / "a.png"), _png(tmp_path / "b.png")
    res = CliRunner().invoke(main, ["enhance", str(a), str(b), "--provider", "tensorrt", "-o", str(tmp_path / "out")])
    _no_traceback(res)
    assert res.exit_code == 0, res.output
    lines = [ln for ln in res.stderr.splitlines() if "tensorrt" in ln and "not available" in ln]
    assert len(lines) == 1 and lines[0].startswith("WARNING"), res.stderr
    res = CliRunner().invoke(main, ["-v", "enhance", str(a), "--provider", "tensorrt", "-o", str(tmp_path / "v.png")])
    passed = [ln for ln in res.stderr.splitlines() if "passed over" in ln]
    assert len(passed) == len(set(passed)), res.stderr


def test_decisions_are_this_threads_warnings_without_events() -> None:
    import threading

    from pixelift import logs

    log = logging.getLogger("pixelift.test")
    with logs.decisions() as said:
        log.warning("provider x passed over")
        log.warning("provider x passed over")
        log.warning("building the artifact now", extra=logs.EVENT)
        log.info("chose y")
        other = threading.Thread(target=lambda: log.warning("another thread's load"))
        other.start()
        other.join()
    log.warning("after the block")
    assert said == ["provider x passed over"]
    happened: list[str] = []
    with logs.events(happened.append):
        log.warning("measuring now", extra=logs.EVENT)
        log.warning("provider x passed over")
        other = threading.Thread(target=lambda: log.warning("another thread's build", extra=logs.EVENT))
        other.start()
        other.join()
    assert happened == ["measuring now"]


def test_every_result_carries_the_fallback_its_load_warned_of() -> None:
    """What loading logged travels with each result (a service's client shows it): not only the
    first, and again for an Enhancer built later in the same process (a service's evicted one)."""
    img = sample_photo()[:40, :40].astype(np.float32) / 255
    for _ in range(2):
        enh = Enhancer(MODEL, provider="tensorrt")
        results = [enh.enhance_float(img)[2] for _ in range(2)]
        for res in results:
            assert any("tensorrt" in w and "not available" in w for w in res.warnings), res.warnings


# --- 3. a damaged cache -----------------------------------------------------------------------------


@pytest.mark.parametrize("content", ["", "{not json", "[]", '{"file": "../../x", "sha256": "00"}', "null"])
def test_damaged_manifest_counts_as_missing_and_is_rebuilt(content: str, caplog: pytest.LogCaptureFixture) -> None:
    from pixelift.runtime.session import clear_cache

    model = "realesrgan-animevideov3-x4"
    art = to_onnx(model)
    mf = art.path.parent / "manifest.json"
    good = mf.read_text()
    mf.write_text(content)
    clear_cache()
    with caplog.at_level(logging.WARNING, logger="pixelift"):
        assert find(model, ONNX_FP32) is None
        assert str(mf) in caplog.text
        with pytest.raises(ArtifactMissingError, match="export --force"):
            resolve_artifact(model, ONNX_FP32, auto_build=False)
        res = CliRunner().invoke(main, ["models", "show", model])
        _no_traceback(res)
        assert res.exit_code == 0
        out = Enhancer(model, provider="cpu", precision="fp32").enhance(sample_photo()[:12, :12])
    assert out.shape == (48, 48, 3)
    fixed = find(model, ONNX_FP32)
    assert fixed is not None and json.loads(mf.read_text())["sha256"] == json.loads(good)["sha256"]
    fixed.verify()


def test_export_force_repairs_a_damaged_artifact() -> None:
    model = "realesrgan-animevideov3-x4"
    art = to_onnx(model)
    (art.path.parent / "manifest.json").write_text("garbage")
    res = CliRunner().invoke(main, ["export", model, "--force"])
    _no_traceback(res)
    assert res.exit_code == 0, res.output
    art2 = find(model, ONNX_FP32)
    assert art2 is not None
    art2.verify()


def test_without_builder_a_damaged_artifact_says_how_to_repair(monkeypatch: pytest.MonkeyPatch) -> None:
    import pixelift.artifacts.builders as B
    from pixelift.errors import MissingExtraError

    def no_builder() -> object:
        raise MissingExtraError("no artifact builder is installed: pip install 'pixelift[export]'")

    monkeypatch.setattr(B, "installed_builder", no_builder)
    art = to_onnx(MODEL)
    data = art.path.read_bytes()
    art.path.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    try:
        with pytest.raises(ArtifactMissingError, match=r"damaged.*pixelift\[export\]"):
            resolve_artifact(MODEL, ONNX_FP32)
    finally:
        art.path.write_bytes(data)


# --- 4. publishing races (processes) ----------------------------------------------------------------

RACE = r"""
import os, sys, time, tempfile
from pathlib import Path
from pixelift.artifacts import publish, find, resolve_artifact
role, n = sys.argv[1], int(sys.argv[2])
spec = {"id": "race-model"}
def build(tag):
    d = Path(tempfile.mkdtemp())
    (d / "m.bin").write_bytes(os.urandom(200_000) + tag.encode())
    return publish("race-model", "onnx-fp32", d / "m.bin", {"file": "m.bin", "spec": spec})
if role == "writer":
    for i in range(n):
        build(f"{os.getpid()}-{i}")
elif role == "reader":
    seen = 0
    deadline = time.time() + 60
    while seen < n and time.time() < deadline:
        art = resolve_artifact("race-model", "onnx-fp32", auto_build=False)
        seen += 1
    print("reads", seen)
elif role == "cold":
    def builder(model_id, target, *, force=False):
        with open(sys.argv[3], "a") as f:
            f.write(f"{os.getpid()}\n")
        time.sleep(1.0)
        d = Path(tempfile.mkdtemp())
        (d / "m.bin").write_bytes(b"x" * 1000)
        return publish(model_id, target, d / "m.bin", {"file": "m.bin", "spec": {"id": model_id}})
    resolve_artifact("race-cold", "onnx-fp32", builder=builder).verify()
"""


def _spawn(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", RACE, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=os.environ
    )


@pytest.mark.slow
def test_two_writers_and_a_reader_never_see_half_an_artifact(pixelift_home: Path) -> None:
    first = _spawn("writer", "1")
    assert first.wait(60) == 0, first.stderr.read() if first.stderr else ""
    procs = [_spawn("writer", "15"), _spawn("writer", "15"), _spawn("reader", "150")]
    outs = [p.communicate(timeout=120) for p in procs]
    for p, (_out, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err
    assert "reads 150" in outs[2][0]
    art = find("race-model", "onnx-fp32")
    assert art is not None
    art.verify()
    leftovers = [p.name for p in (pixelift_home / "artifacts" / "race-model").iterdir() if p.name.startswith(".")]
    assert leftovers == [], leftovers


@pytest.mark.slow
def test_two_cold_processes_build_once(tmp_path: Path) -> None:
    log_file = tmp_path / "builds.txt"
    procs = [_spawn("cold", "0", str(log_file)) for _ in range(2)]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    assert len(log_file.read_text().split()) == 1


def test_leftovers_of_a_killed_publish_are_cleaned(pixelift_home: Path) -> None:
    from pixelift.artifacts import publish

    parent = pixelift_home / "artifacts" / "leftover-model"
    (parent / ".onnx-fp32.abc123").mkdir(parents=True)
    (parent / ".onnx-fp32.old-.onnx-fp32.def").mkdir()
    f = pixelift_home / "m.bin"
    f.write_bytes(b"123")
    publish("leftover-model", "onnx-fp32", f, {"file": "m.bin", "spec": {"id": "leftover-model"}})
    assert sorted(p.name for p in parent.iterdir()) == ["onnx-fp32"]


# --- 5. guards ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["-5", "abc", "nan", "inf", "1.5", "-inf", "1e400"])
def test_max_pixels_env_and_option_are_validated(value: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = _png(tmp_path / "a.png")
    res = CliRunner().invoke(main, ["enhance", str(src), "--max-pixels", value])
    _no_traceback(res)
    assert res.exit_code == 2 and "--max-pixels" in res.output
    monkeypatch.setenv("PIXELIFT_MAX_PIXELS", value)
    res = CliRunner().invoke(main, ["enhance", str(src)])
    _no_traceback(res)
    assert res.exit_code == 2 and "PIXELIFT_MAX_PIXELS" in res.output
    with pytest.raises(UsageError):
        Enhancer(MODEL)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png"]


@pytest.mark.parametrize(
    ("env", "value"),
    [("PIXELIFT_TILE_MEMORY", v) for v in ("lots", "-1G", "0", "10M", "nanG", "6 parsecs", "inf")]
    + [("PIXELIFT_COMPILE_CACHE", v) for v in ("lots", "-1G", "nanG", "6 parsecs", "inf", "1.5.0M")],
)
def test_size_envs_are_validated(env: str, value: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A size in the environment is refused before any work (PIXELIFT_COMPILE_CACHE too, though
    only OpenVINO reads it: met at a session's open, it would be a backend failure to fall back from)."""
    src = _png(tmp_path / "a.png")
    monkeypatch.setenv(env, value)
    res = CliRunner().invoke(main, ["enhance", str(src)])
    _no_traceback(res)
    assert res.exit_code == 2 and env in res.output
    with pytest.raises(UsageError, match=env):
        Enhancer(MODEL)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png"]


def test_compile_cache_env_sizes(monkeypatch: pytest.MonkeyPatch) -> None:
    from pixelift import limits

    monkeypatch.delenv("PIXELIFT_COMPILE_CACHE", raising=False)
    assert limits.compile_cache_bytes() == limits.DEFAULT_COMPILE_CACHE
    for value, expected in (("0", 0), ("512M", 512 << 20), ("4G", 4 << 30), ("1000", 1000)):
        monkeypatch.setenv("PIXELIFT_COMPILE_CACHE", value)
        assert limits.compile_cache_bytes() == expected


def test_prune_lru_keeps_the_recently_used_within_the_budget(tmp_path: Path) -> None:
    from pixelift.paths import prune_lru

    now = 1_700_000_000
    for i, (name, size) in enumerate([("a.blob", 300), ("b.blob", 300), ("c.blob", 300), ("d.blob", 300)]):
        f = tmp_path / name
        f.write_bytes(b"x" * size)
        os.utime(f, (now + i, now + i))
    os.utime(tmp_path / "a.blob", (now + 10, now))  # read last: the most recently used
    (tmp_path / "link.blob").symlink_to(tmp_path / "a.blob")  # links are never followed or removed
    assert prune_lru(tmp_path, 700) == 600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.blob", "d.blob", "link.blob"]
    assert prune_lru(tmp_path, 700) == 0  # within the budget: nothing to do
    assert prune_lru(tmp_path / "missing", 0) == 0
    # a folder (a compiled Core ML model) counts as one entry: all its files, its newest use
    model = tmp_path / "model.mlmodelc"
    (model / "weights").mkdir(parents=True)
    (model / "weights" / "w.bin").write_bytes(b"x" * 500)
    os.utime(model / "weights" / "w.bin", (now + 20, now + 20))
    assert prune_lru(tmp_path, 900) == 300  # d.blob goes; the folder was used last
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.blob", "link.blob", "model.mlmodelc"]
    assert prune_lru(tmp_path, 100) == 800
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link.blob"]


def test_tile_memory_sizes_the_auto_tile(monkeypatch: pytest.MonkeyPatch) -> None:
    """The activation budget follows the memory available (a third, 3 to 8 GB, never more than
    there is), and PIXELIFT_TILE_MEMORY overrides it: ESRGAN on OpenVINO runs a 1 MP photo
    whole with 20 GB available, in tiles with 4 GB or a 1G setting."""
    from pixelift.providers.openvino import OpenVINOOptions
    from pixelift.providers.select import Selection
    from pixelift.runtime import enhancer as E
    from pixelift.runtime.session import LoadedModel

    gib = 1 << 30
    budgets = [E.tile_memory_budget(a * gib) / gib for a in (1, 4, 8, 20, 64)]
    assert budgets == pytest.approx([1.0, 3.0, 3.0, 20 / 3, 8.0])
    from pixelift import models

    spec = models.get("realesrgan-x4plus")
    # the tile depends on the spec and the provider only: no artifact or session needed
    lm = LoadedModel(spec, None, Selection("openvino", OpenVINOOptions(), None, ()))  # type: ignore[arg-type]
    for available, want_whole in ((20 * gib, True), (4 * gib, False)):
        monkeypatch.setattr(E.tiling, "available_memory_bytes", lambda a=available: a)
        tile = Enhancer(spec.id).tile_for(lm, 1000, 1000)
        assert (tile is None) == want_whole, (available, tile)
    monkeypatch.setattr(E.tiling, "available_memory_bytes", lambda: 20 * gib)
    monkeypatch.setenv("PIXELIFT_TILE_MEMORY", "1G")
    small = Enhancer(spec.id).tile_for(lm, 1000, 1000)
    assert small is not None and small < 500
    # the tile options' budget wins over the variable (a service job carries its client's)
    assert Enhancer(spec.id, tiles=TileOptions(memory=20 * gib)).tile_for(lm, 1000, 1000) is None
    monkeypatch.setenv("PIXELIFT_TILE_MEMORY", "64G")
    assert Enhancer(spec.id, tiles=TileOptions(memory="1G")).tile_for(lm, 1000, 1000) == small
    monkeypatch.setenv("PIXELIFT_TILE_MEMORY", "lots")  # still validated when the options set one
    with pytest.raises(UsageError, match="PIXELIFT_TILE_MEMORY"):
        Enhancer(spec.id, tiles=TileOptions(memory="1G"))
    for bad in ("lots", 1000, True, -5):
        with pytest.raises(UsageError, match="tile memory"):
            TileOptions(memory=bad)  # type: ignore[arg-type]


def test_max_pixels_env_still_guards(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = _png(tmp_path / "a.png")
    monkeypatch.setenv("PIXELIFT_MAX_PIXELS", "100")
    res = CliRunner().invoke(main, ["enhance", str(src)])
    assert res.exit_code == 1 and "over the limit" in res.output


@pytest.mark.parametrize("value", ["nan", "inf", "0", "-1", "1e-9", "abc", "-inf", "1000"])
def test_outscale_is_validated(value: str, tmp_path: Path) -> None:
    src = _png(tmp_path / "a.png")
    res = CliRunner().invoke(main, ["enhance", str(src), "--outscale", value])
    _no_traceback(res)
    assert res.exit_code == 2 and "--outscale" in res.output
    with pytest.raises(UsageError):
        Enhancer(MODEL, outscale=float(value) if value != "abc" else value)  # type: ignore[arg-type]


def test_output_size_guard_is_checked_before_allocating(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = _png(tmp_path / "a.png")
    res = CliRunner().invoke(main, ["enhance", str(src), "--outscale", "64", "--max-output-pixels", "1000000"])
    _no_traceback(res)
    assert res.exit_code == 1 and "--max-output-pixels" in res.output
    with pytest.raises(ImageTooLargeError):
        Enhancer(MODEL, outscale=64, max_output_pixels=10_000).enhance(sample_photo()[:16, :16])
    monkeypatch.setenv("PIXELIFT_MAX_OUTPUT_PIXELS", "1000")
    with pytest.raises(ImageTooLargeError):
        Enhancer(MODEL).enhance(sample_photo()[:32, :32])  # 64x64 out
    res = CliRunner().invoke(main, ["enhance", str(src), "--max-output-pixels", "none", "-o", str(tmp_path / "o.png")])
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "o.png"]


# --- 6. non-finite input -------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_input_is_refused(bad: float) -> None:
    x = sample_photo()[:20, :20].astype(np.float32) / 255
    x[3:13, 3:13, 1] = bad
    with pytest.raises(InvalidImageError, match="100 NaN or infinite"):
        Enhancer(MODEL).enhance(x)


# --- 7. -o semantics --------------------------------------------------------------------------------------


def test_output_existing_folder_and_trailing_separator(tmp_path: Path) -> None:
    src = _png(tmp_path / "a.png")
    (tmp_path / "existing").mkdir()
    res = CliRunner().invoke(main, ["enhance", str(src), "-o", str(tmp_path / "existing")])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "existing" / "a.png").is_file()
    res = CliRunner().invoke(main, ["enhance", str(src), "-o", str(tmp_path / "newdir") + os.sep])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "newdir" / "a.png").is_file()
    for bad in ("x.gif", "noext"):
        res = CliRunner().invoke(main, ["enhance", str(src), "-o", str(tmp_path / bad)])
        _no_traceback(res)
        assert res.exit_code == 2 and "-o" in res.output
        assert not (tmp_path / bad).exists()


# --- 8. notes are warnings -------------------------------------------------------------------------------


def test_read_notes_show_as_warnings(tmp_path: Path) -> None:
    src = tmp_path / "cmyk.jpg"
    Image.fromarray(sample_photo()[:16, :16]).convert("CMYK").save(src)
    res = CliRunner().invoke(main, ["enhance", str(src), "-o", str(tmp_path / "o.png")])
    assert res.exit_code == 0, res.output
    assert any(ln.startswith("WARNING: cmyk.jpg:") and "CMYK" in ln for ln in res.stderr.splitlines()), res.stderr


# --- 9. leftovers and special files -------------------------------------------------------------------------


def test_stale_part_files_of_dead_writers_are_removed(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = int(proc.stdout)
    stale = tmp_path / f".o.png.{dead}-pxl-abcd.part"
    stale.write_bytes(b"partial")
    foreign = tmp_path / ".o.png.xyz.part"  # not ours: never touched
    foreign.write_bytes(b"x")
    src = _png(tmp_path / "a.png")
    res = CliRunner().invoke(main, ["enhance", str(src), "-o", str(tmp_path / "o.png")])
    assert res.exit_code == 0, res.output
    assert not stale.exists() and foreign.exists()


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="FIFOs are POSIX")
def test_fifo_input_is_refused_not_hung(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    with pytest.raises(ImageReadError, match="not a regular file"):
        Enhancer(MODEL).enhance_file(fifo, tmp_path / "o.png")
    res = CliRunner().invoke(main, ["enhance", str(fifo), "-o", str(tmp_path / "o.png")])
    assert res.exit_code == 1 and "regular file" in res.output


def _cli(args: list[str], *, code: str = "", **kw: object) -> subprocess.CompletedProcess[str]:
    """The console script (``pixelift.cli.run``) in a fresh process, after ``code``."""
    script = code + f"import sys\nsys.argv = ['pixelift', *{args!r}]\nfrom pixelift.cli import run\nrun()\n"
    return subprocess.run([sys.executable, "-c", script], text=True, timeout=300, **kw)  # type: ignore[call-overload, no-any-return]


def test_console_script_exit_status_and_flushed_output(tmp_path: Path) -> None:
    listing = tmp_path / "models.json"
    with listing.open("w") as out:
        assert _cli(["models", "--json"], stdout=out).returncode == 0
    assert MODEL in {row["id"] for row in json.loads(listing.read_text())}
    unflushed = tmp_path / "unflushed.txt"
    with unflushed.open("w") as out:  # a file is block-buffered: only a flush before the quick exit writes it
        code = "import sys, pixelift.cli\npixelift.cli.main = lambda: sys.stdout.write('kept')\n"
        buffered = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
        assert _cli([], code=code, stdout=out, env=buffered).returncode == 0
    assert unflushed.read_text() == "kept"
    bad = _cli(["enhance", "--no-such-option"], capture_output=True)
    assert bad.returncode == 2 and "No such option" in bad.stderr
    missing = _cli(["enhance", str(tmp_path / "none.png"), "-o", str(tmp_path / "o.png")], capture_output=True)
    assert missing.returncode == 1 and "no such file" in missing.stderr and "Traceback" not in missing.stderr
    said = _cli(["models"], code="import sys, pixelift.cli\npixelift.cli.main = lambda: sys.exit('bye')\n", capture_output=True)
    assert (said.returncode, said.stderr.strip()) == (1, "bye")


def test_console_script_waits_for_a_thread_still_running(tmp_path: Path) -> None:
    mark = tmp_path / "written"
    code = (
        "import threading, time\nfrom pathlib import Path\n"
        f"threading.Thread(target=lambda: (time.sleep(1.0), Path({str(mark)!r}).write_text('x'))).start()\n"
    )
    assert _cli(["models", "--json"], code=code, capture_output=True).returncode == 0
    assert mark.read_text() == "x"  # a quick exit would have killed the thread before it wrote


def test_a_closed_stdout_pipe_ends_quietly() -> None:
    read_end, write_end = os.pipe()
    os.close(read_end)  # `pixelift models | head -0`: every write fails with EPIPE
    try:
        proc = _cli(["models"], stdout=write_end, stderr=subprocess.PIPE)
    finally:
        os.close(write_end)
    assert proc.returncode == 1 and proc.stderr == "", proc.stderr


# --- 10. runtime-only installs ----------------------------------------------------------------------------

NO_TORCH = "import sys\nfor n in ('torch', 'spandrel', 'onnx', 'onnxslim'):\n    sys.modules[n] = None\n"


def test_runtime_only_export_names_the_extra() -> None:
    code = NO_TORCH + (
        "import importlib.util\n"
        "importlib.util.find_spec = (lambda f: (lambda n, *a: None if n == 'torch' else f(n, *a)))(importlib.util.find_spec)\n"
        "from click.testing import CliRunner\nfrom pixelift.cli import main\n"
        "r = CliRunner().invoke(main, ['export', 'span-x2-ch48'])\n"
        "print(r.exit_code); print(r.output)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.stdout.splitlines()[0] == "1", proc.stdout + proc.stderr
    assert "pixelift[export]" in proc.stdout and "Traceback" not in proc.stdout


def test_bf16_without_openvino_names_the_extra(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    from pixelift.runtime.session import clear_cache

    clear_cache()
    for name in ("openvino", "ncnn"):  # the providers with a bf16 row here
        monkeypatch.setattr(
            PROVIDERS[name], "probe", lambda facts, n=name: ProbeResult(False, f"{n} is not installed: pip install 'pixelift[{n}]'")
        )
    with caplog.at_level(logging.WARNING, logger="pixelift"):
        Enhancer(MODEL, precision="bf16").enhance(sample_photo()[:16, :16])
    assert "pixelift[openvino]" in caplog.text and "pixelift[ncnn]" in caplog.text
    with pytest.raises(ProviderError, match=r"pixelift\[openvino\]"):
        Enhancer(MODEL, precision="bf16", provider="openvino", strict=True).enhance(sample_photo()[:16, :16])
    clear_cache()


# --- 11. API ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {"provider": "gpu9"},
        {"provider": "openvino:XPU"},
        {"provider": "cpu:GPU"},
        {"precision": "int4"},
        {"outscale": -1},
        {"outscale": "abc"},
        {"max_pixels": -5},
        {"max_output_pixels": 0.5},
        {"model": []},
    ],
)
def test_enhancer_validates_in_the_constructor(kwargs: dict[str, object]) -> None:
    with pytest.raises(PixeliftError):
        Enhancer(**{"model": MODEL, **kwargs})  # type: ignore[arg-type]


def test_tile_options_are_validated() -> None:
    from pixelift.runtime.enhancer import TileOptions

    for bad in ({"tile": 3}, {"tile": "big"}, {"overlap": -1}, {"batch": 0}, {"blend": "smudge"}, {"tile": True}):
        with pytest.raises(UsageError):
            TileOptions(**bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("shape", [(0, 10, 3), (10, 0), (0, 0), (5, 5, 2), (5, 5, 5), (5,)])
def test_bad_arrays_raise_typed_errors(shape: tuple[int, ...]) -> None:
    with pytest.raises(InvalidImageError):
        Enhancer(MODEL).enhance(np.zeros(shape, np.uint8))


def test_errors_live_in_pixelift_errors() -> None:
    import pixelift.errors as E

    for name in ("ArtifactMissingError", "DamagedArtifactError", "InvalidIdError", "UsageError", "InvalidImageError"):
        assert name in E.__all__ and issubclass(getattr(E, name), PixeliftError)
    assert DamagedArtifactError.__module__ == "pixelift.errors"


@pytest.mark.parametrize("provider", ["tensorrt", "openvino:GPU"])
def test_an_absent_requested_provider_is_passed_over_once(provider: str) -> None:
    from pixelift.providers import Request, plan, probe_all

    p = plan(Request(provider), probe_all(), cpu_ranker=lambda: (["openvino", "cpu"], "m"))
    labels = [label for label, _ in p.rejected]
    assert labels.count(provider) == 1, labels


def test_a_lock_held_too_long_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import pixelift.artifacts.store as S
    from pixelift.errors import ArtifactBusyError

    holder = subprocess.Popen(
        [sys.executable, "-c", "from pixelift.artifacts import locked\nimport time\nwith locked('busy-model', 'onnx-fp32'):\n    print('held', flush=True)\n    time.sleep(30)\n"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        monkeypatch.setattr(S, "LOCK_TIMEOUT_S", 0.3)
        monkeypatch.setattr(S, "_LOCKS", {})
        with pytest.raises(ArtifactBusyError, match="delete"):  # the holder sleeps 30 s: waiting would not raise
            S.find("busy-model", "onnx-fp32")
    finally:
        holder.kill()
        holder.wait()


def test_env_folders_and_contradicting_options_are_refused_by_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """PIXELIFT_HOME (or PIXELIFT_STATE) naming a file made every file fail after seconds of 'rebuilding the
    damaged artifact'; PIXELIFT_MAX_STREAM_PIXELS was read only when an output streamed; --skip-existing
    with --overwrite silently skipped. Each is refused before any work, by name, exit 2."""
    a = _png(tmp_path / "a.png")
    (tmp_path / "afile").write_bytes(b"x")
    for env, value in (("PIXELIFT_HOME", "afile"), ("PIXELIFT_STATE", "afile/sub")):
        monkeypatch.setenv(env, str(tmp_path / value))
        for args in (["enhance", str(a), "-o", str(tmp_path / "o.png"), "--no-server"], ["doctor"], ["models"]):
            res = CliRunner().invoke(main, args)
            _no_traceback(res)
            assert res.exit_code == 2 and env in res.output and "not a folder" in res.output, (args, res.output)
        monkeypatch.delenv(env)
    monkeypatch.setenv("PIXELIFT_MAX_STREAM_PIXELS", "abc")
    res = CliRunner().invoke(main, ["enhance", str(a), "-o", str(tmp_path / "o.png"), "--no-server"])
    assert res.exit_code == 2 and "PIXELIFT_MAX_STREAM_PIXELS" in res.output
    monkeypatch.delenv("PIXELIFT_MAX_STREAM_PIXELS")
    res = CliRunner().invoke(main, ["enhance", str(a), "--skip-existing", "--overwrite", "--no-server"])
    assert res.exit_code == 2 and "choose one" in res.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "afile"]


def test_jpeg_output_of_a_transparent_image_is_refused_before_the_models_run(tmp_path: Path) -> None:
    """JPEG holds no alpha: a transparent input is refused when it is read (the models ran first, for
    nothing); an RGBA input opaque everywhere loses nothing and is written."""
    rgba = np.dstack([sample_photo()[:24, :32], np.full((24, 32), 255, np.uint8)])
    Image.fromarray(rgba).save(tmp_path / "opaque.png")
    rgba[:8, :8, 3] = 0
    Image.fromarray(rgba).save(tmp_path / "holes.png")
    enh = Enhancer("span-x2-ch48", provider="cpu")
    ran: list[object] = []
    real = enh._compute
    enh._compute = lambda job: ran.append(job) or real(job)  # type: ignore[method-assign]
    holes, opaque = enh.enhance_files([(tmp_path / "holes.png", tmp_path / "h.jpg"), (tmp_path / "opaque.png", tmp_path / "o.jpg")])
    assert isinstance(holes.error, AlphaNotSupportedError) and "transparency" in str(holes.error)
    assert opaque.error is None and Image.open(tmp_path / "o.jpg").mode == "RGB"
    assert len(ran) == 1 and not (tmp_path / "h.jpg").exists()


def test_ctrl_c_is_said_plainly_with_the_shells_code(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C mid-batch: one line, exit 130 (click printed "Aborted!" and exited 1, like a failed file),
    and no partial output."""
    from pixelift.runtime.enhancer import Enhancer

    src = tmp_path / "a.png"
    Image.fromarray(sample_photo()[:48, :48]).save(src)

    def interrupted(*_a: object, **_k: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(Enhancer, "enhance_float", interrupted)
    res = CliRunner().invoke(main, ["enhance", str(src), "-o", str(tmp_path / "out.png"), "--no-server"])
    assert res.exit_code == 130 and "interrupted" in res.output and "Aborted" not in res.output, res.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png"]


def test_an_output_under_a_file_is_refused_before_the_models_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pixelift.runtime.enhancer import Enhancer

    src = tmp_path / "a.png"
    Image.fromarray(sample_photo()[:48, :48]).save(src)
    ran: list[bool] = []
    real = Enhancer.enhance_float
    monkeypatch.setattr(Enhancer, "enhance_float", lambda self, *a, **k: ran.append(True) or real(self, *a, **k))
    res = CliRunner().invoke(main, ["enhance", str(src), "-o", str(src / "x.png"), "--no-server"])
    assert res.exit_code == 1 and f"{src} is a file, not a folder" in res.output and not ran, res.output


def test_tile_options_with_no_tiles_are_refused_and_halves_round_up(tmp_path: Path) -> None:
    """--overlap/--blend/--batch with --tile none did nothing, silently; --tile NONE was refused; 223 px at x1.5
    came out 334 (Python's round-half-even), not 335."""
    src = tmp_path / "a.png"
    Image.fromarray(sample_photo()[:211, :223]).save(src)
    for extra in (["--overlap", "8"], ["--blend", "crop"], ["--batch", "4"]):
        res = CliRunner().invoke(main, ["enhance", str(src), "-o", str(tmp_path / "x.png"), "--tile", "none", *extra])
        assert res.exit_code == 2 and extra[0] in res.output and not (tmp_path / "x.png").exists(), res.output
    res = CliRunner().invoke(main, ["enhance", str(src), "-o", str(tmp_path / "y.png"), "--tile", "NONE", "--outscale", "1.5", "--no-server"])
    assert res.exit_code == 0, res.output
    assert Image.open(tmp_path / "y.png").size == (335, 317)


def test_a_file_is_reported_as_it_ends_even_when_the_next_is_interrupted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A file's outcome was yielded once the next file's models had run: its --json line came a file late, and
    a Ctrl-C during the next file lost it although its output was written. It is said as it ends."""
    from pixelift.runtime.enhancer import Enhancer

    for name in ("a", "b"):
        Image.fromarray(sample_photo()[:48, :48]).save(tmp_path / f"{name}.png")
    real = Enhancer._compute

    def second_interrupted(self: Enhancer, job: object) -> object:
        if job.src.name == "b.png":  # type: ignore[attr-defined]
            raise KeyboardInterrupt
        return real(self, job)

    monkeypatch.setattr(Enhancer, "_compute", second_interrupted)
    out = tmp_path / "out"
    args = ["enhance", str(tmp_path / "a.png"), str(tmp_path / "b.png"), "-o", str(out) + os.sep, "--json", "--no-server"]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 130, res.output
    line, rest = [json.loads(x) for x in res.stdout.splitlines() if x.startswith("{")]
    assert line["status"] == "ok" and Path(line["output"]) == out / "a.png" and (out / "a.png").is_file()
    assert rest["status"] == "cancelled" and rest["input"].endswith("b.png") and rest["output"] is None
