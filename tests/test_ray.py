"""``--engine ray`` on a local Ray (``ray.init(num_cpus=2)``): bit-identical outputs, a corrupt file among 50,
resume with --skip-existing, a worker killed mid-file, and a full output disk (a real 300 KB tmpfs)."""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from pixelift import Enhancer
from pixelift.cli import main
from pixelift.paths import PART_PID_END, PART_SUFFIX
from pixelift.runtime import imageio, stream
from pixelift.runtime.enhancer import FileOutcome, TileOptions
from tests.images import PHOTOS, photo_crop

ray = pytest.importorskip("ray")

from pixelift.engines.ray_engine import EnhanceSpec, RayOptions, enhance_files  # noqa: E402

MODEL = "span-x2-ch48"


@pytest.fixture(scope="module")
def ray_local(pixelift_home: Path) -> Iterator[None]:
    """One local Ray for the module (starting one takes seconds); PIXELIFT_HOME is already set for the workers."""
    Enhancer(MODEL, provider="cpu").loaded()  # exported once, here, not by two workers at once
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
    yield
    ray.shutdown()


def _photos(folder: Path, n: int, size: tuple[int, int] = (32, 40)) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        p = folder / f"p{i:03d}.png"
        Image.fromarray(photo_crop(PHOTOS[i % len(PHOTOS)], *size, top=20 + i, left=30 + 2 * i)).save(p)
        paths.append(p)
    return paths


def _same_pixels(a: Path, b: Path) -> bool:
    x, y = imageio.read_image(a), imageio.read_image(b)
    return x.color.dtype == y.color.dtype and np.array_equal(x.color, y.color)


