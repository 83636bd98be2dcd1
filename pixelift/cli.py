"""The ``pixelift`` command line. Choices are read from the registries.

Exit codes: 0 success; 1 at least one item failed (the others still ran); 2 usage error; 130 interrupted.
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
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from pixelift import limits, paths
from pixelift.cli_report import ENV_DEBUG, EXIT_FAILED, EXIT_INTERRUPTED
from pixelift.errors import MissingExtraError, PixeliftError, UsageError, WeightSourceError
from pixelift.ids import validate_id

if TYPE_CHECKING:
    from pixelift.artifacts import FidelityRecord
    from pixelift.models.spec import ModelSpec



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




class GuardedGroup(click.Group):
    """No traceback reaches a user: a pixelift error is a one-line message (exit 1, or 2 for a
    usage error); anything unexpected is reported as an internal error (exit 1), with the
    traceback only under ``PIXELIFT_DEBUG=1``."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.ClickException, click.Abort, SystemExit):
            raise
        except KeyboardInterrupt:  # Ctrl-C: said plainly, with the shell's code for it (click said "Aborted!", 1)
            click.echo("interrupted: nothing partial was written; files finished before are kept", err=True)
            raise SystemExit(EXIT_INTERRUPTED) from None
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

    key = f"{key}@{rec.target}"  # openvino:int8 runs an ONNX QDQ graph and an IR: which one is said
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
    except (click.ClickException, KeyboardInterrupt):
        raise
    except Exception as exc:  # a bug on one target must not stop the others, nor show a traceback
        if os.environ.get(ENV_DEBUG):
            raise
        failures += 1
        result.update(status="error", error=f"internal error: {type(exc).__name__}: {exc}")
        if not as_json:
            click.echo(f"{target}: error: {result['error']} (set {ENV_DEBUG}=1 for the traceback)", err=True)
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


def _register_commands() -> None:
    # click commands only: the bench and the bundle code are imported when they run
    from pixelift.bench.cli import bench_cmd, compare_cmd
    from pixelift.cli_artifacts import artifacts_cmd
    from pixelift.cli_enhance import enhance_cmd
    from pixelift.cli_serve import serve_cmd

    for cmd in (enhance_cmd, bench_cmd, compare_cmd, artifacts_cmd, serve_cmd):
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
