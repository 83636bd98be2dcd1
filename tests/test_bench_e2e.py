"""The file-to-file bench: the noise rule, the ncnn pipeline (checked against the ncnn
oracle), one real case end to end, and the headline in the report."""

from __future__ import annotations

from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pixelift.bench import e2e, report
from pixelift.bench.stats import NOISE_SPREAD, spread, trusted_ratio
from tests.images import photo_crop


def test_noise_rule() -> None:
    assert spread([1.0]) == 0.0
    assert spread([1.0, 1.1, 1.2]) == pytest.approx(0.2 / 1.1)
    ratio, why = trusted_ratio([2.0, 2.1, 2.05], [1.0, 1.02, 1.01])
    assert why is None and ratio == pytest.approx(2.05 / 1.01)
    ratio, why = trusted_ratio([2.0, 3.0, 2.1], [1.0, 1.0, 1.0])  # the peer spread 48%
    assert ratio is None and why is not None and "peer spread 48%" in why and f"{NOISE_SPREAD:.0%}" in why
    ratio, why = trusted_ratio([2.0, 2.0], [1.0, 1.5])
    assert ratio is None and why is not None and "pixelift spread" in why


@pytest.mark.parametrize("model", ["span-x2-ch48", "realcugan-se-x4"])
def test_ncnn_pipeline_is_the_ncnn_model(model: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Whole image, and tiles with pre-padding, against the oracle's own contract run."""
    pytest.importorskip("ncnn")
    from pixelift.metrics import psnr
    from pixelift.models import get
    from pixelift.models.oracle import reference
    from pixelift.models.sources import NcnnPackageSource

    spec = get(model)
    img = photo_crop("coffee", 60, 84)
    src = tmp_path / "in.png"
    Image.fromarray(img).save(src)
    job = e2e.ncnn_job(model)
    whole = tmp_path / "whole.png"
    e2e.ncnn_pipeline(src, whole, job, "fp32", 2)
    param, binf = next(s for s in spec.sources if isinstance(s, NcnnPackageSource)).files()
    want = reference(spec, img.transpose(2, 0, 1).astype(np.float32) / 255.0, param, binf)
    want8 = np.clip(np.rint(want * 255), 0, 255).astype(np.uint8).transpose(1, 2, 0)
    assert np.array_equal(np.asarray(Image.open(whole)), want8)
    monkeypatch.setattr(e2e, "NCNN_WHOLE_MP", 0.0)  # tiles of 32 px with pre-padding
    monkeypatch.setattr(e2e, "NCNN_TILE", 32)
    tiled = tmp_path / "tiled.png"
    e2e.ncnn_pipeline(src, tiled, job, "bf16", 2)
    got = np.asarray(Image.open(tiled)).astype(np.float32) / 255
    assert got.shape == want8.shape and psnr(got, want8 / 255.0) > 35
    tiled32 = tmp_path / "tiled32.png"
    e2e.ncnn_pipeline(src, tiled32, job, "fp32", 2)
    # a model whose activations do not fit whole (ESRGAN at 1 MP: 46 GB) runs in tiles that do
    monkeypatch.undo()
    assert job.fit_fp32 > 0 and job.fit_bf16 >= job.fit_fp32  # bf16 storage holds less per pixel
    pad = -(-e2e.NCNN_PREPAD // job.alignment) * job.alignment
    fitted = tmp_path / "fitted.png"
    e2e.ncnn_pipeline(src, fitted, replace(job, fit_fp32=32 + 2 * pad), "fp32", 2)
    np.testing.assert_array_equal(np.asarray(Image.open(fitted)), np.asarray(Image.open(tiled32)))


@pytest.mark.slow
def test_one_case_end_to_end(tmp_path: Path) -> None:
    pytest.importorskip("ncnn")
    res = e2e.run_case(e2e.Case("span-x2-ch48", 0.05), tmp_path, repeats=2, threads=2)
    assert not res.errors, res.errors
    assert set(res.seconds) == {"pixelift", "ncnn-fp32", "ncnn-bf16"}
    assert all(len(t) == 2 and min(t) > 0 for t in res.seconds.values())
    assert res.best_ncnn in ("ncnn-fp32", "ncnn-bf16")
    assert (res.ratio is None) == (res.why_no_ratio is not None)  # a ratio, or why not
    # the two sides did the same job: the same x2 photo, close to each other
    assert Image.open(tmp_path / "pixelift.jpg").size == (2 * res.width, 2 * res.height)
    assert res.psnr_vs_ncnn_db is not None and res.psnr_vs_ncnn_db > 35
    assert res.route is not None and res.route.split("@")[0].split(":")[1] in ("fp32", "bf16", "fp16", "int8")
    md = "\n".join(report.e2e_section([res.to_json()]))
    assert "## File to file" in md and "span-x2-ch48 0.05 MP" in md


def test_report_headline_with_a_noisy_and_a_failed_side() -> None:
    res = e2e.CaseResult(e2e.Case("span-x2-ch48", 1.0), 1155, 866)
    res.seconds = {"pixelift": [1.0, 1.5], "ncnn-fp32": [2.0, 2.0]}
    res.errors = {"ncnn-bf16": "exit 1: boom"}
    res.why_no_ratio = trusted_ratio(res.seconds["ncnn-fp32"], res.seconds["pixelift"])[1]
    lines = report.e2e_section([res.to_json()])
    row = lines[-1]
    assert "failed: exit 1: boom" in row and "machine too noisy" in row and "×" not in row.split("|")[7]
    assert asdict(res.case)["model"] == "span-x2-ch48"


def test_output_psnr_reads_outputs_beyond_the_decompression_bomb_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 12 MP photo upscaled x4 is 192 MP, past Pillow's bomb limit: the bench compares its own
    outputs anyway (the full cases crashed there), and the limit is back afterwards."""
    from PIL import Image

    from pixelift.bench.e2e import _psnr_files
    from pixelift.metrics import psnr
    from pixelift.samples import sample_photo

    img = sample_photo()[:200, :240]
    noisy = np.clip(img.astype(np.int16) + np.random.default_rng(0).integers(-3, 4, img.shape), 0, 255).astype(np.uint8)
    Image.fromarray(img).save(tmp_path / "a.png")
    Image.fromarray(noisy).save(tmp_path / "b.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # both files are "bombs" now
    got = _psnr_files(tmp_path / "a.png", tmp_path / "b.png")
    assert got == pytest.approx(psnr(img / 255.0, noisy / 255.0), abs=0.01)
    assert Image.MAX_IMAGE_PIXELS == 1000
    assert _psnr_files(tmp_path / "a.png", tmp_path / "a.png") == 200.0
