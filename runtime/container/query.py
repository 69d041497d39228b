"""What the listing commands and the Engine API ask of containers: docker's ``--filter`` matching (``ps``,
``container prune``, ``GET /containers/json``, ``POST /containers/prune``) and the live network view.

Here rather than in the CLI so that the daemon and the CLI share one implementation without the daemon reaching
into the CLI's modules.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from runtime.errors import RefrtError, UsageError

if TYPE_CHECKING:
    from runtime.container.state import Container


class FilterValueError(RefrtError):
    """A filter value docker's daemon does not know (its CLI exits 1)."""

    exit_code = 1


def matches(c: Container, filters: list[str]) -> bool:
    """Whether ``c`` passes every ``name=value`` filter, as docker's ``ps --filter``: values of one name are
    alternatives (``label`` ones must all hold), different names must all match. Unknown names and malformed
    items are refused (:class:`UsageError`)."""
    groups: dict[str, list[str]] = {}
    for item in filters:
        key, sep, value = item.partition("=")
        if not sep:
            raise UsageError(f"bad format of filter (expected name=value): {item}")
        groups.setdefault(key.lower(), []).append(value)
    labels = {**(c.image_config.get("Labels") or {}), **c.spec.labels}
    for key, values in groups.items():
        if key == "id":
            ok = any(c.id.startswith(v) for v in values)
        elif key == "name":
            ok = any(re.search(v, c.name) for v in values)
        elif key == "status":
            ok = c.state.status in values
        elif key == "label":
            ok = all(
                (k in labels and (not sep or labels[k] == v))
                for k, sep, v in (item.partition("=") for item in values)
            )
        elif key == "exited":
            ok = c.state.status == "exited" and str(c.state.exit_code) in values
        elif key == "ancestor":
            ok = any(v in (c.spec.image, c.image_id) or c.image_id.split(":")[-1].startswith(v) for v in values)
        elif key == "network":
            ok = c.spec.network.mode in values
        elif key == "health":
            ok = _health_matches(c, values)
        else:
            raise UsageError(f"invalid filter '{key}'")
        if not ok:
            return False
    return True


def _health_matches(c: Container, values: list[str]) -> bool:
    """docker's ``health`` filter: starting, healthy, unhealthy, or none (no health check)."""
    from runtime.container import health

    for value in values:
        if value not in ("starting", "healthy", "unhealthy", "none"):
            raise FilterValueError(f"Unrecognised filter value for health: {value}")
    return health.status(c) in values


def live_network_settings(ctx: Any, container: Container) -> dict[str, Any] | None:
    """The network package's current view (after connect/disconnect) of a running container; None when it is
    not running or no network package is there."""
    from runtime.container.hooks import network_module

    module = network_module()
    if module is None or not container.state.running or not hasattr(module, "settings"):
        return None
    live: dict[str, Any] | None = module.settings(ctx, container.id)
    return live
