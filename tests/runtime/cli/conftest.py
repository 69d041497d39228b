"""The CLI tests borrow the container tests' refrt root and the daemon tests' real dockerd (each started once per
session, only when a test asks)."""

from tests.runtime.container.conftest import refrt  # noqa: F401 - fixtures
from tests.runtime.daemon.conftest import dockerd  # noqa: F401 - fixtures
