"""`pixelift serve` for real: a service subprocess on 127.0.0.1 (a free port), spoken to over HTTP.

Protocol refusals (token, Host, Origin, JSON, size, paths), jobs (progress, events, missing
input, cancel mid-job), `enhance --server` and its fallback, a killed service (no partial output,
a clean restart), idle shutdown, and load (4 clients x 25 jobs, memory bounded).
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from pixelift.models import DEFAULT_MODEL
from pixelift.service import state
from pixelift.service.client import ServiceClient, ServiceError
from tests.images import photo_crop

pytest.importorskip("aiohttp")

MODEL = "span-x2-ch48"
START_WAIT_S = 120.0


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    folder: Path
    client: ServiceClient

    @property
    def port(self) -> int:
        info = state.read_info(self.folder)
        assert info is not None
        return info.port

    def raw(self, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None) -> tuple[int, Any]:
        """A request with exactly these headers (http.client adds Host unless given)."""
        status, _headers, reply = self.raw_with_headers(method, path, body, headers)
        return status, reply

    def raw_with_headers(
        self, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None
    ) -> tuple[int, http.client.HTTPMessage, Any]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        try:
            hdrs = {"Host": f"127.0.0.1:{self.port}", state.TOKEN_HEADER: self.client.token, **(headers or {})}
            hdrs = {k: v for k, v in hdrs.items() if v is not None}
            conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
            for k, v in hdrs.items():
                conn.putheader(k, v)
            if body is not None:
                conn.putheader("Content-Length", str(len(body)))
            conn.endheaders(body)
            resp = conn.getresponse()
            data = resp.read()
            assert not any(h.lower().startswith("access-control") for h in resp.headers)  # no CORS, ever
            return resp.status, resp.headers, json.loads(data) if data else None
        finally:
            conn.close()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def serve_env(folder: Path) -> dict[str, str]:
    return {**os.environ, state.ENV_SERVICE_DIR: str(folder)}


BLOCK_TORCH = "import sys\nfor n in ('torch', 'spandrel', 'onnx', 'onnxslim', 'ncnn'): sys.modules[n] = None\n"


def start_server(folder: Path, *args: str, torch_free: bool = False) -> Server:
    """`pixelift serve` in a subprocess on a free loopback port; waits until it answers.
    ``torch_free``: torch and the export stage cannot be imported (a laptop install)."""
    folder.mkdir(parents=True, exist_ok=True)
    log = (folder / "test-serve.log").open("ab")
    argv = ["serve", "--idle-minutes", "20", *args]
    code = f"{BLOCK_TORCH if torch_free else ''}from pixelift.cli import main\nmain({argv!r})\n"
    proc = subprocess.Popen(
        [sys.executable, "-c", code],
        env=serve_env(folder),
        stdout=log,
        stderr=log,
    )
    deadline = time.monotonic() + START_WAIT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"serve exited {proc.returncode}: {(folder / 'test-serve.log').read_text()}")
        info = state.read_info(folder)
        if info is not None and info.pid == proc.pid:
            client = ServiceClient.discover(folder, timeout=120)
            if client is not None:
                return Server(proc, folder, client)
        time.sleep(0.1)
    proc.kill()
    raise AssertionError("serve did not answer")


def warm_model() -> None:
    """Export the test model once in this process (the service itself is torch-free)."""
    from pixelift import Enhancer

    Enhancer(MODEL, provider="cpu").enhance(photo_crop("astronaut", 16))


def save(path: Path, name: str = "astronaut", size: int = 48) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(photo_crop(name, size)).save(path)
    return path


def wait_done(client: ServiceClient, job_id: str) -> dict[str, Any]:
    while True:
        status = client.job(job_id, wait=30)
        if status["status"] in ("done", "failed", "cancelled"):
            return status


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    warm_model()
    srv = start_server(tmp_path_factory.mktemp("service"))
    yield srv
    srv.stop()


def test_token_file_is_private_and_every_request_needs_it(server: Server) -> None:
    assert (server.folder / state.TOKEN_FILE).stat().st_mode & 0o777 == 0o600
    assert server.folder.stat().st_mode & 0o777 == 0o700
    status, body = server.raw("GET", "/v1/health", headers={state.TOKEN_HEADER: None})  # type: ignore[dict-item]
    assert status == 401 and "token" in body["error"]["message"]
    status, body = server.raw("GET", "/v1/health", headers={state.TOKEN_HEADER: "wrong"})
    assert status == 401
    status, body = server.raw("GET", "/v1/jobs/abc", headers={state.TOKEN_HEADER: None})  # type: ignore[dict-item]
    assert status == 401  # unknown paths too: nothing answers without the token
    status, body = server.raw("GET", "/v1/health", headers={state.TOKEN_HEADER: None, "Authorization": f"Bearer {server.client.token}"})  # type: ignore[dict-item]
    assert status == 200 and body["service"] == "pixelift"


def test_the_bearer_scheme_is_case_insensitive(server: Server) -> None:
    token = server.client.token
    for scheme in ("bearer", "BEARER", "bEaReR"):
        status, _ = server.raw("GET", "/v1/health", headers={state.TOKEN_HEADER: None, "Authorization": f"{scheme} {token}"})  # type: ignore[dict-item]
        assert status == 200, scheme
    for auth in (f"Basic {token}", f"Bearer{token}", "bearer wrong", token):
        status, _ = server.raw("GET", "/v1/health", headers={state.TOKEN_HEADER: None, "Authorization": auth})  # type: ignore[dict-item]
        assert status == 401, auth


def test_non_loopback_host_and_browser_origin_are_refused(server: Server) -> None:
    for host in ("evil.example.com", f"evil.example.com:{server.port}", "192.168.1.5", ""):
        status, body = server.raw("GET", "/v1/health", headers={"Host": host})
        assert status == 403 and "loopback" in body["error"]["message"], host
    for host in (f"localhost:{server.port}", "localhost", f"[::1]:{server.port}"):
        assert server.raw("GET", "/v1/health", headers={"Host": host})[0] == 200, host
    status, body = server.raw("GET", "/v1/health", headers={"Origin": "http://evil.example.com"})
    assert status == 403 and "Origin" in body["error"]["message"]


def test_bad_bodies_get_400_or_413_with_a_message(server: Server, tmp_path: Path) -> None:
    src = save(tmp_path / "a.png")
    cases: list[tuple[bytes, str]] = [
        (b"{not json", "not valid JSON"),
        (b"[1, 2]", "JSON object"),
        (json.dumps({"inputs": ["relative/a.png"]}).encode(), "absolute"),
        (json.dumps({"inputs": [str(src)], "output": str(src)}).encode(), "never overwrites an input"),
        (json.dumps({"inputs": [str(src)], "model": "no-such-model"}).encode(), "no-such-model"),
        (json.dumps({"inputs": [str(src)], "scale": "big"}).encode(), "scale"),
        (json.dumps({"inputs": [str(src)], "colour": 1}).encode(), "unknown field"),
        (json.dumps({"inputs": [str(src)], "precision": "fp8"}).encode(), "precision"),
        (json.dumps({"inputs": [str(src)], "quality": 0}).encode(), "quality"),
        (json.dumps({"inputs": [str(src)], "tile": 4}).encode(), "tile"),
        (json.dumps({"inputs": [str(src)], "overwrite": "yes"}).encode(), "overwrite"),
        (json.dumps({"inputs": [str(src)], "max_pixels": "lots"}).encode(), "max_pixels"),
        (json.dumps({"inputs": [str(src)], "max_output_pixels": -5}).encode(), "max_output_pixels"),
        (json.dumps({"inputs": [str(src), str(src)], "output": str(tmp_path / "x.png")}).encode(), "folder"),
        (json.dumps({"inputs": [str(src)], "output": str(tmp_path / "x.png"), "outputs": [str(tmp_path / "y.png")]}).encode(),
         "'output' and 'outputs'"),
    ]
    for body, words in cases:
        status, reply = server.raw("POST", "/v1/jobs", body, {"Content-Type": "application/json"})
        assert status == 400, (body, reply)
        assert words in reply["error"]["message"], (words, reply)
    status, reply = server.raw("POST", "/v1/jobs", b" " * (2 << 20), {"Content-Type": "application/json"})
    assert status == 413 and "bytes" in reply["error"]["message"]
    status, reply = server.raw("GET", "/v1/nothing-here")
    assert status == 404 and "no endpoint" in reply["error"]["message"]


def test_a_wrong_method_is_405_with_the_allowed_ones(server: Server) -> None:
    for method, path, allowed in (
        ("GET", "/v1/shutdown", {"POST"}),
        ("DELETE", "/v1/health", {"GET", "HEAD"}),
        ("GET", "/v1/jobs/abc/cancel", {"POST"}),
        ("PUT", "/v1/jobs", {"GET", "HEAD", "POST"}),
    ):
        status, headers, reply = server.raw_with_headers(method, path)
        assert status == 405, (method, path, reply)
        assert {m.strip() for m in headers["Allow"].split(",")} == allowed, (method, path)
        assert sorted(allowed - {"HEAD"})[0] in reply["error"]["message"]
    status, _ = server.raw("GET", "/v1/shutdown", headers={state.TOKEN_HEADER: None})  # type: ignore[dict-item]
    assert status == 401  # the token first, as for any path
    assert server.raw("GET", "/v1/health")[0] == 200  # still up: nothing was shut down


def test_a_deeply_nested_body_is_a_400_and_the_service_stays_up(server: Server) -> None:
    status, reply = server.raw("POST", "/v1/jobs", b"[" * 100_000 + b"]" * 100_000, {"Content-Type": "application/json"})
    assert status == 400 and "nested too deeply" in reply["error"]["message"], reply
    assert server.raw("GET", "/v1/health")[0] == 200


def test_models_and_providers_come_from_the_registries(server: Server) -> None:
    models = server.client.request("GET", "/models")["models"]
    assert MODEL in {m["id"] for m in models}
    assert any(m["default"] for m in models)
    providers = server.client.request("GET", "/providers")
    assert providers["providers"]["cpu"]["available"]
    assert "auto" in providers["choices"] and "fp32" in providers["precisions"]


def test_a_job_runs_with_progress_and_events_and_a_missing_input_is_a_file_error(server: Server, tmp_path: Path) -> None:
    a = save(tmp_path / "in" / "a.png", "chelsea", 96)
    missing = tmp_path / "in" / "missing.png"
    job = server.client.submit({"inputs": [str(a), str(missing)], "output": f"{tmp_path / 'out'}/", "model": MODEL, "tile": 32})
    events = list(server.client.events(job["id"]))
    assert events[-1][0] == "end"
    final = events[-1][1]
    assert final["status"] == "failed" and final["files_done"] == final["files_total"] == 2
    ok, bad = final["files"]
    assert ok["status"] == "done" and ok["tiles_total"] >= 4 and ok["tiles_done"] == ok["tiles_total"]
    assert ok["models"] == [MODEL] and ok["providers"]
    assert Image.open(ok["output"]).size == (192, 192)
    assert bad["status"] == "error" and "not found" in bad["error"]
    assert not (tmp_path / "out" / "missing.png").exists()
    assert any(name == "progress" and s["files"][0]["tiles_done"] for name, s in events)  # tile progress was streamed
    # an existing output is refused, not overwritten
    again = wait_done(server.client, server.client.submit({"inputs": [str(a)], "output": ok["output"], "model": MODEL})["id"])
    assert again["files"][0]["status"] == "error" and "exists" in again["files"][0]["error"]


def test_a_job_goes_on_when_its_client_leaves(server: Server, tmp_path: Path) -> None:
    a = save(tmp_path / "a.png", "rocket", 96)
    job = server.client.submit({"inputs": [str(a)], "output": str(tmp_path / "a_x2.png"), "model": MODEL, "tile": 32})
    events = server.client.events(job["id"])
    next(events)
    events.close()  # the client hangs up after the first event
    assert wait_done(server.client, job["id"])["status"] == "done"
    assert (tmp_path / "a_x2.png").exists()


def test_cancel_mid_job_leaves_no_output(server: Server, tmp_path: Path) -> None:
    inputs = [save(tmp_path / "in" / f"{i}.png", "coffee", 256) for i in range(3)]
    out = tmp_path / "out"
    job = server.client.submit({"inputs": [str(p) for p in inputs], "output": f"{out}/", "model": MODEL, "tile": 16})
    for name, status in server.client.events(job["id"]):
        if name == "progress" and status["files"][0]["tiles_done"] >= 1:
            server.client.cancel(job["id"])
            break
    final = wait_done(server.client, job["id"])
    assert final["status"] == "cancelled"
    assert [f["status"] for f in final["files"]] == ["cancelled"] * 3
    assert not out.exists() or not any(out.iterdir())  # neither outputs nor part files
    status, reply = server.raw("POST", "/v1/jobs/nope/cancel", b"{}")
    assert status == 404 and "no job" in reply["error"]["message"]


def _cli(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pixelift.cli", *args], env=serve_env(folder), capture_output=True, text=True, timeout=300
    )


def test_enhance_server_goes_through_the_service(server: Server, tmp_path: Path) -> None:
    a = save(tmp_path / "a.png")
    r = _cli(server.folder, "enhance", "--server", str(a), "-o", str(tmp_path / "a_x2.png"), "-m", MODEL, "--json")
    assert r.returncode == 0, r.stderr
    rec = json.loads(r.stdout.strip().splitlines()[-1])
    assert rec["via"] == "service" and rec["status"] == "ok" and rec["model"] == [MODEL]
    assert Image.open(tmp_path / "a_x2.png").size == (96, 96)
    r = _cli(server.folder, "enhance", "--server", str(a), "-o", str(tmp_path / "a_x2.png"), "-m", MODEL)
    assert r.returncode == 1 and "exists" in r.stderr  # the per-file error comes back, no traceback
    assert "Traceback" not in r.stderr
    # the client's limits travel with the job: the service refuses what the command line would
    r = _cli(server.folder, "enhance", "--server", str(a), "-o", str(tmp_path / "b.png"), "-m", MODEL, "--max-pixels", "100")
    assert r.returncode == 1 and "over the limit of 100" in r.stderr, r.stderr
    assert not (tmp_path / "b.png").exists()
    r = _cli(server.folder, "enhance", "--server", "--engine", "ray", str(a), "-o", str(tmp_path / "c.png"), "-m", MODEL)
    assert r.returncode == 2 and "choose one" in r.stderr and "Traceback" not in r.stderr


def test_an_input_replaced_in_place_runs_here_with_a_service_up(server: Server, tmp_path: Path) -> None:
    """`enhance a.png -o a.png --overwrite` replaces its input in-process; a service never writes over an
    input, so with one up the same command runs here (said under --server), not refused."""
    a = save(tmp_path / "a.png")
    for flag in ("--server", None):
        r = _cli(server.folder, "enhance", *([flag] if flag else []), str(a), "-o", str(a), "--overwrite", "-m", MODEL, "--json")
        assert r.returncode == 0, r.stderr
        rec = json.loads(r.stdout.strip().splitlines()[-1])
        assert rec["status"] == "ok" and "via" not in rec
        assert ("own output" in r.stderr) == (flag == "--server"), r.stderr
    assert Image.open(a).size == (192, 192)  # replaced twice: x2, then x2 again


def test_enhance_server_falls_back_in_process_when_no_service_is_up(tmp_path: Path) -> None:
    warm_model()
    a = save(tmp_path / "a.png")
    folder = tmp_path / "no-service"
    folder.mkdir()
    # a stale service.json (its process is gone) counts as no service
    state.publish(folder, state.ServiceInfo(2**22 + 12345, "127.0.0.1", 9, "0", 0.0), "stale")
    r = _cli(folder, "enhance", "--server", str(a), "-o", str(tmp_path / "a_x2.png"), "-m", MODEL)
    assert r.returncode == 0, r.stderr
    assert "falling back to running in-process" in r.stderr
    assert "via the service" not in r.stdout and (tmp_path / "a_x2.png").exists()


# what the runtime imports: a run handed to the service must not pay for them (cold start, issue 13)
HEAVY = ("numpy", "PIL", "openvino", "onnxruntime", "tifffile", "imagecodecs")


def _blocked_cli(argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """The CLI in a process where importing any of HEAVY raises."""
    code = f"import sys\nfor n in {HEAVY!r}: sys.modules[n] = None\nfrom pixelift.cli import main\nmain({argv!r})\n"
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)


def test_enhance_through_the_service_imports_no_array_or_inference_package(server: Server, tmp_path: Path) -> None:
    a = save(tmp_path / "a.png")
    env = {**serve_env(server.folder), "PIXELIFT_SERVER": "auto"}
    r = _blocked_cli(["enhance", str(a), "-o", str(tmp_path / "a_x2.png"), "-m", MODEL, "--json"], env)
    assert r.returncode == 0, r.stderr
    rec = json.loads(r.stdout.strip().splitlines()[-1])
    assert rec["via"] == "service" and rec["status"] == "ok"
    assert Image.open(tmp_path / "a_x2.png").size == (96, 96)
    r = _blocked_cli(["enhance", "--help"], env)  # the provider choices are read for help, still without them
    assert r.returncode == 0 and "openvino" in r.stdout, r.stderr
    # in-process, the same block stops the run: it is real
    r = _blocked_cli(["enhance", str(a), "-o", str(tmp_path / "b_x2.png"), "-m", MODEL], {**env, "PIXELIFT_SERVER": "off"})
    assert r.returncode != 0 and not (tmp_path / "b_x2.png").exists()


def test_the_service_validates_what_the_client_no_longer_builds(server: Server, tmp_path: Path) -> None:
    a = save(tmp_path / "a.png")
    out = tmp_path / "a_x2.png"
    for args, says in [
        (["-m", "no-such-model"], "no-such-model"),
        (["-m", MODEL, "--denoise", "lots"], "denoise"),
        (["-m", MODEL, "--provider", "nope"], "--provider"),  # refused by the client's option check
        (["--auto", "-m", MODEL], "--auto chooses"),
    ]:
        r = _cli(server.folder, "enhance", "--server", str(a), "-o", str(out), *args)
        assert r.returncode == 2, (args, r.stderr)
        assert says in r.stderr and "Traceback" not in r.stderr, (args, r.stderr)
        assert not out.exists()
    for name in ("PIXELIFT_TILE_MEMORY", "PIXELIFT_COMPILE_CACHE"):  # the runtime's variables, checked by the client too
        env = {**serve_env(server.folder), name: "lots"}
        argv = [sys.executable, "-m", "pixelift.cli", "enhance", "--server", str(a), "-o", str(out), "-m", MODEL]
        r = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)
        assert r.returncode == 2 and name in r.stderr and "Traceback" not in r.stderr, r.stderr
        assert not out.exists()


def test_the_service_route_says_what_an_in_process_run_says(server: Server, tmp_path: Path) -> None:
    """A fallback from the provider asked for, and a file's notes (a CMYK JPEG converted naively),
    reach the user through a service as in-process: the same WARNING lines on stderr (the provider's
    once per run), and the same decision fields in the JSON records."""
    a = save(tmp_path / "a.png")
    cmyk = tmp_path / "c.jpg"
    Image.fromarray(photo_crop("astronaut", 48)).convert("CMYK").save(cmyk)
    said: dict[str, list[str]] = {}
    records: dict[str, list[dict[str, Any]]] = {}
    for flag in ("--server", "--no-server"):
        args = ["enhance", flag, str(a), str(cmyk), "-o", str(tmp_path / flag.strip("-")) + os.sep, "-m", MODEL]
        r = _cli(server.folder, *args, "--provider", "tensorrt", "-q")
        assert r.returncode == 0, r.stderr
        # a model's one-time build or measurement happens on whichever route runs it first: left out
        said[flag] = sorted(ln for ln in r.stderr.splitlines() if ln.startswith("WARNING") and "(one time" not in ln)
        r = _cli(server.folder, *args, "--provider", "tensorrt", "--json", "--overwrite")
        assert r.returncode == 0, r.stderr
        records[flag] = [json.loads(line) for line in r.stdout.splitlines()]
    assert said["--server"] == said["--no-server"], said
    fallback = [line for line in said["--server"] if "tensorrt" in line and "not available" in line]
    assert len(fallback) == 1, said  # once for the run, not per file
    assert any("c.jpg: CMYK converted" in line for line in said["--server"]), said
    for via, local in zip(records["--server"], records["--no-server"], strict=True):
        assert via["via"] == "service" and "via" not in local
        for key in ("input", "status", "model", "provider", "notes", "warnings", "provider_rejected"):
            assert via[key] == local[key], (key, via[key], local[key])
        assert Path(via["output"]).name == Path(local["output"]).name  # -o differs between the two runs
        assert any(p == "tensorrt" for p, _ in via["provider_rejected"][MODEL])


def test_a_failed_and_a_skipped_file_get_the_same_records_on_both_routes(server: Server, tmp_path: Path) -> None:
    """Records of files that did not run are the same in-process and through a service: output null
    (nothing written), the models asked for, no provider, the error naming the input as given."""
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 64)
    save(tmp_path / "a.png")
    records: dict[str, list[dict[str, Any]]] = {}
    for flag in ("--server", "--no-server"):
        out = f"out{flag.strip('-')}"
        (tmp_path / out).mkdir()
        (tmp_path / out / "a.png").write_bytes(b"already here")
        argv = [sys.executable, "-m", "pixelift.cli", "enhance", flag, "bad.png", "a.png", "-o", out + os.sep, "--skip-existing", "--json"]
        r = subprocess.run(argv, env=serve_env(server.folder), cwd=tmp_path, capture_output=True, text=True, timeout=300)
        assert r.returncode == 1, r.stderr
        records[flag] = sorted((json.loads(line) for line in r.stdout.splitlines()), key=lambda rec: rec["input"])
    for via, local in zip(records["--server"], records["--no-server"], strict=True):
        for key in ("input", "status", "model", "provider", "error", "provider_rejected", "notes"):
            assert via[key] == local[key], (key, via[key], local[key])
    bad = records["--server"][1]
    assert bad["status"] == "error" and bad["output"] is None and bad["error"].startswith("bad.png:"), bad
    assert bad["model"] == [DEFAULT_MODEL] and records["--server"][0]["status"] == "skipped"  # no -m: the default


def test_enhance_goes_through_a_running_service_by_default(server: Server, tmp_path: Path) -> None:
    """No flag, no PIXELIFT_SERVER: a running service takes the run; with none, the run is in-process
    and the folder a service would use is not created."""
    a = save(tmp_path / "a.png")
    env = {k: v for k, v in serve_env(server.folder).items() if k != "PIXELIFT_SERVER"}

    def run(out: str, env: dict[str, str]) -> dict[str, Any]:
        argv = [sys.executable, "-m", "pixelift.cli", "enhance", str(a), "-o", str(tmp_path / out), "-m", MODEL, "--json"]
        r = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr
        return dict(json.loads(r.stdout.splitlines()[-1]))

    assert run("served.png", env).get("via") == "service"
    r = _cli(server.folder, "-v", "enhance", str(a), "-o", str(tmp_path / "said.png"), "-m", MODEL)
    assert r.returncode == 0 and "running through the pixelift service at" in r.stderr, r.stderr  # where -v's choices went
    assert "via" not in run("local.png", {**env, "PIXELIFT_SERVER": "off"})
    nowhere = tmp_path / "no-service-here"
    assert "via" not in run("alone.png", {**env, state.ENV_SERVICE_DIR: str(nowhere)})
    assert not nowhere.exists()
    assert Image.open(tmp_path / "served.png").tobytes() == Image.open(tmp_path / "local.png").tobytes()
    for doctor_env, url, says in ((env, server.client.base_url, "goes through it"), ({**env, state.ENV_SERVICE_DIR: str(nowhere)}, None, "in-process")):
        r = subprocess.run([sys.executable, "-m", "pixelift.cli", "doctor", "--json"], env=doctor_env, capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr
        info = json.loads(r.stdout)["service"]
        assert info["url"] == url and says in info["enhance"], info
    assert not nowhere.exists()


def test_the_service_route_reports_each_file_as_it_ends(server: Server, tmp_path: Path) -> None:
    """As in-process: a file's line comes when that file is done, not when the whole job is (the
    client is still running, on a photo many times larger, when the first line arrives)."""
    small = [save(tmp_path / f"s{i}.png") for i in range(2)]
    big = tmp_path / "big.png"
    Image.fromarray(photo_crop("astronaut", 512)).resize((1600, 1600)).save(big)
    argv = [sys.executable, "-m", "pixelift.cli", "enhance", "--server", *map(str, small), str(big)]
    argv += ["-o", str(tmp_path / "out") + os.sep, "-m", MODEL, "--json"]
    proc = subprocess.Popen(argv, env=serve_env(server.folder), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        first = json.loads(proc.stdout.readline())
        assert first["input"].endswith("s0.png") and first["status"] == "ok"
        assert not (tmp_path / "out" / "big.png").exists()  # the big photo is still being enhanced
        rest = [json.loads(line) for line in proc.stdout]
        assert proc.wait(300) == 0
        assert [Path(r["input"]).name for r in rest] == ["s1.png", "big.png"]
    finally:
        proc.kill()
        proc.wait()


def test_a_job_queued_behind_another_says_it_waits(server: Server, tmp_path: Path) -> None:
    big = [tmp_path / f"big{i}.png" for i in range(3)]
    for path in big:
        Image.fromarray(photo_crop("astronaut", 512)).resize((1600, 1600)).save(path)
    argv = [sys.executable, "-m", "pixelift.cli", "enhance", "--server", *map(str, big), "-o", str(tmp_path / "out") + os.sep, "-m", MODEL]
    first = subprocess.Popen(argv, env=serve_env(server.folder), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not any(j["status"] == "running" for j in server.raw("GET", "/v1/jobs")[1]["jobs"]):
            assert time.monotonic() < deadline and first.poll() is None
            time.sleep(0.05)
        a = save(tmp_path / "a.png")
        r = _cli(server.folder, "enhance", "--server", str(a), "-o", str(tmp_path / "a_x2.png"), "-m", MODEL)
        assert r.returncode == 0 and "busy with another job" in r.stderr, r.stderr
        assert first.wait(300) == 0
    finally:
        first.kill()
        first.wait()


@pytest.mark.slow
def test_a_first_run_through_the_service_shows_its_one_time_work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A service whose cache is empty builds and measures the model on the first job: the client
    says so as it happens (as an in-process run logs it), and not on the next run."""
    monkeypatch.setenv("PIXELIFT_HOME", str(tmp_path / "empty-cache"))  # the service's, not the session's
    server = start_server(tmp_path / "svc")
    try:
        a = save(tmp_path / "a.png")
        first = _cli(server.folder, "enhance", "--server", str(a), "-o", str(tmp_path / "1.png"), "-m", MODEL)
        assert first.returncode == 0, first.stderr
        one_time = [ln for ln in first.stderr.splitlines() if "one time" in ln]
        assert one_time and all(ln.startswith(f"WARNING: {MODEL}: ") for ln in one_time), first.stderr
        again = _cli(server.folder, "enhance", "--server", str(a), "-o", str(tmp_path / "2.png"), "-m", MODEL)
        assert again.returncode == 0 and "one time" not in again.stderr, again.stderr
    finally:
        server.stop()


