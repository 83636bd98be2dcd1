"""Tiled inference: pure geometry, blend windows, error handling, and real models.

Fast tests use a local-context stand-in model (5x5 box blur, then nearest x2), whose
context is 2 input pixels, on real photo crops. The real-model tests export one model
per family to ONNX and compare tiled against whole-image output from the same
``run_tiled`` call with ``tile=None`` (same border padding, so only tiling differs):
PSNR >= 45 dB and a seam metric, normalised by the whole image's own, within 5% of 1.

Measured on a 192x256 astronaut crop, tile 96 (2x3 tiles), onnxruntime CPU, PSNR of
tiled vs whole in dB / seam metric relative to whole:

=========================  =========  =========  =========  =========
model, overlap 8/16/32     linear     cosine     gaussian   crop
=========================  =========  =========  =========  =========
span-x2-ch48, 8            74.5       79.3       81.6       82.7
span-x2-ch48, 16           80.2       88.5       95.2       128.0
span-x2-ch48, 32           85.4       99.7       106.3      inf
animevideov3-x4, 8         63.3       66.5       68.5       69.2
animevideov3-x4, 16        71.5       78.8       85.5       110.3
animevideov3-x4, 32        77.9       91.6       98.7       inf
cunet-x1-noise1, 16        81.2       81.2       81.1       80.8
cunet-x1-noise1, 32        83.5       83.3       83.1       82.6
realcugan-se-x2, 8         39.4/1.01  39.3/1.01  39.3/1.01  39.1/1.13
realcugan-se-x2, 16        41.0/1.02  40.8/1.02  40.7/1.02  40.4/1.12
realcugan-se-x2, 32        42.6/1.03  42.4/1.03  42.3/1.03  41.8/1.09
=========================  =========  =========  =========  =========

ESRGAN (realesrgan-x4plus; 96x96 chelsea crop, tile 48): cosine 34.6 / 37.3 / 42.0 /
47.8 dB at overlap 8 / 16 / 24 / 32. Seam metrics of every tile-safe model are within
0.1% of the whole image's. Hence DEFAULT_OVERLAP = 32 (the smallest tried that holds
ESRGAN's deep receptive field) and DEFAULT_BLEND = cosine (crop wins on tile-safe models
but leaves a visible seam, +9..13%, on SE models; cosine is within 0.2 dB of the best
ramp on every model). Real-CUGAN SE computes a global mean per call, so tiles disagree
globally: it needs overlap 64 (reads of 224 px, larger than the image) for 45.5 dB on its
own means, hence runtime.se_sync, which feeds every tile the whole image's SE means.
On the test's own crop (tests.images.photo_crop) at the defaults: SPAN 100.6, Compact 89.6,
UpConv7 106.7, CUNet 80.6 (synced: 118), Real-CUGAN SE 43.5 (synced: 88.0), ESRGAN 50.0 dB.
"""

from __future__ import annotations

import logging
import subprocess
import sys

import numpy as np
import pytest

from pixelift import models
from pixelift.errors import InferenceOutOfMemoryError, TileShapeError
from pixelift.runtime import se_sync
from pixelift.runtime.tiling import (
    DEFAULT_BLEND,
    DEFAULT_OVERLAP,
    Blend,
    TilePlan,
    available_memory_bytes,
    choose_tile,
    iter_tiled_rows,
    min_tile_for,
    plan_tiles,
    run_tiled,
    run_tiled_with_retry,
    seam_metric,
    tile_weights,
)
from tests.images import photo_crop, psnr, to_chw

# --------------------------------------------------------------------------- helpers


def photo(name: str = "astronaut", h: int = 64, w: int | None = None) -> np.ndarray:
    return to_chw(photo_crop(name, h, w))


def box_blur_x2(x: np.ndarray) -> np.ndarray:
    """Stand-in model: 5x5 box blur (edge-replicated, context 2 px) then nearest x2. NCHW."""
    n, c, h, w = x.shape
    p = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (2, 2), (2, 2)), mode="edge")
    acc = np.zeros((n, c, h, w))
    for dy in range(5):
        for dx in range(5):
            acc += p[:, :, dy : dy + h, dx : dx + w]
    return (acc / 25).repeat(2, axis=2).repeat(2, axis=3).astype(np.float32)


def nearest(scale: int):  # type: ignore[no-untyped-def]
    return lambda x: x.repeat(scale, axis=2).repeat(scale, axis=3)


def coverage(plan) -> np.ndarray:  # type: ignore[no-untyped-def]
    cov = np.zeros((plan.height, plan.width), dtype=int)
    for t in plan.tiles:
        y0, y1, x0, x1 = t.core
        cov[y0:y1, x0:x1] += 1
    return cov


def random_plans(seed: int, n: int = 40):  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(seed)
    for _ in range(n):
        a = int(rng.choice([1, 2, 4, 8]))
        h, w = (int(v) for v in rng.integers(1, 300, size=2))
        tile = int(rng.integers(4, 128))
        ov = int(rng.integers(0, 40))
        yield plan_tiles(h, w, tile=tile, overlap=ov, alignment=a)


