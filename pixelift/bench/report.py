"""Write a run's results: results.json, results.csv, report.md and PNG plots."""

from __future__ import annotations

import csv
import json
import statistics
from pathlib import Path
from typing import Any

CSV_COLS = (
    "model", "tile", "runtime", "provider", "precision", "label", "threads", "ok", "s_min", "s_median", "s_max",
    "repeats", "mp_per_s", "gflops", "pct_ceiling", "mflop_per_px", "setup_s", "rss_peak_mb", "fidelity_db", "error",
)  # fmt: skip


def _f(v: Any, nd: int = 3) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.{nd}f}"
    return str(v)


def fastest(res: dict[str, Any], model: str) -> dict[str, Any] | None:
    rows = [r for r in res["results"] if r.get("model") == model and r.get("ok") and r["runtime"] == "pixelift"]
    return max(rows, key=lambda r: r["mp_per_s"]) if rows else None


def recommendation(res: dict[str, Any]) -> list[str]:
    lines = []
    for model, auto in res.get("auto", {}).items():
        best = fastest(res, model)
        if best is None:
            continue
        allrows = [r for r in res["results"] if r.get("model") == model and r.get("ok")]
        overall = max(allrows, key=lambda r: r["mp_per_s"])
        auto_prec = auto.get("precision", "fp32")
        auto_txt = (
            f"{auto.get('provider')} {auto_prec} ({auto.get('why')})"
            if auto.get("ok")
            else f"unknown ({auto.get('error')})"
        )
        auto_rows = [
            r for r in allrows
            if r["runtime"] == "pixelift" and r["provider"] == auto.get("provider") and r["precision"] == auto_prec
            and r["tile"] == best["tile"]
        ]  # fmt: skip
        gap = f"; auto's choice at the same tile runs {auto_rows[0]['mp_per_s']:.3f} MP/s" if auto_rows else ""
        fid = f", {best['fidelity_db']} dB vs torch fp32" if best.get("fidelity_db") is not None else ""
        lines.append(
            f"- **{model}**: use `{best['provider']}` {best['precision']} at tile {best['tile']} "
            f"({best['mp_per_s']:.3f} MP/s{fid}). `auto` chooses {auto_txt}{gap}."
            + (
                f" Fastest overall, peers included: {overall['label']} at tile {overall['tile']} "
                f"({overall['mp_per_s']:.3f} MP/s)."
                if overall is not best
                else ""
            )
        )
    return lines


