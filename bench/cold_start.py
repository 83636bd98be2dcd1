"""Cold start with a warm cache: ``pixelift enhance small.jpg`` against its own compute time.

    python -m bench.cold_start [--model span-x2-ch48] [--sizes 0.25,1] [--repeats 5] [--against DIR] [--no-server]

For each photo size (the bundled photo resized, JPEG q95): the median wall time of the CLI
in a fresh process (``--precision auto``, the default), and, in one warm process, the median
time of ``Enhancer.enhance_data`` on the decoded image (compute: the models, tiling and
blending). The CLI's fixed costs (interpreter, imports, cache and provider decisions, session
open, decode, encode) are the difference. Runs interleave. pixelift's bytecode is compiled
first, as ``pip install`` does: an editable checkout under ``PYTHONDONTWRITEBYTECODE`` would
otherwise compile every module on every start (0.08 s of a 0.25 MP run).

Two figures say where the difference goes: ``floor_s``, a process that only imports what the
runtime cannot start without (numpy, Pillow, click, OpenVINO as the runtime imports it), and the
minor page faults of a CLI run against those of a warm compute (``*_faults``): a fresh process
touches every activation buffer of its first inference for the first time, a warm one reuses them.

The same command through a warm ``pixelift serve`` (started here in a temporary service folder;
``PIXELIFT_SERVER=auto``) runs in the same rounds (``server_cli_s``): the CLI then imports neither
numpy, Pillow nor OpenVINO, and the service's models are loaded and compiled. ``--no-server`` skips it.

``--against DIR`` also runs the CLI of another checkout (``git worktree add DIR COMMIT``) in the
same rounds, interleaved (``against_cli_s``): a before/after side by side in one run.
"""

from __future__ import annotations

import argparse
import compileall
import contextlib
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.service import in_process, through_service, warm_service
from pixelift import limits

# the warm compute measured here runs as the CLI it is compared with runs (before numpy is imported)
os.environ.setdefault(limits.ENV_NUMPY_HUGE_PAGES, "0")

FLOOR = (
    "import numpy, PIL.Image, click\n"
    "from pixelift.providers.openvino import import_openvino\n"
    "import_openvino().Core()\n"
)


def _faults(who: int) -> int:
    return resource.getrusage(who).ru_minflt


def main() -> None:
    from pixelift.bench.e2e import make_photo
    from pixelift.runtime import imageio
    from pixelift.runtime.enhancer import Enhancer

    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="span-x2-ch48")
    ap.add_argument("--sizes", default="0.25,1")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", type=Path, default=Path("bench/results/cold_start.json"))
    ap.add_argument("--against", type=Path, help="another checkout whose CLI runs in the same rounds")
    ap.add_argument("--server", action=argparse.BooleanOptionalAction, default=True, help="also through a warm service")
    a = ap.parse_args()
    import pixelift

    compileall.compile_dir(str(Path(pixelift.__file__).parent), quiet=1)
    against_env = None
    if a.against is not None:
        if not (a.against / "pixelift" / "cli.py").is_file():
            raise SystemExit(f"--against {a.against}: not a pixelift checkout")
        compileall.compile_dir(str(a.against / "pixelift"), quiet=1)
        against_env = in_process({**os.environ, "PYTHONPATH": str(a.against.resolve())})
    enh = Enhancer(a.model)
    rows = []
    with tempfile.TemporaryDirectory(prefix="pixelift-cold-") as tmp, (warm_service(Path(tmp)) if a.server else contextlib.nullcontext()) as server_env:
        for mp in (float(v) for v in a.sizes.split(",")):
            src, w, h = make_photo(mp, Path(tmp))
            data = imageio.read_image(src)
            enh.enhance_data(data)  # warm: load, measure, compile
            cmd = [sys.executable, "-m", "pixelift.cli", "enhance", str(src), "-o", str(Path(tmp) / "out.jpg")]
            cmd += ["-m", a.model, "--overwrite", "-q"]
            subprocess.run(cmd, check=True, env=in_process())  # the cache is warm for the CLI too
            if against_env is not None:
                subprocess.run(cmd, check=True, env=against_env, cwd=tmp)
            if server_env is not None:
                through_service(cmd, server_env)  # the service loads and compiles the model
            cli, compute, floor, cli_faults, compute_faults, against, served = [], [], [], [], [], [], []
            for _ in range(a.repeats):
                if server_env is not None:
                    t0 = time.perf_counter()
                    through_service(cmd, server_env)
                    served.append(time.perf_counter() - t0)
                if against_env is not None:
                    t0 = time.perf_counter()
                    subprocess.run(cmd, check=True, env=against_env, cwd=tmp)
                    against.append(time.perf_counter() - t0)
                f0, t0 = _faults(resource.RUSAGE_CHILDREN), time.perf_counter()
                subprocess.run(cmd, check=True, env=in_process())
                cli.append(time.perf_counter() - t0)
                cli_faults.append(_faults(resource.RUSAGE_CHILDREN) - f0)
                f0, t0 = _faults(resource.RUSAGE_SELF), time.perf_counter()
                enh.enhance_data(data)
                compute.append(time.perf_counter() - t0)
                compute_faults.append(_faults(resource.RUSAGE_SELF) - f0)
                t0 = time.perf_counter()
                subprocess.run([sys.executable, "-c", FLOOR], check=True)
                floor.append(time.perf_counter() - t0)
            row: dict[str, Any] = {
                "mp": mp,
                "size": [w, h],
                "cli_s": round(statistics.median(cli), 3),
                "compute_s": round(statistics.median(compute), 3),
                "floor_s": round(statistics.median(floor), 3),
                "cli_faults": int(statistics.median(cli_faults)),
                "compute_faults": int(statistics.median(compute_faults)),
                "cli_runs": [round(t, 3) for t in cli],
                "compute_runs": [round(t, 3) for t in compute],
            }
            row["cli_over_compute"] = round(row["cli_s"] / row["compute_s"], 2)
            if served:
                row["server_cli_s"] = round(statistics.median(served), 3)
                row["server_over_compute"] = round(row["server_cli_s"] / row["compute_s"], 2)
                row["server_runs"] = [round(t, 3) for t in served]
            if against:
                row["against"] = str(a.against)
                row["against_cli_s"] = round(statistics.median(against), 3)
                row["against_over_compute"] = round(row["against_cli_s"] / row["compute_s"], 2)
            rows.append(row)
            print(json.dumps(row), flush=True)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps({"model": a.model, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
