"""Challenge parsing and the docker-compatible credential store."""

from __future__ import annotations

import base64
import json
import stat
from pathlib import Path

import pytest

from runtime.registry.auth import DOCKER_HUB_KEY, Credentials, CredentialStore, parse_challenges
from runtime.registry.errors import RegistryError


def test_parse_bearer_challenge_with_commas_in_scope() -> None:
    header = 'Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull,push"'
    [challenge] = parse_challenges(header)
    assert challenge.scheme == "bearer"
    assert challenge.realm == "https://auth.example/token"
    assert challenge.params["service"] == "registry.example"
    assert challenge.params["scope"] == "repository:a/b:pull,push"


def test_parse_several_challenges_and_tokens() -> None:
    header = 'Basic realm="r\\"1", Bearer realm=http://h/t,error=insufficient_scope'
    basic, bearer = parse_challenges(header)
    assert (basic.scheme, basic.realm) == ("basic", 'r"1')
    assert bearer.scheme == "bearer"
    assert bearer.params == {"realm": "http://h/t", "error": "insufficient_scope"}


def test_parse_empty_header() -> None:
    assert parse_challenges("") == []


def test_store_writes_docker_format_with_mode_0600(tmp_path: Path) -> None:
    store = CredentialStore(tmp_path / "cfg")
    store.store("127.0.0.1:5000", Credentials("me", "pa:ss"))
    data = json.loads(store.path.read_text())
    assert data == {"auths": {"127.0.0.1:5000": {"auth": base64.b64encode(b"me:pa:ss").decode()}}}
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    assert store.get("127.0.0.1:5000") == Credentials("me", "pa:ss")
    assert store.get("127.0.0.1:5001") is None


def test_store_keeps_foreign_keys_and_erases(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"credsStore": "x", "auths": {"other:1": {"auth": "dTpw"}}}))
    store = CredentialStore(tmp_path)
    store.store("docker.io", Credentials("u", "p"))
    data = json.loads(path.read_text())
    assert data["credsStore"] == "x"
    assert set(data["auths"]) == {"other:1", DOCKER_HUB_KEY}
    assert store.erase("docker.io") is True
    assert store.erase("docker.io") is False
    assert set(json.loads(path.read_text())["auths"]) == {"other:1"}


def test_store_rejects_garbage(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(RegistryError, match="cannot read"):
        CredentialStore(tmp_path).get("h:1")