def test_a_service_of_another_installation_is_not_used(server: Server, tmp_path: Path) -> None:
    """One left running across an upgrade (or from another environment) would refuse a newer job's
    fields or treat them differently: the client runs in-process and says why, with or without --server."""
    a = save(tmp_path / "a.png")
    status, health = server.raw("GET", "/v1/health")
    assert status == 200 and health["install"] == state.install_id()
    assert health["home"] == state.home_id()
    # the same for a service on another model cache, which would not know this run's own models
    for what, said in (("install_id", "runs another installation"), ("home_id", "uses another model cache")):
        for flag in ("--server", None):
            out = tmp_path / f"{what}{flag}.png"
            argv = ["enhance", *([flag] if flag else []), str(a), "-o", str(out), "-m", MODEL, "--json"]
            code = (f"import pixelift.service.state as s\ns.{what} = lambda: '/elsewhere'\nimport sys\n"
                    f"sys.argv = ['pixelift', *{argv!r}]\nfrom pixelift.cli import run\nrun()\n")  # fmt: skip
            r = subprocess.run([sys.executable, "-c", code], env=serve_env(server.folder), capture_output=True, text=True, timeout=300)
            assert r.returncode == 0, r.stderr
            assert said in r.stderr, r.stderr
            assert "via" not in json.loads(r.stdout.splitlines()[-1]) and out.is_file()


