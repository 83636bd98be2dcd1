"""``pixelift artifacts pack|install``: move verified artifacts between machines (torch-free)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from pixelift.errors import PixeliftError


@click.group("artifacts")
def artifacts_cmd() -> None:
    """Bundle exported artifacts into one file, and install such a file on another machine."""


@artifacts_cmd.command("pack")
@click.argument("model_ids", nargs=-1)
@click.option("-o", "--output", "dest", required=True, type=click.Path(path_type=Path), help="Bundle file to write.")
@click.option("--all", "pack_all", is_flag=True, help="Every model with an exported artifact.")
@click.option(
    "--target",
    "targets",
    multiple=True,
    help="Only these targets (repeatable, e.g. onnx-fp32, openvino-int8). Default: every exported one.",
)
@click.option(
    "--precision",
    "precisions",
    multiple=True,
    type=click.Choice(["fp32", "fp16", "int8"]),
    help="Only targets stored at these precisions (repeatable); the fp32 ONNX always comes along.",
)
@click.option("--overwrite", is_flag=True, help="Replace an existing bundle file.")
@click.option("--json", "as_json", is_flag=True)
def pack_cmd(
    model_ids: tuple[str, ...],
    dest: Path,
    pack_all: bool,
    targets: tuple[str, ...],
    precisions: tuple[str, ...],
    overwrite: bool,
    as_json: bool,
) -> None:
    """Write MODEL_IDS' verified artifacts (and user model specs) into one bundle file."""
    from pixelift import models
    from pixelift.artifacts import ONNX_FP32, TARGETS, exported_targets
    from pixelift.artifacts.bundle import pack

    ids = list(model_ids)
    if pack_all:
        ids += [s.id for s in models.all_specs() if exported_targets(s.id) and s.id not in ids]
    if not ids:
        raise click.UsageError("name at least one model id, or use --all")
    for model_id in ids:  # an unknown or malformed id is a usage error, as for enhance and export
        try:
            models.get(model_id)
        except PixeliftError as exc:
            raise click.BadParameter(str(exc), param_hint="MODEL_IDS") from None
    chosen: set[str] | None = set(targets) if targets else None
    if precisions:
        by_precision = {n for n, t in TARGETS.items() if t.precision in precisions} | {ONNX_FP32}
        chosen = by_precision if chosen is None else chosen & by_precision
    entries = pack(ids, dest, targets=chosen, overwrite=overwrite)
    for model_id in dict.fromkeys(ids):
        have = {TARGETS[e.target].precision for e in entries if e.model_id == model_id}
        for missing in sorted(set(precisions) - have):
            click.echo(f"WARNING: {model_id} has no {missing} artifact to pack "
                       f"(`pixelift export {model_id} --precision {missing}` builds it)", err=True)  # fmt: skip
    summary: dict[str, Any] = {"bundle": str(dest), "bytes": dest.stat().st_size, "artifacts": [f"{e.model_id}/{e.target}" for e in entries]}
    if as_json:
        click.echo(json.dumps(summary))
    else:
        click.echo(f"{dest}: {len(entries)} artifact(s), {summary['bytes'] / 1e6:.1f} MB")
        for name in summary["artifacts"]:
            click.echo(f"  {name}")


@artifacts_cmd.command("install")
@click.argument("bundle", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--force", is_flag=True, help="Replace artifacts that are already installed.")
@click.option("--json", "as_json", is_flag=True)
def install_cmd(bundle: Path, force: bool, as_json: bool) -> None:
    """Verify BUNDLE (hashes, schema, ids, safe names) and install it into this cache."""
    from pixelift.artifacts.bundle import install
    from pixelift.paths import artifacts_dir

    entries = install(bundle, force=force)
    names = [f"{e.model_id}/{e.target}" for e in entries]
    if as_json:
        click.echo(json.dumps({"bundle": str(bundle), "installed": names, "cache": str(artifacts_dir())}))
    else:
        if not names:
            click.echo(f"nothing installed: every artifact in {bundle} is already in {artifacts_dir()} (--force replaces them)")
        else:
            click.echo(f"installed {len(names)} artifact(s) into {artifacts_dir()}")
        for name in names:
            click.echo(f"  {name}")
