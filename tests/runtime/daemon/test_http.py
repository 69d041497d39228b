"""The daemon's HTTP layer against docker's own clients: version negotiation, errors, chunked bodies."""

from __future__ import annotations

import http.client
import json
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from runtime.daemon.http import ApiError, Request, Response, Router, UnixHTTPServer
from runtime.errors import NotFoundError


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str) -> None:
        super().__init__("localhost")
        self.path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(self.path)


@pytest.fixture()
def server(tmp_path: Path) -> Iterator[str]:
    router = Router()
    router.add("GET", "/_ping", lambda req: Response(b"OK", content_type="text/plain"))
    router.add("GET", "/version", lambda req: Response({"Version": "t", "ApiVersion": "1.41"}))
    router.add("GET", "/images/{name:path}/json", lambda req: Response({"name": req.params["name"]}))

    def missing(req: Request) -> Response:
        raise NotFoundError("No such container: x")

    def teapot(req: Request) -> Response:
        raise ApiError(418, "short and stout")

    def echo(req: Request) -> Response:
        return Response({"length": len(req.body()), "version": req.version})

    router.add("GET", "/containers/{id}/json", missing)
    router.add("GET", "/teapot", teapot)
    router.add("POST", "/echo", echo)
    path = str(tmp_path / "api.sock")
    srv = UnixHTTPServer(path, router)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield path
    srv.shutdown()
    srv.server_close()


def _request(path: str, method: str, url: str, body: bytes | None = None,
             headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    conn = _UnixConnection(path)
    conn.request(method, url, body=body, headers=headers or {})
    answer = conn.getresponse()
    data = answer.read()
    conn.close()
    return answer.status, data


def test_errors_have_docker_shape(server: str) -> None:
    assert _request(server, "GET", "/v1.41/containers/x/json") == (404, b'{"message": "No such container: x"}\n')
    status, body = _request(server, "GET", "/teapot")
    assert status == 418 and json.loads(body) == {"message": "short and stout"}
    status, body = _request(server, "GET", "/nowhere")
    assert status == 404
    status, body = _request(server, "DELETE", "/teapot")
    assert status == 405


def test_too_new_version_is_refused_as_dockerd_does(server: str) -> None:
    status, body = _request(server, "GET", "/v1.99/version")
    assert status == 400
    assert "client version 1.99 is too new" in json.loads(body)["message"]


def test_path_placeholder_takes_slashes(server: str) -> None:
    status, body = _request(server, "GET", "/v1.40/images/127.0.0.1:5000/a/b:tag/json")
    assert status == 200 and json.loads(body) == {"name": "127.0.0.1:5000/a/b:tag"}


def test_chunked_request_body(server: str) -> None:
    conn = _UnixConnection(server)
    conn.request("POST", "/v1.40/echo", body=iter([b"a" * 5000, b"b" * 3]), encode_chunked=True,
                 headers={"Transfer-Encoding": "chunked"})
    answer = conn.getresponse()
    assert json.loads(answer.read()) == {"length": 5003, "version": "1.40"}
    # keep-alive: the same connection serves the next request
    conn.request("GET", "/_ping")
    assert conn.getresponse().read() == b"OK"
    conn.close()


@pytest.mark.peer
@pytest.mark.parametrize("client", ["/usr/bin/docker", "/usr/local/bin/docker"])
def test_docker_clients_negotiate_down_to_ours(server: str, client: str) -> None:
    if not Path(client).exists():
        if client == "/usr/bin/docker":
            pytest.fail("/usr/bin/docker is missing: scripts/apt/peers.txt installs docker.io")
        pytest.skip(f"no newer docker client at {client} on this machine (it checks negotiation down from 1.4x)")
    done = subprocess.run([client, "-H", f"unix://{server}", "version", "--format", "{{.Client.APIVersion}}"],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "1.41"