# --------------------------------------------------------------------------- geometry


def test_count_first_then_equal_sizes() -> None:
    plan = plan_tiles(1200, 1200, tile=1024, overlap=16)
    assert (plan.rows, plan.cols) == (2, 2)
    assert plan.y_bounds == (0, 600, 1200)
    assert {t.core[1] - t.core[0] for t in plan.tiles} == {600}
    # 1025 px: two tiles of ~512, never 1024 + a 1 px sliver
    plan = plan_tiles(1025, 100, tile=1024, overlap=8)
    assert plan.y_bounds == (0, 512, 1025) and plan.cols == 1
    assert plan_tiles(1024, 1024, tile=1024, overlap=8).rows == 1
    whole = plan_tiles(300, 200, tile=None, overlap=8)
    assert len(whole.tiles) == 1 and whole.tiles[0].core == (0, 300, 0, 200)


@pytest.mark.parametrize("seed", [0, 1])
def test_cores_partition_reads_aligned(seed: int) -> None:
    for plan in random_plans(seed):
        a, ov = plan.alignment, plan.overlap
        assert (coverage(plan) == 1).all()
        assert ov % a == 0
        assert all(b % a == 0 for b in plan.y_bounds + plan.x_bounds)
        assert plan.pad[0] == plan.pad[2] == 0 and plan.pad[1] < a and plan.pad[3] < a  # alignment only
        for t in plan.tiles:
            h, w = t.read_shape
            assert h % a == 0 and w % a == 0
            y0, y1, x0, x1 = t.read
            # core +- overlap, stopping at the image edge (the aligned extent at bottom/right),
            # widened by at most one unit on one side
            want = (
                plan.y_bounds[t.row] - ov if t.row else 0,
                plan.y_bounds[t.row + 1] + ov if t.row < plan.rows - 1 else plan.aligned_height,
                plan.x_bounds[t.col] - ov if t.col else 0,
                plan.x_bounds[t.col + 1] + ov if t.col < plan.cols - 1 else plan.aligned_width,
            )
            assert y0 <= want[0] and y1 >= want[1] and x0 <= want[2] and x1 >= want[3]
            assert (want[0] - y0) + (y1 - want[1]) <= a and (want[2] - x0) + (x1 - want[3]) <= a
            assert 0 <= y0 < y1 <= plan.aligned_height and 0 <= x0 < x1 <= plan.aligned_width
        # one read shape for every tile (a backend compiling per shape compiles once), and no two
        # overlap zones meet
        assert len({t.read_shape for t in plan.tiles}) == 1
        for n, bounds in ((plan.rows, plan.y_bounds), (plan.cols, plan.x_bounds)):
            cores = np.diff(bounds)
            assert (cores >= a).all()
            if n > 1:  # every window fits in its read
                assert cores[0] >= ov and cores[-1] >= ov


def test_overhead_is_the_overlap_between_tiles_only() -> None:
    """Pixels computed per image pixel: 1.0 for one tile; 1 + 2 * ov * (n - 1) / size per axis, plus
    less than a pixel per tile where reads are widened to one shape."""

    def between(plan: TilePlan, ov: int) -> None:
        rows = (1 + 2 * ov * (plan.rows - 1) / 3000, 1 + (2 * ov * (plan.rows - 1) + plan.rows) / 3000)
        cols = (1 + 2 * ov * (plan.cols - 1) / 4000, 1 + (2 * ov * (plan.cols - 1) + plan.cols) / 4000)
        assert rows[0] * cols[0] <= plan.overhead < rows[1] * cols[1]

    assert plan_tiles(256, 256, tile=512, overlap=32).overhead == 1.0
    assert plan_tiles(256, 256, tile=None, overlap=32).overhead == 1.0
    plan = plan_tiles(3000, 4000, tile=512, overlap=8)
    assert (plan.rows, plan.cols) == (6, 8)
    between(plan, 8)
    assert plan.overhead <= 1.10  # the goal on a 12 MP photo at this overlap
    # the old layout (every read core +- overlap, border padded) computed 1.27x here at overlap 32
    between(plan_tiles(3000, 4000, tile=512, overlap=32), 32)


def test_overlap_rounds_up_to_alignment_and_is_capped() -> None:
    plan = plan_tiles(100, 100, tile=40, overlap=5, alignment=4)
    assert plan.overlap == 8
    assert plan.pad == (0, 0, 0, 0)
    assert plan_tiles(101, 99, tile=40, overlap=5, alignment=4).pad == (0, 3, 0, 1)
    # overlap 256 around tiles of 16 would compute each pixel hundreds of times: at most the tile
    assert plan_tiles(100, 100, tile=16, overlap=256).overlap == 16
    assert plan_tiles(100, 100, tile=16, overlap=256, alignment=8).overlap == 16
    # and no more than the image can hold: 3 tiles of an 9-px axis keep 1 px cores
    small = plan_tiles(9, 300, tile=3, overlap=40)
    assert small.overlap == 3 and min(np.diff(small.y_bounds)) >= 1


