"""A token server for ``docker-registry`` in token-auth mode: the Bearer flow Docker Hub uses, on loopback.

distribution verifies each Bearer token as a JWT signed (RS256) by a key whose certificate chain ends in its
``rootcertbundle``; the token names the issuer, the audience (the registry's ``service``) and the granted
``access`` (repository, actions). This server makes a self-signed key and certificate with ``openssl``, answers
``GET /token?service=&scope=...`` - granting every requested scope to the right Basic credentials, nothing to
anonymous callers, 401 to wrong credentials - and signs with ``openssl dgst``. It runs in a thread of the
process that owns the registry and stops with it.
"""

from __future__ import annotations

import base64
import binascii
import json
import secrets
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from conformance.services import ServiceError

ISSUER = "conformance-token-issuer"
TOKEN_LIFETIME = 300


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def make_signing_key(directory: Path) -> tuple[Path, Path]:
    """A fresh RSA key and self-signed certificate (PEM) in ``directory``: (key, cert)."""
    key, cert = directory / "token.key", directory / "token.crt"
    proc = subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", f"/CN={ISSUER}",
         "-keyout", str(key), "-out", str(cert)],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise ServiceError(f"openssl could not make the token signing key: {proc.stderr.strip()[-300:]}")
    key.chmod(0o600)
    return key, cert


def parse_scope(scope: str) -> dict[str, Any] | None:
    """``repository:a/b:pull,push`` -> an ``access`` entry; None when malformed."""
    kind, sep, rest = scope.partition(":")
    name, sep2, actions = rest.rpartition(":")
    if not (sep and sep2 and kind and name):
        return None
    return {"type": kind, "name": name, "actions": [a for a in actions.split(",") if a]}


class TokenServer:
    """Issues registry tokens for one user. ``realm`` is the URL the registry's challenge points at."""

    issuer = ISSUER

    def __init__(self, workdir: Path, username: str, password: str, service: str) -> None:
        self.username = username
        self.password = password
        self.service = service
        self.key, self.cert = make_signing_key(workdir)
        self._x5c = self._cert_der_b64()
        self.issued: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,), daemon=True)

    @property
    def realm(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}/token"

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        if self._thread.is_alive():
            self._httpd.shutdown()
            self._thread.join(timeout=5)
        self._httpd.server_close()

    def _cert_der_b64(self) -> str:
        pem = self.cert.read_text()
        body = "".join(line for line in pem.splitlines() if line and not line.startswith("-----"))
        return base64.b64encode(base64.b64decode(body)).decode("ascii")

    def _sign(self, signing_input: bytes) -> bytes:
        proc = subprocess.run(
            ["openssl", "dgst", "-sha256", "-sign", str(self.key)],
            input=signing_input,
            capture_output=True,
            check=False,
        )
        if proc.returncode != 0:
            raise ServiceError(f"openssl could not sign a token: {proc.stderr.decode(errors='replace')[-300:]}")
        return proc.stdout

    def issue(self, subject: str, access: list[dict[str, Any]]) -> str:
        now = int(time.time())
        header = {"typ": "JWT", "alg": "RS256", "x5c": [self._x5c]}
        claims = {
            "iss": ISSUER,
            "sub": subject,
            "aud": self.service,
            "exp": now + TOKEN_LIFETIME,
            "nbf": now - 10,
            "iat": now,
            "jti": secrets.token_hex(8),
            "access": access,
        }
        signing_input = f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}".encode()
        with self._lock:
            self.issued.append(claims)
        return f"{signing_input.decode()}.{_b64url(self._sign(signing_input))}"

    def _authenticate(self, header: str | None) -> str | None:
        """The user name for valid Basic credentials, "" for none, None for wrong ones."""
        if not header:
            return ""
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "basic":
            return None
        try:
            user, _, password = base64.b64decode(value).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return None
        return user if (user, password) == (self.username, self.password) else None

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                parts = urlsplit(self.path)
                if parts.path != "/token":
                    self._answer(404, {"errors": [{"code": "NOT_FOUND"}]})
                    return
                user = server._authenticate(self.headers.get("Authorization"))
                if user is None:
                    self._answer(401, {"errors": [{"code": "UNAUTHORIZED", "message": "bad credentials"}]})
                    return
                query = parse_qs(parts.query)
                access: list[dict[str, Any]] = []
                if user:
                    for scope in query.get("scope", []):
                        for one in scope.split(" "):
                            entry = parse_scope(one)
                            if entry is not None:
                                access.append(entry)
                token = server.issue(user or "anonymous", access)
                self._answer(200, {"token": token, "access_token": token, "expires_in": TOKEN_LIFETIME})

            def _answer(self, status: int, doc: dict[str, Any]) -> None:
                body = json.dumps(doc).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        return Handler

