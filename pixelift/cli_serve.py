"""``pixelift serve`` and the client side of ``pixelift enhance --server``.

The service itself is :mod:`pixelift.service` (HTTP on the ``serve`` extra); this module holds
the click command, starting a detached service, and routing an ``enhance`` run through a running
service (falling back to running in-process, out loud, when none is up).
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import click

from pixelift.cli_report import FileBars, Warnings, report
from pixelift.errors import MissingExtraError, UsageError
from pixelift.models import DEFAULT_MODEL
from pixelift.service import state
from pixelift.service.client import ServiceClient, ServiceError

log = logging.getLogger("pixelift.serve")

ENV_SERVER = state.ENV_SERVER
SERVER_MODES = ("", "off", "auto", "start")
DETACH_WAIT_S = 60.0
DEFAULT_IDLE_MINUTES = 30.0


def _options_args(host: str, port: int, allow_remote: bool, concurrency: int, idle_minutes: float, max_warm: int, min_free_mb: int) -> list[str]:
    args = ["--host", host, "--port", str(port), "--concurrency", str(concurrency), "--idle-minutes", f"{idle_minutes:g}",
            "--max-warm", str(max_warm), "--min-free-mb", str(min_free_mb)]
    return [*args, "--allow-remote"] if allow_remote else args


@click.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to bind. Not loopback only with --allow-remote.")
@click.option("--port", type=click.IntRange(0, 65535), default=0, show_default=True, help="0: a free port (clients read it from service.json).")
@click.option("--allow-remote", is_flag=True, help="Allow binding a non-loopback interface; any Host header then passes (the token is still required).")
@click.option("--concurrency", type=click.IntRange(1, 64), default=1, show_default=True, help="Jobs run at once.")
@click.option("--idle-minutes", type=click.FloatRange(0), default=DEFAULT_IDLE_MINUTES, show_default=True, help="Stop after this long without a request or job; 0: never.")
@click.option("--max-warm", type=click.IntRange(1, 64), default=4, show_default=True, help="Warm model configurations kept (LRU).")
@click.option("--min-free-mb", type=click.IntRange(0), default=1024, show_default=True, help="Evict warm models while free memory is under this.")
@click.option("--detach", is_flag=True, help="Start in the background (log in the service folder), print the URL when it answers.")
@click.option("--status", "show_status", is_flag=True, help="Print the running service's health as JSON (exit 1 if none).")
@click.option("--stop", is_flag=True, help="Stop the running service (its jobs are cancelled; unfinished outputs are not written).")
def serve_cmd(
    host: str,
    port: int,
    allow_remote: bool,
    concurrency: int,
    idle_minutes: float,
    max_warm: int,
    min_free_mb: int,
    detach: bool,
    show_status: bool,
    stop: bool,
) -> None:
    """A warm local service (HTTP + JSON on 127.0.0.1) for plug-ins and repeated runs.

    \b
    Every request needs the token in the service folder's `token` file (0600), sent as the
    X-Pixelift-Token header; the Host header must be a loopback name. Endpoints under /v1:
    health, models, providers, jobs (POST to submit), jobs/ID, jobs/ID/cancel, jobs/ID/events
    (server-sent events), shutdown.
    """
    chosen = [name for name, on in (("--status", show_status), ("--stop", stop), ("--detach", detach)) if on]
    if len(chosen) > 1:
        raise click.UsageError(f"{', '.join(chosen[:-1])} and {chosen[-1]} cannot be used together: choose one")
    if show_status or stop:  # only starting one may create the service folder
        candidates = state.service_dir_candidates()
        client = next(filter(None, (ServiceClient.discover(c) for c in candidates)), None)
        if client is None:
            where = " or ".join(str(c) for c in candidates)
            click.echo(f"no pixelift service is running (service folder {where})", err=True)
            sys.exit(1)
        if show_status:
            click.echo(json.dumps({"url": client.base_url, **client.health()}, indent=2))
        else:
            pid = int(client.health()["pid"])
            client.shutdown()
            _wait_gone(pid)
            click.echo(f"stopped the pixelift service (pid {pid})")
        return
    try:
        folder = state.service_dir()
    except OSError as exc:
        raise click.ClickException(f"the service folder cannot be made ({exc}); set {state.ENV_SERVICE_DIR} to a writable folder") from None
    try:
        import aiohttp  # noqa: F401
    except ImportError:
        raise MissingExtraError("`pixelift serve` needs the serve extra: pip install 'pixelift[serve]'") from None
    from pixelift.service.app import ServeOptions, is_loopback

    if not is_loopback(host) and not allow_remote:
        raise UsageError(f"--host {host} is not a loopback address; pass --allow-remote to bind it (anyone who can reach it and has the token can run jobs)")
    options = ServeOptions(host, port, allow_remote, concurrency, idle_minutes, max_warm, min_free_mb)
    if detach:
        _detach(folder, _options_args(host, port, allow_remote, concurrency, idle_minutes, max_warm, min_free_mb))
        return
    _run_foreground(folder, options)


def _run_foreground(folder: Path, options: Any) -> None:
    import asyncio

    from filelock import FileLock, Timeout

    from pixelift.service.app import serve

    lock = FileLock(str(folder / state.LOCK_FILE), mode=0o600)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        info = state.read_info(folder)
        where = f" at {info.url} (pid {info.pid})" if info else ""
        raise click.ClickException(f"a pixelift service is already running{where}; `pixelift serve --stop` stops it") from None
    try:
        stale = state.read_info(folder)
        if stale is not None:
            log.info("replacing the stale service.json of pid %d (that service is gone)", stale.pid)

        def ready(info: state.ServiceInfo) -> None:
            click.echo(f"pixelift serve: listening on {info.url} (pid {info.pid}); token in {folder / state.TOKEN_FILE}", err=True)

        asyncio.run(serve(options, folder, ready))
    finally:
        lock.release()


def _wait_gone(pid: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while state.pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)


def _detach(folder: Path, args: list[str]) -> None:
    click.echo(start_detached(folder, args).base_url)


def start_detached(folder: Path, args: list[str]) -> ServiceClient:
    """The running service, else one started in the background (its log in the service folder).
    Two callers starting one at once both get the one that won the folder's lock."""
    running = ServiceClient.discover(folder)
    if running is not None:
        return running
    from filelock import FileLock, Timeout

    log_path = folder / state.LOG_FILE
    with os.fdopen(os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600), "ab") as log_file:
        log_start = os.fstat(log_file.fileno()).st_size  # the log keeps earlier services' lines
        proc = subprocess.Popen(
            [sys.executable, "-m", "pixelift.cli", "serve", *args],
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=log_file,
            start_new_session=True,
            close_fds=True,
            creationflags=getattr(subprocess, "DETACHED_PROCESS", 0) | getattr(subprocess, "CREATE_NEW_PROCESS_GROUP", 0),
        )
    deadline = time.monotonic() + DETACH_WAIT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            client = ServiceClient.discover(folder)
            if client is not None:
                return client
            lock = FileLock(str(folder / state.LOCK_FILE), mode=0o600)
            try:
                lock.acquire(timeout=0)
            except Timeout:  # ours lost the lock to another service, still starting: wait for that one
                time.sleep(0.1)
                continue
            lock.release()
            said = _read_from(log_path, log_start).strip().splitlines()
            error = next((line.removeprefix("Error: ") for line in reversed(said) if line.startswith("Error: ")), None)
            if error is not None:  # the service's own one-line refusal (a port in use, a bad folder)
                raise click.ClickException(f"the service did not start: {error}")
            raise click.ClickException(f"the service did not start: {' / '.join(said[-3:]) or 'no message'} (log: {log_path})")
        info = state.read_info(folder)
        if info is not None and info.pid == proc.pid:
            client = ServiceClient.discover(folder)
            if client is not None:
                return client
        time.sleep(0.1)
    raise click.ClickException(f"the service did not answer within {DETACH_WAIT_S:g} s (log: {log_path})")


