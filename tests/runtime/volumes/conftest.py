"""Fixtures for the end-to-end volume tests: a refrt root holding busybox (see tests/runtime/network/runner)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.runtime.network.runner import Refrt, make_refrt, mounts_mentioning, remove_all


@pytest.fixture(scope="module")
def refrt(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Refrt]:
    runner = make_refrt(tmp_path_factory, "refrt-vol")
    yield runner
    remove_all(runner)
    assert mounts_mentioning(str(runner.root)) == []
