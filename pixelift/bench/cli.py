"""``pixelift bench`` and ``pixelift compare``: the provider benchmark and image comparison.

Only click is imported here; the runner, report and comparison (numpy, matplotlib, the
peers) are imported when one of these commands runs, so ``pixelift models`` stays light.
"""

from __future__ import annotations

import json
from pathlib import Path

import click


def _csv(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


@click.command("bench")
@click.option(
    "-m",
    "--model",
    "models",
    multiple=True,
    help="Model id (repeatable). Default: span-x2-ch48, realesrgan-animevideov3-x4.",
)
@click.option(
    "--providers",
    default="cpu,openvino",
    show_default=True,
    help="Comma list, or 'all' (every CPU provider benched: cpu, openvino).",
)
@click.option(
    "--precisions",
    default="fp32,bf16",
    show_default=True,
    help="Comma list of fp32,bf16,fp16,int8, or 'all' (fp16/int8 artifacts are built on first use).",
)
@click.option("--tiles", default="128,256", show_default=True, help="Comma list of tile sizes in px.")
@click.option(
    "--peers",
    default="torch,ncnn",
    show_default=True,
    help="Comma list of torch,ncnn (both from the export extra), or 'none'.",
)
@click.option("--threads", type=click.IntRange(1, 256), default=2, show_default=True)
@click.option("--warmup", type=click.IntRange(0, 50), default=2, show_default=True)
@click.option("--repeats", type=click.IntRange(1, 1000), default=3, show_default=True, help="Minimum timed repeats.")
@click.option("--max-repeats", type=click.IntRange(1, 1000), default=12, show_default=True)
@click.option(
    "--budget",
    type=float,
    default=5.0,
    show_default=True,
    help="Seconds per configuration before stopping repeats early.",
)
@click.option(
    "--scaling",
    default="1,4",
    show_default=True,
    help="Photo sizes in MP for the Enhancer scaling run ('full' = 1,4,12,24; 'none').",
)
@click.option("--scaling-model", default="span-x2-ch48", show_default=True)
@click.option(
    "--e2e",
    type=click.Choice(["default", "full", "none"]),
    default="default",
    show_default=True,
    help="File to file: `pixelift enhance` vs an ncnn pipeline on whole photos (the headline; needs the ncnn peer). "
    "default: SPAN, Compact and RRDBNet at 0.25-1 MP; full adds 12 and 24 MP.",
)
@click.option("--e2e-repeats", type=click.IntRange(1, 50), default=3, show_default=True)
@click.option(
    "--ceiling-n", type=click.IntRange(64, 16384), default=4096, show_default=True, help="sgemm size for the ceiling."
)
@click.option(
    "--report",
    "report_dir",
    type=click.Path(path_type=Path),
    default=None,
    help="Write results.json, results.csv, report.md and plots here.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
def bench_cmd(
    models: tuple[str, ...],
    providers: str,
    precisions: str,
    tiles: str,
    peers: str,
    threads: int,
    warmup: int,
    repeats: int,
    max_repeats: int,
    budget: float,
    scaling: str,
    scaling_model: str,
    e2e: str,
    e2e_repeats: int,
    ceiling_n: int,
    report_dir: Path | None,
    as_json: bool,
) -> None:
    """Benchmark providers x precisions x tiles against PyTorch eager and the ncnn runtime.

    Needs pip install 'pixelift[bench]' for the --report plots and 'pixelift[export]' for
    the peers and for building artifacts; what is missing is named before anything runs.
    """
    from pixelift import models as registry
    from pixelift.bench import report, runner

    for m in models:
        registry.get(m)  # unknown ids fail before anything runs
    support, _ = runner.precision_support()
    provs = tuple(support) if providers == "all" else tuple(_csv(providers))
    for p in provs:
        if p not in support:
            raise click.BadParameter(
                f"{p!r}: benchable providers here are {', '.join(support)}", param_hint="--providers"
            )
    all_prec = tuple(dict.fromkeys(q for p in provs for q in support[p]))
    wanted = all_prec if precisions == "all" else tuple(_csv(precisions))
    known = {q for qs in support.values() for q in qs}
    precs = tuple(q for q in wanted if q in all_prec)  # bf16 is openvino's alone: dropped for cpu only
    if not precs or not known.issuperset(wanted):
        raise click.BadParameter(
            f"{precisions!r}: {', '.join(provs)} run {', '.join(all_prec) or 'nothing'}", param_hint="--precisions"
        )
    if scaling == "full":
        mps: tuple[float, ...] = runner.FULL_SCALING_MP
    elif scaling == "none":
        mps = ()
    else:
        mps = tuple(float(v) for v in _csv(scaling))
    matrix = runner.Matrix(
        models=tuple(models) or runner.DEFAULT_MODELS,
        providers=provs,
        precisions=precs,
        tiles=tuple(int(t) for t in _csv(tiles)),
        peers=() if peers == "none" else tuple(_csv(peers)),
        threads=threads,
        warmup=warmup,
        min_repeats=repeats,
        max_repeats=max(repeats, max_repeats),
        budget_s=budget,
        scaling_mp=mps,
        scaling_model=scaling_model,
        ceiling_n=ceiling_n,
    )
    problems = runner.preflight(matrix, plots=report_dir is not None)
    if problems:
        raise click.ClickException("; ".join(problems))
    res = runner.run_matrix(matrix, log=lambda s: click.echo(s, err=as_json))
    if e2e != "none" and "ncnn" in matrix.peers and not res["peers"].get("ncnn"):
        import tempfile

        from pixelift.bench import e2e as file_to_file

        cases = file_to_file.FULL_CASES if e2e == "full" else file_to_file.DEFAULT_CASES
        with tempfile.TemporaryDirectory(prefix="pixelift-e2e-") as work:
            res["e2e"] = file_to_file.run_cases(
                cases, Path(work), repeats=e2e_repeats, threads=threads, log=lambda s: click.echo(s, err=True)
            )
    if report_dir is not None:
        paths = report.write(res, report_dir)
        click.echo(f"wrote {', '.join(str(p) for p in paths.values())}", err=as_json)
    else:
        click.echo(report.markdown(res, []), err=as_json)
    if as_json:
        click.echo(json.dumps(res, default=str))
    click.echo(f"bench wall time {res['wall_s']:.0f} s", err=True)
    why = runner.unmeasured(res)
    if why:
        raise click.ClickException(why)


@click.command("compare")
@click.argument("reference", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("others", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--heatmap",
    "heatmap_path",
    type=click.Path(path_type=Path),
    help="Write |reference - first other| as a heatmap PNG.",
)
@click.option(
    "--sheet", "sheet_path", type=click.Path(path_type=Path), help="Write a zoomed side-by-side crop sheet PNG."
)
@click.option(
    "--input",
    "input_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="The input image, shown first in the sheet.",
)
@click.option("--json", "as_json", is_flag=True)
def compare_cmd(
    reference: Path,
    others: tuple[Path, ...],
    heatmap_path: Path | None,
    sheet_path: Path | None,
    input_path: Path | None,
    as_json: bool,
) -> None:
    """PSNR, SSIM and max abs error of each OTHER image against REFERENCE (0..255 scale)."""
    from pixelift.bench.compare import compare

    try:
        res = compare(reference, list(others), heatmap_path=heatmap_path, sheet_path=sheet_path, input_path=input_path)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    if as_json:
        click.echo(json.dumps(res))
        return
    for r in res["results"]:
        click.echo(
            f"{r['image']}: PSNR {r['psnr_db']:.2f} dB, SSIM {r['ssim']:.4f}, max abs {r['max_abs']:.0f}, mean abs {r['mean_abs']:.2f}"
        )
    if heatmap_path:
        click.echo(f"heatmap: {heatmap_path} (full scale = {res['heatmap_full_scale']:.1f})")
    if sheet_path:
        click.echo(f"crop sheet: {sheet_path}")