@pytest.mark.parametrize("bad", [dict(tile=0), dict(overlap=-1), dict(alignment=0)])
def test_plan_rejects_bad_arguments(bad: dict[str, int]) -> None:
    kw = dict(tile=32, overlap=4, alignment=1) | bad
    with pytest.raises(ValueError):
        plan_tiles(64, 64, **kw)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- windows


@pytest.mark.parametrize("blend", list(Blend))
@pytest.mark.parametrize(("tile", "overlap", "alignment", "batch"), [(32, 4, 1, 1), (32, 4, 8, 3), (24, 6, 4, 2)])
def test_weighting_the_ramps_equals_the_full_windows(blend: Blend, tile: int, overlap: int, alignment: int, batch: int) -> None:
    """The tiler multiplies only where a window is not 1, divides only where the windows' sum is
    not 1, and assigns a tile where no other tile of its band wrote yet (in whatever order
    a band's tiles run): the result is the textbook blend (every tile times its full
    window, summed, divided by the summed windows, in float64) to float32 rounding, tiles
    shifted in at the edges (overlaps wider than the ramps), alignment padding and batches included."""
    img = photo("astronaut", 70, 90)
    plan = plan_tiles(70, 90, tile=tile, overlap=overlap, alignment=alignment)
    assert (plan.pad == (0, 0, 0, 0)) == (alignment == 1)
    padded = np.pad(img, ((0, 0), (0, plan.aligned_height - 70), (0, plan.aligned_width - 90)), mode="reflect")
    acc = np.zeros((3, 2 * plan.aligned_height, 2 * plan.aligned_width))
    weights = np.zeros(acc.shape[1:])
    for t in plan.tiles:
        y0, y1, x0, x1 = t.read
        wy, wx = tile_weights(plan, t, 2, blend)
        w = wy[:, None] * wx[None, :]
        acc[:, 2 * y0 : 2 * y1, 2 * x0 : 2 * x1] += box_blur_x2(padded[None, :, y0:y1, x0:x1])[0] * w
        weights[2 * y0 : 2 * y1, 2 * x0 : 2 * x1] += w
    assert weights.min() > 0
    want = (acc / weights)[:, :140, :180]
    kw = dict(scale=2, tile=tile, overlap=overlap, alignment=alignment, blend=blend, batch=batch)
    got = run_tiled(img, box_blur_x2, **kw)  # type: ignore[arg-type]
    assert got.flags.c_contiguous and got.shape == (3, 140, 180)
    np.testing.assert_allclose(got, want, rtol=0, atol=2e-6)
    banded = np.concatenate([s.copy() for _, s in iter_tiled_rows(lambda a, b: img[:, a:b], box_blur_x2, height=70, width=90, **kw)], axis=1)  # type: ignore[arg-type]
    np.testing.assert_array_equal(banded, got)  # one band at a time, or all in one array: the same sums


@pytest.mark.parametrize("blend", list(Blend))
@pytest.mark.parametrize("scale", [1, 2, 4])
def test_weights_sum_to_one(blend: Blend, scale: int) -> None:
    checked = 0
    for plan in random_plans(seed=scale, n=25):
        s = scale
        acc = np.zeros((plan.aligned_height * s, plan.aligned_width * s))
        overlaps = np.zeros_like(acc, dtype=int)
        for t in plan.tiles:
            wy, wx = tile_weights(plan, t, s, blend)
            y0, y1, x0, x1 = t.read
            w2 = np.outer(wy, wx)
            vy0, vy1 = max(y0, 0), min(y1, plan.aligned_height)
            vx0, vx1 = max(x0, 0), min(x1, plan.aligned_width)
            part = w2[(vy0 - y0) * s : (vy1 - y0) * s, (vx0 - x0) * s : (vx1 - x0) * s]
            if blend != Blend.CROP:
                # strictly positive over core +- overlap; 0 on context widened to the plan's read shape
                ov, (ny0, nx0) = plan.overlap, (plan.y_bounds[t.row], plan.x_bounds[t.col])
                ny0, nx0 = (ny0 - ov if t.row else 0), (nx0 - ov if t.col else 0)
                ny1 = plan.y_bounds[t.row + 1] + ov if t.row < plan.rows - 1 else plan.aligned_height
                nx1 = plan.x_bounds[t.col + 1] + ov if t.col < plan.cols - 1 else plan.aligned_width
                inner = np.zeros(part.shape, dtype=bool)
                inner[(ny0 - y0) * s : (ny1 - y0) * s, (nx0 - x0) * s : (nx1 - x0) * s] = True
                assert (part[inner] > 0).all() and (part[~inner] == 0).all()
            acc[vy0 * s : vy1 * s, vx0 * s : vx1 * s] += part
            overlaps[vy0 * s : vy1 * s, vx0 * s : vx1 * s] += 1
        assert (acc > 0).all()
        cores = np.diff(plan.y_bounds).tolist() + np.diff(plan.x_bounds).tolist()
        if blend == Blend.CROP or min(cores) >= 2 * plan.overlap:
            # at most two neighbours per axis meet: mirrored ramps sum to one before normalising
            np.testing.assert_allclose(acc, 1.0, atol=1e-12)
            checked += 1
    assert checked >= 5


