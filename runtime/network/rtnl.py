"""The rtnetlink requests a container's networking needs, made directly on a netlink socket.

Why not ``ip``: under emulation (a TCG guest) every ``ip``/``nsenter`` process costs 50-700 ms, and a container on
the default bridge took several (bridge, veth pair, ``nsenter`` + ``ip`` inside, deletes, two to read the host's
networks). The requests are small and fixed, so they are built by hand (standard library only): dumps of IPv4
addresses and routes; bridge and veth creation (the peer born inside the container's namespace, already named and
with its MAC), link deletion; and - inside a container's namespace, entered by a short-lived thread with
``setns`` (a netlink socket belongs to the namespace of the thread that opens it) - address, link up, default
route. Errors are :class:`NetworkError` naming the step.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
import struct
import threading
from collections.abc import Callable, Iterator

from runtime.network.errors import NetworkError

NLM_F_REQUEST, NLM_F_ACK, NLM_F_REPLACE, NLM_F_EXCL, NLM_F_CREATE = 0x1, 0x4, 0x100, 0x200, 0x400
NLM_F_DUMP = 0x300
NLMSG_ERROR, NLMSG_DONE = 2, 3
RTM_DELLINK = 17
IFLA_ADDRESS, IFLA_IFNAME, IFLA_MASTER, IFLA_LINKINFO, IFLA_NET_NS_PID = 1, 3, 10, 18, 19
IFLA_INFO_KIND, IFLA_INFO_DATA, VETH_INFO_PEER = 1, 2, 1
NLA_F_NESTED = 0x8000
RTM_NEWLINK, RTM_NEWADDR, RTM_GETADDR, RTM_NEWROUTE, RTM_GETROUTE = 16, 20, 22, 24, 26
IFA_ADDRESS, IFA_LOCAL = 1, 2
RTA_DST, RTA_OIF, RTA_GATEWAY, RTA_TABLE = 1, 4, 5, 15
RT_TABLE_MAIN, RTPROT_BOOT, RTN_UNICAST = 254, 3, 1
IFF_UP = 0x1
CLONE_NEWNET = 0x40000000

_HDR = struct.Struct("=IHHII")  # nlmsghdr: length, type, flags, sequence, port id
_IFADDRMSG = struct.Struct("=BBBBI")  # family, prefix length, flags, scope, interface index
_RTMSG = struct.Struct("=BBBBBBBBI")  # family, dst len, src len, tos, table, protocol, scope, type, flags
_IFINFOMSG = struct.Struct("=BxHiII")  # family, type, index, flags, change


def _attr(kind: int, data: bytes) -> bytes:
    length = 4 + len(data)
    return struct.pack("=HH", length, kind) + data + b"\0" * (-length % 4)


def _nest(kind: int, *parts: bytes) -> bytes:
    return _attr(kind | NLA_F_NESTED, b"".join(parts))


def _name(name: str) -> bytes:
    return name.encode() + b"\0"


def _attrs(data: bytes) -> Iterator[tuple[int, bytes]]:
    pos = 0
    while pos + 4 <= len(data):
        length, kind = struct.unpack_from("=HH", data, pos)
        if length < 4:
            break
        yield kind & 0x3FFF, data[pos + 4:pos + length]
        pos += (length + 3) & ~3


class _Netlink:
    """One NETLINK_ROUTE socket; requests answered by an ack or by a dump."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, socket.NETLINK_ROUTE)
        self.sock.bind((0, 0))
        self.seq = 0

    def close(self) -> None:
        self.sock.close()

    def _send(self, kind: int, flags: int, payload: bytes) -> int:
        self.seq += 1
        self.sock.send(_HDR.pack(_HDR.size + len(payload), kind, flags, self.seq, 0) + payload)
        return self.seq

    def _replies(self, seq: int) -> Iterator[tuple[int, bytes]]:
        """(type, payload) of the answers to request ``seq`` until it is done; errors raised as OSError."""
        while True:
            data = self.sock.recv(1 << 16)
            pos = 0
            while pos + _HDR.size <= len(data):
                length, kind, _flags, got_seq, _pid = _HDR.unpack_from(data, pos)
                payload = data[pos + _HDR.size:pos + length]
                pos += (length + 3) & ~3
                if got_seq != seq:
                    continue
                if kind == NLMSG_DONE:
                    return
                if kind == NLMSG_ERROR:
                    code = -struct.unpack_from("=i", payload)[0]
                    if code:
                        raise OSError(code, os.strerror(code))
                    return
                yield kind, payload

    def dump(self, kind: int, payload: bytes) -> list[tuple[int, bytes]]:
        return list(self._replies(self._send(kind, NLM_F_REQUEST | NLM_F_DUMP, payload)))

    def change(self, kind: int, flags: int, payload: bytes, what: str, *, ignore: tuple[int, ...] = ()) -> None:
        """One change, acknowledged; an error whose number is in ``ignore`` (EEXIST, ENODEV) is success."""
        try:
            for _ in self._replies(self._send(kind, NLM_F_REQUEST | NLM_F_ACK | flags, payload)):
                pass
        except OSError as exc:
            if exc.errno in ignore:
                return
            raise NetworkError(f"{what}: {exc.strerror}") from None