def _read_from(path: Path, offset: int) -> str:
    with path.open("rb") as f:
        f.seek(offset)
        return f.read().decode("utf-8", errors="replace")


# --- enhance --server ------------------------------------------------------------------------


def server_mode() -> str:
    """``PIXELIFT_SERVER``: ``auto`` (unset or empty: through a running service, else in-process),
    ``off`` (in-process) or ``start`` (a running service, else one started in the background, which
    stops itself after ``serve``'s default idle time)."""
    value = os.environ.get(ENV_SERVER, "").strip().lower()
    if value not in SERVER_MODES:
        raise UsageError(
            f"{ENV_SERVER}={os.environ[ENV_SERVER]!r}: use 'auto' (a running service), "
            "'start' (a running service, else start one) or 'off'"
        )
    return value or "auto"


def find_service(mode: str, *, required: bool) -> ServiceClient | None:
    """The running service an ``enhance`` run goes through (``mode``: :func:`server_mode`), or None to
    run in-process (none up: with ``--server`` that fallback is logged as a warning)."""
    if not required and mode == "off":
        return None
    if mode != "start":  # only where a service was started: looking creates nothing
        found = state.existing_service_dir()
        client = None if found is None else ServiceClient.discover(found)
        if client is None and required:
            log.warning("no pixelift service is running (start one with `pixelift serve --detach`): "
                        "falling back to running in-process")
        return _same_install(client)
    try:
        folder = state.service_dir()
    except OSError as exc:  # so no service can be up there either
        log.warning(f"the service folder cannot be made ({exc}); running in-process")
        return None
    client = ServiceClient.discover(folder)
    if client is not None:
        return _same_install(client)
    return _start_for_enhance(folder)  # says so when it cannot


