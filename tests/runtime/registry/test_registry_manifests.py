"""Manifest kinds, platform choice, endpoints and login server names: the pure parts of the registry client."""

from __future__ import annotations

import json

import pytest

from runtime.errors import UsageError
from runtime.registry import manifests
from runtime.registry.endpoints import endpoint_for
from runtime.registry.endpoints import server_domain as _server_domain
from runtime.registry.errors import UnsupportedManifestError
from runtime.registry.manifests import Platform


def _index(*platforms: dict[str, str]) -> bytes:
    entries = [
        {"mediaType": manifests.OCI_MANIFEST, "digest": f"sha256:{str(i) * 64}", "size": 1, "platform": p}
        for i, p in enumerate(platforms)
    ]
    return json.dumps({"schemaVersion": 2, "manifests": entries}).encode()


def test_pick_platform_by_os_arch_and_variant() -> None:
    data = _index(
        {"os": "linux", "architecture": "arm", "variant": "v6"},
        {"os": "linux", "architecture": "arm", "variant": "v7"},
        {"os": "windows", "architecture": "amd64"},
        {"os": "linux", "architecture": "amd64"},
    )
    assert manifests.pick_platform(data, Platform("linux", "arm", "v7")).digest == "sha256:" + "1" * 64
    assert manifests.pick_platform(data, Platform("linux", "amd64")).digest == "sha256:" + "3" * 64
    with pytest.raises(UnsupportedManifestError, match=r"no matching manifest for linux/s390x .*linux/arm/v6"):
        manifests.pick_platform(data, Platform("linux", "s390x"))


def test_platform_parse_and_host() -> None:
    assert Platform.parse("linux/arm64") == Platform("linux", "arm64")
    assert Platform.parse("linux/arm/v7") == Platform("linux", "arm", "v7")
    assert Platform.parse("riscv64") == Platform("linux", "riscv64")
    with pytest.raises(UnsupportedManifestError, match="invalid platform"):
        Platform.parse("linux//")
    assert Platform.host().os == "linux" and Platform.host().architecture


def test_media_type_detection_and_schema1_refusal() -> None:
    oci = json.dumps({"schemaVersion": 2, "mediaType": manifests.DOCKER_MANIFEST, "layers": []}).encode()
    assert manifests.media_type_of(oci, "application/json") == manifests.DOCKER_MANIFEST
    bare = json.dumps({"schemaVersion": 2, "config": {}, "layers": []}).encode()
    assert manifests.media_type_of(bare, "") == manifests.OCI_MANIFEST
    assert manifests.media_type_of(_index(), "") == manifests.OCI_INDEX
    schema1 = json.dumps({"schemaVersion": 1, "fsLayers": []}).encode()
    with pytest.raises(UnsupportedManifestError, match="schema 1 are not supported"):
        manifests.check_supported(manifests.media_type_of(schema1, ""))
    with pytest.raises(UnsupportedManifestError, match="not valid JSON"):
        manifests.media_type_of(b"<html>", "text/html")


def test_endpoints_and_login_server_names() -> None:
    assert endpoint_for("docker.io") == "registry-1.docker.io"
    assert endpoint_for("127.0.0.1:5000") == "127.0.0.1:5000"
    assert _server_domain(None) == "docker.io"
    assert _server_domain("https://index.docker.io/v1/") == "docker.io"
    assert _server_domain("http://127.0.0.1:5000/") == "127.0.0.1:5000"
    with pytest.raises(UsageError):
        _server_domain("127.0.0.1:5000/some/path")
