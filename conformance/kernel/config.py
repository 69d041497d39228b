"""Reading a kernel config and classifying each option as ``enabled``, ``module``, ``missing`` or ``n/a``.

The config comes either from the target (the probe program sends ``/proc/config.gz`` or
``/boot/config-$(uname -r)``) or from a file given with ``--kernel-config``. A given file describes its own kernel,
so its version comes from the header line kconfig writes (``# Linux/x86 6.1.0 Kernel Configuration``), falling
back to the target's ``uname -r``: that is what makes an option that no longer exists ``n/a`` instead of ``missing``.
"""

from __future__ import annotations

import gzip
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from conformance.kernel.errors import KernelCheckError
from conformance.kernel.options import ALL_OPTIONS, Option, Version, applies

Status = Literal["enabled", "module", "missing", "n/a"]

_SET = re.compile(r"^(CONFIG_[A-Za-z0-9_]+)=(.*)$")
_UNSET = re.compile(r"^# (CONFIG_[A-Za-z0-9_]+) is not set")
_HEADER = re.compile(r"^# Linux/\S+ (\d+)\.(\d+)")


@dataclass
class KernelConfig:
    """A parsed config: ``values`` maps ``CONFIG_X`` to its value (``y``, ``m``, ``n`` or a string)."""

    source: str | None
    values: dict[str, str] = field(default_factory=dict)
    version: Version | None = None
    tried: list[str] = field(default_factory=list)

    @property
    def available(self) -> bool:
        return self.source is not None

    def state(self, symbol: str) -> str:
        return self.values.get(symbol, "n")


@dataclass(frozen=True)
class Classification:
    """The verdict for one option and, for ``n/a``, why it does not apply."""

    option: Option
    status: Status
    note: str = ""


def parse_version(release: str) -> Version | None:
    """``6.18.44-fc-v657`` → (6, 18)."""
    match = re.match(r"(\d+)\.(\d+)", release)
    return (int(match.group(1)), int(match.group(2))) if match else None


def parse_config(text: str, source: str | None) -> KernelConfig:
    config = KernelConfig(source=source)
    for line in text.splitlines():
        if (m := _SET.match(line)) is not None:
            config.values[m.group(1)] = m.group(2)
        elif (m := _UNSET.match(line)) is not None:
            config.values[m.group(1)] = "n"
        elif config.version is None and (m := _HEADER.match(line)) is not None:
            config.version = (int(m.group(1)), int(m.group(2)))
    return config


def read_config_file(path: str | Path) -> KernelConfig:
    """Read a config file given by the user (plain or gzipped). Raises KernelCheckError when unreadable."""
    path = Path(path)
    try:
        raw = path.read_bytes()
        text = gzip.decompress(raw).decode() if raw[:2] == b"\x1f\x8b" else raw.decode()
    except (OSError, UnicodeDecodeError, gzip.BadGzipFile) as exc:
        raise KernelCheckError(f"cannot read kernel config {path}: {exc}") from None
    config = parse_config(text, str(path))
    if not config.values:
        raise KernelCheckError(f"{path} is not a kernel config (no CONFIG_ lines)")
    return config


def unavailable(tried: list[str]) -> KernelConfig:
    """The target has no readable config; ``tried`` lists the paths looked at."""
    return KernelConfig(source=None, tried=list(tried))


def classify(
    config: KernelConfig,
    *,
    version: Version | None,
    cgroup_in_use: set[str],
    options: list[Option] = ALL_OPTIONS,
) -> list[Classification]:
    """Classify every option. ``version`` is the kernel the config belongs to."""
    if not config.available:
        return []
    set_symbols = {k for k, v in config.values.items() if v in ("y", "m")}
    result = []
    for option in options:
        why_not = applies(option, version, cgroup_in_use, set_symbols)
        if why_not:
            result.append(Classification(option, "n/a", why_not))
            continue
        value = config.state(option.symbol)
        status: Status = "enabled" if value == "y" else "module" if value == "m" else "missing"
        result.append(Classification(option, status))
    return result
