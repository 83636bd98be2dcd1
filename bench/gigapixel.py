"""Peak memory of a streamed x4 output against its size (issue 15), measured with ``/usr/bin/time -v``.

    python -m bench.gigapixel [--model span-x4-ch48] [--sizes 1000x600,1000x1200,1000x2400,10000x450] [--full]

Each input is a real photo (scikit-image's astronaut, mirrored edge to edge) written as a tiled 8-bit RGB TIFF,
so it is read by region. Each size runs ``pixelift enhance IN -o OUT.tif --stream on`` in a fresh process
under ``/usr/bin/time -v``; peak RSS is its "Maximum resident set size". Peak memory depends on the output
*width* (one band of tile rows), not on the height: sizes of one width and several heights show it flat, and
the 10,000 px wide one has the width of a 100 MP (10,000 x 10,000) scan, whose x4 output is 1.6 gigapixels.
``--full`` also runs that 100 MP input (about 40 minutes per MP/s of the machine, here ~0.04 MP/s: hours).
One size also runs streamed and in memory (``--stream off``) with one explicit tile, for the peak the
in-memory path needs and to check both outputs are equal.
Results: ``bench/results/gigapixel.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from pixelift.runtime import imageio
from pixelift.runtime.imageio.stream_write import StreamMeta, StreamShape, write_streamed

RESULTS = Path(__file__).parent / "results"
COMPARE = (1000, 600)  # width, height: also run both ways with one explicit tile, outputs compared
COMPARE_TILE = "256"


def _photo() -> np.ndarray:
    import skimage.data

    return np.ascontiguousarray(skimage.data.astronaut()[..., :3])


def make_input(path: Path, width: int, height: int) -> None:
    """A width x height tiled TIFF of the photo mirrored edge to edge, written by rows (no big buffer)."""
    img = _photo()
    h0, w0 = img.shape[:2]
    period = np.concatenate([img, img[:, ::-1]], axis=1)
    period = np.concatenate([period, period[::-1]], axis=0)
    cols = np.arange(width) % (2 * w0)

    def strips():  # type: ignore[no-untyped-def]
        for y in range(0, height, 256):
            rows = np.arange(y, min(y + 256, height)) % (2 * h0)
            yield period[rows][:, cols], None

    write_streamed(strips(), path, StreamShape(height, width, 3, np.dtype(np.uint8), False), StreamMeta(), format="TIFF")


def run(cmd: list[str]) -> dict[str, object]:
    t0 = time.perf_counter()
    proc = subprocess.run(["/usr/bin/time", "-v", *cmd], capture_output=True, text=True)
    wall = time.perf_counter() - t0
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr)
    recs = [json.loads(x) for x in proc.stdout.splitlines() if x.startswith("{")]
    return {
        "returncode": proc.returncode,
        "peak_rss_mb": round(int(rss.group(1)) / 1024, 1) if rss else None,
        "wall_s": round(wall, 1),
        "record": recs[0] if recs else None,
        "stderr_tail": proc.stderr[-600:] if proc.returncode else "",
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="span-x4-ch48")
    ap.add_argument("--sizes", default="1000x600,1000x1200,1000x2400,10000x450")
    ap.add_argument("--full", action="store_true", help="also the 100 MP input (hours on a small machine)")
    ap.add_argument("--provider", default="auto")
    ap.add_argument("--append", action="store_true", help="add to the runs already in the results")
    args = ap.parse_args()
    sizes = [tuple(int(v) for v in s.split("x")) for s in args.sizes.split(",")]
    if args.full:
        sizes.append((10_000, 10_000))
    rows = []
    if args.append and (RESULTS / "gigapixel.json").exists():
        rows = json.loads((RESULTS / "gigapixel.json").read_text())["runs"]
    with tempfile.TemporaryDirectory(prefix="pxl-giga-") as tmp:
        work = Path(tmp)
        base = [sys.executable, "-m", "pixelift.cli", "enhance", "--json", "-q", "-m", args.model]
        base += ["--provider", args.provider, "--max-pixels", "none", "--max-output-pixels", "none"]
        for w, h in sizes:
            src = work / f"in_{w}x{h}.tif"
            make_input(src, w, h)
            out = work / f"out_{w}x{h}.tif"
            r = run([*base, str(src), "-o", str(out), "--stream", "on"])
            r.update(mode="streamed", input=f"{w}x{h}", input_mp=round(w * h / 1e6, 2), output_mp=round(16 * w * h / 1e6, 1))
            r["output_bytes"] = out.stat().st_size if out.exists() else None
            print(json.dumps({k: v for k, v in r.items() if k != "record"}), flush=True)
            if (w, h) == COMPARE:
                mem, same = work / f"mem_{w}x{h}.tif", work / f"tile_{w}x{h}.tif"
                tiled = ["--tile", COMPARE_TILE]
                t = run([*base, *tiled, str(src), "-o", str(same), "--stream", "on"])
                t.update(mode=f"streamed, --tile {COMPARE_TILE}", input=f"{w}x{h}", input_mp=round(w * h / 1e6, 2), output_mp=round(16 * w * h / 1e6, 1))
                rows.append(t)
                m = run([*base, *tiled, str(src), "-o", str(mem), "--stream", "off"])
                m.update(mode=f"in memory, --tile {COMPARE_TILE}", input=f"{w}x{h}", input_mp=round(w * h / 1e6, 2), output_mp=round(16 * w * h / 1e6, 1))
                if same.exists() and mem.exists():
                    a, b = imageio.read_image(same, max_pixels=None), imageio.read_image(mem, max_pixels=None)
                    m["identical_to_streamed"] = bool(np.array_equal(a.color, b.color))
                    diff = a.color.astype(np.float64) - b.color.astype(np.float64)
                    mse = float(np.mean(diff**2))
                    m["psnr_db_vs_streamed"] = None if mse == 0 else round(10 * np.log10(255.0**2 / mse), 2)
                print(json.dumps({k: v for k, v in m.items() if k != "record"}), flush=True)
                rows.append(m)
                mem.unlink(missing_ok=True)
                same.unlink(missing_ok=True)
            rows.append(r)
            out.unlink(missing_ok=True)
            src.unlink(missing_ok=True)
    RESULTS.mkdir(exist_ok=True)
    meta = {"model": args.model, "provider": args.provider, "python": sys.version.split()[0], "machine_cores": _cores()}
    (RESULTS / "gigapixel.json").write_text(json.dumps({"meta": meta, "runs": rows}, indent=2) + "\n")
    lines = [
        f"# Streamed x4 output: peak RSS against size ({args.model}, `/usr/bin/time -v`)",
        "",
        "| input | input MP | output MP | mode | peak RSS MB | wall s | output MB | tile | note |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        rec = r.get("record") or {}
        note = ""
        if "identical_to_streamed" in r:
            note = "identical to streamed" if r["identical_to_streamed"] else f"{r['psnr_db_vs_streamed']} dB vs streamed"
        if r["returncode"]:
            note = f"failed: {str(r['stderr_tail'])[-120:]}"
        size = r.get("output_bytes")
        lines.append(
            f"| {r['input']} | {r['input_mp']} | {r['output_mp']} | {r['mode']} | {r['peak_rss_mb']} | {r['wall_s']} | "
            f"{'' if not size else round(int(size) / 1e6, 1)} | {rec.get('tile', '')} | {note} |"  # type: ignore[union-attr]
        )
    (RESULTS / "gigapixel.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def _cores() -> int:
    import os

    return len(os.sched_getaffinity(0))


if __name__ == "__main__":
    main()
