"""Which host to dial for a reference's registry, and a client logged in with the stored credentials."""

from __future__ import annotations

from pathlib import Path

from runtime.errors import UsageError
from runtime.registry.auth import CredentialStore
from runtime.registry.client import RegistryClient
from runtime.store.reference import DEFAULT_DOMAIN

#: Docker Hub's name in references is ``docker.io``; its API answers on this host.
DOCKER_HUB_ENDPOINT = "registry-1.docker.io"


def endpoint_for(domain: str) -> str:
    return DOCKER_HUB_ENDPOINT if domain == DEFAULT_DOMAIN else domain


def client_for(domain: str, config_dir: str | Path | None) -> RegistryClient:
    """A client for ``domain`` carrying the login stored for it (anonymous when there is none)."""
    credentials = CredentialStore(config_dir).get(domain)
    return RegistryClient(endpoint_for(domain), credentials=credentials)


def server_domain(server: str | None) -> str:
    """The registry a login names: a host[:port] or a URL (``refrt login``, the daemon's ``/auth``); docker.io
    when none is given."""
    if not server:
        return DEFAULT_DOMAIN
    server = server.removeprefix("https://").removeprefix("http://").rstrip("/")
    server = server.removesuffix("/v1").removesuffix("/v2")
    if server in ("index.docker.io", "registry-1.docker.io"):
        return DEFAULT_DOMAIN
    if not server or "/" in server:
        raise UsageError(f"invalid registry server {server!r}")
    return server
