"""``refrt pull`` against small hostile servers on 127.0.0.1: every failure costs bounded time and memory.

Each pull runs as its own process with ``--no-daemon``, so the process measured (peak RSS from ``os.wait4``) is the
one that does the transfer. The servers: a 500 with a 1 GiB body, one that trickles a byte every 20 s, one that
accepts and never answers, a proxy in front of the real registry that answers 503 twice per path first (and,
in another test, cuts a blob in the middle so the pull must resume it with ``Range``), and one whose first layer is
missing while the second drips: the failure stops the other transfer at once.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest

from conformance.services.registry import Registry
from runtime.registry.transport import DEFAULT_CONNECT_TIMEOUT, DEFAULT_TIMEOUT, Policy
from tests.fixtures.registry import REPO, TinyServer, World

Factory = Callable[..., TinyServer]


@dataclass
class Outcome:
    code: int
    seconds: float
    max_rss_mb: float
    stderr: str


def _start_pull(world: World, reference: str, env: dict[str, str] | None = None) -> tuple[subprocess.Popen[str], float]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("REFRT_")}
    clean.update(env or {})
    args = [sys.executable, "-m", "runtime", "--no-daemon", "--root", str(world.root), "--config", str(world.config)]
    proc = subprocess.Popen(
        [*args, "pull", reference], cwd=REPO, env=clean, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    return proc, time.monotonic()


def _finish(proc: subprocess.Popen[str], started: float, limit: float) -> Outcome:
    """Wait for the pull (killing it past ``limit`` s) and take its peak RSS from the kernel's rusage."""
    timer = threading.Timer(limit, proc.kill)
    timer.start()
    try:
        assert proc.stderr is not None
        stderr = proc.stderr.read()
        _, status, usage = os.wait4(proc.pid, 0)
    finally:
        timer.cancel()
    proc.returncode = os.waitstatus_to_exitcode(status)
    return Outcome(proc.returncode, time.monotonic() - started, usage.ru_maxrss / 1024, stderr)


def _pull(world: World, reference: str, limit: float, env: dict[str, str] | None = None) -> Outcome:
    proc, started = _start_pull(world, reference, env)
    return _finish(proc, started, limit)


def _one_line(outcome: Outcome) -> str:
    lines = outcome.stderr.strip().splitlines()
    assert len(lines) == 1, outcome.stderr
    assert "Traceback" not in outcome.stderr
    return lines[0]


# -- a 500 with a 1 GiB body ---------------------------------------------------------------------------------------
class _HugeError(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path == "/v2/":
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(500)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(1 << 30))
        self.end_headers()
        block = b'{"errors":[{"code":"UNKNOWN","message":"' + b"x" * ((1 << 20) - 40)
        try:
            for _ in range(1024):
                self.wfile.write(block[: 1 << 20])
        except OSError:
            pass
        self.close_connection = True


def test_500_with_a_1gib_body_fails_fast_in_little_memory(tiny_server: Factory, registry_world: World) -> None:
    server = tiny_server(_HugeError)
    outcome = _pull(registry_world, f"{server.host}/huge:1", limit=60)
    line = _one_line(outcome)
    assert outcome.code != 0
    assert outcome.seconds < 30, outcome
    assert outcome.max_rss_mb < 150, outcome
    assert "500 Internal Server Error" in line and f"http://{server.host}/v2/huge/manifests/1" in line
    assert len(line) < 1000


# -- a server that trickles, one that is silent -----------------------------------------------------------------------
class _Listener:
    """A raw TCP server on 127.0.0.1: ``trickle`` sends an HTTP answer one byte every ``pace`` s; otherwise it
    accepts and says nothing. Stops (and closes every connection) at the end of the test."""

    def __init__(self, trickle: bool, pace: float = 20.0) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.trickle, self.pace = trickle, pace
        self.stop = threading.Event()
        self.conns: list[socket.socket] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.sock.getsockname()[1]}"

    def _serve(self) -> None:
        self.sock.settimeout(0.1)
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.conns.append(conn)
            if self.trickle:
                threading.Thread(target=self._drip, args=(conn,), daemon=True).start()

    def _drip(self, conn: socket.socket) -> None:
        for byte in b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n":
            if self.stop.wait(self.pace):
                return
            try:
                conn.send(bytes([byte]))
            except OSError:
                return

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=5)
        self.sock.close()
        for conn in self.conns:
            conn.close()


