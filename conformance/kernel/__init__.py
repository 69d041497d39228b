"""check-kernel: what the target's kernel offers containers, from its config and from live probes.

``check(target, kernel_config=None) -> Manifest``; ``features(manifest)`` gives the ``requires:`` keys.
"""

from conformance.kernel.manifest import Manifest, Verdict, check, features, load_manifest
from conformance.kernel.probes import ProbeResult

__all__ = ["Manifest", "ProbeResult", "Verdict", "check", "features", "load_manifest"]
