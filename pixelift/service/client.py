"""A client of ``pixelift serve`` on the standard library alone (no extra needed).

``ServiceClient.discover()`` reads ``service.json`` and the token from the service folder and
checks the service answers; it returns None when none is up (a stale file left by a killed
service included).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pixelift.errors import PixeliftError
from pixelift.service import state


class ServiceError(PixeliftError):
    """The service refused a request (``status`` is the HTTP status) or could not be reached (0)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class ServiceClient:
    def __init__(self, base_url: str, token: str, timeout: float = 30.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.timeout = timeout
        self.folder: Path | None = None  # the service folder it was discovered in
        self.install: str | None = None  # where the service's pixelift is, as its health said at discovery
        self.home: str | None = None  # and the artifact cache it uses

    @classmethod
    def discover(cls, folder: Path | None = None, timeout: float = 30.0) -> ServiceClient | None:
        folder = folder or state.existing_service_dir()
        if folder is None:
            return None
        info, token = state.read_info(folder), state.read_token(folder)
        if info is None or token is None or not state.pid_alive(info.pid):
            return None
        client = cls(info.url, token, timeout)
        client.folder = folder
        try:
            health = client.health(timeout=2.0)
        except ServiceError:
            return None
        client.install, client.home = health.get("install"), health.get("home")
        return client

    def _open(self, method: str, path: str, body: object | None, timeout: float | None) -> Any:
        import urllib.error  # with http, ssl and email: imported when a service is up, not per CLI start
        import urllib.request

        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(f"{self.base_url}/v1{path}", data=data, method=method)
        req.add_header(state.TOKEN_HEADER, self.token)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            return urllib.request.urlopen(req, timeout=timeout or self.timeout)
        except urllib.error.HTTPError as exc:
            try:
                message = json.loads(exc.read())["error"]["message"]
            except (ValueError, KeyError, TypeError):
                message = f"HTTP {exc.code}"
            raise ServiceError(exc.code, message) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ServiceError(0, f"the pixelift service at {self.base_url} cannot be reached ({reason})") from None

    def request(self, method: str, path: str, body: object | None = None, timeout: float | None = None) -> Any:
        with self._open(method, path, body, timeout) as resp:
            try:
                return json.loads(resp.read())
            except (ValueError, OSError) as exc:
                raise ServiceError(0, f"the pixelift service stopped answering mid-reply ({exc})") from None

    def health(self, timeout: float | None = None) -> dict[str, Any]:
        out: dict[str, Any] = self.request("GET", "/health", timeout=timeout)
        return out

    def submit(self, job: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = self.request("POST", "/jobs", job)
        return out

    def job(self, job_id: str, wait: float | None = None) -> dict[str, Any]:
        query = "" if wait is None else f"?wait={wait:g}"
        out: dict[str, Any] = self.request("GET", f"/jobs/{job_id}{query}", timeout=(wait or 0) + self.timeout)
        return out

    def cancel(self, job_id: str) -> dict[str, Any]:
        out: dict[str, Any] = self.request("POST", f"/jobs/{job_id}/cancel", {})
        return out

    def shutdown(self) -> dict[str, Any]:
        out: dict[str, Any] = self.request("POST", "/shutdown", {})
        return out

    def events(self, job_id: str) -> Iterator[tuple[str, dict[str, Any]]]:
        """(event name, job status) from the event stream until the job ends; ServiceError if
        the connection is lost first."""
        with self._open("GET", f"/jobs/{job_id}/events", None, timeout=None) as resp:
            name = "message"
            try:
                for raw in resp:
                    line = raw.decode("utf-8").rstrip("\r\n")
                    if line.startswith("event:"):
                        name = line[6:].strip()
                    elif line.startswith("data:"):
                        yield name, json.loads(line[5:])
                        if name == "end":
                            return
            except (OSError, ValueError) as exc:
                raise ServiceError(0, f"the pixelift service stopped during the job ({exc})") from None
        raise ServiceError(0, "the pixelift service stopped during the job (the event stream ended early)")