def e2e_section(cases: list[dict[str, Any]]) -> list[str]:
    """The headline: file to file through `pixelift enhance` against an ncnn pipeline."""
    if not cases:
        return []
    out = [
        "",
        "## File to file: what a user gets",
        "",
        "`pixelift enhance photo.jpg -o out.jpg --precision auto` (fresh process, warm cache) against an ncnn "
        "pipeline doing the same job (decode, ncnn fp32 or bf16 storage on the whole image or its own tiles, "
        "encode); median wall seconds of interleaved repeats (spread = (max-min)/median). ×ncnn = the faster ncnn "
        "mode's median / pixelift's (>1: pixelift faster); no ratio when a side spread by more than 20%.",
        "",
        "| case | size | pixelift ran | pixelift s | ncnn fp32 s | ncnn bf16 s | ×ncnn | pixelift vs ncnn output |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for c in cases:

        def cell(side: str, c: dict[str, Any] = c) -> str:
            t = c["seconds"].get(side)
            if not t:
                return "failed: " + c["errors"].get(side, "-")[:60]
            return f"{statistics.median(t):.2f} ({c['spread'][side]:.0%})"

        ratio = f"**{c['ratio']:.2f}×**" if c.get("ratio") else f"– ({c.get('why_no_ratio') or 'failed'})"
        db = f"{c['psnr_vs_ncnn_db']} dB" if c.get("psnr_vs_ncnn_db") else "-"
        out.append(
            f"| {c['case']['label']} | {c['width']}×{c['height']} | {c.get('route') or '-'} | {cell('pixelift')} | "
            f"{cell('ncnn-fp32')} | "
            f"{cell('ncnn-bf16')} | {ratio} | {db} |"
        )
    return out


def markdown(res: dict[str, Any], plots: list[str]) -> str:
    mf, v = res["machine"], res["versions"]
    mem = f"{mf['memory_bytes'] / 2**30:.1f} GiB" if mf.get("memory_bytes") else "unknown"
    out = [
        "# pixelift bench",
        "",
        f"Run {res['created']}, wall time {res['wall_s']:.0f} s.",
        "",
        "## Machine",
        "",
        f"- CPU: {mf['cpu_model']}, {mf['cpu_count']} cores visible; flags: {', '.join(mf['cpu_features']) or '-'}",
        f"- Memory: {mem}; OS: {mf['os']} {mf['os_release']} ({mf['arch']})",
        "- Versions: " + ", ".join(f"{k} {val}" for k, val in v.items()),
        f"- Threads: {res['matrix']['threads']} for every runtime and for the ceiling",
        f"- Ceiling: numpy sgemm {res['matrix']['ceiling_n']} on {res['matrix']['threads']} threads = "
        f"{_f(res['ceiling']['gflops'], 1)} GFLOP/s (median of a run at the start and one at the end)",
        f"- Precisions: {res['precision_note']}",
    ]
    for p, why in res["peers"].items():
        out.append(f"- Peer {p}: {'ran' if not why else 'MISSING: ' + why}")
    out += e2e_section(res.get("e2e") or [])
    out += [
        "",
        "Per tile: median seconds (min–max) after warm-up; MP/s of input; effective GFLOP/s = direct-conv FLOPs "
        "counted from the ONNX graph / median time; fidelity = PSNR vs PyTorch fp32 output on the same tile; "
        "×peer = peer's median / this median (>1: pixelift faster). Absolute times on a shared machine are noise; "
        "read the ratios.",
    ]
    models = list(dict.fromkeys(r["model"] for r in res["results"]))
    for model in models:
        rows = [r for r in res["results"] if r["model"] == model]
        peers = [r["label"] for r in rows if r.get("runtime") not in (None, "pixelift")]
        peers = list(dict.fromkeys(peers))
        mfl = next((r.get("mflop_per_px") for r in rows if r.get("mflop_per_px")), None)
        out += ["", f"## {model}" + (f" ({mfl:.2f} MFLOP per input pixel)" if mfl else ""), ""]
        head = ["runtime", "precision", "tile", "s/tile (min–max)", "MP/s", "eff. GFLOP/s", "% ceiling", "setup s"]
        head += ["peak RSS MB", "fidelity dB", *[f"×{p}" for p in peers]]
        out += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for r in rows:
            if not r.get("ok"):
                out.append(f"| {r.get('provider', '?')} | {r.get('precision', '?')} | {r.get('tile', '?')} | "
                           f"failed: {r.get('error', '')[:80]} |" + " |" * (len(head) - 4))  # fmt: skip
                continue
            cells = [
                r["provider"] if r["runtime"] == "pixelift" else f"*{r['runtime']}* (peer)",
                r["precision"] + (f" ({r['target']})" if "@" in r["label"] else ""),
                str(r["tile"]),
                f"{r['s_median']:.4f} ({r['s_min']:.4f}–{r['s_max']:.4f})",
                f"{r['mp_per_s']:.3f}",
                _f(r.get("gflops"), 1),
                _f(r.get("pct_ceiling"), 0),
                _f(r.get("setup_s"), 2),
                _f(r.get("rss_peak_mb"), 0),
                "ref" if r["label"] == "torch-fp32" else _f(r.get("fidelity_db"), 1),
            ]
            cells += [
                "noisy"
                if p in r.get("noisy", {})
                else _f(r.get("ratio", {}).get(p), 2) + ("×" if r.get("ratio", {}).get(p) else "")
                for p in peers
            ]
            out.append("| " + " | ".join(cells) + " |")
    if res.get("scaling"):
        out += ["", "## Whole photo through the Enhancer (provider auto, tile auto)", ""]
        out += [
            "| model | MP | size | provider | setup s | seconds | MP/s | peak RSS MB |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for s in res["scaling"]:
            if s.get("ok"):
                out.append(
                    f"| {s['model']} | {s['mp']:.1f} | {s['width']}×{s['height']} | {s['provider']} | {s['setup_s']:.2f} | "
                    f"{s['seconds']:.2f} | {s['mp_per_s']:.3f} | {s['rss_peak_mb']:.0f} |"
                )
            else:
                out.append(f"| {s['model']} | {s['target_mp']} | failed: {s.get('error')} | | | | | |")
    out += ["", "## What to use on this machine", "", *recommendation(res)]
    if plots:
        out += ["", "## Plots", "", *[f"![{p}]({p})" for p in plots]]
    return "\n".join(out) + "\n"


def plot(res: dict[str, Any], out_dir: Path) -> list[str]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    names = []
    ok = [r for r in res["results"] if r.get("ok")]
    models = list(dict.fromkeys(r["model"] for r in ok))
    if ok:
        fig, axes = plt.subplots(1, len(models), figsize=(5.5 * len(models), 4), squeeze=False)
        for ax, model in zip(axes[0], models, strict=True):
            rows = [r for r in ok if r["model"] == model]
            labels = list(dict.fromkeys(r["label"] for r in rows))
            tiles = sorted({r["tile"] for r in rows})
            w = 0.8 / max(1, len(tiles))
            for i, t in enumerate(tiles):
                vals = [
                    next((r["mp_per_s"] for r in rows if r["label"] == lab and r["tile"] == t), 0) for lab in labels
                ]
                ax.bar([j + i * w for j in range(len(labels))], vals, w, label=f"tile {t}")
            ax.set_xticks([j + w * (len(tiles) - 1) / 2 for j in range(len(labels))], labels, rotation=35, ha="right")
            ax.set_ylabel("input MP/s")
            ax.set_title(model)
            ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(out_dir / "throughput.png", dpi=80)
        plt.close(fig)
        names.append("throughput.png")
        fig, ax = plt.subplots(figsize=(6, 4))
        for model in models:
            rows = [r for r in ok if r["model"] == model and r.get("fidelity_db") is not None]
            ax.scatter([r["mp_per_s"] for r in rows], [min(r["fidelity_db"], 80) for r in rows], label=model)
            for r in rows:
                ax.annotate(f"{r['label']}@{r['tile']}", (r["mp_per_s"], min(r["fidelity_db"], 80)), fontsize=6)
        ax.set_xlabel("input MP/s")
        ax.set_ylabel("PSNR vs torch fp32, dB (capped at 80)")
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(out_dir / "fidelity_vs_speed.png", dpi=80)
        plt.close(fig)
        names.append("fidelity_vs_speed.png")
    sc = [s for s in res.get("scaling", []) if s.get("ok")]
    if sc:
        fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3.5))
        a1.plot([s["mp"] for s in sc], [s["seconds"] for s in sc], "o-")
        a1.set_xlabel("photo MP")
        a1.set_ylabel("seconds")
        a2.plot([s["mp"] for s in sc], [s["rss_peak_mb"] for s in sc], "o-", color="C1")
        a2.set_xlabel("photo MP")
        a2.set_ylabel("peak RSS MB")
        fig.suptitle(f"{sc[0]['model']} via Enhancer ({sc[0]['provider']})")
        fig.tight_layout()
        fig.savefig(out_dir / "scaling.png", dpi=80)
        plt.close(fig)
        names.append("scaling.png")
    return names


def write(res: dict[str, Any], out_dir: Path | str) -> dict[str, Path]:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"json": out_dir / "results.json", "csv": out_dir / "results.csv", "md": out_dir / "report.md"}
    paths["json"].write_text(json.dumps(res, indent=1, default=str))
    with paths["csv"].open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=[*CSV_COLS, "ratios"], extrasaction="ignore")
        w.writeheader()
        for r in res["results"]:
            w.writerow({**r, "ratios": json.dumps(r.get("ratio", {}))})
    plots = plot(res, out_dir)
    paths["md"].write_text(markdown(res, plots))
    for p in plots:
        paths[p] = out_dir / p
    return paths