@pytest.mark.parametrize("blend", list(Blend))
def test_normalised_blend_reproduces_a_pointwise_model_exactly(blend: Blend) -> None:
    """A model without context (nearest upscale) must come back exactly, whatever the plan."""
    img = photo("chelsea", 45, 67)
    want = img.repeat(3, axis=1).repeat(3, axis=2)
    for tile, ov, a in [(8, 8, 1), (16, 3, 2), (20, 12, 4), (64, 4, 1)]:
        out = run_tiled(img, nearest(3), scale=3, tile=tile, overlap=ov, alignment=a, blend=blend)
        assert out.dtype == np.float32 and out.shape == want.shape
        np.testing.assert_allclose(out, want, atol=2e-6)


# --------------------------------------------------------------------------- running


def test_crop_equals_exact_core_stitching() -> None:
    img = photo("astronaut", 70, 90)
    tile, ov = 32, 4
    plan = plan_tiles(70, 90, tile=tile, overlap=ov)
    assert plan.pad == (0, 0, 0, 0)
    want = np.zeros((3, 140, 180), dtype=np.float32)
    for t in plan.tiles:
        y0, y1, x0, x1 = t.read
        y = box_blur_x2(img[None, :, y0:y1, x0:x1])[0]
        cy0, cy1, cx0, cx1 = t.core
        want[:, 2 * cy0 : 2 * cy1, 2 * cx0 : 2 * cx1] = y[
            :, 2 * (cy0 - y0) : 2 * (cy1 - y0), 2 * (cx0 - x0) : 2 * (cx1 - x0)
        ]
    got = run_tiled(img, box_blur_x2, scale=2, tile=tile, overlap=ov, blend="crop")
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("blend", list(Blend))
def test_local_model_tiled_matches_whole(blend: Blend) -> None:
    img = photo("chelsea", 96, 120)
    ov = 8  # >= the stand-in's 2 px context
    whole = run_tiled(img, box_blur_x2, scale=2, tile=None, overlap=ov)
    out = run_tiled(img, box_blur_x2, scale=2, tile=40, overlap=ov, blend=blend)
    plan = plan_tiles(96, 120, tile=40, overlap=ov)
    # exact away from the overlap zones; blended pixels close to exact
    inside = np.ones((96 * 2, 120 * 2), dtype=bool)
    for b in plan.y_bounds[1:-1]:
        inside[2 * (b - ov) : 2 * (b + ov), :] = False
    for b in plan.x_bounds[1:-1]:
        inside[:, 2 * (b - ov) : 2 * (b + ov)] = False
    np.testing.assert_allclose(out[:, inside], whole[:, inside], atol=1e-6)
    if blend == Blend.CROP:
        np.testing.assert_allclose(out, whole, atol=1e-6)
    assert psnr(out, whole) >= 45
    assert seam_metric(out, plan, 2, reference=whole) == pytest.approx(1.0, abs=0.05)


def test_whole_image_is_not_padded_past_its_edge_and_crops_back() -> None:
    img = photo("astronaut", 37, 53)
    seen: list[tuple[int, ...]] = []

    def model(x: np.ndarray) -> np.ndarray:
        seen.append(x.shape)
        return box_blur_x2(x)

    out = run_tiled(img, model, scale=2, tile=None, overlap=5, alignment=4)
    assert seen == [(1, 3, 40, 56)]  # aligned 40x56: the alignment pad only, no context border
    assert out.shape == (3, 74, 106) and out.dtype == np.float32
    # away from the alignment pad (bottom/right), the model ran on the image as it is
    np.testing.assert_allclose(out[:, :66, :98], box_blur_x2(img[None])[0][:, :66, :98], atol=1e-6)
    rep = run_tiled(img, model, scale=2, tile=None, overlap=5, alignment=4, pad_mode="replicate")
    assert rep.shape == out.shape and not np.array_equal(rep, out)
    with pytest.raises(ValueError, match="pad_mode"):
        run_tiled(img, model, scale=2, tile=None, overlap=5, pad_mode="wrap")


def test_one_tile_is_the_model_output_bit_for_bit_and_owned() -> None:
    """An image that fits one tile is not blended: the result is the model's output on the padded image,
    cropped, exactly (as the all-ones window gave), and a new array the caller owns."""
    img = photo("astronaut", 37, 53)
    outputs: list[np.ndarray] = []

    def model(x: np.ndarray) -> np.ndarray:
        outputs.append(np.sin(7.0 * box_blur_x2(x)).astype(np.float32))
        return outputs[-1]

    out = run_tiled(img, model, scale=2, tile=None, overlap=5, alignment=4)
    padded = np.pad(img, ((0, 0), (0, 3), (0, 3)), mode="reflect")
    assert np.array_equal(out, np.sin(7.0 * box_blur_x2(padded[None]))[0].astype(np.float32)[:, :74, :106])
    assert out.flags.c_contiguous and not np.shares_memory(out, img)
    aligned = run_tiled(img[:, :36, :52], model, scale=2, tile=None, overlap=5, alignment=4)
    assert np.shares_memory(aligned, outputs[-1])  # nothing to crop: no copy at all
    rows = list(iter_tiled_rows(lambda a, b: img[:, a:b], model, height=37, width=53, scale=2, tile=None))
    assert [y0 for y0, _ in rows] == [0] and np.array_equal(rows[0][1], outputs[-1][0, :, :74, :106])


