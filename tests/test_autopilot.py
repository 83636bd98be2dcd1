"""Issue 12, the autopilot: analysis (noise, JPEG quality, content) and the steps it picks."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from pixelift.cli import main
from pixelift.errors import UsageError
from pixelift.runtime import autopilot
from pixelift.runtime.enhancer import AutoEnhancer
from pixelift.samples import art_image
from tests.images import photo_crop


def _jpeg(img: np.ndarray, quality: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def _decode(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB")).astype(np.float32) / 255


@pytest.mark.parametrize("quality", [15, 25, 40, 60, 75, 90, 95])
def test_jpeg_quality_is_read_from_the_tables(quality: int) -> None:
    got = autopilot.jpeg_quality_from_tables(_jpeg(photo_crop("coffee", 64, 64), quality))
    assert got is not None and abs(got - quality) <= 1.5


@pytest.mark.parametrize("name", ["chelsea", "astronaut", "rocket"])
def test_blockiness_finds_strong_jpeg_without_the_file(name: str) -> None:
    img = photo_crop(name, 192, 192, top=32, left=32)
    clean = autopilot.analyse(img.astype(np.float32) / 255)
    assert clean.jpeg_quality is None or clean.jpeg_quality > autopilot.DEJPEG_MAX_QUALITY
    for q in (20, 40):
        a = autopilot.analyse(_decode(_jpeg(img, q)))  # the pixels only, as from a PNG re-save
        assert a.jpeg_source == "blockiness" and a.jpeg_quality is not None and a.jpeg_quality <= 60, (q, a)


def test_plans_follow_the_analysis() -> None:
    rng = np.random.default_rng(0)
    img = photo_crop("chelsea", 128, 160)
    noisy = np.clip(img / 255 + rng.normal(0, 20 / 255, img.shape), 0, 1).astype(np.float32)
    p = autopilot.plan(autopilot.analyse(noisy), 2.0)
    # strong noise that never went through JPEG: CUNet's milder noise level 2 after FFDNet (level 3 lost
    # up to 2.8 dB on Gaussian noise there)
    assert p.models == ["ffdnet-rgb", "waifu2x-cunet-x1-noise2", "span-x2-ch48"], p.reasons()
    data = _jpeg(np.rint(noisy * 255).astype(np.uint8), 90)  # the same noise quantised by a q90 JPEG: both
    p = autopilot.plan(autopilot.analyse(_decode(data), file_bytes=data), 2.0)
    assert p.models == ["ffdnet-rgb", "waifu2x-cunet-x1-noise3", "span-x2-ch48"], p.reasons()
    light = np.clip(img / 255 + rng.normal(0, 3 / 255, img.shape), 0, 1).astype(np.float32)
    assert autopilot.plan(autopilot.analyse(light), 2.0).models == ["ffdnet-rgb", "span-x2-ch48"]
    data = _jpeg(img, 25)
    p = autopilot.plan(autopilot.analyse(_decode(data), file_bytes=data), 1.0)
    assert p.models == ["waifu2x-cunet-x1-noise2"] and "quantisation tables" in p.reasons()[0]
    p = autopilot.plan(autopilot.analyse(photo_crop("rocket", 96, 96).astype(np.float32) / 255), 4.0)
    assert p.models[-1] == "span-x4-ch48"
    drawing = art_image(128).astype(np.float32) / 255
    a = autopilot.analyse(drawing)
    assert a.content == "art" and autopilot.plan(a, 2.0).models[-1] == "realesrgan-animevideov3-x4"
    assert autopilot.analyse(img.astype(np.float32) / 255).content == "photo"


def test_nothing_to_do_returns_the_image_unchanged() -> None:
    img = photo_crop("rocket", 64, 80, top=200, left=200)  # measured noise 0.0, never compressed
    enh = AutoEnhancer(outscale=1.0, provider="cpu", precision="fp32")
    assert autopilot.plan(autopilot.analyse(img.astype(np.float32) / 255), 1.0).steps == ()
    assert np.array_equal(enh.enhance(img), img)


def test_autopilot_file_to_file_with_reasons(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    img = photo_crop("coffee", 96, 128, top=60, left=60)
    noisy = np.clip(np.rint(img + rng.normal(0, 20, img.shape)), 0, 255).astype(np.uint8)
    src = tmp_path / "noisy.png"
    Image.fromarray(noisy).save(src)
    res = CliRunner().invoke(main, ["enhance", str(src), "--auto", "--json", "-o", str(tmp_path / "out.png")])
    assert res.exit_code == 0, res.output
    rec = json.loads(res.stdout.splitlines()[-1])
    assert rec["model"] == ["ffdnet-rgb", "waifu2x-cunet-x1-noise2", "span-x2-ch48"]
    assert rec["autopilot"]["analysis"]["noise_sigma"] > 10 and rec["autopilot"]["reasons"]
    assert Image.open(tmp_path / "out.png").size == (256, 192)
    res = CliRunner().invoke(main, ["-v", "enhance", str(src), "--auto", "--outscale", "1", "-o", str(tmp_path / "x1.png")])
    assert res.exit_code == 0 and "INFO: noisy.png: autopilot: ffdnet-rgb: noise sigma" in res.stderr, res.stderr
    assert "WARNING" not in res.stderr
    for bad in (["-m", "span-x2-ch48"], ["--denoise", "auto"]):
        res = CliRunner().invoke(main, ["enhance", str(src), "--auto", *bad])
        assert res.exit_code == 2, res.output


def test_autopilot_options_are_validated() -> None:
    with pytest.raises(UsageError):
        AutoEnhancer(model="span-x2-ch48")  # type: ignore[call-arg]
    with pytest.raises(UsageError):
        AutoEnhancer(outscale=-1)


@pytest.mark.parametrize("shape", [(1, 1, 3), (1, 50, 3), (50, 1, 1), (2, 2, 3)])
def test_images_one_pixel_wide_are_analysed(shape: tuple[int, int, int]) -> None:
    """A 1-px side (a line of a scan, a 1x1 swatch) has no gradient along it: analysed, not an error."""
    image = np.full(shape, 0.5, np.float32)
    a = autopilot.analyse(image)
    assert (a.height, a.width) == shape[:2] and a.sharpness == 0.0
    assert autopilot.plan(a, 2.0).models  # an upscaler, for x2
