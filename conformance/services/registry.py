"""A real OCI registry (CNCF distribution 2.8, Debian's ``docker-registry``) for push/pull checks.

Docker Hub is out of reach, so every registry test and suite talks to one of these: started on 127.0.0.1 with a
free port, filesystem storage in a temporary directory, optionally behind htpasswd (bcrypt) Basic auth, and
stopped by its pid - nothing it creates outlives ``stop()``. Tests use it through ``tests/fixtures/registry.py``;
the harness starts one as the ``service.registry`` feature and hands suites ``env()``.

Two kinds of auth: ``htpasswd`` (Basic, bcrypt file made by apache2-utils' ``htpasswd``) and ``token`` (Bearer,
as Docker Hub: the registry sends clients to a token server - :mod:`conformance.services.token_server` - and
checks the signed tokens they bring back).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Literal

from conformance.services import ServiceError
from conformance.services.token_server import TokenServer

BINARY = "docker-registry"
HTPASSWD = "htpasswd"
#: util-linux's setpriv sets the parent-death signal before exec'ing the registry.
SETPRIV = "setpriv"
SERVICE_NAME = "conformance-registry"
AuthMode = Literal["htpasswd", "token"]
#: A port can be taken by someone else between probing and binding (8 people share this machine): retry.
START_ATTEMPTS = 3


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def htpasswd_line(credentials: Credentials) -> str:
    """A bcrypt htpasswd entry made by apache2-utils (distribution accepts only bcrypt)."""
    if shutil.which(HTPASSWD) is None:
        raise ServiceError(f"{HTPASSWD} not found (install apache2-utils)")
    proc = subprocess.run(
        [HTPASSWD, "-Bbn", credentials.username, credentials.password],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise ServiceError(f"htpasswd failed: {proc.stderr.strip()}")
    return proc.stdout.strip()


class Registry:
    """One running ``docker-registry``. Use as ``with Registry(auth=Credentials("u", "p")) as reg: reg.host``."""

    def __init__(
        self,
        *,
        auth: Credentials | None = None,
        auth_mode: AuthMode = "htpasswd",
        tls: bool = False,
        bind: str = "127.0.0.1",
        workdir: Path | None = None,
        startup_timeout: float = 20.0,
    ) -> None:
        self.auth = auth
        self.auth_mode = auth_mode
        self.tls = tls
        self.token_server: TokenServer | None = None
        self.bind = bind
        self.startup_timeout = startup_timeout
        self._given_workdir = workdir
        self.workdir: Path | None = None
        self.port: int | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    # -- what users of a running registry need -------------------------------------------------------------
    @property
    def host(self) -> str:
        """``127.0.0.1:PORT``, the registry part of image references."""
        if self.port is None:
            raise ServiceError("registry is not running")
        return f"{self.bind}:{self.port}"

    @property
    def address(self) -> str:
        """``host:port``, the name the harness session gives suites (``{{ registry }}``)."""
        return self.host

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}"

    @property
    def certificate(self) -> Path:
        """The self-signed certificate of a ``tls=True`` registry (what a client would have to trust)."""
        if self.workdir is None:
            raise ServiceError("registry is not running")
        return self.workdir / "tls.crt"

    @property
    def storage(self) -> Path:
        """The filesystem storage root (``docker/registry/v2/...`` lives below it)."""
        if self.workdir is None:
            raise ServiceError("registry is not running")
        return self.workdir / "storage"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def blob_data_path(self, digest: str) -> Path:
        """Where distribution keeps a blob's bytes; tests tamper with it to serve corrupt content."""
        algorithm, _, hexpart = digest.partition(":")
        return self.storage / "docker/registry/v2/blobs" / algorithm / hexpart[:2] / hexpart / "data"

    def env(self) -> dict[str, str]:
        """Variables a suite sees when it requires ``service.registry``."""
        env = {"REGISTRY": self.host}
        if self.auth is not None:
            env["REGISTRY_USER"] = self.auth.username
            env["REGISTRY_PASSWORD"] = self.auth.password
        return env

    # -- life cycle ---------------------------------------------------------------------------------------------
    def start(self) -> None:
        """Start the registry and wait until ``GET /v2/`` answers (200, or 401 behind auth)."""
        if self._proc is not None:
            return
        if shutil.which(BINARY) is None:
            raise ServiceError(f"{BINARY} not found (install the docker-registry package)")
        self._make_workdir()
        last_error = ""
        try:
            self._start_token_server()
            self._make_certificate()
            for _ in range(START_ATTEMPTS):
                try:
                    self.port = free_port(self.bind)
                except OSError as exc:
                    raise ServiceError(f"cannot bind a port on {self.bind}: {exc}") from None
                self._write_config()
                self._spawn()
                try:
                    self._wait_ready()
                    return
                except ServiceError as exc:
                    last_error = str(exc)
                    self._terminate()
        except BaseException:
            self.stop()
            raise
        self.stop()
        raise ServiceError(f"docker-registry did not start: {last_error}")

    def stop(self) -> None:
        """Stop the process (TERM, then KILL) and remove the working directory. Idempotent."""
        self._terminate()
        if self.token_server is not None:
            self.token_server.stop()
            self.token_server = None
        if self.workdir is not None and self._given_workdir is None:
            shutil.rmtree(self.workdir, ignore_errors=True)
        self.workdir = None
        self.port = None

    def __enter__(self) -> Registry:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- steps --------------------------------------------------------------------------------------------------
    def _make_workdir(self) -> None:
        if self._given_workdir is not None:
            self.workdir = self._given_workdir
            self.workdir.mkdir(parents=True, exist_ok=True)
        else:
            self.workdir = Path(tempfile.mkdtemp(prefix="conformance-registry-"))
        (self.workdir / "storage").mkdir(exist_ok=True)

    def _start_token_server(self) -> None:
        if self.auth is None or self.auth_mode != "token":
            return
        assert self.workdir is not None
        self.token_server = TokenServer(self.workdir, self.auth.username, self.auth.password, SERVICE_NAME)
        self.token_server.start()

    def _make_certificate(self) -> None:
        """A self-signed certificate for the bind address (subjectAltName IP), for ``tls=True``."""
        if not self.tls:
            return
        assert self.workdir is not None
        proc = subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=conformance",
             "-addext", f"subjectAltName=IP:{self.bind}", "-keyout", str(self.workdir / "tls.key"),
             "-out", str(self.certificate)],
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0:
            raise ServiceError(f"openssl could not make the TLS certificate: {proc.stderr.strip()[-300:]}")

    def _write_config(self) -> None:
        assert self.workdir is not None
        lines = [
            "version: 0.1",
            "log:",
            "  level: warn",
            "  accesslog:",
            "    disabled: true",
            "storage:",
            "  filesystem:",
            f"    rootdirectory: {self.workdir / 'storage'}",
            "  delete:",
            "    enabled: true",
            "http:",
            f"  addr: {self.bind}:{self.port}",
            f"  secret: conformance-{os.getpid()}-{self.port}",
        ]
        if self.tls:
            lines += ["  tls:", f"    certificate: {self.certificate}", f"    key: {self.workdir / 'tls.key'}"]
        if self.token_server is not None:
            lines += [
                "auth:",
                "  token:",
                f"    realm: {self.token_server.realm}",
                f"    service: {SERVICE_NAME}",
                f"    issuer: {self.token_server.issuer}",
                f"    rootcertbundle: {self.token_server.cert}",
            ]
        elif self.auth is not None:
            htpasswd = self.workdir / "htpasswd"
            htpasswd.write_text(htpasswd_line(self.auth) + "\n")
            htpasswd.chmod(0o600)
            lines += ["auth:", "  htpasswd:", "    realm: conformance-registry", f"    path: {htpasswd}"]
        (self.workdir / "config.yml").write_text("\n".join(lines) + "\n")

    def _spawn(self) -> None:
        assert self.workdir is not None
        argv = [BINARY, "serve", str(self.workdir / "config.yml")]
        if shutil.which(SETPRIV):
            # If the owner dies without stop() (SIGKILL, a CI timeout), the kernel terminates the registry too.
            argv = [SETPRIV, "--pdeathsig", "TERM", "--", *argv]
        with open(self.workdir / "registry.log", "ab") as log:
            self._proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
                env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "OTEL_TRACES_EXPORTER": "none"},
            )

    def _wait_ready(self) -> None:
        assert self._proc is not None
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise ServiceError(f"exited with status {self._proc.returncode}: {self._log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.url}/v2/", timeout=2, context=self._client_context()) as resp:
                    if resp.status == 200:
                        return
            except urllib.error.HTTPError as exc:
                if exc.code == 401 and self.auth is not None:
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise ServiceError(f"no answer on {self.url}/v2/ within {self.startup_timeout:.0f}s: {self._log_tail()}")

    def _client_context(self) -> ssl.SSLContext | None:
        if not self.tls:
            return None
        return ssl.create_default_context(cafile=str(self.certificate))

    def _terminate(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def _log_tail(self, lines: int = 10) -> str:
        if self.workdir is None:
            return ""
        try:
            text = (self.workdir / "registry.log").read_text(errors="replace")
        except OSError:
            return ""
        all_lines = text.strip().splitlines()
        # A Go panic ends in a stack trace; the line that explains it comes first.
        key = [line for line in all_lines if line.startswith("panic:") or "level=fatal" in line]
        return " | ".join(key[-3:] or all_lines[-lines:])
