"""A few rtnetlink requests made directly on a netlink socket, where a process per step costs too much.

Why: under emulation (a TCG guest) every ``ip``/``nsenter`` process costs 50-700 ms, and configuring a container's
interface took ``nsenter`` + ``ip`` (two executions) on every start; reading the host's networks for a subnet
choice took two more ``ip`` runs. The requests here are small and fixed, so they are built by hand (standard
library only): dumps of IPv4 addresses and routes, and - inside a container's network namespace, entered by a
short-lived thread with ``setns`` (a netlink socket belongs to the namespace of the thread that opens it) -
address, link up and default route.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import struct
import threading
from collections.abc import Iterator

from runtime.network.errors import NetworkError

NLM_F_REQUEST, NLM_F_ACK, NLM_F_REPLACE, NLM_F_EXCL, NLM_F_CREATE = 0x1, 0x4, 0x100, 0x200, 0x400
NLM_F_DUMP = 0x300
NLMSG_ERROR, NLMSG_DONE = 2, 3
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

    def change(self, kind: int, flags: int, payload: bytes, what: str) -> None:
        try:
            for _ in self._replies(self._send(kind, NLM_F_REQUEST | NLM_F_ACK | flags, payload)):
                pass
        except OSError as exc:
            raise NetworkError(f"{what}: {exc.strerror}") from None


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
        _link_up(nl, socket.if_nametoindex("lo"), "lo")
        index = socket.if_nametoindex(ifname)
        packed = ipaddress.IPv4Address(ip).packed
        nl.change(RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL,
                  _IFADDRMSG.pack(socket.AF_INET, prefix, 0, 0, index) + _attr(IFA_LOCAL, packed)
                  + _attr(IFA_ADDRESS, packed), f"address {ip}/{prefix} on {ifname}")
        _link_up(nl, index, ifname)
        if gateway:
            nl.change(RTM_NEWROUTE, NLM_F_CREATE | NLM_F_REPLACE,
                      _RTMSG.pack(socket.AF_INET, 0, 0, 0, RT_TABLE_MAIN, RTPROT_BOOT, 0, RTN_UNICAST, 0)
                      + _attr(RTA_GATEWAY, ipaddress.IPv4Address(gateway).packed)
                      + _attr(RTA_OIF, struct.pack("=I", index)), f"default route via {gateway}")
    finally:
        nl.close()


def configure_in_netns(netns_path: str, ifname: str, ip: str, prefix: int, gateway: str | None) -> None:
    """Configure ``ifname`` inside the network namespace at ``netns_path``, from a thread that joins it (and
    ends there: only that thread ever changes namespace)."""
    from runtime.syscalls import setns

    failure: list[BaseException] = []

    def work() -> None:
        try:
            fd = os.open(netns_path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                setns(fd, CLONE_NEWNET)
            finally:
                os.close(fd)
            _configure(ifname, ip, prefix, gateway)
        except BaseException as exc:  # handed to the caller's thread
            failure.append(exc)

    thread = threading.Thread(target=work, name="netns-config", daemon=True)
    thread.start()
    thread.join()
    if failure:
        exc = failure[0]
        if isinstance(exc, NetworkError):
            raise exc
        raise NetworkError(f"configuring {ifname} in {netns_path}: {exc}") from exc
