"""Throughput of ``--engine ray`` with 1 and 2 workers, the scheduling overhead per image, and 1,000 files with a
corrupt one (issue 15). Local Ray, ``ray.init(num_cpus=2)``, on this machine.

    python -m bench.ray_throughput [--photos 40] [--tiny 300] [--thousand]

* photos: real photo crops (scikit-image's astronaut/chelsea/coffee/rocket, 96 x 128), span-x2-ch48 on the CPU
  provider, run in one local process (``Enhancer.enhance_file``, every core) and on Ray with 1 and 2 workers
  (one pinned core each);
* overhead: per image, ``wall x workers - sum of the workers' own per-file seconds``, over the files: what Ray
  Data adds (dispatch, one block per file, results back to the driver). Measured on the photos and on tiny
  8 x 8 images (where it is nearly all there is);
* ``--thousand``: 1,000 tiny files with one corrupt among them, 2 workers.

Results: ``bench/results/ray_throughput.json`` and ``.md`` (with the N-node estimate).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from pixelift import Enhancer

RESULTS = Path(__file__).parent / "results"
MODEL = "span-x2-ch48"
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket")


def _crop(name: str, h: int, w: int, k: int) -> np.ndarray:
    import skimage.data

    img = np.ascontiguousarray(getattr(skimage.data, name)()[..., :3])
    top = (7 * k) % max(1, img.shape[0] - h)
    left = (11 * k) % max(1, img.shape[1] - w)
    return img[top : top + h, left : left + w]


def make_files(folder: Path, n: int, h: int, w: int, corrupt: int | None = None) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        p = folder / f"f{i:05d}.png"
        if i == corrupt:
            p.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 64)
        else:
            Image.fromarray(_crop(PHOTOS[i % 4], h, w, i)).save(p)
        paths.append(p)
    return paths


def run_ray(files: list[Path], out: Path, workers: int) -> dict[str, object]:
    from pixelift.engines.ray_engine import EnhanceSpec, RayOptions, enhance_files

    spec = EnhanceSpec({"model": MODEL, "provider": "cpu", "precision": "fp32"})
    jobs = [(p, out / p.name) for p in files]
    t0 = time.perf_counter()
    first = None
    seconds, errors = [], 0
    for o in enhance_files(spec, jobs, RayOptions(workers=workers)):
        if first is None:
            first = time.perf_counter() - t0
        seconds.append(o.seconds)
        errors += o.error is not None
    wall = time.perf_counter() - t0
    n = len(files)
    work = float(sum(seconds))
    return {
        "workers": workers,
        "files": n,
        "errors": errors,
        "wall_s": round(wall, 2),
        "first_result_s": round(first or 0.0, 2),  # pool start (actors, sessions) plus one file
        "files_per_s": round(n / wall, 2),
        "steady_files_per_s": round((n - 1) / (wall - (first or 0.0)), 2) if n > 1 else None,
        "worker_s_per_file": round(work / n, 4),
        "overhead_s_per_file": round((wall * workers - work) / n, 4),
    }


def run_local(files: list[Path], out: Path) -> dict[str, object]:
    enh = Enhancer(MODEL, provider="cpu", precision="fp32")
    enh.loaded()
    t0 = time.perf_counter()
    for p in files:
        enh.enhance_file(p, out / p.name)
    wall = time.perf_counter() - t0
    return {"workers": "local (1 process, 2 threads)", "files": len(files), "wall_s": round(wall, 2),
            "files_per_s": round(len(files) / wall, 2), "worker_s_per_file": round(wall / len(files), 4)}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--photos", type=int, default=40)
    ap.add_argument("--tiny", type=int, default=300)
    ap.add_argument("--thousand", action="store_true")
    args = ap.parse_args()
    import ray

    Enhancer(MODEL, provider="cpu", precision="fp32").loaded()  # exported before any worker asks
    t0 = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
    init_s = round(time.perf_counter() - t0, 2)
    rows: dict[str, object] = {"ray_init_s": init_s}
    with tempfile.TemporaryDirectory(prefix="pxl-ray-") as tmp:
        work = Path(tmp)
        photos = make_files(work / "photos", args.photos, 96, 128)
        rows["photos"] = {
            "size": "96x128 -> 192x256",
            "local": run_local(photos, work / "local"),
            "ray_1": run_ray(photos, work / "r1", 1),
            "ray_2": run_ray(photos, work / "r2", 2),
        }
        same = all(
            np.array_equal(np.asarray(Image.open(work / "local" / p.name)), np.asarray(Image.open(work / "r2" / p.name)))
            for p in photos
        )
        rows["photos"]["ray_bit_identical_to_local"] = same  # type: ignore[index]
        print(json.dumps(rows), flush=True)
        tiny = make_files(work / "tiny", args.tiny, 8, 8)
        rows["tiny"] = {"size": "8x8", "ray_1": run_ray(tiny, work / "t1", 1), "ray_2": run_ray(tiny, work / "t2", 2)}
        print(json.dumps(rows["tiny"]), flush=True)
        if args.thousand:
            many = make_files(work / "many", 1000, 16, 16, corrupt=500)
            rows["thousand"] = run_ray(many, work / "m2", 2)
            print(json.dumps(rows["thousand"]), flush=True)
    ray.shutdown()
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "ray_throughput.json").write_text(json.dumps(rows, indent=2) + "\n")
    print(json.dumps(rows, indent=2))


if __name__ == "__main__":
    sys.exit(main())
