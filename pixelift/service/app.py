"""The HTTP layer of ``pixelift serve`` (aiohttp, the ``serve`` extra).

Every request passes the guard first: the Host header must name a loopback address (any
Host only with ``--allow-remote``), a request carrying an ``Origin`` header (a
browser) is refused, the token must match, and bodies are size-limited. No CORS header is
ever sent. Every refusal is a status code and ``{"error": {"status": N, "message": "..."}}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hmac
import json
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from pixelift import __version__
from pixelift.errors import PixeliftError
from pixelift.service import state
from pixelift.service.jobs import EnhancerCache, Job, JobQueue, JobSpec, ProgressRouter, RequestError

log = logging.getLogger(__name__)

API = "/v1"
MAX_BODY = 1 << 20  # 1 MiB of JSON is ~10,000 paths
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1", "[::1]")
MAX_WAIT_S = 60.0
KEEPALIVE_S = 15.0


@dataclass(frozen=True)
class ServeOptions:
    host: str = "127.0.0.1"
    port: int = 0
    allow_remote: bool = False
    concurrency: int = 1
    idle_minutes: float = 30.0  # 0: never stop for idleness
    max_warm: int = 4
    min_free_mb: int = 1024
    max_queued: int = 1000


def is_loopback(host: str) -> bool:
    import ipaddress

    name = host.strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _host_name(header: str) -> str:
    """The name part of a Host header (``[::1]:8080`` -> ``::1``, ``a:80`` -> ``a``)."""
    if header.startswith("["):
        return header[1 : header.find("]")] if "]" in header else header
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


def error_response(status: int, message: str) -> web.Response:
    return web.json_response({"error": {"status": status, "message": message}}, status=status)


class Service:
    def __init__(self, options: ServeOptions, token: str, folder: Path) -> None:
        self.options = options
        self.token = token
        self.folder = folder
        self.started = time.time()
        self.stop = asyncio.Event()
        self.loop = asyncio.get_running_loop()
        self._watchers: dict[str, set[asyncio.Event]] = {}
        self.cache = EnhancerCache(ProgressRouter(), options.max_warm, options.min_free_mb << 20)
        self.queue = JobQueue(
            self.cache,
            state.Journal(folder),
            concurrency=options.concurrency,
            max_queued=options.max_queued,
            on_change=self._on_change,
        )
        # --allow-remote: clients name the machine as they reach it, so any Host passes (the
        # token and the Origin refusal still hold); otherwise loopback names only
        self.allowed_hosts = None if options.allow_remote else {n.strip("[]") for n in LOOPBACK_NAMES}

    # --- change notification (worker threads -> event loop) ---

    def _on_change(self, job: Job) -> None:
        self.loop.call_soon_threadsafe(self._wake, job.id)

    def _wake(self, job_id: str) -> None:
        for ev in self._watchers.get(job_id, ()):
            ev.set()

    async def _wait_change(self, job: Job, seen: int, timeout: float) -> None:
        ev = asyncio.Event()
        self._watchers.setdefault(job.id, set()).add(ev)
        try:
            if job.version == seen and not job.terminal:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(ev.wait(), timeout)
        finally:
            watchers = self._watchers.get(job.id)
            if watchers is not None:
                watchers.discard(ev)
                if not watchers:
                    del self._watchers[job.id]

    # --- the guard ---

    @web.middleware
    async def guard(self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
        self.queue.last_activity = time.monotonic()
        host = request.headers.get("Host", "")
        if self.allowed_hosts is not None and _host_name(host).lower() not in self.allowed_hosts:
            return error_response(
                403, f"Host {host!r} is not a loopback name; the service answers only 127.0.0.1, localhost or [::1]"
            )
        if "Origin" in request.headers:
            return error_response(403, "requests from a web page (with an Origin header) are refused; no CORS")
        given = request.headers.get(state.TOKEN_HEADER, "")
        scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
        if not given and scheme.lower() == "bearer":  # auth schemes are case-insensitive (RFC 7235)
            given = credentials.strip()
        if not given or not hmac.compare_digest(given.encode(), self.token.encode()):
            return error_response(
                401, f"missing or wrong token: send the {state.TOKEN_HEADER} header with the contents of {self.folder / state.TOKEN_FILE}"
            )
        if (request.content_length or 0) > MAX_BODY:
            return error_response(413, f"the request body is over {MAX_BODY} bytes")
        try:
            return await handler(request)
        except RequestError as exc:
            return error_response(exc.status, str(exc))
        except web.HTTPException as exc:
            if exc.status == 413:
                return error_response(413, f"the request body is over {MAX_BODY} bytes")
            return error_response(exc.status, exc.reason)
        except (ConnectionResetError, asyncio.CancelledError):
            raise
        except Exception as exc:
            log.debug("internal error on %s %s", request.method, request.path, exc_info=True)
            return error_response(500, f"internal error: {type(exc).__name__}: {exc}")

    # --- endpoints ---

    async def health(self, _request: web.Request) -> web.Response:
        return web.json_response(
            {
                "status": "ok",
                "service": "pixelift",
                "version": __version__,
                "install": state.install_id(),
                "home": state.home_id(),
                "pid": os.getpid(),
                "uptime_s": round(time.time() - self.started, 3),
                "jobs": self.queue.counts(),
                "warm_enhancers": len(self.cache),
                "evictions": self.cache.evictions,
                "rss_bytes": rss_bytes(),
                "concurrency": self.options.concurrency,
                "idle_minutes": self.options.idle_minutes,
            }
        )

    async def models(self, _request: web.Request) -> web.Response:
        rows = await asyncio.to_thread(_model_rows)
        return web.json_response({"models": rows, "auto": "the autopilot chooses the models per photo ('model': 'auto')"})

    async def providers(self, _request: web.Request) -> web.Response:
        return web.json_response(await asyncio.to_thread(_provider_report))

    async def submit(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except json.JSONDecodeError as exc:
            raise RequestError(400, f"the body is not valid JSON: {exc}") from None
        except RecursionError:
            raise RequestError(400, "the body is not valid JSON: it is nested too deeply") from None
        except UnicodeDecodeError:
            raise RequestError(400, "the body is not UTF-8 JSON") from None
        spec = await asyncio.to_thread(JobSpec.parse, body)
        job = await asyncio.to_thread(self.queue.submit, spec)
        return web.json_response(job.to_dict(), status=202)

    async def jobs(self, _request: web.Request) -> web.Response:
        return web.json_response({"jobs": self.queue.listing()})

    async def job(self, request: web.Request) -> web.Response:
        job = self.queue.get(request.match_info["job_id"])
        wait = request.query.get("wait")
        if wait is not None and not job.terminal:
            try:
                seconds = min(max(float(wait), 0.0), MAX_WAIT_S)
            except ValueError:
                raise RequestError(400, f"'wait' must be a number of seconds, not {wait!r}") from None
            deadline = time.monotonic() + seconds
            while not job.terminal and (left := deadline - time.monotonic()) > 0:
                await self._wait_change(job, job.version, left)
        return web.json_response(job.to_dict())

    async def cancel(self, request: web.Request) -> web.Response:
        job = self.queue.cancel(request.match_info["job_id"])
        return web.json_response(job.to_dict(), status=202)

    async def events(self, request: web.Request) -> web.StreamResponse:
        """Server-sent events: ``event: progress`` with the job's status on every change, then
        ``event: end`` when it is finished. The job goes on if the client leaves."""
        job = self.queue.get(request.match_info["job_id"])
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await resp.prepare(request)
        seen = -1
        try:
            while True:
                version = job.version
                if version != seen:
                    seen = version
                    name = "end" if job.terminal else "progress"
                    await resp.write(f"event: {name}\ndata: {json.dumps(job.to_dict())}\n\n".encode())
                    if name == "end":
                        break
                    continue
                await self._wait_change(job, seen, KEEPALIVE_S)
                if job.version == seen and not job.terminal:
                    await resp.write(b": keep-alive\n\n")
        except ConnectionResetError:
            pass  # the client left; the job goes on
        return resp

    async def shutdown(self, _request: web.Request) -> web.Response:
        self.loop.call_later(0.05, self.stop.set)
        return web.json_response({"status": "stopping", "jobs": self.queue.counts()}, status=202)

    async def not_found(self, request: web.Request) -> web.Response:
        allowed: set[str] = set()
        for resource in request.app.router.resources():
            match, methods = await resource.resolve(request)
            if match is None:  # None with methods: the path is an endpoint's, the method is not
                allowed |= methods
        if allowed:
            names = ", ".join(sorted(allowed))
            refusal = error_response(405, f"{request.method} {request.path} is not allowed; it takes {names}")
            refusal.headers["Allow"] = names
            return refusal
        raise RequestError(404, f"no endpoint {request.method} {request.path}; see {API}/health, {API}/models, {API}/jobs")

    def app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_BODY, middlewares=[self.guard])
        app.router.add_get(f"{API}/health", self.health)
        app.router.add_get(f"{API}/models", self.models)
        app.router.add_get(f"{API}/providers", self.providers)
        app.router.add_post(f"{API}/jobs", self.submit)
        app.router.add_get(f"{API}/jobs", self.jobs)
        app.router.add_get(f"{API}/jobs/{{job_id}}", self.job)
        app.router.add_post(f"{API}/jobs/{{job_id}}/cancel", self.cancel)
        app.router.add_get(f"{API}/jobs/{{job_id}}/events", self.events)
        app.router.add_post(f"{API}/shutdown", self.shutdown)
        app.router.add_route("*", "/{tail:.*}", self.not_found)
        return app

    async def idle_watch(self) -> None:
        if self.options.idle_minutes <= 0:
            return
        limit = self.options.idle_minutes * 60
        while not self.stop.is_set():
            await asyncio.sleep(min(5.0, max(0.2, limit / 4)))
            if not self.queue.busy() and time.monotonic() - self.queue.last_activity > limit:
                log.warning("no request for %g minute(s): stopping", self.options.idle_minutes)
                self.stop.set()


def rss_bytes() -> int | None:
    try:
        with open("/proc/self/statm", encoding="ascii") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def _model_rows() -> list[dict[str, Any]]:
    from pixelift import models
    from pixelift.artifacts import exported_targets

    return [
        {
            "id": s.id,
            "task": s.task.value,
            "scale": s.scale,
            "architecture": s.architecture,
            "content": s.content,
            "purpose": s.purpose,
            "license": s.license.split(" (")[0],
            "exported": exported_targets(s.id),
            "default": s.id == models.DEFAULT_MODEL,
        }
        for s in models.all_specs()
    ]


def _provider_report() -> dict[str, Any]:
    from pixelift.precision import CHOICES
    from pixelift.providers import probe_all, read_machine
    from pixelift.providers.table import provider_choices

    probes = probe_all(read_machine())
    return {
        "providers": {
            n: {"available": p.available, "reason": p.reason, "devices": list(p.devices)} for n, p in probes.items()
        },
        "choices": provider_choices(),
        "precisions": list(CHOICES),
    }


def bind(options: ServeOptions) -> socket.socket:
    host = options.host.strip("[]")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        if os.name == "posix":
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, options.port))
        sock.listen(128)
    except OSError as exc:
        sock.close()
        where = f"[{host}]:{options.port}" if family == socket.AF_INET6 else f"{host}:{options.port}"
        if exc.errno == errno.EADDRINUSE:
            raise PixeliftError(f"{where} is already in use; choose another --port (0: a free one)") from None
        raise PixeliftError(f"cannot listen on {where}: {exc.strerror or exc}") from None
    sock.setblocking(False)
    return sock


async def serve(options: ServeOptions, folder: Path, on_ready: Callable[[state.ServiceInfo], None]) -> None:
    """Run until shutdown, a signal or idleness; the caller holds the single-instance lock."""
    removed = state.Journal(folder).recover()
    svc = Service(options, state.new_token(), folder)
    if removed:
        log.warning("removed %d part file(s) left by a service that was killed mid-job", len(removed))
    sock = bind(options)
    runner = web.AppRunner(svc.app(), access_log=None, handle_signals=False)
    await runner.setup()
    await web.SockSite(runner, sock).start()
    port = sock.getsockname()[1]
    info = state.ServiceInfo(os.getpid(), options.host.strip("[]"), port, __version__, svc.started)
    state.publish(folder, info, svc.token)
    if sys.platform != "win32":
        for sig in (signal.SIGTERM, signal.SIGINT):
            svc.loop.add_signal_handler(sig, svc.stop.set)
    watcher = asyncio.create_task(svc.idle_watch())
    try:
        on_ready(info)
        await svc.stop.wait()
    finally:
        watcher.cancel()
        state.unpublish(folder, os.getpid())
        await asyncio.to_thread(svc.queue.close)
        await runner.cleanup()
