"""refrt, deliberately broken in one way: the runtimes behind ``tests/conformance/test_broken_runtimes.py``.

Usage: ``python refrt_broken.py BREAKAGE DOCKER-ARGS...``. The test writes a two-line shell shim per breakage and
runs the suites against it with ``--runtime custom:/path/to/shim``; the shim execs this file with the breakage's
name. Each breakage is one way a container runtime can fail a promise a suite case makes (a dropped flag, an
unmasked path, a write that reaches the image...), done for real: refrt (from this checkout, or whatever
``python -m runtime`` finds first) runs the container with arguments rewritten, around an extra action, or - for
the "no namespaces" breakages - a chroot runs the command with no namespaces at all. Nothing is faked in the
output except where the breakage *is* a lie in the output (``oom-unreported``, what podman 4.3 does).

refrt's root comes from ``REFRT_ROOT``/``REFRT_STATE`` (the test gives every breakage a root of its own, since
some breakages damage the image); ``CF_BROKEN_WORK`` is a scratch directory (the chroot's root filesystem).
"""

from __future__ import annotations

import sys

import broken_containers
import broken_images
from broken_common import BREAKAGES

#: the modules that register breakages (imported for that)
MODULES = (broken_containers, broken_images)


def main(argv: list[str]) -> int:
    if len(argv) < 2 or argv[1] not in BREAKAGES:
        known = ", ".join(sorted(BREAKAGES))
        print(f"usage: refrt_broken.py BREAKAGE ARGS... (breakages: {known})", file=sys.stderr)
        return 125
    return BREAKAGES[argv[1]][1](argv[2:])


if __name__ == "__main__":
    sys.exit(main(sys.argv))
