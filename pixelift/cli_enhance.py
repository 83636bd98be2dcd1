"""``pixelift enhance``: files and folders through the models, in this process, on a running service or on a
Ray cluster; one report line (or JSON record) per file.

Exit codes: 0 every file succeeded (or was skipped); 1 at least one failed; 2 usage error; 130 interrupted (Ctrl-C).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

from pixelift import limits, logs
from pixelift.cli_report import ENV_DEBUG, EXIT_FAILED, FileBars, Warnings, report
from pixelift.errors import OutputExistsError, PixeliftError, UsageError
from pixelift.runtime import formats


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
                if f.is_file() and f.suffix.lower() in formats.READ_SUFFIXES and not f.stem.endswith("_pixelift"):
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
    value = value.strip().lower()
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


@click.command("enhance")
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
@click.option(
    "--quality",
    type=click.IntRange(1, 100),
    default=95,
    show_default=True,
    help="JPEG/WebP quality; 100 writes WebP lossless (bit-exact).",
)
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
    "or $PIXELIFT_MAX_PIXELS). 'none' (or 0) disables the guard.",
)
@click.option(
    "--max-output-pixels",
    default=None,
    help="Refuse jobs whose output would be larger than this many pixels, before anything is allocated "
    "(default 500 MP or $PIXELIFT_MAX_OUTPUT_PIXELS). 'none' (or 0) disables the guard.",
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
    (the others were still processed); 2 usage error (bad option, unknown model); 130 interrupted.
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
    if tile_size is None and (overlap is not None or blend is not None or batch != 1):
        named = [n for n, v in (("--overlap", overlap), ("--blend", blend), ("--batch", batch if batch != 1 else None)) if v is not None]
        raise click.UsageError(f"{', '.join(named)} act(s) on tiles, and --tile none runs each image whole: drop one")
    from pixelift.cli_serve import enhance_via_server, find_service, server_mode

    try:
        strength = limits.parse_range(denoise_strength, 0.0, 2.0, "--denoise-strength")
        # read by the runtime, here or in a service: a bad value is refused either way
        tile_memory = limits.tile_memory_bytes()  # a service is handed it: it sizes tiles as this run would
        limits.compile_cache_bytes()
        max_stream = limits.max_stream_pixels()  # the environment's; a service is handed it
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
                "max_stream_pixels": "none" if max_stream is None else max_stream,
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
            max_stream_pixels=max_stream,
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
    # without a bar to keep in place, each file is said as it ends: its outcome is yielded only once the next
    # file's models ran (a minute late on large photos, and never, for a finished file, after a Ctrl-C)
    lock = threading.Lock()
    reported: set[Path] = set()

    def say(o: Any) -> None:
        rec = _outcome_record(o, enh.model_ids, enh.warnings)
        with lock:
            report(rec, o.src, as_json=as_json, quiet=quiet)
            reported.add(o.src)

    outcomes = enh.enhance_files(
        todo, format=(fmt or "").upper() or None, quality=quality, overwrite=overwrite, on_start=bar.start,
        on_done=None if show else say,
    )  # fmt: skip
    try:
        for src, _ in files:
            ended = src not in early
            rec = early.get(src) or _outcome_record(next(outcomes), enh.model_ids, enh.warnings)
            failures += rec["status"] == "error"
            bar.close()
            if show or not ended:
                with lock:
                    report(rec, src, as_json=as_json, quiet=quiet)
                    reported.add(src)
    except KeyboardInterrupt:
        if as_json:  # a script learns which files were not done (the finished ones were said as they ended)
            with lock:
                for src, _ in files:
                    if src not in reported:
                        rec = _record(src, enh.model_ids, status="cancelled", error="interrupted (Ctrl-C)")
                        report(rec, src, as_json=True, quiet=quiet)
        raise
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
        rec.update(output=None, warnings=list(warnings))  # nothing was written, on every route
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
