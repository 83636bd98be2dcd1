"""The ``pixelift`` command line. Choices are read from the registries.

Exit codes: 0 success; 1 at least one item failed (the others still ran); 2 usage error.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib.util
import json
import logging
import os
import sys
import threading
import urllib.parse
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from pixelift import limits, logs, paths
from pixelift.cli_report import FileBars, Warnings, report
from pixelift.errors import MissingExtraError, OutputExistsError, PixeliftError, UsageError, WeightSourceError
from pixelift.ids import validate_id

if TYPE_CHECKING:
    from pixelift.artifacts import FidelityRecord
    from pixelift.models.spec import ModelSpec

EXIT_FAILED = 1


def _exported(spec: ModelSpec) -> list[str]:
    from pixelift.artifacts import exported_targets

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


ENV_DEBUG = "PIXELIFT_DEBUG"


class GuardedGroup(click.Group):
    """No traceback reaches a user: a pixelift error is a one-line message (exit 1, or 2 for a
    usage error); anything unexpected is reported as an internal error (exit 1), with the
    traceback only under ``PIXELIFT_DEBUG=1``."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.ClickException, click.Abort, SystemExit, KeyboardInterrupt):
            raise
        except BrokenPipeError:
            if not _stdout_reader_gone():
                raise
            # `pixelift enhance … | head`: the reader left, as with a shell tool's SIGPIPE; nothing
            # more can be said on stdout, and the interpreter's flush at exit must not fail again
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            raise SystemExit(EXIT_FAILED) from None
        except UsageError as exc:
            raise click.UsageError(str(exc)) from exc
        except PixeliftError as exc:
            raise click.ClickException(str(exc)) from exc
        except Exception as exc:
            if os.environ.get(ENV_DEBUG):
                raise
            raise click.ClickException(
                f"internal error: {type(exc).__name__}: {exc} (set {ENV_DEBUG}=1 for the traceback and report it)"
            ) from exc


def _stdout_reader_gone() -> bool:
    """Whether stdout is a pipe whose reading end is closed (poll reports an error on it)."""
    import select

    if not hasattr(select, "poll"):
        return False
    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(ev & select.POLLERR for _, ev in poller.poll(0))
    except (OSError, ValueError, AttributeError):  # no real descriptor (a test runner's buffer)
        return False


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to the current ``sys.stderr`` (click's test runner swaps it per invocation)."""

    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, _value: Any) -> None:
        pass


_HANDLER = _StderrHandler()


def _setup_logging(verbose: int) -> None:
    log = logging.getLogger("pixelift")
    log.setLevel(logging.WARNING - 10 * min(verbose, 2))
    if _HANDLER not in log.handlers:
        log.addHandler(_HANDLER)


@click.group(cls=GuardedGroup)
@click.option("-v", "--verbose", count=True, help="More logging (-v info, -vv debug).")
def main(verbose: int) -> None:
    """pixelift: AI photo enhancement on the hardware you have."""
    # Read by numpy when it is imported, which a command does only once it needs arrays. numpy
    # asks for transparent huge pages on every large array; the first touch of the output and
    # tile buffers then cost a 12 MP run ~2.2 s of 18 here (the kernel finding 2 MB pages;
    # bench/results/e2e_amx.md), and these arrays are written once and streamed, so gain no TLB
    # hits for it. A value the user set wins.
    os.environ.setdefault(limits.ENV_NUMPY_HUGE_PAGES, "0")
    _setup_logging(verbose)
    try:
        paths.check_env_folders()
    except UsageError as exc:
        raise click.UsageError(str(exc)) from None


def _numpy_huge_pages() -> bool | None:
    """Whether numpy asks the kernel for transparent huge pages (None: this numpy cannot say)."""
    try:
        from numpy._core.multiarray import _set_madvise_hugepage  # type: ignore[attr-defined]
    except ImportError:
        return None
    enabled = bool(_set_madvise_hugepage(True))
    _set_madvise_hugepage(enabled)
    return enabled


