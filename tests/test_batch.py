"""Batches: Enhancer.enhance_files overlaps decoding and encoding with the models, and gives
the same files, in the same order, as one file at a time."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pixelift import Enhancer
from pixelift.errors import ImageReadError, OutputExistsError, UsageError
from tests.images import PHOTOS, photo_crop

MODEL = "span-x2-ch48"


@pytest.fixture(scope="module")
def enh() -> Enhancer:
    return Enhancer(MODEL, provider="cpu")


def _inputs(folder: Path) -> list[Path]:
    folder.mkdir()
    paths = []
    for i, name in enumerate(PHOTOS):
        p = folder / f"{i}-{name}.png"
        Image.fromarray(photo_crop(name, 40 + 8 * i, 56)).save(p)
        paths.append(p)
    bad = folder / "2b-broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really a png")
    paths.insert(2, bad)
    j = folder / "9-chelsea.jpg"
    Image.fromarray(photo_crop("chelsea", 48, 48)).save(j, quality=70)
    paths.append(j)
    return paths


@pytest.mark.parametrize("prefetch", [1, 3])
def test_pipelined_batch_equals_one_at_a_time(enh: Enhancer, tmp_path: Path, prefetch: int) -> None:
    srcs = _inputs(tmp_path / "in")
    (tmp_path / "seq").mkdir()
    seq = list(enh.enhance_files([(s, tmp_path / "seq" / f"{s.stem}.png") for s in srcs], prefetch=0))
    (tmp_path / "pipe").mkdir()
    started: list[tuple[Path, str]] = []
    pipe = list(
        enh.enhance_files(
            [(s, tmp_path / "pipe" / f"{s.stem}.png") for s in srcs],
            prefetch=prefetch,
            on_start=lambda p: started.append((p, threading.current_thread().name)),
        )
    )
    assert [o.src for o in pipe] == srcs == [o.src for o in seq]  # one outcome per job, in order
    # models run on the caller's thread, in order; the bad file never reaches them
    assert [p for p, _ in started] == [s for s in srcs if "broken" not in s.name]
    assert {t for _, t in started} == {threading.current_thread().name}
    for a, b in zip(seq, pipe, strict=True):
        assert (a.error is None) == (b.error is None)
        if "broken" in a.src.name:
            assert isinstance(b.error, ImageReadError) and b.output is None and b.result is None
            assert not (tmp_path / "pipe" / f"{a.src.stem}.png").exists()
            continue
        assert b.output is not None and b.result is not None and b.result.models == [MODEL]
        assert np.array_equal(np.asarray(Image.open(a.output)), np.asarray(Image.open(b.output)))
    assert len(list((tmp_path / "pipe").iterdir())) == len(srcs) - 1  # no part files left


def test_existing_output_and_a_bad_prefetch(enh: Enhancer, tmp_path: Path) -> None:
    src = tmp_path / "a.png"
    Image.fromarray(photo_crop("coffee", 32, 32)).save(src)
    (out,) = enh.enhance_files([(src, src)])
    assert isinstance(out.error, OutputExistsError)  # never overwrites its input unless asked
    for bad in (-1, 9, 1.5, True):
        with pytest.raises(UsageError, match="prefetch"):
            list(enh.enhance_files([(src, None)], prefetch=bad))  # type: ignore[arg-type]


def test_autopilot_batch_keeps_reading_jpeg_quality(tmp_path: Path) -> None:
    """The autopilot reads a JPEG's quality from its tables; the decode thread must carry them."""
    from pixelift.runtime.enhancer import AutoEnhancer

    src = tmp_path / "q20.jpg"
    Image.fromarray(photo_crop("astronaut", 64, 64)).save(src, quality=20)
    auto = AutoEnhancer(outscale=1.0, provider="cpu")
    (o,) = auto.enhance_files([(src, tmp_path / "out.png")])
    assert o.error is None and o.result is not None and o.result.autopilot is not None
    assert o.result.autopilot["analysis"]["jpeg_quality"] == pytest.approx(20, abs=1)


def test_cli_output_folder_equal_to_the_input_folder(tmp_path: Path) -> None:
    """`enhance photos -o photos`: the inputs are found; same-name outputs are refused, others written."""
    import json

    from click.testing import CliRunner

    from pixelift.cli import main

    folder = tmp_path / "photos"
    folder.mkdir()
    Image.fromarray(photo_crop("coffee", 32, 40)).save(folder / "a.png")
    r = CliRunner().invoke(main, ["enhance", str(folder), "-o", str(folder), "--provider", "cpu", "--json"])
    assert r.exit_code == 1, r.output  # a.png -> a.png would overwrite its input
    (rec,) = [json.loads(line) for line in r.output.splitlines() if line.startswith("{")]
    assert rec["status"] == "error" and "exists" in rec["error"]
    assert np.array_equal(np.asarray(Image.open(folder / "a.png")), photo_crop("coffee", 32, 40))
    r = CliRunner().invoke(main, ["enhance", str(folder), "-o", str(folder), "--format", "tiff", "--provider", "cpu"])
    assert r.exit_code == 0, r.output
    assert Image.open(folder / "a.tif").size == (80, 64)