def test_the_clients_tile_memory_travels_with_the_job(server: Server, tmp_path: Path) -> None:
    """PIXELIFT_TILE_MEMORY in the client's environment sizes the service's tiles as it would an
    in-process run's (the service's own environment does not set it): the smallest budget tiles
    a photo that runs whole without it; a bad raw value is a 400 naming the field."""
    a = save(tmp_path / "a.png", size=384)

    def tiles(extra_env: dict[str, str], out: str) -> int:
        argv = [sys.executable, "-m", "pixelift.cli", "enhance", "--server", str(a), "-o", str(tmp_path / out), "-m", MODEL]
        r = subprocess.run(argv, env={**serve_env(server.folder), **extra_env}, capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr
        status, listing = server.raw("GET", "/v1/jobs")
        assert status == 200
        jobs = [server.raw("GET", f"/v1/jobs/{j['id']}")[1] for j in listing["jobs"]]
        job = next(j for j in jobs if j["files"][0]["output"] == str(tmp_path / out))
        return int(job["files"][0]["tiles_total"])

    assert tiles({}, "whole.png") == 1
    assert tiles({"PIXELIFT_TILE_MEMORY": "64M"}, "tiled.png") > 1
    body = json.dumps({"inputs": [str(a)], "outputs": [str(tmp_path / "c.png")], "tile_memory": 1000}).encode()
    status, reply = server.raw("POST", "/v1/jobs", body, {"Content-Type": "application/json"})
    assert status == 400 and "'tile_memory'" in reply["error"]["message"]


def test_enhance_stream_travels_with_the_job(server: Server, tmp_path: Path) -> None:
    """`--stream on` asks to stream or refuse: through the service as in-process (a JPEG cannot be
    written by rows), not silently written in memory; a bad value in a raw job is a 400."""
    a = save(tmp_path / "a.png")
    for server_flag in ("--server", "--no-server"):
        out = tmp_path / f"a{server_flag}.jpg"
        r = _cli(server.folder, "enhance", server_flag, str(a), "-o", str(out), "-m", MODEL, "--stream", "on")
        assert r.returncode == 1 and "cannot stream" in r.stderr, (server_flag, r.stderr)
        assert not out.exists()
    r = _cli(server.folder, "enhance", "--server", str(a), "-o", str(tmp_path / "b.png"), "-m", MODEL, "--stream", "on", "--json")
    assert r.returncode == 0 and json.loads(r.stdout.strip().splitlines()[-1])["via"] == "service", r.stderr
    assert Image.open(tmp_path / "b.png").size == (96, 96)
    body = json.dumps({"inputs": [str(a)], "outputs": [str(tmp_path / "c.png")], "stream": "sometimes"}).encode()
    status, reply = server.raw("POST", "/v1/jobs", body, {"Content-Type": "application/json"})
    assert status == 400 and "'stream'" in reply["error"]["message"]
    # the client's PIXELIFT_MAX_STREAM_PIXELS is the guard a service applies (the service's environment has none)
    for server_flag in ("--server", "--no-server"):
        out = tmp_path / f"small{server_flag}.png"
        argv = [sys.executable, "-m", "pixelift.cli", "enhance", server_flag, str(a), "-o", str(out), "-m", MODEL, "--stream", "on"]
        env = {**serve_env(server.folder), "PIXELIFT_MAX_STREAM_PIXELS": "1000"}
        r = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)
        assert r.returncode == 1 and "streamed-output limit of 1,000" in r.stderr, (server_flag, r.stderr)
        assert not out.exists()


