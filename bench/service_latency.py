"""Per-photo latency through `pixelift serve` against the CLI, time to the first result, and the
service's memory over 100 jobs.

    python -m bench.service_latency                 # 1 MP and 12 MP, writes bench/results/service_latency.json
    python -m bench.service_latency --sizes 1 --runs 2 --jobs 20 --out /tmp/quick.json

Each figure is wall time seen by a client: the CLI is a fresh `pixelift enhance` process per photo
(imports, model load, provider choice, compute, write); the service is a job submitted over HTTP
and waited for (compute and write; the model is warm after the first job). "Warm" for the CLI
means the artifact is built and the OS file cache holds it. The model is span-x2-ch48 (the
default), provider auto, precision auto. Time to the first result: from starting the service
(`pixelift serve --detach`) to the first photo written, against one CLI run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from pixelift.service import state
from pixelift.service.client import ServiceClient

MODEL = "span-x2-ch48"
SIZES = {1: (1155, 866), 12: (4000, 3000)}  # MP -> (width, height)
RESULTS = Path(__file__).parent / "results" / "service_latency.json"


@dataclass
class SizeResult:
    megapixels: int
    cli_s: list[float] = field(default_factory=list)
    service_s: list[float] = field(default_factory=list)

    def summary(self) -> dict[str, float]:
        cli, svc = statistics.median(self.cli_s), statistics.median(self.service_s)
        return {"cli_median_s": round(cli, 3), "service_median_s": round(svc, 3), "saved_s": round(cli - svc, 3)}


def photo(path: Path, size: tuple[int, int]) -> Path:
    import skimage.data

    Image.fromarray(np.ascontiguousarray(skimage.data.astronaut()[..., :3])).resize(size, Image.Resampling.LANCZOS).save(path)
    return path


def cli_run(src: Path, dst: Path, env: dict[str, str]) -> float:
    dst.unlink(missing_ok=True)
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "pixelift.cli", "enhance", str(src), "-o", str(dst), "-m", MODEL, "-q"], env=env, check=True)
    return time.perf_counter() - t0


def service_run(client: ServiceClient, src: Path, dst: Path) -> float:
    dst.unlink(missing_ok=True)
    t0 = time.perf_counter()
    job = client.submit({"inputs": [str(src)], "outputs": [str(dst)], "model": MODEL})
    status = job
    while status["status"] not in ("done", "failed", "cancelled"):
        status = client.job(job["id"], wait=30)
    if status["status"] != "done":
        raise SystemExit(f"service job failed: {status['files'][0]['error']}")
    return time.perf_counter() - t0


def start_service(env: dict[str, str], folder: Path) -> ServiceClient:
    subprocess.run([sys.executable, "-m", "pixelift.cli", "serve", "--detach", "--idle-minutes", "30"], env=env, check=True,
                   stdout=subprocess.DEVNULL)  # fmt: skip
    client = ServiceClient.discover(folder, timeout=600)
    if client is None:
        raise SystemExit("the service did not start")
    return client


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="1,12", help="megapixels to time (1 and/or 12)")
    ap.add_argument("--runs", type=int, default=3, help="timed runs per size for 1 MP (12 MP: 1 run)")
    ap.add_argument("--jobs", type=int, default=100, help="jobs for the memory figure")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]

    load_start = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    work = Path(tempfile.mkdtemp(prefix="pixelift-svc-bench-"))
    folder = work / "service"
    env = {**os.environ, state.ENV_SERVICE_DIR: str(folder)}
    photos = {mp: photo(work / f"photo_{mp}mp.png", SIZES[mp]) for mp in sizes}
    small = photo(work / "small.png", (256, 256))
    cli_run(small, work / "prime.png", env)  # builds the artifact if missing; not timed

    # time to the first result: a cold service against one CLI run, on the first size
    first = photos[sizes[0]]
    cold_cli = cli_run(first, work / "cold_cli.png", env)
    t0 = time.perf_counter()
    client = start_service(env, folder)
    started = time.perf_counter() - t0
    first_job = service_run(client, first, work / "cold_svc.png")
    time_to_first = {"cli_s": round(cold_cli, 3), "service_start_s": round(started, 3),
                     "service_first_job_s": round(first_job, 3), "service_total_s": round(started + first_job, 3)}  # fmt: skip

    results: list[SizeResult] = []
    for mp in sizes:
        res = SizeResult(mp)
        runs = args.runs if mp == 1 else 1
        for i in range(runs):  # interleaved, so drift on a shared machine hits both alike
            res.cli_s.append(cli_run(photos[mp], work / f"cli_{mp}_{i}.png", env))
            res.service_s.append(service_run(client, photos[mp], work / f"svc_{mp}_{i}.png"))
            (work / f"cli_{mp}_{i}.png").unlink(missing_ok=True)
            (work / f"svc_{mp}_{i}.png").unlink(missing_ok=True)
        print(f"{mp} MP: {res.summary()}", flush=True)
        results.append(res)

    # memory over N jobs (small photos, one at a time so each is a full job cycle)
    rss: list[int] = []
    for j in range(args.jobs):
        service_run(client, small, work / "mem" / f"{j}.png")
        if j % 10 == 0 or j == args.jobs - 1:
            rss.append(int(client.health()["rss_bytes"]))
    client.shutdown()
    memory = {
        "jobs": args.jobs,
        "rss_mib_every_10_jobs": [round(r / 2**20, 1) for r in rss],
        "growth_after_first_10_mib": round((rss[-1] - rss[1]) / 2**20, 1) if len(rss) > 2 else None,
    }
    report = {
        "model": MODEL,
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                    "load_average_start_end": [load_start, os.getloadavg()[0] if hasattr(os, "getloadavg") else None]},
        "command": "python -m bench.service_latency " + " ".join(sys.argv[1:]),
        "time_to_first_result": time_to_first,
        "per_photo_warm": {f"{r.megapixels}mp": {**r.summary(), **asdict(r)} for r in results},
        "service_memory": memory,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