def _same_install(client: ServiceClient | None) -> ServiceClient | None:
    """``client`` when its service runs this pixelift's code on this run's model cache, else None, said
    (one left running across an upgrade, or from another environment, would refuse or treat a job
    differently; one on another cache would not know this run's own models)."""
    if client is None:
        return None
    if client.install != state.install_id():
        where = client.install or "a pixelift from before this one"
        log.warning("the pixelift service at %s runs another installation (%s): running in-process "
                    "(`pixelift serve --stop` stops it)", client.base_url, where)
        return None
    if client.home is not None and client.home != state.home_id():
        log.warning("the pixelift service at %s uses another model cache (%s; this run's is %s, see PIXELIFT_HOME): "
                    "running in-process", client.base_url, client.home, state.home_id())
        return None
    return client


def _start_for_enhance(folder: Path) -> ServiceClient | None:
    try:
        missing = importlib.util.find_spec("aiohttp") is None
    except ValueError:  # in sys.modules as None (blocked): not importable either
        missing = True
    if missing:
        log.warning(f"{ENV_SERVER}=start: the service needs the serve extra (pip install 'pixelift[serve]'); "
                    "running in-process")
        return None
    try:
        client = start_detached(folder, [])
    except click.ClickException as exc:
        log.warning(f"{ENV_SERVER}=start: {exc.message}; running in-process")
        return None
    except OSError as exc:  # a service folder that cannot be written
        log.warning(f"{ENV_SERVER}=start: the service cannot start here ({exc}); running in-process")
        return None
    log.info("using the pixelift service at %s (it stops itself after %g idle minutes; `pixelift serve --stop`)",
             client.base_url, DEFAULT_IDLE_MINUTES)
    return client


def enhance_via_server(
    client: ServiceClient,
    config: dict[str, Any],
    destinations: dict[Path, Path],
    *,
    fmt: str | None,
    quality: int,
    overwrite: bool,
    skip_existing: bool,
    as_json: bool,
    quiet: bool,
) -> int:
    """Run the batch through the service (``config``: the job's Enhancer fields, which the service
    validates); the exit code."""
    log_file = None if client.folder is None else client.folder / state.LOG_FILE
    where = log_file if log_file is not None and log_file.is_file() else "the output of `pixelift serve`"
    log.info("running through the pixelift service at %s (its log has the model and provider choices: %s)",
             client.base_url, where)
    # what an in-process run names in a record of a file that never ran: the models asked for
    asked = config["model"] if isinstance(config["model"], list) else []
    asked = asked or ([] if config["model"] == "auto" else [DEFAULT_MODEL])
    todo: dict[Path, Path] = {}
    for src, dst in destinations.items():
        if dst.exists() and skip_existing:
            skipped = _record(str(src), "skipped", str(dst), model=asked) | {"seconds": 0.0}
            report(skipped, src, as_json=as_json, quiet=quiet)
        else:
            todo[src] = dst
    progress = _JobReport(list(todo.items()), asked, as_json=as_json, quiet=quiet)
    if todo:
        job = {
            "inputs": [str(p.absolute()) for p in todo],
            "outputs": [str(p.absolute()) for p in todo.values()],
            **config,
            "format": fmt,
            "quality": quality,
            "overwrite": overwrite,
        }
        job_id: str | None = None
        try:
            submitted = client.submit(job)
            job_id, final = submitted["id"], submitted
            for _name, status in client.events(job_id):
                final = status
                # queued behind another job (a job between two of the service's turns is queued a moment too)
                queued = status["status"] == "queued" and not progress.waited and _another_job_running(client)
                progress.update(status["files"], queued=queued)
            progress.update(final["files"])
        except ServiceError as exc:
            if exc.status in (400, 413):
                raise UsageError(f"the service refused the job: {exc}") from None
            click.echo(f"error: {exc}; files not finished were not written", err=True)
            return 1
        except KeyboardInterrupt:
            if job_id is not None:  # Ctrl-C during the submit itself leaves nothing to cancel
                client.cancel(job_id)
            raise
        finally:
            progress.bars.close()
    if not destinations:
        click.echo("no input images found", err=True)
    return 1 if progress.failures or not destinations else 0


