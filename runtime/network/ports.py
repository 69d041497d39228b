"""Published ports: parsing ``-p``/``-P``, choosing host ports, and refusing ports already in use.

A host port is "in use" when binding it fails (another program listens on it) or when any refrt root already
publishes it (DNAT rules do not bind, so the iptables rules themselves are checked, host-wide). Both checks run
under the host-wide network lock, before the container's command starts, so the user gets a clear error and no
half-published container. ``-p CONTAINERPORT`` and ``-P`` take a free port from the kernel's ephemeral range.
"""

from __future__ import annotations

import errno
import ipaddress
import socket
from dataclasses import dataclass

from runtime.network.errors import BadPortSpec, PortInUse
from runtime.network.store import PortBinding

PROTOS = ("tcp", "udp", "sctp")


@dataclass(frozen=True)
class PortRequest:
    """One ``-p`` mapping; ``host_port`` 0 means "any free port"."""

    host_ip: str
    host_port: int
    container_port: int
    proto: str


def _port_range(text: str, value: str) -> list[int]:
    lo, _, hi = text.partition("-")
    try:
        first, last = int(lo), int(hi or lo)
    except ValueError:
        raise BadPortSpec(f"invalid port specification: {value!r}") from None
    if not (0 < first <= last <= 65535):
        raise BadPortSpec(f"invalid port specification: {value!r}")
    return list(range(first, last + 1))


def parse_publish(value: str) -> list[PortRequest]:
    """``[ip:][hostPort:]containerPort[/proto]`` (ports may be ranges of equal length) -> requests."""
    spec, _, proto = value.partition("/")
    proto = proto or "tcp"
    if proto not in PROTOS:
        raise BadPortSpec(f"invalid proto {proto!r} in {value!r}")
    if spec.startswith("["):
        raise BadPortSpec(f"IPv6 host addresses are not supported by refrt: {value!r}")
    parts = spec.split(":")
    if len(parts) > 3 or not parts[-1]:
        raise BadPortSpec(f"invalid port specification: {value!r}")
    host_ip = parts[0] if len(parts) == 3 else ""
    host_text = parts[-2] if len(parts) >= 2 else ""
    if host_ip:
        try:
            ipaddress.IPv4Address(host_ip)
        except ValueError:
            raise BadPortSpec(f"invalid IP address {host_ip!r} in {value!r}") from None
    container_ports = _port_range(parts[-1], value)
    host_ports = _port_range(host_text, value) if host_text else [0] * len(container_ports)
    if len(host_ports) == 1 and len(container_ports) > 1 and host_text:
        host_ports = host_ports * len(container_ports)
    if len(host_ports) != len(container_ports):
        raise BadPortSpec(f"host and container port ranges differ in length: {value!r}")
    return [PortRequest(host_ip, h, c, proto) for h, c in zip(host_ports, container_ports, strict=True)]


def parse_exposed(value: str) -> tuple[int, str]:
    """``"80/tcp"`` or ``"80"`` -> (80, "tcp")."""
    port, _, proto = value.partition("/")
    try:
        return int(port), proto or "tcp"
    except ValueError:
        raise BadPortSpec(f"invalid exposed port {value!r}") from None


def requests_for(publish: list[str], publish_all: bool, exposed: list[str]) -> list[PortRequest]:
    """All port requests of a container: its ``-p`` values, plus every exposed port with ``-P``."""
    out: list[PortRequest] = []
    for value in publish:
        out.extend(parse_publish(value))
    if publish_all:
        have = {(r.container_port, r.proto) for r in out}
        for value in exposed:
            port, proto = parse_exposed(value)
            if (port, proto) not in have:
                out.append(PortRequest("", 0, port, proto))
    return out


def _sock_type(proto: str) -> int:
    return socket.SOCK_DGRAM if proto == "udp" else socket.SOCK_STREAM


def try_bind(proto: str, host_ip: str, port: int) -> int:
    """Bind (and at once close) ``host_ip:port``; return the bound port; raise PortInUse if taken."""
    with socket.socket(socket.AF_INET, _sock_type(proto if proto != "sctp" else "tcp")) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host_ip or "0.0.0.0", port))
            if proto != "udp":
                sock.listen(1)
        except OSError as exc:
            where = f"{host_ip or '0.0.0.0'}:{port}"
            if exc.errno == errno.EADDRINUSE:
                raise PortInUse(f"Bind for {where} failed: port is already allocated") from None
            raise PortInUse(f"cannot publish {where}: {exc.strerror}") from None
        bound: int = sock.getsockname()[1]
        return bound


def _clashes(proto: str, host_ip: str, port: int, taken: set[tuple[str, str, int]]) -> bool:
    any_ip = "0.0.0.0"
    return any(p == proto and q == port and (ip == host_ip or any_ip in (ip, host_ip)) for p, ip, q in taken)


def assign(requests: list[PortRequest], taken: set[tuple[str, str, int]]) -> list[PortBinding]:
    """Choose and check every host port; ``taken`` holds ports refrt already publishes (host-wide)."""
    out: list[PortBinding] = []
    taken = set(taken)
    for req in requests:
        host_ip = req.host_ip or "0.0.0.0"
        if req.host_port:
            if _clashes(req.proto, host_ip, req.host_port, taken):
                raise PortInUse(f"Bind for {host_ip}:{req.host_port} failed: port is already allocated")
            port = try_bind(req.proto, req.host_ip, req.host_port)
        else:
            for _ in range(50):
                port = try_bind(req.proto, req.host_ip, 0)
                if not _clashes(req.proto, host_ip, port, taken):
                    break
            else:
                raise PortInUse("no free host port found")
        taken.add((req.proto, host_ip, port))
        out.append(PortBinding(container_port=req.container_port, proto=req.proto, host_ip=host_ip,
                               host_port=port))
    return out


def docker_ports(bindings: list[PortBinding], exposed: list[str]) -> dict[str, list[dict[str, str]] | None]:
    """``NetworkSettings.Ports``: ``{"80/tcp": [{"HostIp": "0.0.0.0", "HostPort": "8080"}], "443/tcp": None}``."""
    out: dict[str, list[dict[str, str]] | None] = {}
    for value in exposed:
        port, proto = parse_exposed(value)
        out.setdefault(f"{port}/{proto}", None)
    for b in bindings:
        key = f"{b.container_port}/{b.proto}"
        entry = out.get(key) or []
        entry.append({"HostIp": b.host_ip, "HostPort": str(b.host_port)})
        out[key] = entry
    return out


def port_lines(bindings: list[PortBinding], private: str = "") -> list[str]:
    """``refrt port`` output: ``80/tcp -> 0.0.0.0:8080`` (or only ``0.0.0.0:8080`` when ``private`` given)."""
    want_port, _, want_proto = private.partition("/")
    lines = []
    for b in sorted(bindings, key=lambda b: (b.container_port, b.proto, b.host_port)):
        if private and (str(b.container_port) != want_port or (want_proto or "tcp") != b.proto):
            continue
        host = f"{b.host_ip}:{b.host_port}"
        lines.append(host if private else f"{b.container_port}/{b.proto} -> {host}")
    return lines