def _index(name: str) -> int:
    try:
        return socket.if_nametoindex(name)
    except OSError:
        raise NetworkError(f"no interface {name}") from None


def _add_address(nl: _Netlink, index: int, ifname: str, ip: str, prefix: int, *, exist_ok: bool = False) -> None:
    packed = ipaddress.IPv4Address(ip).packed
    nl.change(RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL,
              _IFADDRMSG.pack(socket.AF_INET, prefix, 0, 0, index) + _attr(IFA_LOCAL, packed)
              + _attr(IFA_ADDRESS, packed), f"address {ip}/{prefix} on {ifname}",
              ignore=(errno.EEXIST,) if exist_ok else ())


def ensure_bridge(name: str, gateway: str, prefix: int) -> None:
    """Bridge ``name`` exists, holds ``gateway/prefix`` and is up (what is there already is kept)."""
    nl = _Netlink()
    try:
        nl.change(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL,
                  _IFINFOMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0) + _attr(IFLA_IFNAME, _name(name))
                  + _nest(IFLA_LINKINFO, _attr(IFLA_INFO_KIND, b"bridge")), f"creating bridge {name}",
                  ignore=(errno.EEXIST,))
        index = _index(name)
        _add_address(nl, index, name, gateway, prefix, exist_ok=True)
        _link_up(nl, index, name)
    finally:
        nl.close()


def add_veth(host_name: str, peer_name: str, peer_mac: str, peer_pid: int, master: str) -> None:
    """A veth pair: ``host_name`` here, enslaved to bridge ``master``; the peer created directly in the network
    namespace of ``peer_pid`` as ``peer_name`` with ``peer_mac``. The host end is left down (see
    :func:`set_up`)."""
    peer = (_IFINFOMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0) + _attr(IFLA_IFNAME, _name(peer_name))
            + _attr(IFLA_ADDRESS, bytes.fromhex(peer_mac.replace(":", "")))
            + _attr(IFLA_NET_NS_PID, struct.pack("=I", peer_pid)))
    nl = _Netlink()
    try:
        nl.change(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL,
                  _IFINFOMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0) + _attr(IFLA_IFNAME, _name(host_name))
                  + _attr(IFLA_MASTER, struct.pack("=I", _index(master)))
                  + _nest(IFLA_LINKINFO, _attr(IFLA_INFO_KIND, b"veth"),
                          _nest(IFLA_INFO_DATA, _attr(VETH_INFO_PEER | NLA_F_NESTED, peer))),
                  f"creating veth pair {host_name}/{peer_name}")
    finally:
        nl.close()


def set_up(name: str) -> None:
    nl = _Netlink()
    try:
        _link_up(nl, _index(name), name)
    finally:
        nl.close()


def delete_links(names: list[str]) -> None:
    """Delete these host interfaces; one already gone is fine (a veth goes with its peer's namespace)."""
    nl = _Netlink()
    try:
        for name in names:
            nl.change(RTM_DELLINK, 0, _IFINFOMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0) + _attr(IFLA_IFNAME, _name(name)),
                      f"deleting {name}", ignore=(errno.ENODEV,))
    finally:
        nl.close()