@pytest.mark.parametrize("blend", list(Blend))
def test_rows_stream_in_order_from_a_band_and_equal_run_tiled(blend: Blend) -> None:
    img = photo("chelsea", 150, 70)
    asked: list[tuple[int, int]] = []

    def read(y0: int, y1: int) -> np.ndarray:
        asked.append((y0, y1))
        return img[:, y0:y1]

    kw = dict(scale=2, tile=32, overlap=6, alignment=4, blend=blend)
    strips = list(iter_tiled_rows(read, box_blur_x2, height=150, width=70, **kw))  # type: ignore[arg-type]
    starts = [y0 for y0, _ in strips]
    assert starts[0] == 0 and starts == sorted(starts)
    assert all(a + s.shape[1] == b for (a, s), b in zip(strips, [*starts[1:], 300], strict=True))
    plan = plan_tiles(150, 70, tile=32, overlap=6, alignment=4)
    assert len(asked) == plan.rows  # one band per row of tiles, never the whole image
    assert max(b - a for a, b in asked) <= max(t.read_shape[0] for t in plan.tiles)
    whole = np.concatenate([s for _, s in strips], axis=1)
    np.testing.assert_array_equal(whole, run_tiled(img, box_blur_x2, **kw))  # type: ignore[arg-type]


@pytest.mark.parametrize("channels", [1, 2, 4])
def test_channel_counts(channels: int) -> None:
    img = np.repeat(photo("chelsea", 40, 48)[:1], channels, axis=0)
    out = run_tiled(img, box_blur_x2, scale=2, tile=16, overlap=4)
    assert out.shape == (channels, 80, 96)


def test_batch_matches_single_and_stacks_equal_shapes() -> None:
    img = photo("astronaut", 75, 101)
    calls: list[tuple[int, ...]] = []

    def model(x: np.ndarray) -> np.ndarray:
        calls.append(x.shape)
        return box_blur_x2(x)

    one = run_tiled(img, model, scale=2, tile=24, overlap=6, alignment=2)
    n_tiles = len(calls)
    calls.clear()
    three = run_tiled(img, model, scale=2, tile=24, overlap=6, alignment=2, batch=3)
    np.testing.assert_array_equal(one, three)
    assert all(1 <= c[0] <= 3 for c in calls) and sum(c[0] for c in calls) == n_tiles
    assert len(calls) < n_tiles


def test_progress_counts_every_tile() -> None:
    seen: list[tuple[int, int]] = []
    run_tiled(photo(h=50), box_blur_x2, scale=2, tile=20, overlap=4, batch=2, progress=lambda d, t: seen.append((d, t)))
    assert seen == [(i, 9) for i in range(1, 10)]


def test_non_oom_error_propagates_unchanged() -> None:
    boom = RuntimeError("provider exploded")

    def model(x: np.ndarray) -> np.ndarray:
        raise boom

    for fn in (run_tiled, run_tiled_with_retry):
        with pytest.raises(RuntimeError) as info:
            fn(photo(h=40), model, scale=2, tile=16, overlap=4)
        assert info.value is boom


@pytest.mark.parametrize(
    "bad",
    [
        lambda x: box_blur_x2(x)[:, :, :-2],  # wrong scale
        lambda x: box_blur_x2(x)[:1].repeat(len(x) + 1, axis=0),  # wrong batch
        lambda x: x,  # scale 1 instead of 2
        lambda x: box_blur_x2(x)[0],  # 3-D
        lambda x: box_blur_x2(x).tolist(),  # not an array
    ],
)
def test_wrong_output_shape_raises(bad) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(TileShapeError, match="expected"):
        run_tiled(photo(h=40), bad, scale=2, tile=16, overlap=4, batch=2)


def test_channel_change_between_tiles_raises() -> None:
    calls = iter(range(100))

    def model(x: np.ndarray) -> np.ndarray:
        y = box_blur_x2(x)
        return y if next(calls) == 0 else y[:, :2]

    with pytest.raises(TileShapeError):
        run_tiled(photo(h=40), model, scale=2, tile=16, overlap=4)


def test_bad_images_rejected() -> None:
    with pytest.raises(ValueError, match="CHW"):
        run_tiled(np.zeros((8, 8), np.float32), box_blur_x2, scale=2, tile=None, overlap=0)
    with pytest.raises(ValueError, match="CHW"):
        run_tiled(
            np.zeros((0, 8, 8), np.float32), box_blur_x2, scale=2, tile=None, overlap=0
        )  # packed inputs may have more than 4
    with pytest.raises(ValueError, match="floating"):
        run_tiled(np.zeros((3, 8, 8), np.uint8), box_blur_x2, scale=2, tile=None, overlap=0)