def test_a_corrupt_file_among_50_does_not_stop_the_job_and_outputs_match_local(
    ray_local: None, tmp_path: Path
) -> None:
    src = tmp_path / "in"
    _photos(src, 49)
    (src / "p020_broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    out = tmp_path / "out"
    args = ["enhance", str(src), "-o", f"{out}/", "-m", MODEL, "--provider", "cpu", "--engine", "ray", "--json"]
    res = CliRunner().invoke(main, args)
    lines = [json.loads(x) for x in res.stdout.strip().splitlines()]
    summary = lines[-1]
    assert res.exit_code == 1, res.output[-2000:]
    assert summary["summary"] and (summary["files"], summary["ok"], summary["error"]) == (50, 49, 1)
    assert summary["failed"] == [str(src / "p020_broken.png")]
    recs = {Path(r["input"]).name: r for r in lines[:-1]}
    assert len(recs) == 50 and "corrupt" in recs["p020_broken.png"]["error"] + "truncated"
    local = Enhancer(MODEL, provider="cpu")
    for name in ("p000.png", "p013.png", "p048.png"):
        mine, _ = local.enhance_file(src / name, tmp_path / "local" / name)
        assert _same_pixels(mine, out / name), name
    assert not (out / "p020_broken.png").exists() and not list(out.glob("*.part"))

    for name in ("p001.png", "p002.png", "p030.png"):  # resume: only the missing outputs run
        (out / name).unlink()
    again = CliRunner().invoke(main, [*args, "--skip-existing"])
    status = [json.loads(x).get("status") for x in again.stdout.strip().splitlines()[:-1]]
    assert again.exit_code == 1 and status.count("ok") == 3 and status.count("skipped") == 46
    assert json.loads(again.stdout.strip().splitlines()[-1])["failed"] == [str(src / "p020_broken.png")]


@pytest.mark.parametrize("precision", ["fp32", "auto"])
def test_a_workers_fallback_is_said_once_on_the_command_line(ray_local: None, tmp_path: Path, precision: str) -> None:
    """The workers log in their own processes (log_to_driver off): a provider they passed over reaches the
    user from the records, once per run. With precision fp32 only the workers load the models; with auto
    the driver loads them too (to pin its choice for the workers) and logs it itself: not said twice."""
    src = tmp_path / "in"
    _photos(src, 3)
    args = ["enhance", str(src), "-o", f"{tmp_path / 'out'}/", "-m", MODEL, "--engine", "ray"]
    res = CliRunner().invoke(main, [*args, "--provider", "tensorrt", "--precision", precision])
    assert res.exit_code == 0, res.output[-2000:]
    said = [ln for ln in res.stderr.splitlines() if "tensorrt" in ln and "not available" in ln]
    assert len(said) == 1 and said[0].startswith("WARNING"), res.stderr
    assert len(list((tmp_path / "out").iterdir())) == 3


def _wait_for_part(folder: Path, timeout: float) -> Path | None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        parts = list(folder.glob(f".*{PART_PID_END}*{PART_SUFFIX}")) if folder.is_dir() else []
        if parts:
            return parts[0]
        time.sleep(0.01)
    return None


@pytest.mark.slow
def test_a_worker_killed_mid_file_is_retried_and_leaves_no_partial_output(ray_local: None, tmp_path: Path) -> None:
    """The test kills the worker writing a streamed output (its pid is in the part file's name); Ray restarts
    it and retries the file; the output is complete and equal to a local run, and no part file remains."""
    src = tmp_path / "in"
    big = src / "big.png"
    src.mkdir()
    Image.fromarray(photo_crop("astronaut", 320, 320)).save(big)
    small = _photos(src, 3)
    out = tmp_path / "out"
    jobs = [(p, out / f"{p.stem}.tif") for p in [big, *small]]
    opts = {"model": MODEL, "provider": "cpu", "tiles": TileOptions(tile=32)}
    spec = EnhanceSpec(opts, stream="on")
    outcomes: list[FileOutcome] = []
    runner = threading.Thread(target=lambda: outcomes.extend(enhance_files(spec, jobs, RayOptions(retries=2))))
    runner.start()
    part = _wait_for_part(out, timeout=120)
    assert part is not None, "no worker was seen writing"
    victim = int(part.name.rsplit(PART_PID_END, 1)[0].rsplit(".", 1)[-1])
    os.kill(victim, signal.SIGKILL)
    runner.join(timeout=240)
    assert not runner.is_alive()
    by_name = {o.src.name: o for o in outcomes}
    assert len(by_name) == 4 and all(o.error is None for o in outcomes), [o.error for o in outcomes]
    local = Enhancer(**opts)
    for s, d in jobs:
        mine, _ = stream.enhance_file(local, s, tmp_path / "local" / d.name, stream="on")
        assert _same_pixels(mine, d), s.name
    assert not list(out.glob(f".*{PART_SUFFIX}"))


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs unshare (util-linux) for a private tmpfs")
def test_out_of_disk_is_reported_per_file_and_leaves_nothing(pixelift_home: Path, tmp_path: Path) -> None:
    """The outputs go to a real 300 KB tmpfs (mounted in a private mount namespace, no root needed where user
    namespaces are allowed); the CLI starts its own local Ray inside it. The big output hits ENOSPC."""
    probe = subprocess.run(["unshare", "-rm", "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"no user/mount namespaces here: {probe.stderr.decode()[:200]}")
    Enhancer(MODEL, provider="cpu").loaded()
    src = tmp_path / "in"
    _photos(src, 3, size=(16, 16))
    Image.fromarray(photo_crop("coffee", 300, 300)).save(src / "big.png")
    out = tmp_path / "full"
    out.mkdir()
    py = f"{sys.executable} -m pixelift.cli enhance {src} -o {out}/ -m {MODEL} --provider cpu --format tiff"
    script = f"mount -t tmpfs -o size=300k tmpfs {out} && {py} --engine ray --workers 2 --json; echo LS; ls -A {out}"
    proc = subprocess.run(["unshare", "-rm", "sh", "-c", script], capture_output=True, text=True, timeout=300)
    text, listing = proc.stdout.split("\nLS\n")
    lines = [json.loads(x) for x in text.strip().splitlines()]
    recs = {Path(r["input"]).name: r for r in lines if "input" in r}
    assert recs["big.png"]["status"] == "error", proc.stderr[-3000:]
    assert "No space left on device" in recs["big.png"]["error"]
    assert all(recs[f"p{i:03d}.png"]["status"] == "ok" for i in range(3))
    assert lines[-1]["failed"] == [str(src / "big.png")]
    assert sorted(listing.split()) == ["p000.tif", "p001.tif", "p002.tif"]  # no big.tif, no part file


def test_the_actors_on_one_node_split_its_tile_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each actor sizes its auto tiles from its share of the node's memory, so a node's actors together plan
    for what one process would, not once each; a budget the user set is left alone."""
    from pixelift.engines.ray_engine import share_tile_memory
    from pixelift.runtime import footprint, tiling

    gib = 1 << 30
    monkeypatch.setenv("PIXELIFT_TILE_MEMORY", "")  # unset for the code, restored after the test
    monkeypatch.setattr(tiling, "available_memory_bytes", lambda: 24 * gib)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    alone = footprint.tile_memory_budget(24 * gib)
    budget = share_tile_memory(1.0, pool=2)
    assert budget is not None and 2 * budget <= alone and budget == 24 * gib // 6
    assert os.environ["PIXELIFT_TILE_MEMORY"] == str(budget)
    assert Enhancer(MODEL).tile_memory == budget  # what the actor's Enhancer, built next, reads
    # one actor on the node (a pool of one, or two CPUs each): the budget of a lone process
    for cpus, pool in ((1.0, 1), (2.0, 4)):
        monkeypatch.setenv("PIXELIFT_TILE_MEMORY", "")
        assert share_tile_memory(cpus, pool) == alone
    # 16 cores, 64 actors in the pool: 16 on this node, never more than a lone process's cap each
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(16)), raising=False)
    monkeypatch.setattr(tiling, "available_memory_bytes", lambda: 128 * gib)
    monkeypatch.setenv("PIXELIFT_TILE_MEMORY", "")
    many = share_tile_memory(1.0, pool=64)
    assert many is not None and 16 * many <= 128 * gib // footprint.TILE_MEMORY_SHARE + 16
    monkeypatch.setenv("PIXELIFT_TILE_MEMORY", "1G")
    assert share_tile_memory(1.0, pool=2) is None and os.environ["PIXELIFT_TILE_MEMORY"] == "1G"
