"""attach/detach on the real kernel, with stand-in containers (processes in their own network namespace)."""

from __future__ import annotations

import ipaddress
import json
import socket
import subprocess
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

import runtime.network as rn
from runtime.errors import ConflictError, UsageError
from runtime.network.errors import NetworkNotFound, PortInUse
from runtime.network.store import NetworkStore
from runtime.spec import NetworkRequest
from tests.runtime.network.conftest import Ctx, FakeContainer, Sandbox


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _links(netns: str) -> list[str]:
    out = subprocess.run(["nsenter", f"--net={netns}", "ip", "-o", "link"], capture_output=True, text=True).stdout
    return [line.split(":")[1].strip().split("@")[0] for line in out.splitlines()]


def test_published_port_on_localhost_serves_http(sandbox: Sandbox, tmp_path: Path) -> None:
    www = tmp_path / "www"
    www.mkdir()
    (www / "index.html").write_text("hello from the container\n")
    port = _free_port()
    c = sandbox.run("web", publish=[f"127.0.0.1:{port}:80"])
    sandbox.serve_http(c, www)
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/index.html", timeout=10) as resp:
        assert resp.read() == b"hello from the container\n"
    assert c.settings["Ports"] == {"80/tcp": [{"HostIp": "127.0.0.1", "HostPort": str(port)}]}
    assert rn.ports.port_lines(rn.container_ports(sandbox.ctx, "web")) == [f"80/tcp -> 127.0.0.1:{port}"]


def test_eth0_address_mac_route_and_settings(sandbox: Sandbox, ctx: Ctx) -> None:
    c = sandbox.run("addr")
    net = c.settings["Networks"]["bridge"]
    subnet = ipaddress.IPv4Network(rn.find_network(ctx, "bridge").subnet)
    assert ipaddress.IPv4Address(net["IPAddress"]) in subnet
    out = subprocess.run(["nsenter", f"--net={c.netns}", "ip", "-o", "-4", "addr", "show", "eth0"],
                         capture_output=True, text=True, check=True).stdout
    assert f"{net['IPAddress']}/{net['IPPrefixLen']}" in out
    route = subprocess.run(["nsenter", f"--net={c.netns}", "ip", "route"], capture_output=True, text=True).stdout
    assert f"default via {net['Gateway']} dev eth0" in route
    assert c.sh(f"busybox ping -c1 -W2 {net['Gateway']}").returncode == 0
    counters = rn.net_stats(c.pid)
    assert sorted(counters) == ["eth0"] and counters["eth0"]["tx_packets"] >= 1
    assert sorted(_links(c.netns)) == ["eth0", "lo"]
    assert "nameserver" in (c.directory / "resolv.conf").read_text()


def test_user_network_names_aliases_and_isolation(sandbox: Sandbox, ctx: Ctx, tmp_path: Path) -> None:
    rn.create_network(ctx, "front")
    rn.create_network(ctx, "back")
    a = sandbox.run("alpha", mode="front", aliases=["db"])
    hosts_inode = (a.directory / "hosts").stat().st_ino
    b = sandbox.run("beta", mode="front")  # started later: alpha must learn its name
    other = sandbox.run("gamma", mode="back")
    assert (a.directory / "hosts").stat().st_ino == hosts_inode, "hosts file must be rewritten in place"
    assert a.sh("busybox ping -c1 -W2 beta").returncode == 0
    assert b.sh("busybox ping -c1 -W2 alpha").returncode == 0
    assert b.sh("busybox ping -c1 -W2 db").returncode == 0
    gamma_ip = other.settings["Networks"]["back"]["IPAddress"]
    assert a.sh("busybox ping -c1 -W1 gamma").returncode != 0, "names of other networks must not resolve"
    assert a.sh(f"busybox ping -c1 -W1 {gamma_ip}").returncode != 0, "networks must be isolated"
    sandbox.stop(b)
    assert "beta" not in (a.directory / "hosts").read_text()


def test_internal_network_has_no_outbound_route(sandbox: Sandbox, ctx: Ctx) -> None:
    rn.create_network(ctx, "sealed", internal=True)
    c = sandbox.run("inner", mode="sealed")
    route = subprocess.run(["nsenter", f"--net={c.netns}", "ip", "route"], capture_output=True, text=True).stdout
    assert "default" not in route
    host_ip = next(line.split()[3].split("/")[0] for line in subprocess.run(
        ["ip", "-o", "-4", "addr", "show", "scope", "global"], capture_output=True, text=True).stdout.splitlines()
        if not line.split()[1].startswith(("rf", "refrt")))
    assert c.sh(f"busybox ping -c1 -W1 {host_ip}").returncode != 0
    with pytest.raises(ConflictError):
        sandbox.run("inner-pub", mode="sealed", publish=["80"])


