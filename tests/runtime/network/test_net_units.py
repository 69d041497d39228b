"""Pieces of refrt networking on their own: -p parsing, IPAM, hosts files, rule tagging (real iptables)."""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path

import pytest

from runtime.network import firewall, hosts, ipam, ports
from runtime.network.errors import BadPortSpec, PoolExhausted, PortInUse
from runtime.network.store import NetworkRecord, NetworkStore, PortBinding
from runtime.paths import Paths


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("80", [ports.PortRequest("", 0, 80, "tcp")]),
        ("53/udp", [ports.PortRequest("", 0, 53, "udp")]),
        ("8080:80", [ports.PortRequest("", 8080, 80, "tcp")]),
        ("127.0.0.1:8080:80/tcp", [ports.PortRequest("127.0.0.1", 8080, 80, "tcp")]),
        ("127.0.0.1::80", [ports.PortRequest("127.0.0.1", 0, 80, "tcp")]),
        ("9000-9001:80-81", [ports.PortRequest("", 9000, 80, "tcp"), ports.PortRequest("", 9001, 81, "tcp")]),
    ],
)
def test_parse_publish(value: str, expected: list[ports.PortRequest]) -> None:
    assert ports.parse_publish(value) == expected


@pytest.mark.parametrize("value", ["", "x", "80/icmp", "1.2.3:80:80", "70000", "1:2:3:4", "9000-9002:80-81",
                                   "[::1]:80:80"])
def test_parse_publish_refuses(value: str) -> None:
    with pytest.raises(BadPortSpec):
        ports.parse_publish(value)


def test_publish_all_adds_exposed_ports_once() -> None:
    reqs = ports.requests_for(["8080:80"], True, ["80/tcp", "443"])
    assert reqs == [ports.PortRequest("", 8080, 80, "tcp"), ports.PortRequest("", 0, 443, "tcp")]


def test_assign_refuses_ports_refrt_already_publishes() -> None:
    taken = {("tcp", "0.0.0.0", 18555)}
    with pytest.raises(PortInUse):
        ports.assign([ports.PortRequest("127.0.0.1", 18555, 80, "tcp")], taken)
    [udp] = ports.assign([ports.PortRequest("127.0.0.1", 18555, 80, "udp")], taken)
    assert (udp.proto, udp.host_port) == ("udp", 18555)


def test_docker_ports_and_port_lines() -> None:
    bindings = [PortBinding(80, "tcp", "0.0.0.0", 32768), PortBinding(53, "udp", "127.0.0.1", 5353)]
    assert ports.docker_ports(bindings, ["80/tcp", "9000/tcp"]) == {
        "80/tcp": [{"HostIp": "0.0.0.0", "HostPort": "32768"}],
        "9000/tcp": None,
        "53/udp": [{"HostIp": "127.0.0.1", "HostPort": "5353"}],
    }
    assert ports.port_lines(bindings) == ["53/udp -> 127.0.0.1:5353", "80/tcp -> 0.0.0.0:32768"]
    assert ports.port_lines(bindings, "80/tcp") == ["0.0.0.0:32768"]


def _store(tmp_path: Path) -> NetworkStore:
    return NetworkStore(Paths.resolve(str(tmp_path / "root")))


def test_ipam_never_hands_out_twice_and_frees(tmp_path: Path) -> None:
    store = _store(tmp_path)
    got = [ipam.allocate(store, "n", "10.99.0.0/29", "10.99.0.1", f"c{i}") for i in range(5)]
    assert got == [f"10.99.0.{i}" for i in range(2, 7)]
    assert ipam.allocate(store, "n", "10.99.0.0/29", "10.99.0.1", "c2") == "10.99.0.4"  # same owner, same address
    with pytest.raises(PoolExhausted):
        ipam.allocate(store, "n", "10.99.0.0/29", "10.99.0.1", "c9")
    ipam.release(store, "n", "c1")
    assert ipam.allocate(store, "n", "10.99.0.0/29", "10.99.0.1", "c9") == "10.99.0.3"
    assert sorted(store.allocations("n").values()) == ["c0", "c2", "c3", "c4", "c9"]


