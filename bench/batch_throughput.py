"""A folder of photos: pipelined batch (decode and encode overlapped with the models) against
one file at a time, and against a process per photo (``pixelift enhance`` per photo, as a script or
plug-in calling the CLI would), in-process and through a warm ``pixelift serve`` (``PIXELIFT_SERVER=auto``).

    python -m bench.batch_throughput [--n 200] [--size 320x240] [--model span-x2-ch48] [--per-process 10]

Photos are crops of scikit-image's photos (JPEG q90). In one process, one warm Enhancer runs
``enhance_files(prefetch=1)`` and ``enhance_files(prefetch=0)`` alternately (twice each);
CPU use is process CPU seconds over wall seconds (2.0 = both cores busy). The process-per-photo
row runs ``pixelift enhance`` once per photo on the first ``--per-process`` photos.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from bench.service import in_process, through_service, warm_service

PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "immunohistochemistry", "hubble_deep_field")


def make_photos(folder: Path, n: int, h: int, w: int) -> list[Path]:
    import skimage.data

    rng = np.random.default_rng(0)
    imgs = [getattr(skimage.data, p)()[..., :3] for p in PHOTOS]
    out = []
    for i in range(n):
        img = imgs[i % len(imgs)]
        y = int(rng.integers(0, img.shape[0] - h))
        x = int(rng.integers(0, img.shape[1] - w))
        path = folder / f"{i:04d}.jpg"
        Image.fromarray(np.ascontiguousarray(img[y : y + h, x : x + w])).save(path, quality=90)
        out.append(path)
    return out


def timed(run: object) -> tuple[float, float]:
    t0, c0 = time.perf_counter(), os.times()
    run()  # type: ignore[operator]
    t1, c1 = time.perf_counter(), os.times()
    wall = t1 - t0
    return wall, (c1.user - c0.user + c1.system - c0.system) / wall


def main() -> None:
    from pixelift.runtime.enhancer import Enhancer

    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--size", default="320x240", help="WxH")
    ap.add_argument("--model", default="span-x2-ch48")
    ap.add_argument("--per-process", type=int, default=10)
    ap.add_argument("--out", type=Path, default=Path("bench/results/batch_throughput.json"))
    a = ap.parse_args()
    w, h = (int(v) for v in a.size.split("x"))
    with tempfile.TemporaryDirectory(prefix="pixelift-batch-") as tmp:
        root = Path(tmp)
        (root / "in").mkdir()
        srcs = make_photos(root / "in", a.n, h, w)
        mp = a.n * w * h / 1e6
        enh = Enhancer(a.model)
        enh.enhance_file(srcs[0], root / "warm.png")  # load, measure, compile outside the timing
        rows: dict[str, list[tuple[float, float]]] = {"pipelined": [], "one at a time": []}
        for rep in range(2):
            for name, prefetch in (("pipelined", 1), ("one at a time", 0)):
                out = root / f"out-{prefetch}-{rep}"
                out.mkdir()
                jobs = [(s, out / f"{s.stem}.png") for s in srcs]

                def run(jobs: list[tuple[Path, Path]] = jobs, prefetch: int = prefetch) -> None:
                    bad = [o for o in enh.enhance_files(jobs, prefetch=prefetch) if o.error is not None]
                    assert not bad, bad[0].error

                rows[name].append(timed(run))
        per, served = [], []
        with warm_service(root) as env:
            for i, s in enumerate(srcs[: a.per_process]):
                cmd = [sys.executable, "-m", "pixelift.cli", "enhance", str(s), "-o", str(root / f"pp-{s.stem}.png")]
                cmd += ["-m", a.model, "-q", "--overwrite"]
                t0 = time.perf_counter()
                subprocess.run(cmd, check=True, env=in_process())
                per.append(time.perf_counter() - t0)
                if i == 0:
                    through_service(cmd, env)  # the service loads and compiles the model
                t0 = time.perf_counter()
                through_service(cmd, env)
                served.append(time.perf_counter() - t0)
    res = {
        "photos": a.n,
        "size": [w, h],
        "model": a.model,
        "megapixels": mp,
        "mp_per_s": {k: round(mp / statistics.median(t for t, _ in v), 4) for k, v in rows.items()},
        "cpu_busy": {k: round(statistics.median(c for _, c in v), 2) for k, v in rows.items()},
        "wall_s": {k: [round(t, 2) for t, _ in v] for k, v in rows.items()},
        "process_per_photo_mp_per_s": round(len(per) * w * h / 1e6 / sum(per), 4),
        "process_per_photo_via_service_mp_per_s": round(len(served) * w * h / 1e6 / sum(served), 4),
    }
    res["pipelined_vs_one_at_a_time"] = round(res["mp_per_s"]["pipelined"] / res["mp_per_s"]["one at a time"], 3)
    res["pipelined_vs_process_per_photo"] = round(res["mp_per_s"]["pipelined"] / res["process_per_photo_mp_per_s"], 2)
    res["via_service_vs_process_per_photo"] = round(
        res["process_per_photo_via_service_mp_per_s"] / res["process_per_photo_mp_per_s"], 2
    )
    print(json.dumps(res, indent=1))
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
