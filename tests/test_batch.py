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


def test_cli_inputs_each_once_hidden_files_left_out_and_no_two_share_an_output(tmp_path: Path) -> None:
    """A file named twice is one input (its output keeps its plain name); a folder's hidden files (macOS's
    ``._a.png`` resource forks, which are no images) are left out; inputs that would still share an output
    after their suffixes are kept (a.png, a.jpg and a_png.png -> a_png.png) are refused before any work,
    where --overwrite used to write both, one over the other. And a file that fails at once is timed
    from its own turn, not from when it was read during the previous file's compute."""
    import json

    from click.testing import CliRunner

    from pixelift.cli import main

    src = tmp_path / "in"
    src.mkdir()
    Image.fromarray(photo_crop("coffee", 32, 40)).save(src / "b.png")
    (src / "._b.png").write_bytes(b"\x00\x05\x16\x07" + b"\x00" * 60)
    (src / ".cache").mkdir()
    Image.fromarray(photo_crop("coffee", 16, 16)).save(src / ".cache" / "c.png")
    base = ["--provider", "cpu", "-m", MODEL, "--json"]
    r = CliRunner().invoke(main, ["enhance", str(src / "b.png"), f"{src}/./b.png", "-o", f"{tmp_path / 'o1'}/", *base])
    assert r.exit_code == 0, r.output
    assert [json.loads(x)["output"] for x in r.stdout.splitlines()] == [str(tmp_path / "o1" / "b.png")]
    r = CliRunner().invoke(main, ["enhance", str(src), "-o", f"{tmp_path / 'o2'}/", "--recursive", *base])
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in (tmp_path / "o2").rglob("*")) == ["b.png"]

    Image.fromarray(photo_crop("astronaut", 48, 48)).save(src / "a.png")
    Image.fromarray(photo_crop("astronaut", 48, 48)).save(src / "a.jpg")
    Image.fromarray(photo_crop("chelsea", 48, 48)).save(src / "a_png.png")
    r = CliRunner().invoke(main, ["enhance", str(src), "-o", f"{tmp_path / 'o3'}/", "--overwrite", *base])
    assert r.exit_code == 2 and "would both be written to" in r.output and "a_png.png" in r.output, r.output
    assert not (tmp_path / "o3").exists()



def test_a_file_is_timed_from_its_own_turn(enh: Enhancer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The next file is read while this one computes; a file that then fails at once took no time of its
    own, not the previous file's compute (a clock that moves only while the models run)."""
    import types

    from pixelift.runtime import enhancer as E

    clock = [0.0]
    monkeypatch.setattr(E, "time", types.SimpleNamespace(perf_counter=lambda: clock[0]))
    compute = E.Enhancer._compute

    def slow(self: Enhancer, job: object) -> object:
        clock[0] += 100.0
        return compute(self, job)  # type: ignore[arg-type]

    monkeypatch.setattr(E.Enhancer, "_compute", slow)
    good, bad = tmp_path / "good.png", tmp_path / "bad.png"
    Image.fromarray(photo_crop("coffee", 32, 32)).save(good)
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    first, second = enh.enhance_files([(good, tmp_path / "o1.png"), (bad, tmp_path / "o2.png")])
    assert first.error is None and first.seconds == 100.0
    assert isinstance(second.error, ImageReadError) and second.seconds == 0.0