def test_choose_subnet_avoids_host_and_own_networks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = _store(tmp_path)
    monkeypatch.setenv("REFRT_SUBNET_POOL", "10.212.0.0/22,24")
    monkeypatch.setattr(ipam, "host_networks", lambda: [ipaddress.IPv4Network("10.212.0.0/24")])
    store.save_network(NetworkRecord(id="a" * 64, name="x", subnet="10.212.1.0/24", gateway="10.212.1.1",
                                     bridge="rf-x"))
    assert str(ipam.choose_subnet(store)) == "10.212.2.0/24"
    assert str(ipam.choose_subnet(store, exclude=[ipaddress.IPv4Network("10.212.2.0/24")])) == "10.212.3.0/24"
    monkeypatch.setenv("REFRT_SUBNET_POOL", "10.212.0.0/24,24")
    with pytest.raises(PoolExhausted):
        ipam.choose_subnet(store)


def test_host_networks_sees_real_interfaces() -> None:
    nets = ipam.host_networks()
    assert nets and all(not n.is_loopback for n in nets)


def test_hosts_rendering_and_in_place_rewrite(tmp_path: Path) -> None:
    text = hosts.render_hosts([("10.0.0.2", ["web"])], [("10.0.0.3", ["db", "db", "alias"])],
                              ["gw:10.0.0.1", "me:host-gateway"])
    assert "10.0.0.2\tweb\n" in text and "10.0.0.3\tdb alias\n" in text and "10.0.0.1\tgw\n" in text
    target = tmp_path / "hosts"
    target.write_text("x" * 5000)
    inode = target.stat().st_ino
    hosts.write_in_place(target, text)
    assert target.read_text() == text and target.stat().st_ino == inode
    hosts.write_in_place(tmp_path / "gone" / "hosts", text)  # a removed container: nothing happens
    assert not (tmp_path / "gone").exists()


def test_resolv_drops_loopback_servers(tmp_path: Path) -> None:
    host = tmp_path / "resolv.conf"
    host.write_text("nameserver 127.0.0.53\nnameserver 10.1.1.1\nsearch example.org\n")
    assert hosts.render_resolv([], host) == "nameserver 10.1.1.1\nsearch example.org\n"
    assert hosts.render_resolv(["9.9.9.9"], host).startswith("nameserver 9.9.9.9\n")
    host.write_text("nameserver 127.0.0.1\n")
    assert "nameserver 8.8.8.8" in hosts.render_resolv([], host)


def test_rule_tags_keep_roots_apart() -> None:
    """Two roots' rules live side by side; removing one root's leaves the other's untouched."""
    tags = [os.urandom(4).hex() for _ in range(2)]
    try:
        for tag in tags:
            firewall.apply_root(tag, firewall.port_rules(tag, "c" * 64, "rf-none", "127.0.0.1", 1, "tcp",
                                                         "10.9.9.9", 80), with_base=True)
        assert ("tcp", "127.0.0.1", 1) in firewall.published_host_ports()
        firewall.remove_root(tags[0])
        assert firewall.leftovers(tags[0]) == []
        assert len(firewall.rules_tagged(firewall.tag_comment(tags[1], "ctr", "c" * 64))) == 2
    finally:
        for tag in tags:
            firewall.remove_base(tag)
    assert firewall.leftovers(tags[1]) == []


def test_root_chains_are_rewritten_whole_and_removal_survives_doubled_jumps() -> None:
    """apply_root replaces the chains' content (no dump); remove_root falls back to the careful path when its
    one-shot script does not fit (here: jumps doubled, as after a crash between bring-up and tear-down)."""
    tag = os.urandom(4).hex()
    rules = firewall.port_rules(tag, "d" * 64, "rf-none", "127.0.0.1", 2, "tcp", "10.9.9.8", 80)
    try:
        firewall.apply_root(tag, rules, with_base=True)
        firewall.apply_root(tag, rules, with_base=False)
        assert len(firewall.rules_tagged(firewall.tag_comment(tag, "ctr", "d" * 64))) == 2
        firewall.apply_root(tag, [], with_base=True)  # the jumps now twice
        assert firewall.rules_tagged(firewall.tag_comment(tag, "ctr", "d" * 64)) == []
        firewall.remove_root(tag)
        assert firewall.leftovers(tag) == []
    finally:
        firewall.remove_base(tag)
