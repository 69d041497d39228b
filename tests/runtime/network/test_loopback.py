"""CVE-2020-8558: a bridge container must not reach services bound only to the host's 127.0.0.1.

The attack is the real one: in the container's network namespace, hand-made Ethernet frames (AF_PACKET, what
CAP_NET_RAW allows a default container) carry a TCP SYN for 127.0.0.1:PORT to the gateway's MAC address; on
the SYN-ACK the attacker sends the ACK that completes the handshake. The host's listener on 127.0.0.1 is the
judge: it must get no connection. A positive control runs the same attack with refrt's drop rule removed, so
the test cannot pass because the attack is broken. ``-p 127.0.0.1:P:80`` must keep working (its replies are
DNAT'ed flows), and the guard goes away with the last bridge. Only loopback and our own namespaces are touched.
"""

from __future__ import annotations

import contextlib
import os
import random
import shlex
import socket
import struct
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

import runtime.network as rn
from runtime import syscalls
from runtime.network import firewall
from runtime.network.store import root_tag
from runtime.paths import Paths
from tests.runtime.network.conftest import Ctx
from tests.runtime.network.runner import Refrt, make_refrt, remove_all, unique

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (namespaces, iptables)")


@pytest.fixture(scope="module")
def refrt(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Refrt]:
    """A root of its own: the last bridge going away must take the guard with it."""
    runner = make_refrt(tmp_path_factory, "refrt-loopback")
    yield runner
    remove_all(runner)
    assert rn.leftovers(Ctx(Paths.resolve(str(runner.root)))) == []


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def _frame(dst_mac: bytes, src_mac: bytes, src: str, dst: str, sport: int, dport: int, seq: int, ack: int,
           flags: int) -> bytes:
    s, d = socket.inet_aton(src), socket.inet_aton(dst)
    tcp = struct.pack("!HHIIBBHHH", sport, dport, seq, ack, 5 << 4, flags, 64240, 0, 0)
    tcp = tcp[:16] + struct.pack("!H", _checksum(s + d + struct.pack("!BBH", 0, 6, len(tcp)) + tcp)) + tcp[18:]
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), random.randrange(65536), 0, 64, 6, 0, s, d)
    ip = ip[:10] + struct.pack("!H", _checksum(ip)) + ip[12:]
    return dst_mac + src_mac + b"\x08\x00" + ip + tcp