def test_port_in_use_is_refused_before_start_and_rolled_back(sandbox: Sandbox, ctx: Ctx) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        c = sandbox.spawn("clash")
        with pytest.raises(PortInUse, match="already allocated"):
            rn.attach(ctx, c.id, c.name, c.pid, NetworkRequest(publish=[f"127.0.0.1:{port}:80"]))
    assert NetworkStore(ctx.paths).container(c.id) is None
    assert _links(c.netns) == ["lo"]
    first = sandbox.run("first", publish=["127.0.0.1::80"])
    taken = first.settings["Ports"]["80/tcp"][0]["HostPort"]
    second = sandbox.spawn("second")
    with pytest.raises(PortInUse):
        rn.attach(ctx, second.id, second.name, second.pid, NetworkRequest(publish=[f"{taken}:80"]))


def test_publish_all_exposed_gets_random_ports(sandbox: Sandbox, ctx: Ctx) -> None:
    c = sandbox.run("all", publish_all=True, exposed=["80/tcp", "53/udp", "443/tcp"])
    ports = c.settings["Ports"]
    assert sorted(ports) == ["443/tcp", "53/udp", "80/tcp"]
    host_ports = {int(v[0]["HostPort"]) for v in ports.values()}
    assert len(host_ports) == 3 and all(p > 1024 for p in host_ports)


def test_connect_and_disconnect_a_live_container(sandbox: Sandbox, ctx: Ctx) -> None:
    rn.create_network(ctx, "extra")
    c = sandbox.run("hop")
    peer = sandbox.run("peer", mode="extra")
    ep = rn.connect(ctx, "extra", "hop", aliases=["hopper"])
    assert ep.ifname == "eth1"
    assert sorted(_links(c.netns)) == ["eth0", "eth1", "lo"]
    assert peer.sh("busybox ping -c1 -W2 hopper").returncode == 0
    settings = rn.settings(ctx, c.id)
    assert settings is not None and sorted(settings["Networks"]) == ["bridge", "extra"]
    with pytest.raises(ConflictError):
        rn.connect(ctx, "extra", "hop")
    rn.disconnect(ctx, "extra", c.id[:8])
    assert sorted(_links(c.netns)) == ["eth0", "lo"]
    assert "hopper" not in (peer.directory / "hosts").read_text()


def test_container_mode_and_host_mode_paths(sandbox: Sandbox, ctx: Ctx) -> None:
    c = sandbox.run("target")
    assert rn.netns_path_for(ctx, NetworkRequest(mode="container:target")) == f"/proc/{c.pid}/ns/net"
    assert rn.netns_path_for(ctx, NetworkRequest(mode="bridge")) is None
    host = rn.netns_path_for(ctx, NetworkRequest(mode="host"))
    assert host is not None and Path(host).resolve() == Path("/proc/self/ns/net").resolve()
    joiner = sandbox.spawn("joiner")
    with pytest.raises(UsageError, match="conflicting options"):
        rn.attach(ctx, joiner.id, joiner.name, joiner.pid, NetworkRequest(mode="container:target", publish=["80"]))
    settings = rn.attach(ctx, joiner.id, joiner.name, joiner.pid, NetworkRequest(mode="container:target"))
    assert settings["Networks"] == {}
    assert (joiner.directory / "hosts").read_text() == (c.directory / "hosts").read_text()
    sandbox.stop(c)
    with pytest.raises(rn.errors.ContainerNotAttached):
        rn.netns_path_for(ctx, NetworkRequest(mode="container:target"))
    (c.directory / "config.json").write_text(json.dumps({"id": c.id, "name": "target"}))
    with pytest.raises(ConflictError, match="non running"):
        rn.netns_path_for(ctx, NetworkRequest(mode="container:target"))


def test_unknown_network_is_a_clear_error(sandbox: Sandbox, ctx: Ctx) -> None:
    c = sandbox.spawn("lost")
    with pytest.raises(NetworkNotFound, match="nope"):
        rn.attach(ctx, c.id, c.name, c.pid, NetworkRequest(mode="nope"))


def test_detach_is_idempotent_and_frees_everything(sandbox: Sandbox, ctx: Ctx) -> None:
    c = sandbox.run("twice", publish=["80"])
    rn.detach(ctx, c.id)
    rn.detach(ctx, c.id)
    assert rn.leftovers(ctx) == []
    allocations = [NetworkStore(ctx.paths).allocations(n.id) for n in NetworkStore(ctx.paths).networks()]
    assert all(a == {} for a in allocations)


