"""The ``pixelift`` command line. Choices are read from the registries.

Exit codes: 0 success; 1 at least one item failed (the others still ran); 2 usage error.
"""

from __future__ import annotations

import json
import logging
import sys
import urllib.parse
from pathlib import Path
from typing import Any

import click

from pixelift import models
from pixelift.errors import PixeliftError
from pixelift.models.spec import ModelSpec

EXIT_FAILED = 1


def _exported(spec: ModelSpec) -> list[str]:
    from pixelift.export.artifacts import exported_targets

    return exported_targets(spec.id)


def _row(spec: ModelSpec) -> dict[str, Any]:
    return {
        "id": spec.id,
        "task": spec.task.value,
        "scale": spec.scale,
        "architecture": spec.architecture,
        "params": spec.params,
        "license": spec.license.split(" (")[0],
        "source": spec.sources[0].describe(),
        "exported": _exported(spec),
    }


def _table(rows: list[dict[str, Any]]) -> str:
    cols = ["id", "task", "scale", "architecture", "params", "license", "source", "exported"]
    cells = [[str(r[c]) if c != "exported" else (",".join(r[c]) or "-") for c in cols] for r in rows]
    cells = [[c.upper() for c in cols], *cells]
    widths = [max(len(row[i]) for row in cells) for i in range(len(cols))]
    return "\n".join("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip() for row in cells)


@click.group()
@click.option("-v", "--verbose", count=True, help="More logging (-v info, -vv debug).")
def main(verbose: int) -> None:
    """pixelift: AI photo enhancement on the hardware you have."""
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")


@main.group(invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable list of objects with an 'id' each.")
@click.pass_context
def models_cmd(ctx: click.Context, as_json: bool) -> None:
    """List the models: built-in zoo and your own exported models."""
    if ctx.invoked_subcommand is not None:
        return
    rows = [_row(s) for s in models.all_specs()]
    click.echo(json.dumps(rows, indent=2) if as_json else _table(rows))


main.add_command(models_cmd, name="models")


@models_cmd.command("show")
@click.argument("model_id")
@click.option("--json", "as_json", is_flag=True)
def models_show(model_id: str, as_json: bool) -> None:
    """Everything about one model: its spec, artifacts and parity report."""
    from pixelift.export.artifacts import find

    try:
        spec = models.get(model_id)
    except PixeliftError as exc:
        raise click.ClickException(str(exc)) from exc
    artifacts = {t: find(spec.id, t) for t in _exported(spec)}
    info = {
        **spec.to_dict(),
        "artifacts": {
            t: {"path": str(a.path), "sha256": a.manifest["sha256"], "parity": a.manifest["parity"]}
            for t, a in artifacts.items()
            if a is not None
        },
    }
    if as_json:
        click.echo(json.dumps(info, indent=2))
        return
    for key, value in info.items():
        if key == "artifacts":
            continue
        click.echo(f"{key:>14}: {value if not isinstance(value, list | tuple) else json.dumps(value)}")
    if not artifacts:
        click.echo(f"{'exported':>14}: no (run: pixelift export {spec.id})")
    for target, art in artifacts.items():
        if art is None:
            continue
        click.echo(f"{'artifact':>14}: {target} {art.path}")
        for c in art.manifest["parity"]["checks"]:
            mark = "ok" if c["passed"] else "FAIL"
            click.echo(
                f"{'parity':>14}: {c['candidate']} vs {c['reference']}: {c['psnr_db']} dB "
                f"(max abs {c['max_abs']:.2e}, >= {c['threshold_db']} dB) {mark}"
            )


def _is_url(text: str) -> bool:
    return urllib.parse.urlparse(text).scheme in ("http", "https", "file")


def _user_spec(target: str, model_id: str | None, sha256: str | None) -> ModelSpec:
    from pixelift.models.importers import require_torch

    require_torch()
    from pixelift.models.importers.userfile import spec_from_file
    from pixelift.models.sources import UrlSource

    if _is_url(target):
        if not sha256:
            raise click.UsageError("a URL needs --sha256 so the download can be verified")
        src = UrlSource(target, sha256)
        (path,) = src.files()
        default_id = Path(urllib.parse.urlparse(target).path).stem
        return spec_from_file(path, model_id or _kebab(default_id), url=target, sha256=sha256)
    path = Path(target)
    return spec_from_file(path, model_id or _kebab(path.stem), sha256=sha256)


def _kebab(name: str) -> str:
    out = "".join(c.lower() if c.isalnum() else "-" for c in name).strip("-")
    while "--" in out:
        out = out.replace("--", "-")
    return out or "user-model"


@main.command("export")
@click.argument("targets", nargs=-1)
@click.option("--all", "export_all", is_flag=True, help="Export every model in the zoo.")
@click.option("--id", "model_id", help="Registry id for a user weight file (default: from the file name).")
@click.option("--sha256", help="Expected sha256 of a weight file or URL.")
@click.option("--force", is_flag=True, help="Re-export even if a valid artifact is cached.")
@click.option("--json", "as_json", is_flag=True, help="One JSON line per model.")
def export_cmd(
    targets: tuple[str, ...], export_all: bool, model_id: str | None, sha256: str | None, force: bool, as_json: bool
) -> None:
    """Export models to verified ONNX artifacts.

    TARGETS are zoo ids, .pth/.safetensors files (any architecture spandrel detects),
    or URLs (with --sha256).
    """
    from pixelift.export import to_onnx

    if export_all:
        targets = (*targets, *models.REGISTRY.ids())
    if not targets:
        raise click.UsageError("name at least one model id, weight file or URL, or use --all")
    if model_id and len(targets) != 1:
        raise click.UsageError("--id applies to exactly one weight file")
    failures = 0
    for target in targets:
        result: dict[str, Any] = {"target": target}
        try:
            if target in models.REGISTRY:
                spec = models.REGISTRY.get(target)
            elif Path(target).suffix or _is_url(target):
                spec = _user_spec(target, model_id, sha256)
                models.save_user_spec(spec)
            else:
                spec = models.get(target)
            art = to_onnx(spec, force=force)
            worst = min(c["psnr_db"] for c in art.manifest["parity"]["checks"])
            result.update(status="ok", id=spec.id, path=str(art.path), min_parity_db=worst)
            if not as_json:
                click.echo(f"{spec.id}: {art.path} (parity >= {worst} dB)")
        except (PixeliftError, ValueError) as exc:
            failures += 1
            result.update(status="error", error=str(exc))
            if not as_json:
                click.echo(f"{target}: error: {exc}", err=True)
        if as_json:
            click.echo(json.dumps(result))
    if failures:
        sys.exit(EXIT_FAILED)


if __name__ == "__main__":
    main()