@main.group(invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable list of objects with an 'id' each.")
@click.pass_context
def models_cmd(ctx: click.Context, as_json: bool) -> None:
    """List the models: built-in zoo and your own exported models."""
    if ctx.invoked_subcommand is not None:
        return
    from pixelift import models

    rows = [_row(s) for s in models.all_specs()]
    click.echo(json.dumps(rows, indent=2) if as_json else _table(rows))


main.add_command(models_cmd, name="models")


@models_cmd.command("show")
@click.argument("model_id")
@click.option("--json", "as_json", is_flag=True)
def models_show(model_id: str, as_json: bool) -> None:
    """Everything about one model: its spec, artifacts and parity report."""
    from pixelift import models
    from pixelift.artifacts import find

    try:
        spec = models.get(model_id)
    except PixeliftError as exc:  # an unknown or malformed id is a usage error, as `enhance -m` says
        raise click.UsageError(str(exc)) from exc
    artifacts = {t: find(spec.id, t) for t in _exported(spec)}
    from pixelift.models.architectures import architecture

    info = {
        **spec.to_dict(),
        "tile_overlap": architecture(spec.architecture).overlap,  # measured per architecture (bench/overlap.py)
        "artifacts": {
            t: {
                "path": str(a.path),
                "sha256": a.manifest["sha256"],
                "parity": a.manifest["parity"],
                "fidelity": a.manifest.get("fidelity", {}),
                **({"int8_study": a.manifest["int8_study"]} if "int8_study" in a.manifest else {}),
                **({"fp16_overflow": a.manifest["fp16_overflow"]} if "fp16_overflow" in a.manifest else {}),
            }
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
        for c in art.manifest.parity.checks:
            mark = "ok" if c.passed else "FAIL"
            click.echo(
                f"{'parity':>14}: {c.candidate} vs {c.reference}: {c.psnr_db} dB "
                f"(max abs {c.max_abs:.2e}, >= {c.threshold_db} dB) {mark}"
            )
        for key, rec in sorted(art.manifest.fidelity.items()):
            click.echo(f"{'fidelity':>14}: {_fidelity_line(key, rec)}")
        for step in art.manifest.get("int8_study", []):
            click.echo(f"{'int8 study':>14}: {step['technique']}: {step['psnr_db_calib_select']} dB")
        if art.manifest.get("fp16_overflow"):
            click.echo(f"{'fp16':>14}: overflows (NaN/Inf on real images): never chosen")


def _fidelity_line(key: str, rec: FidelityRecord) -> str:
    from pixelift.precision import FAST_DB, HIGH_FIDELITY_DB

    if rec.error:
        return f"{key}: failed: {rec.error}"
    db = rec.psnr_db
    if not rec.finite or db is None or rec.seconds is None:
        return f"{key}: NaN/Inf on held-out images (never chosen)"
    gates = "high+fast" if db >= HIGH_FIDELITY_DB else ("fast" if db >= FAST_DB else "none")
    return f"{key}: {db} dB vs fp32 (worst held-out crop), {rec.seconds * 1000:.1f} ms/crop, gates met: {gates}"


URL_SCHEMES = ("http", "https", "file")


def _is_url(text: str) -> bool:
    """A ``scheme://`` target; one of another scheme than :data:`URL_SCHEMES` is refused by name."""
    scheme = urllib.parse.urlparse(text).scheme
    if "://" not in text or len(scheme) < 2:  # a one-letter scheme is a Windows drive
        return False
    if scheme not in URL_SCHEMES:
        raise click.BadParameter(
            f"{text}: {scheme}:// URLs are not supported (use {', '.join(URL_SCHEMES)})", param_hint="TARGETS"
        )
    return True


def _is_weight_path(text: str) -> bool:
    """A target meant as a file: it exists, has a suffix or names a folder (an id never does)."""
    path = Path(text)
    return bool(path.suffix) or os.sep in text or "/" in text or path.exists()


def _user_spec(target: str, model_id: str | None, sha256: str | None) -> ModelSpec:
    from pixelift.models.importers import require_torch

    require_torch()
    from pixelift.models.importers.userfile import spec_from_file
    from pixelift.models.sources import LocalFileSource, UrlSource

    if _is_url(target):
        if not sha256:
            raise click.UsageError("a URL needs --sha256 so the download can be verified")
        src = UrlSource(target, sha256)
        (path,) = src.files()
        default_id = Path(urllib.parse.urlparse(target).path).stem
        return spec_from_file(path, model_id or _kebab(default_id), url=target, sha256=sha256)
    path = Path(target)
    if path.is_dir():
        raise WeightSourceError(f"{path} is a folder; name a .pth or .safetensors file")
    (path,) = LocalFileSource(str(path), sha256).files()  # exists, and matches --sha256 before it is read
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
@click.option(
    "--precision",
    "precisions",
    multiple=True,
    type=click.Choice(["fp32", "bf16", "fp16", "int8", "all"]),
    help="Also build and measure reduced precisions (repeatable): fp16 = ONNX fp16 + OpenVINO IR fp16; "
    "int8 = ONNX QDQ static; bf16 = OpenVINO inference hint. Fidelity vs fp32 goes into the manifests.",
)
@click.option(
    "--calibration",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Folder of your own images for int8 calibration (the last quarter is held out for fidelity).",
)
@click.option(
    "--coreml", is_flag=True, help="Also write a Core ML .mlpackage (fp16 ML Program; needs coremltools and torch)."
)
@click.option("--json", "as_json", is_flag=True, help="One JSON line per model.")
def export_cmd(
    targets: tuple[str, ...],
    export_all: bool,
    model_id: str | None,
    sha256: str | None,
    force: bool,
    precisions: tuple[str, ...],
    calibration: Path | None,
    coreml: bool,
    as_json: bool,
) -> None:
    """Export models to verified ONNX artifacts.

    TARGETS are zoo ids, .pth/.safetensors files (any architecture spandrel detects),
    or URLs (with --sha256).
    """
    from pixelift import models

    if export_all:
        targets = (*targets, *models.REGISTRY.ids())
    if not targets:
        raise click.UsageError("name at least one model id, weight file or URL, or use --all")
    if model_id is not None:
        if len(targets) != 1:
            raise click.UsageError("--id applies to exactly one weight file")
        try:
            validate_id(model_id)
        except PixeliftError as exc:
            raise click.BadParameter(str(exc), param_hint="--id") from None
    for target in targets:  # an unknown id or URL scheme is refused before any export starts
        if target not in models.REGISTRY and not (_is_url(target) or _is_weight_path(target)):
            try:
                models.get(target)
            except PixeliftError as exc:
                raise click.BadParameter(str(exc), param_hint="TARGETS") from None
    if sha256 is not None and not (len(sha256) == 64 and all(c in "0123456789abcdefABCDEF" for c in sha256)):
        raise click.BadParameter("expected 64 hexadecimal digits", param_hint="--sha256")
    if importlib.util.find_spec("torch") is None:
        raise MissingExtraError(
            "exporting needs the export extra (torch, spandrel, onnx): pip install 'pixelift[export]'; "
            "or install artifacts exported elsewhere with `pixelift artifacts install FILE`"
        )
    failures = 0
    json_out = sys.stdout
    # with --json, stdout carries one JSON line per model and nothing else: libraries that
    # print progress (onnxruntime's calibrator does) are sent to stderr
    quiet = contextlib.redirect_stdout(sys.stderr) if as_json else contextlib.nullcontext()
    with quiet:
        for target in targets:
            failures += _export_one(target, model_id, sha256, force, precisions, calibration, coreml, as_json, json_out)
    if failures:
        sys.exit(EXIT_FAILED)


def _export_one(
    target: str,
    model_id: str | None,
    sha256: str | None,
    force: bool,
    precisions: tuple[str, ...],
    calibration: Path | None,
    coreml: bool,
    as_json: bool,
    json_out: Any,
) -> int:
    """Export one target; returns the number of failures (0 or 1)."""
    from pixelift import models
    from pixelift.export import to_onnx

    failures = 0
    result: dict[str, Any] = {"target": target}
    try:
        if target in models.REGISTRY:
            spec = models.REGISTRY.get(target)
        elif _is_url(target) or _is_weight_path(target):
            spec = _user_spec(target, model_id, sha256)
            if spec.id in models.REGISTRY:
                raise ValueError(f"{spec.id!r} is a built-in model id; choose another --id")
        else:
            spec = models.get(target)
        art = to_onnx(spec, force=force)
        if spec.id not in models.REGISTRY:
            models.save_user_spec(spec)  # only once its artifact passed parity
        worst = min(c["psnr_db"] for c in art.manifest["parity"]["checks"])
        result.update(status="ok", id=spec.id, path=str(art.path), min_parity_db=worst)
        if not as_json:
            click.echo(f"{spec.id}: {art.path} (parity >= {worst} dB)")
        if precisions:
            result["fidelity"] = _export_precisions(spec.id, precisions, calibration, force, as_json)
        if coreml:
            from pixelift.export.coreml import to_coreml

            try:
                result["coreml"] = str(to_coreml(spec, force=force).path)
            except Exception as exc:  # a converter gap in one model must not stop the batch
                failures += 1
                result.update(status="error", coreml_error=f"{type(exc).__name__}: {exc}")
                click.echo(f"{spec.id}: coreml-fp16 not converted: {result['coreml_error']}", err=True)
            else:
                if not as_json:
                    click.echo(f"  coreml-fp16: {result['coreml']}")
    except (PixeliftError, ValueError) as exc:
        failures += 1
        result.update(status="error", error=str(exc))
        if not as_json:
            click.echo(f"{target}: error: {exc}", err=True)
    if as_json:
        click.echo(json.dumps(result), file=json_out)
    return failures


def _export_precisions(
    model_id: str, precisions: tuple[str, ...], calibration: Path | None, force: bool, as_json: bool
) -> dict[str, Any]:
    from pixelift import precision as P
    from pixelift.calibration import CalibrationSource
    from pixelift.export.targets import export_precision

    wanted = P.PRECISIONS if "all" in precisions else tuple(dict.fromkeys(precisions))
    for prec in wanted:
        kw: dict[str, Any] = {"force": force}
        if prec == "int8" and calibration is not None:
            kw["source"] = CalibrationSource(calibration)
        export_precision(model_id, prec, **kw)
    records = P.measure_model(model_id, precisions=wanted)
    if not as_json:
        for key, rec in sorted(records.items()):
            click.echo(f"  {_fidelity_line(key, rec)}")
    return {key: rec.to_json() for key, rec in records.items()}


DOCTOR_PACKAGES = (
    "pixelift",
    "onnxruntime",
    "onnxruntime-gpu",
    "openvino",
    "numpy",
    "Pillow",
    "tifffile",
    "imagecodecs",
    "click",
    "torch",
    "spandrel",
    "onnx",
    "ncnn",
    "coremltools",
)


@main.command("doctor")
@click.option("--json", "as_json", is_flag=True, help="The same report as JSON.")
def doctor_cmd(as_json: bool) -> None:
    """What this machine has, which providers can run, and why not the others."""
    from pixelift.providers import PROVIDERS, probe_all, read_machine
    from pixelift.versions import installed_versions

    facts = read_machine()
    probes = probe_all(facts)
    budget = limits.compile_cache_bytes()
    compiled = {
        name: sum(paths.folder_bytes(root / folder) for root in {paths.home(), paths.state_dir()})
        for name, prov in PROVIDERS.items()
        if (folder := getattr(prov, "cache_folder", None))
    }
    versions = installed_versions(DOCTOR_PACKAGES)
    report = {
        "machine": {**facts.to_dict(), "fingerprint": facts.fingerprint()},
        "providers": {
            n: {"available": p.available, "reason": p.reason, "devices": list(p.devices), "details": p.details}
            for n, p in probes.items()
        },
        "packages": versions,
        "cache": {"home": str(paths.home()), "compiled_models_bytes": compiled, "compile_cache_budget": budget},
        "numpy_huge_pages": (huge_pages := _numpy_huge_pages()),
        "service": (service := _service_report()),
    }
    if as_json:
        click.echo(json.dumps(report, indent=2, default=str))
        return
    m = facts
    click.echo(f"machine   {m.os} {m.os_release} {m.arch}, Python {m.python}")
    click.echo(f"cpu       {m.cpu_model}, {m.cpu_count} threads, features: {', '.join(m.cpu_features) or '-'}")
    click.echo(f"memory    {(m.memory_bytes or 0) / (1 << 30):.1f} GiB")
    gpus = ", ".join(f"{g.vendor} {g.name} ({(g.memory_bytes or 0) >> 20} MiB)" for g in m.gpus) or "none found"
    click.echo(f"gpus      {gpus}")
    if m.apple_chip:
        click.echo(f"chip      {m.apple_chip}")
    click.echo("providers (in automatic-selection order)")
    for name, p in probes.items():
        mark = "yes" if p.available else "no "
        devices = f" [{', '.join(p.devices)}]" if p.devices else ""
        click.echo(f"  {mark} {name:<9} {p.reason}{devices}")
    click.echo("packages")
    for dist, ver in versions.items():
        click.echo(f"  {dist:<16} {ver or '-'}")
    held = ", ".join(f"{name} {size / 1e6:.1f} MB" for name, size in compiled.items())
    limit = f"{budget / (1 << 30):.2g} GiB each" if budget else "off"
    click.echo(f"cache     {paths.home()}; compiled models: {held} ({limits.ENV_COMPILE_CACHE}: {limit})")
    huge = {True: "on", False: "off", None: "unknown"}[huge_pages]
    click.echo(f"numpy     transparent huge pages {huge} ({limits.ENV_NUMPY_HUGE_PAGES}; pixelift's default: 0)")
    where = f"running at {service['url']}" if service["url"] else "none running"
    click.echo(f"service   {where}; `enhance` {service['enhance']}")


def _service_report() -> dict[str, str | None]:
    """Whether a service is up, and where ``enhance`` runs because of it (PIXELIFT_SERVER)."""
    from pixelift.cli_serve import ENV_SERVER, find_service, server_mode

    try:
        mode = server_mode()
    except UsageError as exc:
        return {"url": None, "mode": None, "enhance": str(exc)}
    found = find_service("auto", required=False) if mode != "off" else None
    url = None if found is None else found.base_url
    if mode == "off":
        runs = f"runs in-process ({ENV_SERVER}=off)"
    elif url is not None:
        runs = f"goes through it (--no-server or {ENV_SERVER}=off: in-process)"
    elif mode == "start":
        runs = f"starts one in the background and goes through it ({ENV_SERVER}=start)"
    else:
        runs = "runs in-process"
    return {"url": url, "mode": mode, "enhance": runs}


IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".webp", ".bmp")


def _collect(inputs: tuple[str, ...], recursive: bool, exclude: Path | None) -> list[tuple[Path, Path]]:
    """(file, path relative to its input root) for every image named or found, each file once (a
    file named twice, or also found in a folder, is one input). A folder's hidden files and
    folders (``.name``: macOS's ``._photo.jpg`` resource forks, ``.thumbnails``) are left out;
    a hidden file named on the command line is not."""
    found: list[tuple[Path, Path]] = []
    seen: set[Path] = set()

    def add(f: Path, rel: Path) -> None:
        key = Path(os.path.abspath(f))  # not resolved: a link beside its target is an input of its own
        if key not in seen:
            seen.add(key)
            found.append((f, rel))

    for item in inputs:
        p = Path(item)
        if _is_dir(p):
            pattern = "**/*" if recursive else "*"
            # an output folder inside an input folder holds earlier results, not inputs; the
            # input folder itself as the output folder excludes nothing (same-name outputs are
            # then refused as overwriting their inputs, unless --overwrite or another --format)
            skip = exclude.resolve() if exclude is not None and exclude.resolve() != p.resolve() else None
            for f in sorted(p.glob(pattern)):
                rel = f.relative_to(p)
                if any(part.startswith(".") for part in rel.parts):
                    continue
                if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES and not f.stem.endswith("_pixelift"):
                    if skip is not None and skip in f.resolve().parents:
                        continue
                    add(f, rel)
        else:
            add(p, Path(p.name))
    return found


def _plan_outputs(
    files: list[tuple[Path, Path]], folder: Path | None, fmt: str | None, single: Path | None
) -> dict[Path, Path]:
    """Output path per input. Inputs that would share one (photo.jpg and photo.png both
    -> photo_pixelift.png) keep their source suffix in the name instead of failing."""
    from pixelift.runtime import formats

    def plan(src: Path, rel: Path, keep_suffix: bool) -> Path:
        if single is not None:
            return single
        in_fmt = formats.format_for_path(src) or "PNG"
        out_fmt = (fmt or "").upper() or formats.default_output_format(in_fmt)
        if keep_suffix:
            src, rel = src.with_name(f"{src.stem}_{src.suffix[1:]}"), rel.with_name(f"{rel.stem}_{rel.suffix[1:]}")
        if folder is None:
            return formats.default_output_path(src, out_fmt)
        return (folder / rel).with_suffix(formats.suffix_for(out_fmt))

    first = [plan(src, rel, False) for src, rel in files]
    clash = {p for p in first if first.count(p) > 1}
    planned = {src: plan(src, rel, p in clash) for (src, rel), p in zip(files, first, strict=True)}
    by_output: dict[Path, Path] = {}
    for src, dst in planned.items():  # still one output for two inputs (a.png, a.jpg and a_png.png)
        other = by_output.setdefault(Path(os.path.abspath(dst)), src)  # normalised, as _collect's inputs
        if other != src:
            raise click.UsageError(f"{other} and {src} would both be written to {dst}; rename one, or run them apart")
    return planned


def _same_file(a: Path, b: Path) -> bool:
    try:
        return b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def _tile_option(value: str) -> int | str | None:
    if value in ("auto", "none"):
        return None if value == "none" else "auto"
    try:
        tile = int(value)
    except ValueError:
        raise click.BadParameter("use a size in pixels, 'auto' or 'none'", param_hint="--tile") from None
    if tile < 16:
        raise click.BadParameter("tiles smaller than 16 px are not useful", param_hint="--tile")
    return tile


def _pixels_option(value: str | None, default: int, env: str, hint: str) -> int | None:
    """An option's pixel limit, else the environment variable's, else the default; all validated."""
    try:
        if value is not None:
            return limits.parse_pixels(value, hint)
        return limits.resolve_limit(default, default, env, hint)
    except UsageError as exc:
        raise click.BadParameter(str(exc), param_hint=hint) from None


class _ProviderOption(click.Option):
    """``--provider``: its help lists the provider table's choices, read when help is shown, and a
    value other than the default is checked against the table; so a run that takes the default
    (one handed to a running service, say) never imports the provider adapters."""

    def get_help_record(self, ctx: click.Context) -> tuple[str, str] | None:
        from pixelift.providers.table import provider_choices

        self.help = f"{PROVIDER_HELP}: {', '.join(provider_choices())}"
        return super().get_help_record(ctx)


PROVIDER_HELP = "auto, a provider or provider:DEVICE, from the provider table (`pixelift doctor` lists them)"


def _provider_option(value: str) -> str:
    if value == "auto":
        return value
    from pixelift.providers import validate_provider

    try:
        return validate_provider(value)
    except PixeliftError as exc:
        raise click.BadParameter(str(exc), param_hint="--provider") from None


def _is_dir(path: Path) -> bool:
    """``is_dir`` that is False for paths the OS refuses (too long, NUL bytes, loops)."""
    try:
        return path.is_dir()
    except (OSError, ValueError, RuntimeError):
        return False


def _output_is_folder(output: Path | None, raw: str | None) -> bool:
    """``-o`` names a folder when it is one, or ends with a separator (it is created)."""
    if output is None or raw is None:
        return False
    if not raw.strip() or "\0" in raw:
        raise click.BadParameter("an empty path or one with a NUL byte is not an output", param_hint="-o")
    return _is_dir(output) or raw.endswith(("/", os.sep))


def _check_output_suffix(output: Path, fmt: str | None) -> None:
    from pixelift.runtime import formats

    if output.suffix and formats.format_for_path(output) not in formats.WRITE_FORMATS:
        raise click.BadParameter(
            f"{output.name}: pixelift writes {', '.join(formats.WRITE_FORMATS)} "
            f"({', '.join(sorted(s for s, f in formats.SUFFIXES.items() if f in formats.WRITE_FORMATS))}); "
            "use one of those suffixes, or a folder",
            param_hint="-o",
        )
    if not output.suffix:
        raise click.BadParameter(
            f"{output}: no suffix, so no format; name a file such as {output.name}.png, or a folder "
            f"with a trailing separator ({output}{os.sep})",
            param_hint="-o",
        )
    if fmt and formats.format_for_path(output) != fmt.upper():
        raise click.BadParameter(
            f"{output.name} is {formats.format_for_path(output)}, but --format says {fmt.upper()}", param_hint="-o"
        )


@main.command("enhance")
@click.argument("inputs", nargs=-1, required=True)
@click.option(
    "-m",
    "--model",
    "model_ids",
    multiple=True,
    help="Model id (repeat to chain models). Default: the measured best CPU photo model.",
)
@click.option(
    "-o",
    "--output",
    "output_raw",
    help="Output file (one input), or a folder: an existing one, or any path ending with a separator.",
)
@click.option(
    "--outscale",
    help="Final scale vs the input (default: the models' scale). 1 = restore at the original size.",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["png", "tiff", "jpeg", "webp"], case_sensitive=False),
    help="Output format (default: PNG, or TIFF for TIFF input).",
)
@click.option("--quality", type=click.IntRange(1, 100), default=95, show_default=True, help="JPEG/WebP quality.")
@click.option("--recursive", is_flag=True, help="Descend into sub-folders of input folders.")
@click.option("--overwrite", is_flag=True, help="Replace existing outputs (and the input, if it is the output).")
@click.option("--skip-existing", is_flag=True, help="Skip inputs whose output exists (resume a batch).")
@click.option(
    "--provider",
    cls=_ProviderOption,
    default="auto",
    show_default=True,
    callback=lambda _ctx, _param, value: _provider_option(value),
    help=PROVIDER_HELP,
)
@click.option("--strict", is_flag=True, help="Fail instead of falling back to another provider.")
@click.option(
    "--precision",
    type=click.Choice(["auto", "fp32", "bf16", "fp16", "int8"]),
    default="auto",
    show_default=True,
    help="auto: the fastest precision whose measured fidelity vs fp32 meets the gate (50 dB; 40 dB with --fast).",
)
@click.option("--fast", is_flag=True, help="Lower the fidelity gate of --precision auto to 40 dB PSNR vs fp32.")
@click.option(
    "--denoise",
    default=None,
    help="auto: measure the noise and remove it first (FFDNet, noise map per pixel; clean images are left "
    "alone); off; or a level (sigma in 8-bit units, 0-75). Default: only a denoise model (-m ffdnet-rgb) "
    "denoises, with the measured noise.",
)
@click.option(
    "--auto",
    is_flag=True,
    help="Autopilot: analyse each image (noise, JPEG quality, content) and choose the steps "
    "(denoise -> de-JPEG -> upscale to --outscale, default 2); the reasons are in --json and -v.",
)
@click.option(
    "--denoise-strength",
    default="1",
    show_default=True,
    help="0-2: scales the noise map (below 1 keeps more grain and detail).",
)
@click.option("--tile", default="auto", show_default=True, help="Tile size in px, 'auto' (from free memory) or 'none'.")
@click.option(
    "--overlap",
    type=click.IntRange(0, 256),
    default=None,
    help="Tile overlap in input px (default: measured per architecture, see `pixelift models show`).",
)
@click.option(
    "--blend",
    type=click.Choice(["linear", "cosine", "gaussian", "crop"]),
    default=None,
    help="How overlapping tiles are blended.",
)
@click.option("--batch", type=click.IntRange(1, 64), default=1, show_default=True, help="Tiles per inference call.")
@click.option(
    "--max-pixels",
    default=None,
    help="Refuse inputs larger than this many pixels (decompression-bomb guard; default 200 MP "
    "or $PIXELIFT_MAX_PIXELS). 'none' disables the guard.",
)
@click.option(
    "--max-output-pixels",
    default=None,
    help="Refuse jobs whose output would be larger than this many pixels, before anything is allocated "
    "(default 500 MP or $PIXELIFT_MAX_OUTPUT_PIXELS). 'none' disables the guard.",
)
@click.option("-v", "--verbose", is_flag=True, help="Log the provider selection reasoning and each fallback.")
@click.option("-q", "--quiet", is_flag=True, help="No progress output.")
@click.option(
    "--json", "as_json", is_flag=True, help="One JSON line per file: status, output, model, provider, seconds, error."
)
@click.option(
    "--server/--no-server",
    default=None,
    help="Run through a warm `pixelift serve` (falls back to in-process, with a warning, when none is up). "
    "Default: through a service when one is up, else in-process (PIXELIFT_SERVER: auto, off or start).",
)
@click.option(
    "--stream",
    "stream_mode",
    type=click.Choice(["auto", "on", "off"]),
    default="auto",
    show_default=True,
    help="Write TIFF/PNG outputs by rows as the tiles finish, in memory that does not grow with the output "
    "(auto: outputs of 100 MP or more; on: every file, or refuse one that cannot stream).",
)
@click.option(
    "--engine",
    type=click.Choice(["local", "ray"]),
    default="local",
    show_default=True,
    help="ray: spread the files over a Ray cluster (pip install 'pixelift[ray]'); see --address.",
)
@click.option("--address", default=None, help="With --engine ray: the cluster (`ray start --head` prints it).")
@click.option(
    "--workers", type=click.IntRange(1, 100_000), default=None, help="With --engine ray: actors (default: one per CPU)."
)
def enhance_cmd(
    inputs: tuple[str, ...],
    model_ids: tuple[str, ...],
    output_raw: str | None,
    outscale: str | None,
    fmt: str | None,
    quality: int,
    recursive: bool,
    overwrite: bool,
    skip_existing: bool,
    provider: str,
    strict: bool,
    precision: str,
    fast: bool,
    denoise: str | None,
    auto: bool,
    denoise_strength: str,
    tile: str,
    overlap: int | None,
    blend: str | None,
    batch: int,
    max_pixels: str | None,
    max_output_pixels: str | None,
    verbose: bool,
    quiet: bool,
    as_json: bool,
    server: bool | None,
    stream_mode: str,
    engine: str,
    address: str | None,
    workers: int | None,
) -> None:
    """Upscale, denoise or de-JPEG images and folders of images.

    \b
    Exit codes: 0 every file succeeded (or was skipped); 1 at least one file failed
    (the others were still processed); 2 usage error (bad option, unknown model).
    """
    if verbose:
        logging.getLogger("pixelift").setLevel(logging.INFO)
    try:
        scale = None if outscale is None else limits.parse_scale(outscale, "--outscale")
    except UsageError as exc:
        raise click.BadParameter(str(exc), param_hint="--outscale") from None
    if skip_existing and overwrite:
        raise click.UsageError("--skip-existing keeps existing outputs, --overwrite replaces them: choose one")
    if auto and (model_ids or denoise is not None):
        raise click.UsageError("--auto chooses the models and the denoising itself; drop -m / --denoise")
    output = Path(output_raw) if output_raw is not None else None
    into_folder = _output_is_folder(output, output_raw)
    tile_size = _tile_option(tile)
    from pixelift.cli_serve import enhance_via_server, find_service, server_mode

    try:
        strength = limits.parse_range(denoise_strength, 0.0, 2.0, "--denoise-strength")
        # read by the runtime, here or in a service: a bad value is refused either way
        tile_memory = limits.tile_memory_bytes()  # a service is handed it: it sizes tiles as this run would
        limits.compile_cache_bytes()
        limits.max_stream_pixels()
        mode = server_mode()
    except UsageError as exc:
        raise click.UsageError(str(exc)) from exc
    max_in = _pixels_option(max_pixels, limits.DEFAULT_MAX_PIXELS, limits.ENV_MAX_PIXELS, "--max-pixels")
    max_out = _pixels_option(
        max_output_pixels, limits.DEFAULT_MAX_OUTPUT_PIXELS, limits.ENV_MAX_OUTPUT_PIXELS, "--max-output-pixels"
    )
    many = len(inputs) > 1 or any(_is_dir(Path(i)) for i in inputs)
    into_folder = into_folder or (many and output is not None and not output.suffix)
    files = _collect(inputs, recursive, output if into_folder else None)
    if output is not None and not into_folder:
        if many:
            raise click.UsageError("with several inputs, -o must be a folder (end it with a separator to create one)")
        _check_output_suffix(output, fmt)
    destinations = _plan_outputs(
        files, output if (many or into_folder) else None, fmt, single=None if (many or into_folder) else output
    )
    if engine == "local" and (address is not None or workers is not None):
        raise click.UsageError("--address and --workers go with --engine ray")
    if engine == "ray" and server:
        raise click.UsageError("--server runs the files on the local service, --engine ray on a cluster: choose one")
    if server is not False and engine == "local":  # through a running `pixelift serve` (None: in-process)
        client = find_service(mode, required=bool(server))
        if client is not None and overwrite and any(_same_file(s, d) for s, d in destinations.items()):
            if server:
                click.echo("WARNING: an input is its own output (--overwrite), which a service never writes: "
                           "running here", err=True)  # fmt: skip
            client = None
        if client is not None:  # the service validates the job as an Enhancer would, and runs it: no numpy here
            job = {
                "model": "auto" if auto else list(model_ids),
                "scale": scale,
                "precision": precision,
                "provider": provider,
                "strict": strict,
                "fast": fast,
                "denoise": denoise,
                "denoise_strength": strength,
                "tile": "none" if tile_size is None else tile_size,
                "overlap": overlap,
                "blend": blend,
                "batch": batch,
                "tile_memory": tile_memory,
                "max_pixels": "none" if max_in is None else max_in,
                "max_output_pixels": "none" if max_out is None else max_out,
                "stream": stream_mode,
            }
            code = enhance_via_server(
                client, job, destinations, fmt=fmt, quality=quality, overwrite=overwrite,
                skip_existing=skip_existing, as_json=as_json, quiet=quiet,
            )  # fmt: skip
            sys.exit(code)
    from pixelift import models
    from pixelift.runtime import tiling
    from pixelift.runtime.enhancer import AutoEnhancer, Enhancer, TileOptions

    try:
        tiles = TileOptions(
            tile=tile_size,
            overlap=overlap,  # None: each model's measured overlap
            blend=tiling.Blend(blend) if blend else tiling.DEFAULT_BLEND,
            batch=batch,
        )
        common: dict[str, Any] = dict(
            provider=provider,
            strict=strict,
            tiles=tiles,
            max_pixels=max_in,
            max_output_pixels=max_out,
            precision=precision,
            fast=fast,
            denoise_strength=strength,
        )
        if auto:
            enh: Enhancer = AutoEnhancer(outscale=2.0 if scale is None else scale, **common)
        else:
            enh = Enhancer(list(model_ids) or models.DEFAULT_MODEL, outscale=scale, denoise=denoise, **common)
    except PixeliftError as exc:
        raise click.UsageError(str(exc)) from exc
    show = not (quiet or as_json) and sys.stderr.isatty()  # a bar in a log file is noise
    failures = 0
    todo: list[tuple[Path, Path]] = []
    early: dict[Path, dict[str, Any]] = {}  # skipped, or refused before reading
    for src, _ in files:
        dst = destinations[src]
        try:
            if dst.exists() and skip_existing:
                early[src] = _record(src, enh.model_ids, output=str(dst), status="skipped", seconds=0.0)
            elif dst.exists() and not overwrite:
                raise OutputExistsError(f"{dst} exists; use --overwrite or --skip-existing")
            else:
                todo.append((src, dst))
        except (PixeliftError, OSError, ValueError) as exc:  # what the OS says of a path (too long, NUL byte)
            early[src] = _record(src, enh.model_ids, output=str(dst), status="error", error=str(exc), seconds=0.0)
    if engine == "ray":
        options = (
            dict(common, outscale=2.0 if scale is None else scale)
            if auto
            else dict(common, model=list(model_ids) or models.DEFAULT_MODEL, outscale=scale, denoise=denoise)
        )
        run = dict(auto=auto, format=(fmt or "").upper() or None, quality=quality, overwrite=overwrite)
        code = _enhance_on_ray(
            enh, files, todo, early, options, run, stream=stream_mode, address=address, workers=workers,
            as_json=as_json, quiet=quiet, show=show,
        )  # fmt: skip
        sys.exit(code)
    bar = FileBars(enabled=show)
    if show:
        enh.progress = bar.advance
    todo = _stream_files(enh, todo, early, fmt=fmt, quality=quality, overwrite=overwrite, mode=stream_mode, bar=bar)
    outcomes = enh.enhance_files(
        todo, format=(fmt or "").upper() or None, quality=quality, overwrite=overwrite, on_start=bar.start
    )
    try:
        for src, _ in files:
            rec = early.get(src) or _outcome_record(next(outcomes), enh.model_ids, enh.warnings)
            failures += rec["status"] == "error"
            bar.close()
            report(rec, src, as_json=as_json, quiet=quiet)
    finally:
        outcomes.close()
        bar.close()
    if not files:
        click.echo("no input images found", err=True)
        sys.exit(EXIT_FAILED)
    if failures:
        sys.exit(EXIT_FAILED)


def _stream_files(
    enh: Any,
    todo: list[tuple[Path, Path]],
    early: dict[Path, dict[str, Any]],
    *,
    fmt: str | None,
    quality: int,
    overwrite: bool,
    mode: str,
    bar: FileBars,
) -> list[tuple[Path, Path]]:
    """Run the files that stream (:mod:`pixelift.runtime.stream`) here, one at a time, their records into
    ``early``; return the others, for the in-memory batch."""
    from pixelift.runtime import stream

    rest: list[tuple[Path, Path]] = []
    big: list[tuple[Path, Path | None]] = []
    for src, dst in todo:
        try:
            (big if stream.should_stream(enh, src, dst, format=fmt, mode=mode) else rest).append((src, dst))
        except PixeliftError as exc:  # refused up front: JPEG/WebP past its size limit, --stream on that cannot
            early[src] = _record(src, enh.model_ids, output=str(dst), status="error", error=str(exc), seconds=0.0)
    outcomes = stream.enhance_files(
        enh, big, format=(fmt or "").upper() or None, quality=quality, overwrite=overwrite, stream="on",
        on_start=bar.start,
    )  # fmt: skip
    for o in outcomes:
        bar.close()
        streamed = {"streamed": True, "tile": getattr(o.result, "tile", None)} if o.error is None else {}
        early[o.src] = _outcome_record(o, enh.model_ids, enh.warnings) | streamed
    return rest


def _enhance_on_ray(
    enh: Any,
    files: list[tuple[Path, Path]],
    todo: list[tuple[Path, Path]],
    early: dict[Path, dict[str, Any]],
    options: dict[str, Any],
    run: dict[str, Any],
    *,
    stream: str,
    address: str | None,
    workers: int | None,
    as_json: bool,
    quiet: bool,
    show: bool,
) -> int:
    """``--engine ray``: the files on a Ray cluster (:mod:`pixelift.engines.ray_engine`). One record per file as
    it finishes, then a summary (with --json, a JSON line with ``"summary": true`` and the failed inputs)."""
    import time

    from pixelift.engines.ray_engine import EnhanceSpec, RayOptions, enhance_files

    t0 = time.perf_counter()
    records = list(early.items())
    for src, rec in records:
        report(rec, src, as_json=as_json, quiet=quiet)
    try:
        spec = EnhanceSpec(options, stream=stream, **run)
        # the workers log in their own processes: their decisions (a provider passed over) reach
        # the user through the records, unless this process logged them too (choosing for them)
        with logs.decisions() as logged:
            warned = Warnings(logged)
            for o in enhance_files(spec, todo, RayOptions(address=address, workers=workers, progress=show)):
                rec = _outcome_record(o, enh.model_ids)
                records.append((o.src, rec))
                warned.say(rec.get("warnings") or ())
                report(rec, o.src, as_json=as_json, quiet=quiet)
    except PixeliftError as exc:  # Ray missing, the cluster unreachable
        raise click.ClickException(str(exc)) from None
    counts = {k: sum(r["status"] == k for _, r in records) for k in ("ok", "skipped", "error")}
    summary = {
        "summary": True,
        "engine": "ray",
        "files": len(files),
        **counts,
        "failed": [str(s) for s, r in records if r["status"] == "error"],
        "seconds": round(time.perf_counter() - t0, 3),
    }
    if as_json:
        click.echo(json.dumps(summary))
    elif not quiet:
        click.echo(f"ray: {counts['ok']} ok, {counts['skipped']} skipped, {counts['error']} failed "
                   f"in {summary['seconds']} s", err=True)  # fmt: skip
    if not files:
        click.echo("no input images found", err=True)
    return EXIT_FAILED if counts["error"] or not files else 0


def _record(src: Path, model: list[str], **fields: Any) -> dict[str, Any]:
    rec: dict[str, Any] = {
        "input": str(src),
        "status": "ok",
        "output": None,
        "model": model,
        "provider": None,
        "seconds": None,
        "error": None,
        "provider_rejected": {},
        "notes": [],
        "warnings": [],
    }
    rec.update(fields)
    return rec


def _outcome_record(o: Any, model: list[str], warnings: Sequence[str] = ()) -> dict[str, Any]:
    """The JSON record of one :class:`~pixelift.runtime.enhancer.FileOutcome`; a failed file's carries
    ``warnings``, what loading the models said (a provider passed over), as a result would."""
    rec = _record(o.src, model, output=None if o.output is None else str(o.output), seconds=round(o.seconds, 3))
    if o.error is not None:
        rec["warnings"] = list(warnings)
        exc = o.error
        if not isinstance(exc, PixeliftError | OSError | ValueError | RuntimeError):
            # a bug on one file must not stop the batch or show a traceback
            if os.environ.get(ENV_DEBUG):
                raise exc
            return rec | {"status": "error", "error": f"internal error: {type(exc).__name__}: {exc}"}
        # OSError/ValueError/RuntimeError: what the OS says of a path (too long, NUL byte, loop)
        return rec | {"status": "error", "error": str(exc)}
    res = o.result
    rec.update(provider=res.providers, provider_rejected=res.rejected, notes=res.notes, warnings=res.warnings)
    if res.autopilot is not None:
        rec.update(model=res.models, autopilot=res.autopilot)
    return rec


def _register_commands() -> None:
    # click commands only: the bench and the bundle code are imported when they run
    from pixelift.bench.cli import bench_cmd, compare_cmd
    from pixelift.cli_artifacts import artifacts_cmd
    from pixelift.cli_serve import serve_cmd

    for cmd in (bench_cmd, compare_cmd, artifacts_cmd, serve_cmd):
        main.add_command(cmd)


_register_commands()


def run() -> None:
    """The ``pixelift`` console script: :func:`main`, then an exit without the interpreter's teardown.

    Once a command has returned with only the main thread left, teardown would only free memory
    and unload libraries (OpenVINO's compiled models and plugins): 0.05 s of a 0.6 s run on a small
    photo here. The atexit handlers (Ray's shutdown, temporary folders, logging) still run first;
    with any other thread alive the exit is the usual one, which waits for it."""
    try:
        main()
    except SystemExit as exc:
        code = exc.code
    else:
        code = None
    others = [t for t in threading.enumerate() if t is not threading.main_thread() and not t.daemon]
    if others:
        sys.exit(code)
    if code is not None and not isinstance(code, int):
        print(code, file=sys.stderr)  # as the interpreter reports sys.exit("message")
        code = 1
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a closed pipe or stream
            stream.flush()
    os._exit(code or 0)


if __name__ == "__main__":
    run()
