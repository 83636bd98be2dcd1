"""File to file for a case whose ncnn run takes most of an hour (ESRGAN at 12 MP: 37 min here).

    python -m bench.e2e_long [--model realesrgan-x4plus] [--mp 12] [--ncnn-mode bf16] [--out PATH]

``pixelift.bench.e2e.run_case`` warms every side up and then repeats them, with a 30-minute
limit per run: for such a case that is hours. Here each side runs once, timed, as there: a
pixelift run first (untimed: builds, measures and compiles what the case needs), then ncnn in
one CPU mode (bf16 storage, its faster one in every case measured on AMX and AVX2 machines),
then pixelift timed. One run per side, so no spread: the ratio is read with that in mind.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from pixelift.bench import e2e
from pixelift.bench.runner import child_env

SIDES = ("pixelift-warmup", "ncnn", "pixelift")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="realesrgan-x4plus")
    ap.add_argument("--mp", type=float, default=12.0)
    ap.add_argument("--ncnn-mode", choices=e2e.NCNN_MODES, default="bf16")
    ap.add_argument("--work", type=Path, default=Path("/tmp/pixelift-e2e-long"))
    ap.add_argument("--out", type=Path, default=Path("bench/results/e2e_long.json"))
    ap.add_argument("--timeout", type=float, default=4 * 3600)
    a = ap.parse_args()
    a.work.mkdir(parents=True, exist_ok=True)
    case = e2e.Case(a.model, a.mp)
    src, w, h = e2e.make_photo(case.mp, a.work)
    commands = e2e.commands(case, src, a.work, 2)
    ncnn = f"ncnn-{a.ncnn_mode}"
    res: dict[str, object] = {"case": case.label, "size": [w, h], "seconds": {}, "errors": {}}
    seconds: dict[str, float] = {}
    errors: dict[str, str] = {}
    for side in SIDES:
        key = ncnn if side == "ncnn" else side
        sec, err = e2e._run(commands[ncnn if side == "ncnn" else "pixelift"], child_env(2), a.timeout)
        seconds[key] = round(sec, 2)
        if err:
            errors[key] = err
        print(f"{time.strftime('%H:%M:%S')} {key}: {sec:.2f} s {err or ''}", flush=True)
    res.update(seconds=seconds, errors=errors)
    if not errors:
        res["ratio"] = round(seconds[ncnn] / seconds["pixelift"], 2)
        res["route"] = e2e.auto_route(case)
        res[f"psnr_vs_{ncnn.replace('-', '_')}_db"] = e2e._psnr_files(a.work / "pixelift.jpg", a.work / f"{ncnn}.jpg")
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(res, indent=1))
    print(json.dumps(res), flush=True)


if __name__ == "__main__":
    main()