def test_pixelift_server_start_starts_one_service_for_concurrent_runs_and_reuses_it(tmp_path: Path) -> None:
    warm_model()
    a = save(tmp_path / "a.png")
    folder = tmp_path / "svc"
    env = {**serve_env(folder), "PIXELIFT_SERVER": "start"}

    def run(out: str) -> subprocess.Popen[str]:
        argv = [sys.executable, "-m", "pixelift.cli", "enhance", str(a), "-o", str(tmp_path / out), "-m", MODEL, "--json"]
        return subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    try:
        first = [run("a1.png"), run("a2.png")]  # at once: both start one, one service wins
        results = [(p.wait(300), p.stdout.read(), p.stderr.read()) for p in first if p.stdout and p.stderr]
        for code, out, err in results:
            assert code == 0, err
            assert json.loads(out.strip().splitlines()[-1])["via"] == "service", (out, err)
        info = state.read_info(folder)
        assert info is not None and state.pid_alive(info.pid)
        p = run("a3.png")
        assert p.wait(300) == 0 and p.stdout is not None
        assert json.loads(p.stdout.read().strip().splitlines()[-1])["via"] == "service"
        again = state.read_info(folder)
        assert again is not None and again.pid == info.pid  # the same service, not a new one
        assert all(Image.open(tmp_path / f"a{i}.png").size == (96, 96) for i in (1, 2, 3))
    finally:
        subprocess.run([sys.executable, "-m", "pixelift.cli", "serve", "--stop"], env=env, capture_output=True, timeout=120)
    assert ServiceClient.discover(folder) is None


