"""The registry service manager starts the real docker-registry, answers /v2/, and leaves nothing behind."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from conformance.services import ServiceError
from conformance.services import registry as registry_module
from conformance.services.registry import Credentials, Registry

REPO = Path(__file__).resolve().parents[3]


def _status(url: str, auth: Credentials | None = None) -> int:
    request = urllib.request.Request(url)
    if auth is not None:
        token = base64.b64encode(f"{auth.username}:{auth.password}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=5) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def test_open_registry_answers_and_stops_cleanly() -> None:
    reg = Registry()
    reg.start()
    pid, workdir, url = reg.pid, reg.workdir, reg.url
    assert pid is not None and workdir is not None
    assert reg.host.startswith("127.0.0.1:")
    assert _status(f"{url}/v2/") == 200
    assert reg.env() == {"REGISTRY": reg.host}
    assert reg.address == reg.host
    reg.stop()
    reg.stop()  # idempotent
    assert not os.path.exists(f"/proc/{pid}")
    assert not workdir.exists()
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(f"{url}/v2/", timeout=2)


def test_htpasswd_registry_demands_the_right_password() -> None:
    creds = Credentials("alice", "wonder:land")
    with Registry(auth=creds) as reg:
        assert _status(f"{reg.url}/v2/") == 401
        assert _status(f"{reg.url}/v2/", Credentials("alice", "wrong")) == 401
        assert _status(f"{reg.url}/v2/", creds) == 200
        assert reg.env()["REGISTRY_USER"] == "alice"
        htpasswd = (reg.workdir / "htpasswd").read_text()  # type: ignore[operator]
        assert htpasswd.startswith("alice:$2y$")


def test_two_registries_at_once_get_their_own_ports() -> None:
    with Registry() as a, Registry() as b:
        assert a.host != b.host
        assert a.storage != b.storage


def test_blob_data_path_points_into_storage(registry: Registry) -> None:
    path = registry.blob_data_path("sha256:" + "ab" * 32)
    assert path == registry.storage / "docker/registry/v2/blobs/sha256/ab" / ("ab" * 32) / "data"


def test_missing_binary_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry_module, "BINARY", "no-such-docker-registry")
    reg = Registry()
    with pytest.raises(ServiceError, match="not found"):
        reg.start()
    assert reg.workdir is None


def test_unbindable_address_is_a_clear_error() -> None:
    reg = Registry(bind="192.0.2.1", startup_timeout=5)
    with pytest.raises(ServiceError, match="cannot bind"):
        reg.start()
    assert reg.pid is None and reg.workdir is None


def test_registry_that_exits_reports_its_log(monkeypatch: pytest.MonkeyPatch) -> None:
    # A storage driver distribution does not know makes it exit at once; the error carries its log.
    original = Registry._write_config

    def broken_config(self: Registry) -> None:
        original(self)
        config = self.workdir / "config.yml"  # type: ignore[operator]
        config.write_text(config.read_text().replace("filesystem:", "no-such-driver:"))

    monkeypatch.setattr(Registry, "_write_config", broken_config)
    reg = Registry(startup_timeout=5)
    with pytest.raises(ServiceError, match="did not start: exited with status") as info:
        reg.start()
    assert "no-such-driver" in str(info.value)
    assert reg.pid is None and reg.workdir is None


def test_token_registry_sends_clients_to_its_token_server() -> None:
    creds = Credentials("bob", "builder")
    reg = Registry(auth=creds, auth_mode="token")
    with reg:
        assert reg.token_server is not None
        token_server = reg.token_server
        request = urllib.request.Request(f"{reg.url}/v2/")
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(request, timeout=5)
        assert info.value.code == 401
        challenge = info.value.headers["WWW-Authenticate"]
        assert challenge.startswith(f'Bearer realm="{token_server.realm}"')
        # Wrong password: the token server refuses; right one: a token the registry accepts.
        assert _status(f"{token_server.realm}?service=conformance-registry", Credentials("bob", "x")) == 401
        token_request = urllib.request.Request(f"{token_server.realm}?service=conformance-registry")
        basic = base64.b64encode(b"bob:builder").decode()
        token_request.add_header("Authorization", f"Basic {basic}")
        with urllib.request.urlopen(token_request, timeout=5) as resp:
            token = json.loads(resp.read())["token"]
        authed = urllib.request.Request(f"{reg.url}/v2/", headers={"Authorization": f"Bearer {token}"})
        with urllib.request.urlopen(authed, timeout=5) as resp:
            assert resp.status == 200
    assert not token_server.running


def test_registry_dies_with_its_owner(tmp_path: Path) -> None:
    """A harness killed with SIGKILL cannot call stop(): the registry must not outlive it."""
    script = (
        "import sys, time\n"
        "from conformance.services.registry import Registry\n"
        f"reg = Registry(workdir=__import__('pathlib').Path({str(tmp_path / 'reg')!r}))\n"
        "reg.start()\n"
        "print(reg.pid, flush=True)\n"
        "time.sleep(60)\n"
    )
    owner = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, cwd=REPO)
    assert owner.stdout is not None
    pid = int(owner.stdout.readline())
    assert os.path.exists(f"/proc/{pid}")
    owner.kill()
    owner.wait()
    deadline = time.monotonic() + 10
    while os.path.exists(f"/proc/{pid}") and time.monotonic() < deadline:
        time.sleep(0.05)
    survived = os.path.exists(f"/proc/{pid}")
    if survived:
        os.kill(pid, signal.SIGKILL)  # never leak, even when failing
    assert not survived, "registry outlived its owner"
