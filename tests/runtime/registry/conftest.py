"""Registry tests use the real docker-registry fixtures (the lead adds them to tests/conftest.py's pytest_plugins;
until then they are imported here)."""

from tests.fixtures.registry import any_registry, auth_registry, registry, tiny_server

__all__ = ["any_registry", "auth_registry", "registry", "tiny_server"]