def ipv4_networks() -> list[ipaddress.IPv4Network]:
    """The prefixes of every IPv4 address on the host and the destinations of its main table's routes (what
    ``ip -4 addr`` and ``ip -4 route show table main`` list), default route excluded."""
    found: list[ipaddress.IPv4Network] = []
    nl = _Netlink()
    try:
        for _kind, payload in nl.dump(RTM_GETADDR, _IFADDRMSG.pack(socket.AF_INET, 0, 0, 0, 0)):
            family, prefix, _f, _s, _index = _IFADDRMSG.unpack_from(payload)
            attrs = dict(_attrs(payload[_IFADDRMSG.size:]))
            addr = attrs.get(IFA_LOCAL) or attrs.get(IFA_ADDRESS)
            if family == socket.AF_INET and addr and len(addr) == 4:
                found.append(ipaddress.IPv4Network((addr, prefix), strict=False))
        for _kind, payload in nl.dump(RTM_GETROUTE, _RTMSG.pack(socket.AF_INET, 0, 0, 0, 0, 0, 0, 0, 0)):
            family, dst_len, _sl, _tos, table, _proto, _scope, _type, _flags = _RTMSG.unpack_from(payload)
            attrs = dict(_attrs(payload[_RTMSG.size:]))
            if RTA_TABLE in attrs:
                table = struct.unpack("=I", attrs[RTA_TABLE][:4])[0]
            dst = attrs.get(RTA_DST, b"\0\0\0\0")
            if family == socket.AF_INET and table == RT_TABLE_MAIN and dst_len and len(dst) == 4:
                found.append(ipaddress.IPv4Network((dst, dst_len), strict=False))
    except OSError as exc:
        raise NetworkError(f"reading the host's addresses and routes: {exc.strerror}") from None
    finally:
        nl.close()
    return found


def _link_up(nl: _Netlink, index: int, name: str) -> None:
    nl.change(RTM_NEWLINK, 0, _IFINFOMSG.pack(socket.AF_UNSPEC, 0, index, IFF_UP, IFF_UP), f"set {name} up")


def _configure(ifname: str, ip: str, prefix: int, gateway: str | None) -> None:
    """In the current thread's namespace: ``lo`` up, ``ifname`` gets ``ip/prefix`` and goes up, default route."""
    nl = _Netlink()
    try:
        _link_up(nl, _index("lo"), "lo")
        index = _index(ifname)
        _add_address(nl, index, ifname, ip, prefix)
        _link_up(nl, index, ifname)
        if gateway:
            nl.change(RTM_NEWROUTE, NLM_F_CREATE | NLM_F_REPLACE,
                      _RTMSG.pack(socket.AF_INET, 0, 0, 0, RT_TABLE_MAIN, RTPROT_BOOT, 0, RTN_UNICAST, 0)
                      + _attr(RTA_GATEWAY, ipaddress.IPv4Address(gateway).packed)
                      + _attr(RTA_OIF, struct.pack("=I", index)), f"default route via {gateway}")
    finally:
        nl.close()


def in_netns(netns_path: str, work: Callable[[], None], what: str) -> None:
    """Run ``work`` in a thread that joins the network namespace at ``netns_path`` (and ends there: only that
    thread ever changes namespace); its netlink sockets then act on that namespace."""
    from runtime.syscalls import setns

    failure: list[BaseException] = []

    def run() -> None:
        try:
            fd = os.open(netns_path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                setns(fd, CLONE_NEWNET)
            finally:
                os.close(fd)
            work()
        except BaseException as exc:  # handed to the caller's thread
            failure.append(exc)

    thread = threading.Thread(target=run, name="netns-work", daemon=True)
    thread.start()
    thread.join()
    if failure:
        exc = failure[0]
        if isinstance(exc, NetworkError):
            raise exc
        raise NetworkError(f"{what} in {netns_path}: {exc}") from exc


def configure_in_netns(netns_path: str, ifname: str, ip: str, prefix: int, gateway: str | None) -> None:
    """Configure ``ifname`` inside the network namespace at ``netns_path`` (see :func:`in_netns`)."""
    in_netns(netns_path, lambda: _configure(ifname, ip, prefix, gateway), f"configuring {ifname}")
