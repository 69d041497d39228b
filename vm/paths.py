"""Where the VM machinery keeps its files.

Two places, like refrt's root and state: a *cache* for what is expensive and reusable (built images keyed by
their recipe hash, golden snapshots, the KVM verdict), under ``$XDG_CACHE_HOME/conformance/vm`` (default
``~/.cache``), and a *run* directory for what belongs to live VMs (overlays, serial logs, QMP sockets, pid/state
files). The run directory is short on purpose: QMP sockets are unix sockets, whose paths are limited to 107 bytes.
"""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """``$CONFORMANCE_VM_CACHE`` or ``$XDG_CACHE_HOME/conformance/vm`` (``~/.cache`` by default)."""
    explicit = os.environ.get("CONFORMANCE_VM_CACHE")
    if explicit:
        return Path(explicit).absolute()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).absolute() / "conformance" / "vm"


def run_root() -> Path:
    """``$CONFORMANCE_VM_RUN``, else a per-user runtime directory that survives the harness process."""
    explicit = os.environ.get("CONFORMANCE_VM_RUN")
    if explicit:
        return Path(explicit).absolute()
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg and os.access(xdg, os.W_OK):
        return Path(xdg) / "conformance-vm"
    if os.geteuid() == 0:
        return Path("/run/conformance-vm")
    return Path(f"/tmp/conformance-vm-{os.getuid()}")


def locks_dir() -> Path:
    """flock files that serialise image builds and golden-snapshot creation across processes."""
    return cache_root() / "locks"