def test_pixelift_server_start_without_the_serve_extra_runs_in_process_and_says_so(tmp_path: Path) -> None:
    warm_model()
    a = save(tmp_path / "a.png")
    folder = tmp_path / "svc"
    env = {**serve_env(folder), "PIXELIFT_SERVER": "start"}
    argv = ["enhance", str(a), "-o", str(tmp_path / "a_x2.png"), "-m", MODEL, "--json"]
    code = f"import sys\nsys.modules['aiohttp'] = None\nfrom pixelift.cli import main\nmain({argv!r})\n"
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "needs the serve extra" in r.stderr and "running in-process" in r.stderr
    assert "via" not in json.loads(r.stdout.strip().splitlines()[-1])  # in-process records carry no "via"
    assert Image.open(tmp_path / "a_x2.png").size == (96, 96)
    assert ServiceClient.discover(folder) is None  # nothing was left running


def test_a_service_folder_that_cannot_be_made_means_in_process_said(tmp_path: Path) -> None:
    a = save(tmp_path / "a.png")
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    # only starting a service makes the folder: looking for one finds none, said
    for extra, value, said in ((["--server"], "off", "falling back to running in-process"), ([], "start", "service folder cannot be made")):
        env = {**serve_env(blocker / "svc"), "PIXELIFT_SERVER": value}
        out = tmp_path / f"a_{value}.png"
        argv = [sys.executable, "-m", "pixelift.cli", "enhance", *extra, str(a), "-o", str(out), "-m", MODEL]
        r = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)
        assert r.returncode == 0 and said in r.stderr and "internal error" not in r.stderr, r.stderr
        assert Image.open(out).size == (96, 96)
    for args, said in ((["--status"], "no pixelift service"), (["--stop"], "no pixelift service"), (["--detach"], "service folder cannot be made")):
        r = _cli(blocker / "svc", "serve", *args)
        assert r.returncode == 1 and said in r.stderr and "internal error" not in r.stderr, r.stderr


