"""Fixtures of the kernel-check tests: the local target and one manifest of this machine per session."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from conformance.kernel import Manifest, check
from conformance.targets import Target, get_target


@pytest.fixture(scope="session")
def local_target() -> Iterator[Target]:
    target = get_target("local")
    target.up()
    yield target
    target.down()


@pytest.fixture(scope="session")
def local_manifest(local_target: Target) -> Manifest:
    return check(local_target)
