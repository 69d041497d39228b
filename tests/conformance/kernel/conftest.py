"""Fixtures of the kernel-check tests: the local target and one manifest of this machine per session."""

from __future__ import annotations

import pytest

from conformance.kernel import Manifest, check
from conformance.targets import Target


@pytest.fixture(scope="session")
def local_manifest(local_target: Target) -> Manifest:
    return check(local_target)
