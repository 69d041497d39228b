"""The Engine API's networks: list, inspect, create, connect, disconnect, delete, prune.

The work is ``runtime.network``'s, as for ``refrt network``; this module maps docker's request bodies (``IPAM``,
``EndpointConfig``) onto it and answers in docker's shapes. refrt has one network driver, ``bridge``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from runtime import network
from runtime.daemon import Daemon
from runtime.daemon.api_images import api_filters
from runtime.daemon.api_system import events
from runtime.daemon.http import ApiError, Request, Response
from runtime.network.filters import ls_filter


def _body(request: Request) -> dict[str, Any]:
    body = request.json()
    if not isinstance(body, dict):
        raise ApiError(400, "invalid body: not a JSON object")
    return body


def _ipam(body: dict[str, Any]) -> tuple[str, str]:
    """The one subnet (and gateway) refrt's IPAM takes from docker's ``IPAM.Config`` list."""
    ipam = body.get("IPAM") or {}
    if ipam.get("Driver") not in (None, "", "default"):
        raise ApiError(400, f"IPAM driver {ipam['Driver']!r} is not supported (default only)")
    configs = [c for c in ipam.get("Config") or [] if c.get("Subnet") or c.get("Gateway")]
    if len(configs) > 1:
        raise ApiError(400, "refrt networks take one IPAM pool")
    if not configs:
        return "", ""
    if configs[0].get("IPRange") or configs[0].get("AuxiliaryAddresses"):
        raise ApiError(400, "IPRange and AuxiliaryAddresses are not supported")
    return str(configs[0].get("Subnet") or ""), str(configs[0].get("Gateway") or "")


def _shaped(data: dict[str, Any]) -> dict[str, Any]:
    """docker's clients parse ``Created`` as a time: the built-in ``host``/``none`` get Go's zero time."""
    if not data.get("Created"):
        data["Created"] = "0001-01-01T00:00:00Z"
    return data


def routes(daemon: Daemon) -> list[tuple[str, str, Callable[[Request], Response | None]]]:
    ctx = daemon.ctx

    def event(action: str, ref: str, container: str = "") -> None:
        """dockerd's network events: the network's id, its name and type, the container for (dis)connect."""
        data = network.inspect_network(ctx, ref)
        attributes = {"name": data["Name"], "type": data["Driver"], **({"container": container} if container else {})}
        events(daemon).publish("network", action, data["Id"], attributes)

    def list_networks(request: Request) -> Response:
        filters = api_filters(request, ("label", "type", "name", "id", "driver", "scope"))
        scopes = filters.pop("scope", [])
        keep = ls_filter([f"{key}={value}" for key, values in filters.items() for value in values])
        rows = [r for r in network.list_networks(ctx) if keep(r) and (not scopes or "local" in scopes)]
        return Response([_shaped(network.inspect_network(ctx, r["ID"] if r["Name"] != "bridge" else "bridge"))
                         for r in rows])

    def inspect(request: Request) -> Response:
        return Response(_shaped(network.inspect_network(ctx, request.params["id"])))

    def create(request: Request) -> Response:
        body = _body(request)
        name = str(body.get("Name") or "")
        if not name:
            raise ApiError(400, "network name is required")
        if body.get("Driver") not in (None, "", "bridge"):
            raise ApiError(400, f"network driver {body['Driver']!r} is not supported (bridge only)")
        if body.get("EnableIPv6"):
            raise ApiError(400, "IPv6 networks are not supported")
        subnet, gateway = _ipam(body)
        rec = network.create_network(ctx, name, subnet=subnet, gateway=gateway, internal=bool(body.get("Internal")),
                                     labels={str(k): str(v) for k, v in (body.get("Labels") or {}).items()})
        event("create", rec.id)
        return Response({"Id": rec.id, "Warning": ""}, status=201)

    def connect(request: Request) -> Response:
        body = _body(request)
        container = str(body.get("Container") or "")
        if not container:
            raise ApiError(400, "container is required")
        endpoint = body.get("EndpointConfig") or {}
        if (endpoint.get("IPAMConfig") or {}).get("IPv4Address"):
            raise ApiError(400, "a fixed IPv4Address is not supported")
        network.connect(ctx, request.params["id"], container, aliases=list(endpoint.get("Aliases") or []))
        event("connect", request.params["id"], container)
        return Response(None)

    def disconnect(request: Request) -> Response:
        body = _body(request)
        container = str(body.get("Container") or "")
        if not container:
            raise ApiError(400, "container is required")
        network.disconnect(ctx, request.params["id"], container)
        event("disconnect", request.params["id"], container)
        return Response(None)

    def delete(request: Request) -> Response:
        rec = network.remove_network(ctx, request.params["id"])
        events(daemon).publish("network", "destroy", rec.id, {"name": rec.name, "type": "bridge"})
        return Response(None, status=204)

    def prune(request: Request) -> Response:
        filters = api_filters(request, ("label",))
        wanted = filters.get("label", [])
        if any("=" not in item for item in wanted):
            raise ApiError(400, "network prune takes label=KEY=VALUE filters")
        labels = dict(item.partition("=")[::2] for item in wanted)
        ids = {r["Name"]: r["ID"] for r in network.list_networks(ctx)}
        removed = network.prune_networks(ctx, labels)
        for name in removed:
            events(daemon).publish("network", "destroy", ids.get(name, name), {"name": name, "type": "bridge"})
        return Response({"NetworksDeleted": removed or None})

    return [
        ("GET", "/networks", list_networks),
        ("POST", "/networks/create", create),
        ("POST", "/networks/prune", prune),
        ("GET", "/networks/{id}", inspect),
        ("POST", "/networks/{id}/connect", connect),
        ("POST", "/networks/{id}/disconnect", disconnect),
        ("DELETE", "/networks/{id}", delete),
    ]
