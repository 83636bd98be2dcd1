"""bench/: a tiny matrix end to end (files and schema, never speed) and `pixelift compare`."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from pixelift.cli import main

pytest.importorskip("matplotlib")


def test_bench_tiny_matrix_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "report"
    args = ["bench", "-m", "span-x2-ch48", "--tiles", "64", "--providers", "all", "--precisions", "all"]
    args += ["--warmup", "1", "--repeats", "2", "--max-repeats", "2", "--scaling", "0.1", "--ceiling-n", "512"]
    r = CliRunner().invoke(main, [*args, "--report", str(out)])
    assert r.exit_code == 0, r.output
    for name in ("results.json", "results.csv", "report.md", "throughput.png", "fidelity_vs_speed.png", "scaling.png"):
        assert (out / name).stat().st_size > 0, name
    res = json.loads((out / "results.json").read_text())
    assert res["schema"] == 1
    assert {"machine", "versions", "ceiling", "peers", "auto", "results", "scaling", "precision_note"} <= set(res)
    assert res["ceiling"]["gflops"] > 0
    rows = res["results"]
    labels = {r["label"] for r in rows}
    assert {"cpu-fp32", "openvino-fp32", "openvino-bf16"} <= labels
    # every capability row is benched: both int8 routes on OpenVINO, the fp32 IR beside the ONNX
    assert {"openvino-int8", "openvino-int8@openvino-int8", "openvino-fp32@openvino-fp32"} <= labels
    for r in rows:
        assert r["ok"], r
        assert r["repeats"] == 2 and r["s_min"] <= r["s_median"] <= r["s_max"]
        assert r["tile"] == 64 and r["threads"] == 2 and r["rss_peak_mb"] > 0 and r["setup_s"] >= 0
        assert r["gflops"] > 0 and r["pct_ceiling"] > 0
        assert 0.5 < r["mflop_per_px"] < 2  # SPAN ch48: ~0.8 MFLOP per input pixel, counted from the graph
    if not res["peers"]["torch"]:  # torch is the fidelity reference
        fp32 = next(r for r in rows if r["label"] == "cpu-fp32")
        assert fp32["fidelity_db"] is None or fp32["fidelity_db"] > 60
        assert next(r for r in rows if r["label"] == "openvino-bf16")["fidelity_db"] > 35
        assert set(fp32["ratio"]) >= {"torch-fp32"}
    sc = res["scaling"][0]
    assert sc["ok"] and sc["out_shape"][:2] == [2 * sc["height"], 2 * sc["width"]]
    with (out / "results.csv").open() as f:
        assert len(list(csv.DictReader(f))) == len(rows)
    md = (out / "report.md").read_text()
    assert "## span-x2-ch48" in md and "What to use on this machine" in md and "`auto` chooses" in md


def test_bench_rejects_unknown_provider() -> None:
    r = CliRunner().invoke(main, ["bench", "--providers", "nosuch", "--scaling", "none"])
    assert r.exit_code != 0


def test_compare_real_images(tmp_path: Path) -> None:
    skdata = pytest.importorskip("skimage.data")
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    ref = skdata.astronaut()[:200, :240]
    noisy = np.clip(ref + np.random.default_rng(0).normal(0, 6, ref.shape), 0, 255).astype(np.uint8)
    other = skdata.chelsea()[:200, :240]
    small = ref[::2, ::2]
    paths = {}
    for name, a in {"ref": ref, "noisy": noisy, "other": other, "in": small}.items():
        paths[name] = tmp_path / f"{name}.png"
        Image.fromarray(a).save(paths[name])
    heat, sheet = tmp_path / "diff.png", tmp_path / "sheet.png"
    args = ["compare", str(paths["ref"]), str(paths["noisy"]), str(paths["other"]), "--heatmap", str(heat)]
    r = CliRunner().invoke(main, [*args, "--sheet", str(sheet), "--input", str(paths["in"]), "--json"])
    assert r.exit_code == 0, r.output
    res = json.loads(r.output)
    n, o = res["results"]
    assert n["psnr_db"] == pytest.approx(peak_signal_noise_ratio(ref, noisy, data_range=255), abs=1e-6)
    kw = dict(channel_axis=2, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255)
    assert n["ssim"] == pytest.approx(structural_similarity(ref, noisy, **kw), abs=1e-6)
    assert o["psnr_db"] < n["psnr_db"] and o["ssim"] < n["ssim"]
    assert n["max_abs"] == float(np.abs(ref.astype(int) - noisy).max())
    with Image.open(heat) as im:
        assert im.size[0] > 100
    with Image.open(sheet) as im:
        assert im.size[0] > 3 * 96 * 4  # input, reference and two outputs, zoomed
    r = CliRunner().invoke(main, ["compare", str(paths["ref"]), str(paths["in"])])
    assert r.exit_code != 0 and "size mismatch" in r.output
