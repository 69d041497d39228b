"""``refrt network ...`` and ``refrt port`` through the CLI entry point (real bridges and rules)."""

from __future__ import annotations

import json

import pytest

from runtime.cli import main
from runtime.spec import NetworkRequest
from tests.runtime.network.conftest import Ctx, Sandbox


def _cli(ctx: Ctx, *args: str) -> int:
    return main(["--root", str(ctx.paths.root), *args])


def test_network_lifecycle_and_filters(sandbox: Sandbox, ctx: Ctx, capsys: pytest.CaptureFixture[str]) -> None:
    assert _cli(ctx, "network", "create", "--subnet", "10.213.9.0/24", "--gateway", "10.213.9.254",
                "--label", "team=net", "cli-a") == 0
    net_id = capsys.readouterr().out.strip()
    assert len(net_id) == 64
    assert _cli(ctx, "network", "create", "--internal", "cli-b") == 0
    assert _cli(ctx, "network", "create", "cli-a") == 125
    assert "already exists" in capsys.readouterr().err
    assert _cli(ctx, "network", "create", "--subnet", "10.213.9.128/25", "cli-c") == 125
    assert "overlaps" in capsys.readouterr().err
    assert _cli(ctx, "network", "ls", "--format", "{{.Name}}") == 0
    assert capsys.readouterr().out.split() == ["bridge", "cli-a", "cli-b", "host", "none"]
    assert _cli(ctx, "network", "ls", "-q", "--filter", "type=custom") == 0
    assert len(capsys.readouterr().out.split()) == 2
    assert _cli(ctx, "network", "ls", "--format", "{{.Name}}", "--filter", "label=team=net") == 0
    assert capsys.readouterr().out.split() == ["cli-a"]
    assert _cli(ctx, "network", "inspect", "cli-a") == 0
    [data] = json.loads(capsys.readouterr().out)
    assert data["Id"] == net_id and data["IPAM"]["Config"] == [{"Subnet": "10.213.9.0/24",
                                                                 "Gateway": "10.213.9.254"}]
    c = sandbox.run("member", mode="cli-a")
    assert c.settings["Networks"]["cli-a"]["Gateway"] == "10.213.9.254"
    assert _cli(ctx, "network", "inspect", "-f", "{{json .Containers}}", net_id[:10]) == 0
    assert c.id in capsys.readouterr().out
    assert _cli(ctx, "network", "rm", "cli-a") == 1
    assert "active endpoints" in capsys.readouterr().err
    assert _cli(ctx, "network", "rm", "bridge") == 1
    assert _cli(ctx, "network", "rm", "host") == 1
    assert _cli(ctx, "network", "inspect", "-f", "{{.Name}} {{.Driver}}", "host", "none") == 0
    assert capsys.readouterr().out.split("\n")[:2] == ["host host", "none null"]
    assert _cli(ctx, "network", "prune", "-f") == 0
    assert capsys.readouterr().out.split() == ["Deleted", "Networks:", "cli-b"]
    sandbox.stop(c)
    assert _cli(ctx, "network", "rm", "cli-a") == 0
    assert _cli(ctx, "network", "inspect", "cli-a") == 1


def test_port_command(sandbox: Sandbox, ctx: Ctx, capsys: pytest.CaptureFixture[str]) -> None:
    c = sandbox.run("ported", publish=["127.0.0.1::80", "53/udp"])
    ports = c.settings["Ports"]
    assert _cli(ctx, "port", "ported") == 0
    out = capsys.readouterr().out.splitlines()
    assert out == [f"53/udp -> 0.0.0.0:{ports['53/udp'][0]['HostPort']}",
                   f"80/tcp -> 127.0.0.1:{ports['80/tcp'][0]['HostPort']}"]
    assert _cli(ctx, "port", c.id[:12], "80") == 0
    assert capsys.readouterr().out.strip() == f"127.0.0.1:{ports['80/tcp'][0]['HostPort']}"
    assert _cli(ctx, "port", "ported", "443") == 125
    assert _cli(ctx, "port", "nobody") == 1
    assert NetworkRequest().mode == "bridge"


def test_prune_reaps_endpoints_of_vanished_containers(sandbox: Sandbox, ctx: Ctx,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    assert _cli(ctx, "network", "create", "cli-reap") == 0
    c = sandbox.run("ghost", mode="cli-reap")
    c.proc.kill()
    c.proc.wait()
    (c.directory / "hosts").unlink()
    (c.directory / "resolv.conf").unlink()
    c.directory.rmdir()  # removed behind refrt's back: no detach ran
    capsys.readouterr()
    assert _cli(ctx, "network", "prune", "-f") == 0
    assert "cli-reap" in capsys.readouterr().out