def _handshake(netns: str, gateway_mac: bytes, src_ip: str, port: int, timeout: float = 3.0) -> str:
    """In ``netns``, complete a TCP handshake with 127.0.0.1:``port`` by hand. Returns what happened."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        outcome = "error"
        try:
            os.close(r)
            with open(netns) as f:
                syscalls.setns(f.fileno(), syscalls.CLONE_NEWNET)
            with socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003)) as raw:  # ETH_P_ALL
                raw.bind(("eth0", 0))
                raw.settimeout(0.2)
                own_mac = raw.getsockname()[4]
                sport, seq = random.randrange(20000, 60000), random.randrange(1 << 31)
                raw.send(_frame(gateway_mac, own_mac, src_ip, "127.0.0.1", sport, port, seq, 0, 0x02))
                outcome = "no answer"
                deadline = time.monotonic() + timeout
                while time.monotonic() < deadline:
                    try:
                        data = raw.recv(2048)
                    except TimeoutError:
                        continue
                    if data[12:14] == b"\x08\x06":
                        _answer_arp(raw, data, own_mac, src_ip)
                        continue
                    ip = data[14:]
                    if data[12:14] != b"\x08\x00" or len(ip) < 40 or ip[9] != 6:
                        continue
                    if ip[12:16] != socket.inet_aton("127.0.0.1"):
                        continue
                    tcp = ip[(ip[0] & 0xF) * 4:]
                    their_port, our_port, their_seq = struct.unpack("!HHI", tcp[:8])
                    if (their_port, our_port) != (port, sport):
                        continue
                    if tcp[13] & 0x12 == 0x12:  # SYN-ACK: complete the handshake
                        raw.send(_frame(gateway_mac, own_mac, src_ip, "127.0.0.1", sport, port, seq + 1,
                                        their_seq + 1, 0x10))
                        outcome = "handshake"
                    else:
                        outcome = "reset"
                    break
        finally:
            os.write(w, outcome.encode())
            os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        outcome = f.read().decode()
    os.waitpid(pid, 0)
    return outcome


def _answer_arp(raw: socket.socket, frame: bytes, own_mac: bytes, own_ip: str) -> None:
    """The host asks for our MAC with 127.0.0.1 as its sender address, which the kernel of the namespace
    ignores; a real attacker answers it by hand too."""
    arp = frame[14:42]
    if len(arp) < 28 or arp[6:8] != b"\x00\x01" or arp[24:28] != socket.inet_aton(own_ip):
        return
    sender_mac, sender_ip = arp[8:14], arp[14:18]
    reply = struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, 2, own_mac, socket.inet_aton(own_ip), sender_mac,
                        sender_ip)
    raw.send(sender_mac + own_mac + b"\x08\x06" + reply)


def _listener() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(4)
    sock.settimeout(1.5)
    return sock


def _accepted(sock: socket.socket) -> bool:
    try:
        conn, _ = sock.accept()
    except TimeoutError:
        return False
    conn.close()
    return True


def _host_mac_of(address: str) -> bytes:
    """MAC address of the host interface that holds ``address`` (the bridge, for a gateway)."""
    out = subprocess.run(["ip", "-o", "-4", "addr", "show"], capture_output=True, text=True, check=True).stdout
    for line in out.splitlines():
        words = line.split()
        if words[3].split("/")[0] == address:
            return bytes.fromhex(Path(f"/sys/class/net/{words[1]}/address").read_text().strip().replace(":", ""))
    raise AssertionError(f"no host interface holds {address}")


def _guard_rules(tag: str) -> list[str]:
    out = subprocess.run(["iptables", "-w", "-S", firewall.chain(tag, "IN")], capture_output=True, text=True)
    return [line for line in out.stdout.splitlines() if line.startswith("-A ")]


def test_bridge_container_cannot_reach_host_loopback(refrt: Refrt) -> None:
    name = unique("attacker")
    refrt("run", "-d", "--name", name, "busybox", "sleep", "120", check=True)
    tag = root_tag(Paths.resolve(str(refrt.root)))
    try:
        info = refrt.inspect(name)
        netns = f"/proc/{info['State']['Pid']}/ns/net"
        gateway, address = info["NetworkSettings"]["Gateway"], info["NetworkSettings"]["IPAddress"]
        gateway_mac = _host_mac_of(gateway)
        [guard] = _guard_rules(tag)
        assert "127.0.0.0/8" in guard and "DNAT" in guard and "DROP" in guard and f"refrt:{tag}" in guard

        with _listener() as listener:  # the guard in place: nothing gets through
            outcome = _handshake(netns, gateway_mac, address, listener.getsockname()[1])
            assert outcome == "no answer" and not _accepted(listener), outcome

        delete = ["iptables", "-w", *shlex.split(guard.replace("-A ", "-D ", 1))]
        subprocess.run(delete, check=True)
        try:  # positive control: without the guard the same attack reaches the host's loopback
            with _listener() as listener:
                outcome = _handshake(netns, gateway_mac, address, listener.getsockname()[1])
                assert outcome == "handshake" and _accepted(listener), outcome
        finally:
            subprocess.run(["iptables", "-w", *shlex.split(guard)], check=True)
    finally:
        refrt("rm", "-f", name, check=True)


def test_published_loopback_port_still_serves(refrt: Refrt) -> None:
    name = unique("web")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    script = "mkdir -p /www && echo published > /www/index.html && exec httpd -f -p 80 -h /www"
    refrt("run", "-d", "--name", name, "-p", f"127.0.0.1:{port}:80", "busybox", "sh", "-c", script, check=True)
    try:
        body = b""
        for _ in range(50):
            with contextlib.suppress(OSError):
                body = urllib.request.urlopen(f"http://127.0.0.1:{port}/index.html", timeout=2).read()
                break
            time.sleep(0.1)
        assert body == b"published\n"
    finally:
        refrt("rm", "-f", name, check=True)


def test_guard_goes_with_the_last_bridge(refrt: Refrt) -> None:
    tag = root_tag(Paths.resolve(str(refrt.root)))
    name = unique("short")
    refrt("run", "-d", "--name", name, "busybox", "sleep", "60", check=True)
    assert len(_guard_rules(tag)) == 1
    refrt("rm", "-f", name, check=True)
    rules = subprocess.run(["iptables-save", "-t", "filter"], capture_output=True, text=True).stdout
    assert firewall.chain(tag, "IN") not in rules and f"refrt:{tag}" not in rules