# --------------------------------------------------------------------------- OOM retry


def oom_above(limit: int):  # type: ignore[no-untyped-def]
    sizes: list[int] = []

    def model(x: np.ndarray) -> np.ndarray:
        sizes.append(max(x.shape[2:]))
        if max(x.shape[2:]) > limit:
            raise InferenceOutOfMemoryError(f"needs more than {limit} px")
        return box_blur_x2(x)

    return model, sizes


def test_oom_retry_halves_until_it_fits(caplog: pytest.LogCaptureFixture) -> None:
    img = photo("astronaut", 128, 128)
    model, sizes = oom_above(32 + 2 * 8)
    with caplog.at_level(logging.WARNING, logger="pixelift.runtime.tiling"):
        out = run_tiled_with_retry(img, model, scale=2, tile=None, overlap=8, alignment=4)
    want = run_tiled(img, box_blur_x2, scale=2, tile=32, overlap=8, alignment=4)
    np.testing.assert_array_equal(out, want)
    # reads: the whole 128, then 2 tiles of (128 + 16) / 2, then 4 of (128 + 3 * 16) / 4
    assert sizes[:2] == [128, 72] and set(sizes[2:]) == {44}
    assert [r.levelno for r in caplog.records] == [logging.WARNING, logging.WARNING]
    assert "retrying the whole image with tile 32" in caplog.records[-1].getMessage()


def test_oom_retry_reraises_with_sizes_tried() -> None:
    model, _ = oom_above(0)
    with pytest.raises(InferenceOutOfMemoryError, match=r"whole image, 50, 32 px; minimum 32") as info:
        run_tiled_with_retry(photo(h=100), model, scale=2, tile=None, overlap=4)
    assert isinstance(info.value.__cause__, InferenceOutOfMemoryError)
    with pytest.raises(InferenceOutOfMemoryError, match=r"\(200, 96, 48 px; minimum 48\)"):
        run_tiled_with_retry(photo(h=100), model, scale=2, tile=200, overlap=4, alignment=8, min_tile=48)
    assert min_tile_for(1) == 32 and min_tile_for(4) == 32 and min_tile_for(16) == 64 and min_tile_for(12) == 48


def test_retry_without_oom_is_plain_run() -> None:
    img = photo(h=48)
    a = run_tiled_with_retry(img, box_blur_x2, scale=2, tile=20, overlap=4)
    np.testing.assert_array_equal(a, run_tiled(img, box_blur_x2, scale=2, tile=20, overlap=4))


# --------------------------------------------------------------------------- memory


def test_choose_tile() -> None:
    kw = dict(bytes_per_input_pixel=40_000.0, alignment=4, overlap=16)
    assert choose_tile(200, 300, available_bytes=10**13, **kw) is None  # type: ignore[arg-type]
    t = choose_tile(4000, 3000, available_bytes=8 * 2**30, **kw)  # type: ignore[arg-type]
    assert t is not None and t % 4 == 0 and 64 <= t <= 1024
    assert (t + 32) ** 2 * 40_000 <= 0.75 * 8 * 2**30 < (t + 36) ** 2 * 40_000
    assert choose_tile(4000, 3000, available_bytes=10**15, **kw) is None
    assert choose_tile(4000, 3000, available_bytes=10**11, **kw) == 1024  # type: ignore[arg-type]
    assert choose_tile(4000, 3000, available_bytes=10**6, **kw) == 64  # type: ignore[arg-type]
    assert choose_tile(4000, 3000, available_bytes=10**6, min_tile=50, **kw) == 52  # type: ignore[arg-type]


def test_available_memory() -> None:
    n = available_memory_bytes()
    if sys.platform.startswith("linux"):
        assert n is not None and n > 16 * 2**20


# --------------------------------------------------------------------------- seam metric


def test_seam_metric_sees_a_seam() -> None:
    img = photo("chelsea", 64, 96)
    plan = plan_tiles(64, 96, tile=32, overlap=4)
    whole = run_tiled(img, box_blur_x2, scale=2, tile=None, overlap=4)
    assert seam_metric(whole, plan, 2, reference=whole) == 1.0
    stepped = whole.copy()
    for t in plan.tiles:  # a per-tile brightness offset: what a broken tiler leaves behind
        y0, y1, x0, x1 = t.core
        stepped[:, 2 * y0 : 2 * y1, 2 * x0 : 2 * x1] += 0.03 * ((t.row + t.col) % 2)
    assert seam_metric(stepped, plan, 2, reference=whole) > 1.2
    assert seam_metric(whole, plan_tiles(64, 96, tile=None, overlap=4), 2) == 1.0
    with pytest.raises(ValueError):
        seam_metric(whole[:, :-1], plan, 2)


def test_runtime_tiling_does_not_import_torch() -> None:
    code = "import sys, pixelift.runtime.tiling; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], timeout=60).returncode == 0


# --------------------------------------------------------------------------- real models


def onnx_infer(model_id: str):  # type: ignore[no-untyped-def]
    import onnxruntime as ort

    from pixelift.export import to_onnx

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(to_onnx(model_id).path), opts, providers=["CPUExecutionProvider"])
    return lambda x: sess.run(None, {"input": np.ascontiguousarray(x, dtype=np.float32)})[0]