@pytest.fixture
def listeners() -> Iterator[Callable[..., _Listener]]:
    made: list[_Listener] = []

    def make(trickle: bool, pace: float = 20.0) -> _Listener:
        made.append(_Listener(trickle, pace))
        return made[-1]

    yield make
    for listener in made:
        listener.close()
    assert not any(listener.thread.is_alive() for listener in made)


def test_default_timeouts_are_tens_of_seconds(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("REFRT_REGISTRY_TIMEOUT", "REFRT_REGISTRY_CONNECT_TIMEOUT", "REFRT_REGISTRY_RETRIES"):
        monkeypatch.delenv(name, raising=False)
    policy = Policy.from_env()
    assert 10 <= policy.timeout == DEFAULT_TIMEOUT <= 60 and 5 <= policy.connect_timeout == DEFAULT_CONNECT_TIMEOUT
    monkeypatch.setenv("REFRT_REGISTRY_TIMEOUT", "2.5")
    assert Policy.from_env().timeout == 2.5


@pytest.mark.parametrize("value", ["0", "-1", "soon", "nan", "inf"])
def test_a_bad_timeout_setting_is_one_line(value: str, registry_world: World) -> None:
    outcome = _pull(registry_world, "127.0.0.1:9/x:1", limit=30, env={"REFRT_REGISTRY_TIMEOUT": value})
    assert outcome.code == 125 and "invalid REFRT_REGISTRY_TIMEOUT" in _one_line(outcome)


@pytest.mark.parametrize("trickle", [True, False], ids=["trickling", "silent"])
def test_configured_timeout_ends_a_stalled_pull(
    trickle: bool, listeners: Callable[..., _Listener], registry_world: World
) -> None:
    server = listeners(trickle, pace=0.5)
    outcome = _pull(registry_world, f"{server.host}/slow:1", limit=60, env={"REFRT_REGISTRY_TIMEOUT": "2"})
    line = _one_line(outcome)
    assert outcome.code != 0 and outcome.seconds < 15, outcome
    assert "timeout" in line and f"http://{server.host}/v2/" in line
    assert "TLS" not in line and "SSL" not in line


@pytest.mark.slow
def test_default_timeouts_end_trickling_and_silent_servers(
    listeners: Callable[..., _Listener], tmp_path: Path
) -> None:
    """With the shipped defaults: a byte every 20 s is a timeout within 90 s, silence an error within 60 s (no TLS)."""
    trickling, silent = listeners(True, pace=20.0), listeners(False)
    worlds = [World(tmp_path / f"r{i}", tmp_path / f"c{i}") for i in range(2)]
    started = [_start_pull(worlds[0], f"{trickling.host}/t:1"), _start_pull(worlds[1], f"{silent.host}/s:1")]
    slow, quiet = (_finish(proc, t0, 120) for proc, t0 in started)
    assert slow.code != 0 and slow.seconds < 90 and "timeout" in _one_line(slow), slow
    assert quiet.code != 0 and quiet.seconds < 60, quiet
    assert "TLS" not in _one_line(quiet) and "SSL" not in quiet.stderr


# -- a flaky proxy in front of the real registry ------------------------------------------------------------------
def _proxy(upstream: str, fail_first: int, cut_blob: bool) -> type[BaseHTTPRequestHandler]:
    """Forward GET/HEAD to ``upstream``; 503 for the first ``fail_first`` requests of each path; with ``cut_blob``
    the first answer for each blob stops half-way (the connection closes)."""
    seen: dict[str, int] = {}
    lock = threading.Lock()

    class Proxy(BaseHTTPRequestHandler):
        def _forward(self) -> None:
            with lock:
                count = seen.get(self.path, 0)
                seen[self.path] = count + 1
            if count < fail_first:
                body = b'{"errors":[{"code":"UNAVAILABLE","message":"try later"}]}'
                self.send_response(503)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                return
            conn = http.client.HTTPConnection(upstream, timeout=30)
            headers = {k: v for k, v in self.headers.items() if k.lower() in ("accept", "range", "authorization")}
            conn.request(self.command, self.path, headers=headers)
            resp = conn.getresponse()
            body = resp.read()
            self.send_response(resp.status)
            for name, value in resp.getheaders():
                if name.lower() not in ("connection", "transfer-encoding", "date", "server"):
                    self.send_header(name, value)
            self.end_headers()
            cut = cut_blob and "/blobs/" in self.path and count == fail_first and len(body) > 2
            if self.command != "HEAD":
                self.wfile.write(body[: len(body) // 2] if cut else body)
            if cut:
                self.close_connection = True
            conn.close()

        do_GET = do_HEAD = _forward

    return Proxy


def _seed(registry: Registry, world: World) -> str:
    image = world.make_image("flaky/app:1", payload=300_000)
    world.store.tag(image, f"{registry.host}/flaky/app:1")
    res = world.cli("push", f"{registry.host}/flaky/app:1")
    assert res.returncode == 0, res.stderr
    world.rmi(image)
    return image.id


@pytest.mark.parametrize("cut_blob", [False, True], ids=["two-503s", "two-503s-then-cut-blob"])
def test_pull_through_503s_and_a_cut_blob_succeeds(
    cut_blob: bool, registry: Registry, tiny_server: Factory, registry_world: World
) -> None:
    image_id = _seed(registry, registry_world)
    proxy = tiny_server(_proxy(registry.host, fail_first=2, cut_blob=cut_blob))
    outcome = _pull(registry_world, f"{proxy.host}/flaky/app:1", limit=90)
    assert outcome.code == 0, outcome.stderr
    assert registry_world.store.resolve(f"{proxy.host}/flaky/app:1").id == image_id
    gets = [(path, headers) for method, path, headers in proxy.requests if method == "GET"]
    assert sum(1 for path, _ in gets if path == "/v2/") == 3
    blob_gets = [headers for path, headers in gets if "/blobs/" in path]
    if cut_blob:
        assert any(h.get("Range", "").startswith("bytes=") and h["Range"] != "bytes=0-" for h in blob_gets)


# -- one layer fails while another is still coming: the pull stops at once ------------------------------------------
def _one_fails_one_drips(stop: threading.Event) -> tuple[type[BaseHTTPRequestHandler], str]:
    config = json.dumps({"architecture": "amd64", "os": "linux",
                         "rootfs": {"type": "layers", "diff_ids": ["sha256:" + "1" * 64, "sha256:" + "2" * 64]}})
    config_digest = "sha256:" + hashlib.sha256(config.encode()).hexdigest()
    missing, dripping = "sha256:" + "a" * 64, "sha256:" + "b" * 64
    gzip_layer = "application/vnd.oci.image.layer.v1.tar+gzip"
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest,
                   "size": len(config)},
        "layers": [{"mediaType": gzip_layer, "digest": missing, "size": 1000},
                   {"mediaType": gzip_layer, "digest": dripping, "size": 10 << 20}],
    })

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/v2/":
                self._send(200, b"", "application/json")
            elif "/manifests/" in self.path:
                self._send(200, manifest.encode(), "application/vnd.oci.image.manifest.v1+json")
            elif self.path.endswith(config_digest):
                self._send(200, config.encode(), "application/octet-stream")
            elif self.path.endswith(missing):
                time.sleep(0.5)
                self._send(404, b'{"errors":[{"code":"BLOB_UNKNOWN","message":"blob unknown"}]}', "application/json")
            else:  # 10 MiB announced, 2 KiB every 50 ms: never stalled, never done (within the test)
                self.send_response(200)
                self.send_header("Content-Length", str(10 << 20))
                self.end_headers()
                try:
                    while not stop.wait(0.05):
                        self.wfile.write(os.urandom(2048))
                except OSError:
                    pass
                self.close_connection = True

        def _send(self, status: int, body: bytes, media_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", media_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    return Handler, missing


def test_a_failed_layer_stops_the_others(tiny_server: Factory, registry_world: World) -> None:
    stop = threading.Event()
    handler, missing = _one_fails_one_drips(stop)
    server = tiny_server(handler)
    registry_world.make_image("keep:1")
    before = registry_world.listing()
    try:
        outcome = _pull(registry_world, f"{server.host}/two:1", limit=60)
    finally:
        stop.set()
    line = _one_line(outcome)
    assert outcome.code == 1 and outcome.seconds < 10, outcome
    assert missing in line and "not found" in line
    assert registry_world.listing() == before
