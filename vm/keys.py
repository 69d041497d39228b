"""The SSH key pair that opens a guest image.

Each built image carries its own key pair (generated next to it, inside the image's cache directory), so an image
and the key that opens it are never out of step: deleting the cache regenerates both. ``ssh-keygen`` (package
openssh-client) writes an OpenSSH ed25519 key, which paramiko reads.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from vm.errors import ToolMissing, VmError


@dataclass(frozen=True)
class KeyPair:
    private: Path

    @property
    def public(self) -> Path:
        return self.private.with_name(self.private.name + ".pub")

    def public_text(self) -> str:
        return self.public.read_text().strip()


def ensure_key(private: Path, comment: str = "conformance-vm") -> KeyPair:
    """Return the key pair at ``private``, generating it first when it does not exist."""
    pair = KeyPair(private)
    if private.exists() and pair.public.exists():
        return pair
    if shutil.which("ssh-keygen") is None:
        raise ToolMissing("ssh-keygen", "openssh-client")
    private.parent.mkdir(parents=True, exist_ok=True)
    for stale in (private, pair.public):
        stale.unlink(missing_ok=True)
    proc = subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(private)],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise VmError(f"ssh-keygen failed: {proc.stderr.strip()}")
    private.chmod(0o600)
    return pair