def tiled_vs_whole(model_id: str, img: np.ndarray, tile: int) -> tuple[float, float]:
    """Tiled vs whole through ``run_tiled``; SE models through ``se_sync`` (whole-image means)."""
    from pixelift.export import to_onnx, to_onnx_se

    spec = models.get(model_id)
    infer = onnx_infer(model_id)
    kw = dict(scale=spec.scale, overlap=DEFAULT_OVERLAP, alignment=spec.alignment, blend=DEFAULT_BLEND)
    whole = run_tiled(img, infer, tile=None, **kw)  # type: ignore[arg-type]
    if to_onnx(model_id).manifest["se_blocks"]:
        sessions = se_sync.open_se_sessions(to_onnx_se(model_id), "cpu", {"threads": 2})
        out = se_sync.run_tiled_synced(img, sessions, tile=tile, whole=infer, **kw)  # type: ignore[arg-type]
    else:
        out = run_tiled(img, infer, tile=tile, **kw)  # type: ignore[arg-type]
    _, h, w = img.shape
    assert out.shape == (3, h * spec.scale, w * spec.scale)
    plan = plan_tiles(h, w, tile=tile, overlap=DEFAULT_OVERLAP, alignment=spec.alignment)
    assert plan.rows * plan.cols > 1
    return psnr(out, whole), seam_metric(out, plan, spec.scale, reference=whole)


FAMILIES = [
    "span-x2-ch48",  # SPAN
    "realesrgan-animevideov3-x4",  # Compact
    "waifu2x-photo-x2",  # waifu2x UpConv7, border 7 inside the model
    "waifu2x-cunet-x1-noise1",  # CUNet, alignment 4, SE blocks synced: 80 dB unsynced, 118 synced
    # Real-CUGAN SE, alignment 2: 43.5 dB / seam 0.978 with each tile on its own SE means (the
    # old xfail); 88.0 dB / seam 1.000 with the whole-image means of runtime.se_sync
    "realcugan-se-x2",
]


@pytest.mark.parametrize("model_id", FAMILIES)
def test_real_model_tiled_matches_whole(model_id: str) -> None:
    img = photo("astronaut", 192, 256)
    db, seam = tiled_vs_whole(model_id, img, tile=96)
    assert seam == pytest.approx(1.0, abs=0.05), f"{model_id}: seam metric {seam:.4f}"
    assert db >= 45.0, f"{model_id}: tiled vs whole {db:.2f} dB"


@pytest.mark.slow
def test_esrgan_tiled_matches_whole() -> None:
    img = photo("chelsea", 96, 96)
    db, seam = tiled_vs_whole("realesrgan-x4plus", img, tile=48)
    assert db >= 45.0, f"tiled vs whole {db:.2f} dB"
    assert seam == pytest.approx(1.0, abs=0.05)


# --------------------------------------------------------------------------- SE models


def _se_feeds(x: np.ndarray, means: list[np.ndarray] | None, mix: float, channels: tuple[int, ...]):  # type: ignore[no-untyped-def]
    means = means if means is not None else [np.zeros(c) for c in channels]
    boxes = np.tile(np.array([[-se_sync.OPEN, se_sync.OPEN, -se_sync.OPEN, se_sync.OPEN]]), (len(x), 1))
    return se_sync._feeds(x, boxes, mix, means, se_sync.SEInfo(channels))


def test_se_graph_on_its_own_means_is_the_plain_model() -> None:
    """se_mix = 0: the SE-sync graph is the plain model (measured 130 dB on onnxruntime)."""
    from pixelift.export import to_onnx_se

    x = photo("astronaut", 64, 96)[None]
    plain = onnx_infer("realcugan-se-x2")(x)
    sessions = se_sync.open_se_sessions(to_onnx_se("realcugan-se-x2"), "cpu", {"threads": 2})
    outs = sessions.render.run_feeds(_se_feeds(x, None, 0.0, sessions.info.channels))
    assert psnr(outs[0], plain) >= 100.0
    # and fed its own whole-image means (sum / count over an open box), it is the plain model too
    n = len(sessions.info.channels)
    means = [outs[1 + k].reshape(-1) / outs[1 + n + k].reshape(-1) for k in range(n)]
    fed = sessions.render.run_feeds(_se_feeds(x, means, 1.0, sessions.info.channels))[0]
    assert psnr(fed, plain) >= 100.0


