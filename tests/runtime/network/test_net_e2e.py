"""Acceptance: refrt's networking through ``refrt run`` (busybox containers, real bridges and iptables)."""

from __future__ import annotations

import ipaddress
import json
import os
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

import runtime.network as rn
from runtime.network.store import root_tag
from runtime.paths import Paths
from tests.runtime.network.conftest import Ctx
from tests.runtime.network.runner import Refrt, unique

pytestmark = pytest.mark.slow  # each case drives several refrt processes (seconds on a loaded host)

HTTP_GET = "printf 'GET /index.html HTTP/1.0\\r\\n\\r\\n' | nc {host} 80"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _get(url: str, attempts: int = 50) -> bytes:
    for _ in range(attempts):
        try:
            with urllib.request.urlopen(url, timeout=5) as resp:
                body: bytes = resp.read()
                return body
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"{url} never answered")


def _processes_in_netns(inode: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if os.stat(entry / "ns" / "net").st_ino == inode:
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def _serve(refrt: Refrt, name: str, *flags: str, text: str = "hello") -> str:
    """A detached busybox httpd serving ``text`` as /index.html; returns the container id."""
    script = f"mkdir -p /www && echo {text} > /www/index.html && exec httpd -f -p 80 -h /www"
    return refrt("run", "-d", "--name", name, *flags, "busybox", "sh", "-c", script, check=True).stdout.strip()


def test_published_port_serves_the_host(refrt: Refrt) -> None:
    name, port = unique("web"), _free_port()
    cid = _serve(refrt, name, "-p", f"127.0.0.1:{port}:80", text="published")
    try:
        assert _get(f"http://127.0.0.1:{port}/index.html") == b"published\n"
        assert refrt("port", name, check=True).stdout.split("\n")[0] == f"80/tcp -> 127.0.0.1:{port}"
        ports = refrt.inspect(name)["NetworkSettings"]["Ports"]
        assert ports == {"80/tcp": [{"HostIp": "127.0.0.1", "HostPort": str(port)}]}
        assert f"127.0.0.1:{port}->80/tcp" in refrt("ps", "--filter", f"name={name}").stdout
        clash = refrt("run", "--rm", "-p", f"127.0.0.1:{port}:80", "busybox", "true")
        assert clash.returncode == 125 and "already allocated" in clash.stderr
    finally:
        refrt("rm", "-f", cid, check=True)


def test_user_network_by_name_and_isolation(refrt: Refrt) -> None:
    net, other = unique("net"), unique("other")
    refrt("network", "create", net, check=True)
    refrt("network", "create", other, check=True)
    server, client, outsider = unique("srv"), unique("cli"), unique("out")
    try:
        _serve(refrt, server, "--network", net, "--network-alias", "api", text="by-name")
        got = refrt("run", "--rm", "--name", client, "--network", net, "busybox", "sh", "-c",
                    f"ping -c1 -W2 {server} >/dev/null && {HTTP_GET.format(host='api')}")
        assert got.returncode == 0, got.stderr
        assert "by-name" in got.stdout
        ip = refrt.inspect(server)["NetworkSettings"]["Networks"][net]["IPAddress"]
        blocked = refrt("run", "--rm", "--name", outsider, "--network", other, "busybox", "sh", "-c",
                        f"ping -c1 -W1 {ip}; ping -c1 -W1 {server}")
        assert blocked.returncode != 0
        assert "0 packets received" in blocked.stdout or "100% packet loss" in blocked.stdout
    finally:
        refrt("rm", "-f", server)
        refrt("network", "rm", net, other, check=True)


def test_network_none_has_only_loopback(refrt: Refrt) -> None:
    out = refrt("run", "--rm", "--network", "none", "busybox", "sh", "-c", "ls /sys/class/net", check=True).stdout
    assert out.split() == ["lo"]


def test_container_mode_shares_the_namespace(refrt: Refrt) -> None:
    server = unique("shared")
    cid = _serve(refrt, server, text="same-netns")
    try:
        got = refrt("run", "--rm", "--network", f"container:{server}", "busybox", "sh", "-c",
                    HTTP_GET.format(host="127.0.0.1"), check=True)
        assert "same-netns" in got.stdout
    finally:
        refrt("rm", "-f", cid, check=True)


@pytest.mark.slow
def test_twenty_concurrent_containers_get_distinct_addresses(refrt: Refrt) -> None:
    names = [unique(f"many{i}") for i in range(20)]
    procs = [refrt.popen("run", "-d", "--name", n, "busybox", "sleep", "60") for n in names]
    try:
        for p in procs:
            _, err = p.communicate(timeout=120)
            assert p.returncode == 0, err
        subnet = ipaddress.IPv4Network(rn.find_network(Ctx(Paths.resolve(str(refrt.root))), "bridge").subnet)
        data = json.loads(refrt("inspect", *names, check=True).stdout)
        addrs = [d["NetworkSettings"]["Networks"]["bridge"]["IPAddress"] for d in data]
        assert len(set(addrs)) == 20
        assert all(ipaddress.IPv4Address(a) in subnet for a in addrs)
    finally:
        refrt("rm", "-f", *names)


def test_redis_shape_publish_and_volume(refrt: Refrt) -> None:
    """``run -d -p 6379:6379 -v data:/data redis`` with a busybox stand-in: the port and the volume both work."""
    vol, name, port = unique("data"), unique("kv"), _free_port()
    script = "echo saved > /data/dump.rdb && exec httpd -f -p 80 -h /data"
    refrt("run", "-d", "--name", name, "-p", f"127.0.0.1:{port}:80", "-v", f"{vol}:/data", "busybox", "sh",
          "-c", script, check=True)
    try:
        assert _get(f"http://127.0.0.1:{port}/dump.rdb") == b"saved\n"
    finally:
        refrt("rm", "-f", name, check=True)
    mountpoint = json.loads(refrt("volume", "inspect", vol, check=True).stdout)[0]["Mountpoint"]
    assert (Path(mountpoint) / "dump.rdb").read_text() == "saved\n"
    refrt("volume", "rm", vol, check=True)


def test_everything_removed_leaves_nothing(refrt: Refrt, tmp_path: Path) -> None:
    net, name = unique("gone"), unique("gone")
    refrt("network", "create", net, check=True)
    refrt("run", "-d", "--name", name, "--network", net, "-p", "80", "busybox", "sleep", "60", check=True)
    refrt("network", "connect", "bridge", name, check=True)
    info = refrt.inspect(name)
    cid = info["Id"]
    netns_inode = os.stat(f"/proc/{info['State']['Pid']}/ns/net").st_ino
    veths = [p.name for p in Path("/sys/class/net").iterdir() if p.name.startswith(f"rv{cid[:10]}")]
    assert len(veths) == 2
    refrt("rm", "-f", name, check=True)
    assert _processes_in_netns(netns_inode) == [], "the container's network namespace must be gone"
    refrt("network", "rm", net, check=True)
    ctx = Ctx(Paths.resolve(str(refrt.root)))
    assert rn.leftovers(ctx) == []
    assert not [p for p in Path("/sys/class/net").iterdir() if p.name.startswith(f"rv{cid[:10]}")]
    rules = subprocess.run(["iptables-save"], capture_output=True, text=True).stdout
    assert f"refrt:{root_tag(ctx.paths)}" not in rules


def test_dns_add_host_and_hostname(refrt: Refrt) -> None:
    got = refrt("run", "--rm", "--hostname", "inner", "--add-host", "db.example:10.9.8.7", "--dns", "10.1.1.1",
                "busybox", "sh", "-c", "cat /etc/resolv.conf; ping -c1 -W2 inner >/dev/null && echo self-ok; "
                "grep db.example /etc/hosts", check=True)
    lines = got.stdout.splitlines()
    assert lines[0] == "nameserver 10.1.1.1"
    assert "self-ok" in lines
    assert lines[-1] == "10.9.8.7\tdb.example"
    alias = refrt("run", "--rm", "--network-alias", "x", "busybox", "true")
    assert alias.returncode == 125 and "user defined networks" in alias.stderr
