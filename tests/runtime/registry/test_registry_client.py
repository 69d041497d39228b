"""The distribution client against the real docker-registry (raw blobs and manifests), plus tiny servers for
the answers a real registry will not give on demand (500, redirects to another host, Bearer tokens)."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from conformance.services.registry import Registry
from runtime.errors import NotFoundError, RefrtError
from runtime.registry import manifests
from runtime.registry.auth import Credentials
from runtime.registry.client import RegistryClient, is_insecure
from runtime.registry.errors import (
    AuthenticationError,
    ConnectionFailedError,
    ManifestNotFoundError,
    RegistryError,
    ServerError,
)
from tests.fixtures.registry import TinyServer

Factory = Callable[..., TinyServer]


def _client(reg: Registry, password: str | None = None) -> RegistryClient:
    creds = None
    if reg.auth is not None:
        creds = Credentials(reg.auth.username, password or reg.auth.password)
    return RegistryClient(reg.host, credentials=creds)


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _push_raw(client: RegistryClient, repo: str, data: bytes, chunk: int | None = None) -> str:
    digest = _digest(data)
    scopes = [f"repository:{repo}:pull,push"]
    location = client.start_upload(repo, scopes)
    assert location is not None
    if chunk:
        client.upload_chunked(location, repo, digest, io.BytesIO(data), len(data), chunk)
    else:
        client.upload_monolithic(location, repo, digest, io.BytesIO(data), len(data))
    return digest


def test_blob_uploads_and_cross_repo_mount(any_registry: Registry) -> None:
    with _client(any_registry) as client:
        client.login()
        small, big = os.urandom(1000), os.urandom(300_000)
        d_small = _push_raw(client, "a/src", small)
        d_big = _push_raw(client, "a/src", big, chunk=64_000)
        for digest, data in ((d_small, small), (d_big, big)):
            assert client.blob_size("a/src", digest, ["repository:a/src:pull"]) == len(data)
            resp = client.open_blob("a/src", digest)
            assert resp.read(1 << 20) == data
        scopes = ["repository:b/dst:pull,push", "repository:a/src:pull"]
        assert client.blob_size("b/dst", d_big, scopes) is None
        assert client.start_upload("b/dst", scopes, mount=(d_big, "a/src")) is None  # 201: mounted
        assert client.blob_size("b/dst", d_big, scopes) == len(big)


def test_oci_manifest_round_trip_needs_oci_accept(any_registry: Registry) -> None:
    with _client(any_registry) as client:
        config = b'{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}'
        d_config = _push_raw(client, "m/x", config)
        manifest = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": manifests.OCI_MANIFEST,
                "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": d_config,
                           "size": len(config)},
                "layers": [],
            }
        ).encode()
        assert client.put_manifest("m/x", "v1", manifest, manifests.OCI_MANIFEST, "m") == _digest(manifest)
        data, media_type, header = client.get_manifest("m/x", "v1", manifests.ACCEPT, "m")
        assert (data, media_type, header) == (manifest, manifests.OCI_MANIFEST, _digest(manifest))
        # The distribution 2.8 trap: without the OCI types in Accept the manifest is "unknown".
        with pytest.raises(ManifestNotFoundError):
            client.get_manifest("m/x", "v1", [manifests.DOCKER_MANIFEST], "manifest for m/x:v1")


def test_unknown_manifest_is_not_found(any_registry: Registry) -> None:
    with _client(any_registry) as client, pytest.raises(NotFoundError, match="manifest for nope:x not found"):
        client.get_manifest("nope", "x", manifests.ACCEPT, "manifest for nope:x")


def test_wrong_and_missing_credentials(auth_registry: Registry) -> None:
    with pytest.raises(AuthenticationError, match="incorrect username or password"):
        _client(auth_registry, password="wrong").login()
    with pytest.raises(AuthenticationError, match="authentication required"):
        RegistryClient(auth_registry.host).get_manifest("x", "y", manifests.ACCEPT, "m")
    _client(auth_registry).login()


class _Fails500(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = json.dumps({"errors": [{"code": "UNKNOWN", "message": "disk on fire"}]}).encode()
        status = 200 if self.path == "/v2/" else 500
        self.send_response(status)
        self.send_header("Content-Length", str(len(body) if status == 500 else 0))
        self.end_headers()
        if status == 500:
            self.wfile.write(body)


def test_server_error_is_one_clear_line(tiny_server: Factory) -> None:
    server = tiny_server(_Fails500)
    with RegistryClient(server.host) as client, pytest.raises(ServerError, match=r"500.*disk on fire"):
        client.get_manifest("x", "y", manifests.ACCEPT, "manifest for x:y")


def _redirecting_handler(target: str) -> type[BaseHTTPRequestHandler]:
    class Redirects(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.headers.get("Authorization") != Credentials("u", "p").basic_header():
                self.send_response(401)
                self.send_header("WWW-Authenticate", 'Basic realm="r"')
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(307)
            self.send_header("Location", f"{target}/storage/blob")
            self.send_header("Content-Length", "0")
            self.end_headers()

    return Redirects


class _Storage(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"blob-bytes"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def test_redirect_to_another_host_drops_authorization(tiny_server: Factory) -> None:
    storage = tiny_server(_Storage, host="127.0.0.2")
    registry = tiny_server(_redirecting_handler(storage.url))
    with RegistryClient(registry.host, credentials=Credentials("u", "p")) as client:
        assert client.open_blob("x", "sha256:" + "0" * 64).read() == b"blob-bytes"
    assert any("Authorization" in headers for _, _, headers in registry.requests)
    assert storage.requests, "the redirect was not followed"
    assert all("Authorization" not in headers for _, _, headers in storage.requests)


def _bearer_handlers() -> tuple[type[BaseHTTPRequestHandler], Callable[[str], type[BaseHTTPRequestHandler]]]:
    class TokenServer(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            query = parse_qs(urlsplit(self.path).query)
            expected = "Basic " + base64.b64encode(b"u:p").decode()
            if self.headers.get("Authorization") != expected:
                self.send_response(401)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            token = "tok-" + "+".join(sorted(query.get("scope", [])))
            body = json.dumps({"token": token}).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    def registry(realm: str) -> type[BaseHTTPRequestHandler]:
        class BearerRegistry(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                auth = self.headers.get("Authorization", "")
                if self.path == "/v2/" and not auth:
                    self._challenge("")
                elif self.path.startswith("/v2/a/manifests/") and auth == "Bearer tok-repository:a:pull":
                    body = b'{"schemaVersion":2,"layers":[]}'
                    self.send_response(200)
                    self.send_header("Content-Type", manifests.OCI_MANIFEST)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                else:
                    self._challenge(',scope="repository:a:pull"')

            def _challenge(self, scope: str) -> None:
                self.send_response(401)
                self.send_header("WWW-Authenticate", f'Bearer realm="{realm}/token",service="svc"{scope}')
                self.send_header("Content-Length", "0")
                self.end_headers()

        return BearerRegistry

    return TokenServer, registry


def test_bearer_token_flow(tiny_server: Factory) -> None:
    token_handler, registry_handler = _bearer_handlers()
    tokens = tiny_server(token_handler)
    registry = tiny_server(registry_handler(tokens.url))
    with RegistryClient(registry.host, credentials=Credentials("u", "p")) as client:
        data, _, _ = client.get_manifest("a", "latest", manifests.ACCEPT, "m")
    assert data == b'{"schemaVersion":2,"layers":[]}'
    token_queries = [parse_qs(urlsplit(path).query) for _, path, _ in tokens.requests]
    assert {"service": ["svc"], "scope": ["repository:a:pull"], "account": ["u"]} in token_queries
    with RegistryClient(registry.host, credentials=Credentials("u", "bad")) as client, pytest.raises(
        AuthenticationError, match="incorrect username or password"
    ):
        client.get_manifest("a", "latest", manifests.ACCEPT, "m")


def test_insecure_registries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("REFRT_INSECURE_REGISTRIES", raising=False)
    assert is_insecure("127.0.0.1:5000") and is_insecure("localhost:5000") and is_insecure("[::1]:5000")
    assert not is_insecure("registry.example:5000")
    monkeypatch.setenv("REFRT_INSECURE_REGISTRIES", "registry.example:5000, 10.0.0.0/8")
    assert is_insecure("registry.example:5000") and is_insecure("10.1.2.3:443")
    assert not is_insecure("registry.example:5001")
    assert RegistryClient("registry.example:5001").scheme == "https"


def test_tls_registry_insecure_falls_back_to_https_and_secure_verifies() -> None:
    with Registry(tls=True) as reg:
        with RegistryClient(reg.host) as client:  # loopback: insecure, so an unverified HTTPS is accepted
            digest = _push_raw(client, "tls/x", b"over tls")
            assert client.scheme == "https"
            assert client.open_blob("tls/x", digest).read() == b"over tls"
        with RegistryClient(reg.host, insecure=False) as strict, pytest.raises(
            ConnectionFailedError, match="certificate verify failed"
        ):
            strict.ping()


class _HugeManifest(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path == "/v2/":
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Type", manifests.OCI_MANIFEST)
        self.send_header("Content-Length", str(64 << 20))
        self.end_headers()
        self.wfile.write(b"{" * 1024)
        self.close_connection = True


def test_oversized_manifest_is_refused_unread(tiny_server: Factory) -> None:
    server = tiny_server(_HugeManifest)
    with RegistryClient(server.host) as client, pytest.raises(RegistryError, match="larger than the 4194304"):
        client.get_manifest("big", "1", manifests.ACCEPT, "manifest for big:1")


def test_insecure_registries_from_the_daemon_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("REFRT_INSECURE_REGISTRIES", raising=False)
    config = tmp_path / "daemon.json"
    monkeypatch.setenv("REFRT_DAEMON_CONFIG", str(config))
    assert not is_insecure("registry.example:5000")  # no file: only loopback is insecure
    config.write_text(json.dumps({"insecure-registries": ["registry.example:5000", "192.168.0.0/16"]}))
    assert is_insecure("registry.example:5000") and is_insecure("192.168.7.1:443")
    assert not is_insecure("registry.example:5001") and not is_insecure("10.0.0.1:5000")
    assert RegistryClient("registry.example:5000").scheme == "http"
    config.write_text('{"insecure-registries": "registry.example:5000"}')
    with pytest.raises(RefrtError, match="insecure-registries must be a list"):
        is_insecure("registry.example:5000")