def test_whole_image_means_make_tiles_reproduce_the_whole_image() -> None:
    """The tile-by-tile statistics are the whole image's means, and tiles fed them match it."""
    from pixelift.export import to_onnx_se

    spec = models.get("realcugan-se-x2")
    img = photo("astronaut", 128, 192)
    sessions = se_sync.open_se_sessions(to_onnx_se(spec.id), "cpu", {"threads": 2})
    channels = sessions.info.channels
    kw = dict(overlap=DEFAULT_OVERLAP, alignment=spec.alignment)
    # the whole image as a whole run sees it: no border (128x192 is on the alignment grid)
    outs = sessions.render.run_feeds(_se_feeds(img[None], None, 0.0, channels))
    n = len(channels)
    exact = [outs[1 + k].reshape(-1) / outs[1 + n + k].reshape(-1) for k in range(n)]
    est = se_sync.estimate_means(img, list(sessions.stats), sessions.info, tile=48, **kw)  # type: ignore[arg-type]
    for k in range(n):
        assert np.abs(est[k] - exact[k]).max() <= 1e-4 * np.abs(exact[k]).max(), k
    whole = run_tiled(img, onnx_infer(spec.id), scale=2, tile=None, **kw)  # type: ignore[arg-type]

    def fed(x: np.ndarray) -> np.ndarray:
        return sessions.render.run_feeds(_se_feeds(x, exact, 1.0, channels))[0]

    tiled = run_tiled(img, fed, scale=2, tile=48, **kw)  # type: ignore[arg-type]
    assert psnr(tiled, whole) >= 80.0  # measured 88 dB; 41 dB with each tile on its own means


# Measured, 192x256 astronaut crop (float), tile 64 (3x4 tiles), overlap 32, cosine, onnxruntime
# CPU: tiled vs whole dB / seam metric, each tile on its own SE means -> whole-image means:
# realcugan-se-x2 41.5 / 0.979 -> 86.1 / 1.000; -x3 44.0 / 1.000 -> 90.1 / 1.000;
# -x4 45.1 / 1.006 -> 86.8 / 1.000; cunet-x1-noise1 80.2 -> 118.0; cunet-x2 64.6 -> 102.0.
# Time of the synced run vs the unsynced one: 2.7-3.0x (Real-CUGAN), 2.9-3.7x (CUNet).
SE_MODELS = ["realcugan-se-x2", "realcugan-se-x3", "realcugan-se-x4", "waifu2x-cunet-x1-noise1", "waifu2x-cunet-x2"]


@pytest.mark.parametrize("model_id", SE_MODELS)
def test_se_models_tiled_match_whole_through_the_enhancer(model_id: str) -> None:
    from pixelift.runtime.enhancer import Enhancer, TileOptions

    spec = models.get(model_id)
    assert not spec.tile_safe  # the raw graph is not: the runtime syncs its SE means
    img = photo_crop("astronaut", 192, 256).astype(np.float32) / 255.0
    whole = Enhancer(model_id, provider="cpu", tiles=TileOptions(tile=None)).enhance(img)
    enh = Enhancer(model_id, provider="cpu", tiles=TileOptions(tile=64))
    _, _, res = enh.enhance_float(img)
    assert not res.notes, res.notes  # no "tiled output differs" note: it was synced
    tiled = enh.enhance(img)
    db = psnr(tiled, whole)
    plan = plan_tiles(192, 256, tile=64, overlap=DEFAULT_OVERLAP, alignment=spec.alignment)
    seam = seam_metric(tiled.transpose(2, 0, 1), plan, spec.scale, reference=whole.transpose(2, 0, 1))
    assert db >= 60.0, f"{model_id}: tiled vs whole {db:.2f} dB"
    assert seam == pytest.approx(1.0, abs=0.05), f"{model_id}: seam metric {seam:.4f}"


def test_runtime_se_sync_does_not_import_torch() -> None:
    code = "import sys, pixelift.runtime.se_sync, pixelift.runtime.enhancer; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], timeout=60).returncode == 0


# The measured overlap of each architecture (bench/overlap.py chose it on astronaut, chelsea,
# coffee and rocket) holds on photos it never saw, through the Enhancer as a user runs it.
HELD_OUT = ("immunohistochemistry", "hubble_deep_field")


@pytest.mark.slow
@pytest.mark.parametrize(
    "model_id",
    [
        "span-x2-ch48",
        "realesrgan-animevideov3-x4",
        "waifu2x-photo-x2",
        "waifu2x-cunet-x1-noise1",
        "realcugan-se-x2",
        "ffdnet-rgb",
    ],
)
def test_measured_overlap_holds_50_db_on_other_photos(model_id: str) -> None:
    import skimage.data

    from pixelift.models.architectures import architecture
    from pixelift.runtime.enhancer import Enhancer, TileOptions

    spec = models.get(model_id)
    assert architecture(spec.architecture).overlap < DEFAULT_OVERLAP  # measured, not the fallback
    opts = dict(provider="cpu", precision="fp32", denoise=15.0 if spec.architecture == "FFDNet" else None)
    whole = Enhancer(model_id, tiles=TileOptions(tile=None), **opts)  # type: ignore[arg-type]
    tiled = Enhancer(model_id, tiles=TileOptions(tile=48), **opts)  # type: ignore[arg-type]
    for name in HELD_OUT:
        img = getattr(skimage.data, name)()[..., :3]
        crop = np.ascontiguousarray(img[40:136, 60:204]).astype(np.float32) / 255.0
        db = psnr(tiled.enhance(crop), whole.enhance(crop))
        assert db >= 50.0, f"{model_id} on {name}: tiled vs whole {db:.2f} dB"
