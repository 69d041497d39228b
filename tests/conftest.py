"""Shared test configuration.

Sample suites under ``*/data/`` are inputs of the harness's own tests (some fail or error on purpose): they must
never be collected as suites when pytest walks ``tests/``. Fixture modules that several areas use live in
``tests/fixtures/`` and are registered here.
"""

from __future__ import annotations

import importlib.util

collect_ignore_glob = ["*/data/*", "data/*"]

pytest_plugins = [
    name for name in ("tests.fixtures.daemon_roots", "tests.fixtures.registry", "tests.fixtures.refrt",
                      "tests.fixtures.targets")
    if importlib.util.find_spec(name) is not None
]