@pytest.mark.slow
def test_twenty_concurrent_attaches_get_distinct_addresses(sandbox: Sandbox, ctx: Ctx) -> None:
    boxes = [sandbox.spawn(f"many{i}") for i in range(20)]

    def attach(box: FakeContainer) -> str:
        settings = rn.attach(ctx, box.id, box.name, box.pid, NetworkRequest())
        return str(settings["Networks"]["bridge"]["IPAddress"])

    with ThreadPoolExecutor(max_workers=20) as pool:
        addresses = list(pool.map(attach, boxes))
    subnet = ipaddress.IPv4Network(rn.find_network(ctx, "bridge").subnet)
    assert len(set(addresses)) == 20
    assert all(ipaddress.IPv4Address(a) in subnet for a in addresses)
    on_disk = json.loads((ctx.paths.networks / rn.find_network(ctx, "bridge").id / "ipam.json").read_text())
    assert sorted(on_disk["allocated"]) == sorted(addresses)


def test_failed_bring_up_leaves_no_bridge_or_chains(sandbox: Sandbox, ctx: Ctx,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """A failure after the default bridge was made (here: just after installing its chains and jumps) undoes
    the bridge, the chains and the jumps too."""
    from runtime.network import firewall
    from runtime.network.errors import NetworkError

    real = firewall.apply_root

    def broken(tag: str, rules: list[firewall.Rule], *, with_base: bool) -> None:
        real(tag, rules, with_base=with_base)
        raise NetworkError("iptables-restore: simulated failure")

    monkeypatch.setattr(firewall, "apply_root", broken)
    c = sandbox.spawn("unlucky")
    with pytest.raises(NetworkError, match="simulated"):
        rn.attach(ctx, c.id, c.name, c.pid, NetworkRequest())
    monkeypatch.undo()
    assert rn.leftovers(ctx) == []


def test_published_port_reachable_from_another_network(sandbox: Sandbox, ctx: Ctx, tmp_path: Path) -> None:
    """Isolation blocks direct traffic between networks, not a published port reached through the host."""
    www = tmp_path / "www"
    www.mkdir()
    (www / "index.html").write_text("via the host\n")
    rn.create_network(ctx, "elsewhere")
    port = _free_port()
    server = sandbox.run("pubsrv", publish=[f"{port}:80"])
    sandbox.serve_http(server, www)
    client = sandbox.run("far", mode="elsewhere")
    gateway = client.settings["Networks"]["elsewhere"]["Gateway"]
    direct = server.settings["Networks"]["bridge"]["IPAddress"]
    got = client.sh(f"printf 'GET /index.html HTTP/1.0\\r\\n\\r\\n' | busybox nc -w 3 {gateway} {port}")
    assert "via the host" in got.stdout, got.stderr
    assert client.sh(f"busybox ping -c1 -W1 {direct}").returncode != 0


def test_published_port_reachable_from_its_own_network_and_itself(sandbox: Sandbox, ctx: Ctx,
                                                                   tmp_path: Path) -> None:
    """Through the host address, from a neighbour on the same bridge and from the container itself (hairpin)."""
    www = tmp_path / "www"
    www.mkdir()
    (www / "index.html").write_text("hairpin\n")
    port = _free_port()
    server = sandbox.run("hairsrv", publish=[f"{port}:80"])
    sandbox.serve_http(server, www)
    neighbour = sandbox.run("hairnb")
    gateway = server.settings["Networks"]["bridge"]["Gateway"]
    request = f"printf 'GET /index.html HTTP/1.0\\r\\n\\r\\n' | busybox nc -w 3 {gateway} {port}"
    assert "hairpin" in neighbour.sh(request).stdout
    assert "hairpin" in server.sh(request).stdout


def test_configured_default_subnet_is_used_and_checked(sandbox: Sandbox, ctx: Ctx,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REFRT_BRIDGE_SUBNET", "10.214.3.0/24")
    c = sandbox.run("fixed")
    assert c.settings["Networks"]["bridge"]["IPAddress"] == "10.214.3.2"
    assert c.settings["Networks"]["bridge"]["Gateway"] == "10.214.3.1"
    sandbox.stop(c)
    busy = ipaddress.IPv4Network(rn.find_network(ctx, "bridge").subnet)
    assert str(busy) == "10.214.3.0/24"
    other = Ctx(type(ctx.paths).resolve(str(ctx.paths.root) + "-other"))
    rn.create_network(other, "squatter", subnet="10.214.3.0/24")  # another root takes it while ours is idle
    try:
        intruder = sandbox.spawn("intruder")
        with pytest.raises(ConflictError, match="overlaps"):
            rn.attach(ctx, intruder.id, intruder.name, intruder.pid, NetworkRequest())
        assert rn.leftovers(ctx) == []
    finally:
        rn.remove_network(other, "squatter")
    assert rn.leftovers(other) == []