@pytest.mark.parametrize("value", ["yes", "1", "on", "auto please"])
def test_a_bad_pixelift_server_value_is_refused_by_name(tmp_path: Path, value: str) -> None:
    a = save(tmp_path / "a.png")
    env = {**serve_env(tmp_path / "svc"), "PIXELIFT_SERVER": value}
    argv = [sys.executable, "-m", "pixelift.cli", "enhance", str(a), "-o", str(tmp_path / "o.png"), "-m", MODEL]
    for extra in ([], ["--no-server"]):  # refused even where no service would be asked
        r = subprocess.run([*argv, *extra], env=env, capture_output=True, text=True, timeout=300)
        assert r.returncode == 2 and "PIXELIFT_SERVER" in r.stderr and "Traceback" not in r.stderr, r.stderr
        assert not (tmp_path / "o.png").exists()


def test_a_second_service_and_a_remote_bind_are_refused(server: Server) -> None:
    r = _cli(server.folder, "serve")
    assert r.returncode == 1 and "already running" in r.stderr
    r = _cli(server.folder, "serve", "--host", "0.0.0.0")
    assert r.returncode == 2 and "--allow-remote" in r.stderr


def test_a_port_in_use_is_one_line_naming_it(tmp_path: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        for args in ([], ["--detach"]):
            r = _cli(tmp_path / "svc", "serve", "--port", str(port), *args)
            lines = r.stderr.strip().splitlines()
            assert r.returncode == 1 and len(lines) == 1, (args, r.stderr)
            assert f"127.0.0.1:{port} is already in use" in lines[0], lines
            assert "internal error" not in lines[0] and "Errno" not in lines[0] and lines[0].count("Error:") == 1, lines
    assert ServiceClient.discover(tmp_path / "svc") is None


@pytest.mark.parametrize("flags", [("--stop", "--detach"), ("--status", "--stop"), ("--status", "--detach")])
def test_conflicting_serve_flags_are_a_usage_error(tmp_path: Path, flags: tuple[str, str]) -> None:
    r = _cli(tmp_path / "svc", "serve", *flags)
    assert r.returncode == 2 and all(f in r.stderr for f in flags), r.stderr
    assert not (tmp_path / "svc").exists()


def test_asking_for_a_service_creates_no_folder(tmp_path: Path) -> None:
    a = save(tmp_path / "a.png")
    env = {**os.environ, state.ENV_SERVICE_DIR: "relative/dir"}
    for args in (["serve", "--status"], ["serve", "--stop"]):
        r = subprocess.run([sys.executable, "-m", "pixelift.cli", *args], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
        assert r.returncode == 1 and "no pixelift service is running" in r.stderr, r.stderr
        assert not (tmp_path / "relative").exists(), args
    warm_model()
    argv = [sys.executable, "-m", "pixelift.cli", "enhance", "--server", str(a), "-o", str(tmp_path / "o.png"), "-m", MODEL]
    r = subprocess.run(argv, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "falling back to running in-process" in r.stderr, r.stderr
    assert not (tmp_path / "relative").exists()
    assert ServiceClient.discover(tmp_path / "relative" / "dir") is None and not (tmp_path / "relative").exists()


def test_the_service_runs_without_torch(tmp_path: Path) -> None:
    warm_model()
    srv = start_server(tmp_path / "svc", torch_free=True)
    try:
        src = save(tmp_path / "a.png")
        final = wait_done(srv.client, srv.client.submit({"inputs": [str(src)], "output": f"{tmp_path}/out/", "model": MODEL})["id"])
        assert final["status"] == "done", final["files"][0]["error"]
    finally:
        srv.stop()


def test_warm_enhancers_are_evicted_lru_and_when_memory_is_short() -> None:
    from pixelift.service.jobs import EnhancerCache, EnhancerConfig, ProgressRouter

    cache = EnhancerCache(ProgressRouter(), max_entries=2, min_free_bytes=0)
    a, b, c = (EnhancerConfig(models=(MODEL,), scale=s) for s in (1.0, 2.0, 3.0))
    for config in (a, b, a, c):  # a was used after b: b goes first
        with cache.lease(config):
            pass
    assert len(cache) == 2 and cache.evictions == 1
    with cache.lease(b) as enh:
        assert enh.outscale == 2.0
        cache.min_free_bytes = 1 << 62  # "memory is short": every idle one goes at the next release
    assert len(cache) == 0 and cache.evictions == 4
    with cache.lease(a), cache.lease(a):  # two workers on one configuration share the warm Enhancer
        assert len(cache) == 1


@pytest.mark.slow
def test_killed_mid_job_leaves_no_output_and_a_restart_is_clean(tmp_path: Path) -> None:
    warm_model()
    folder = tmp_path / "svc"
    srv = start_server(folder)
    src = save(tmp_path / "in" / "big.png", "coffee", 384)
    out = tmp_path / "out" / "big.png"
    job = srv.client.submit({"inputs": [str(src)], "output": str(out), "model": MODEL, "tile": 16})
    events = srv.client.events(job["id"])
    for name, status in events:
        if name == "progress" and status["files"][0]["tiles_done"] >= 1:
            break
    srv.proc.kill()
    srv.proc.wait()
    with pytest.raises(ServiceError, match="stopped during the job"):
        for _ in events:
            pass
    assert not out.exists()
    assert ServiceClient.discover(folder) is None  # the stale service.json is recognised
    # a part file as a writer killed mid-write leaves it (pid of the dead service)
    part = out.parent / f".big.png.{srv.proc.pid}-pxl-abc.part"
    out.parent.mkdir(exist_ok=True)
    part.write_bytes(b"half a file")
    again = start_server(folder)
    try:
        assert not part.exists()  # the journal led the new service to the dead one's part files
        assert state.read_info(folder).pid == again.proc.pid  # type: ignore[union-attr]
        final = wait_done(again.client, again.client.submit({"inputs": [str(src)], "output": str(out), "model": MODEL})["id"])
        assert final["status"] == "done" and out.exists()
    finally:
        again.stop()
    assert not (folder / state.TOKEN_FILE).exists() and not (folder / state.INFO_FILE).exists()


@pytest.mark.slow
def test_idle_service_stops_by_itself_and_serve_stop_stops_one(tmp_path: Path) -> None:
    srv = start_server(tmp_path / "svc", "--idle-minutes", "0.02")
    assert srv.proc.wait(120) == 0
    assert ServiceClient.discover(srv.folder) is None
    srv = start_server(tmp_path / "svc2")
    r = _cli(srv.folder, "serve", "--status")
    assert r.returncode == 0 and json.loads(r.stdout)["pid"] == srv.proc.pid
    r = _cli(srv.folder, "serve", "--stop")
    assert r.returncode == 0 and "stopped" in r.stdout
    assert srv.proc.wait(60) == 0 and not (srv.folder / state.INFO_FILE).exists()
    r = _cli(srv.folder, "serve", "--status")
    assert r.returncode == 1 and "no pixelift service is running" in r.stderr


@pytest.mark.slow
def test_load_4_clients_x_25_jobs_all_complete_and_memory_is_bounded(server: Server, tmp_path: Path) -> None:
    photos = [save(tmp_path / "in" / f"{n}.png", n, 48) for n in ("astronaut", "chelsea", "coffee", "rocket")]
    wait_done(server.client, server.client.submit({"inputs": [str(photos[0])], "output": str(tmp_path / "warm.png"), "model": MODEL})["id"])
    rss_before = server.client.health()["rss_bytes"]
    results: dict[int, list[dict[str, Any]]] = {}
    errors: list[BaseException] = []

    def client_run(c: int) -> None:
        client = ServiceClient(server.client.base_url, server.client.token, timeout=120)
        try:
            ids = [
                client.submit({"inputs": [str(photos[c])], "output": str(tmp_path / "out" / f"{c}-{j}.png"), "model": MODEL})["id"]
                for j in range(25)
            ]
            results[c] = [wait_done(client, i) for i in ids]
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=client_run, args=(c,)) for c in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    finals = [s for c in range(4) for s in results[c]]
    assert len(finals) == 100 and len({s["id"] for s in finals}) == 100
    assert all(s["status"] == "done" for s in finals), [s for s in finals if s["status"] != "done"][:2]
    assert len(list((tmp_path / "out").glob("*.png"))) == 100
    rss_after = server.client.health()["rss_bytes"]
    print(f"service RSS before {rss_before / 2**20:.0f} MiB, after 100 jobs {rss_after / 2**20:.0f} MiB")
    assert rss_after - rss_before < 200 << 20