class _JobReport:
    """What an in-process run shows, from the job's statuses as they arrive: a tile bar for the file
    running, a first run's one-time work as it starts, each file's report as it ends (after what
    loading its models warned of, once)."""

    def __init__(self, files: list[tuple[Path, Path]], asked: list[str], *, as_json: bool, quiet: bool) -> None:
        self.files = files  # (input, output) as the command line named them (the job has them absolute)
        self.asked = asked
        self.as_json, self.quiet = as_json, quiet
        self.bars = FileBars(enabled=not (quiet or as_json) and sys.stderr.isatty())
        self.running: int | None = None
        self.events_shown = 0
        self.reported: set[int] = set()
        self.warnings = Warnings()
        self.failures = 0
        self.waited = False

    def update(self, files: list[dict[str, Any]], *, queued: bool = False) -> None:
        if queued and not self.waited and not self.quiet:  # in-process, it would have started at once
            self.waited = True
            click.echo("waiting: the pixelift service is busy with another job (--no-server runs this one here)", err=True)
        happened = [e for f in files for e in f["events"]]
        for event in happened[self.events_shown :]:
            click.echo(f"WARNING: {event}", err=True)
        self.events_shown = max(self.events_shown, len(happened))
        for i, f in enumerate(files):
            if f["status"] == "running":
                if i != self.running:
                    self.bars.start(self.files[i][0])
                    self.running = i
                self.bars.advance(f["tiles_done"], max(1, f["tiles_total"]))
            elif f["status"] != "pending" and i not in self.reported:
                self.reported.add(i)
                self._report(f, *self.files[i])

    def _report(self, f: dict[str, Any], src: Path, dst: Path) -> None:
        self.bars.close()
        self.running = None
        ok = f["status"] == "done"
        self.failures += not ok
        self.warnings.say(f["warnings"])
        error = None if ok else (f["error"] or f["status"]).replace(str(src.absolute()), str(src))  # as named
        rec = _record(str(src), "ok" if ok else "error", str(dst) if ok else None, error, model=self.asked)
        if ok:
            rec.update(model=f["models"], provider=f["providers"])
        rec.update(seconds=f["seconds"], notes=f["notes"])
        rec.update(provider_rejected=f["provider_rejected"], warnings=f["warnings"])
        if f["autopilot"] is not None:
            rec.update(autopilot=f["autopilot"])
        report(rec, src, as_json=self.as_json, quiet=self.quiet)


def _another_job_running(client: ServiceClient) -> bool:
    try:
        return int(client.health(timeout=2.0).get("jobs", {}).get("running", 0)) > 0
    except (ServiceError, TypeError, ValueError):
        return True  # it could not say: the job is waiting for some reason


def _record(
    src: str, status: str, output: str | None, error: str | None = None, *, model: list[str]
) -> dict[str, Any]:
    """A file's record, with the fields an in-process run's has (output None: nothing written)."""
    return {"input": src, "status": status, "output": output, "model": model, "provider": None, "seconds": None,
            "error": error, "provider_rejected": {}, "notes": [], "warnings": [], "via": "service"}
