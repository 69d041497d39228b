"""``--link`` environment and docker's checks of ``--add-host``/``--dns``/``-w``/``--hostname``, against a real
dockerd: the same command lines on refrt and on docker 20.10, with the same assertions (docker's output as
measured here, the linked container's address written as ``IP``).
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.runtime.cli.test_health import cli  # noqa: F401 - the engine fixture (refrt, then docker)
from tests.runtime.container.conftest import unique
from tests.runtime.daemon.conftest import refrt_daemon, refrt_root  # noqa: F401 - fixtures (refrt's Engine API)

pytestmark = pytest.mark.slow

Cli = Callable[..., subprocess.CompletedProcess[str]]

# docker 20.10 here, for a server with EXPOSE 80 53/udp, ENV IMGVAR=img, -e FOO=bar -e 'SP=a b', --expose 8080
# and --expose 7000-7002/tcp, linked as my-db: ports by number (the first as MY_DB_PORT), a run of consecutive
# ports of one protocol also as _START/_END, and the server's environment but PATH and HOME.
EXPECTED = """MY_DB_ENV_FOO=bar
MY_DB_ENV_IMGVAR=img
MY_DB_ENV_SP=a b
MY_DB_NAME=/{client}/my-db
MY_DB_PORT=udp://IP:53
MY_DB_PORT_53_UDP=udp://IP:53
MY_DB_PORT_53_UDP_ADDR=IP
MY_DB_PORT_53_UDP_PORT=53
MY_DB_PORT_53_UDP_PROTO=udp
MY_DB_PORT_7000_TCP=tcp://IP:7000
MY_DB_PORT_7000_TCP_ADDR=IP
MY_DB_PORT_7000_TCP_END=tcp://IP:7002
MY_DB_PORT_7000_TCP_PORT=7000
MY_DB_PORT_7000_TCP_PORT_END=7002
MY_DB_PORT_7000_TCP_PORT_START=7000
MY_DB_PORT_7000_TCP_PROTO=tcp
MY_DB_PORT_7000_TCP_START=tcp://IP:7000
MY_DB_PORT_7001_TCP=tcp://IP:7001
MY_DB_PORT_7001_TCP_ADDR=IP
MY_DB_PORT_7001_TCP_PORT=7001
MY_DB_PORT_7001_TCP_PROTO=tcp
MY_DB_PORT_7002_TCP=tcp://IP:7002
MY_DB_PORT_7002_TCP_ADDR=IP
MY_DB_PORT_7002_TCP_PORT=7002
MY_DB_PORT_7002_TCP_PROTO=tcp
MY_DB_PORT_8080_TCP=tcp://IP:8080
MY_DB_PORT_8080_TCP_ADDR=IP
MY_DB_PORT_8080_TCP_PORT=8080
MY_DB_PORT_8080_TCP_PROTO=tcp
MY_DB_PORT_80_TCP=tcp://IP:80
MY_DB_PORT_80_TCP_ADDR=IP
MY_DB_PORT_80_TCP_PORT=80
MY_DB_PORT_80_TCP_PROTO=tcp"""


def test_link_environment(cli: Cli, tmp_path: Path) -> None:  # noqa: F811 - the fixture
    tag = f"linkimg-{unique('t').split('-')[1]}"
    (tmp_path / "Dockerfile").write_text("FROM busybox\nEXPOSE 80 53/udp\nENV IMGVAR=img\n")
    cli("build", "-q", "-t", tag, str(tmp_path), check=True, timeout=120)
    server, client, kept = unique("lsrv"), unique("lcli"), unique("lkept")
    try:
        cli("run", "-d", "--name", server, "-e", "FOO=bar", "-e", "SP=a b", "--expose", "8080", "--expose",
            "7000-7002/tcp", tag, "sleep", "120", check=True)
        ip = cli("inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", server,
                 check=True).stdout.strip()
        assert ip
        exposed = cli("inspect", "-f", "{{json .Config.ExposedPorts}}", server, check=True).stdout.strip()
        assert exposed == ('{"53/udp":{},"7000/tcp":{},"7001/tcp":{},"7002/tcp":{},"80/tcp":{},"8080/tcp":{}}')
        ran = cli("run", "--rm", "--name", client, "--link", f"{server}:my-db", "busybox", "env", check=True)
        ours = sorted(line.replace(ip, "IP") for line in ran.stdout.splitlines() if line.startswith("MY_DB_"))
        assert "\n".join(ours) == EXPECTED.format(client=client)

        # the user's -e wins over a link variable; the variables are not part of Config.Env, exec sees them
        cli("run", "-d", "--name", kept, "--link", f"{server}:db", "-e", "DB_NAME=mine", "busybox", "sleep", "120",
            check=True)
        env = cli("inspect", "-f", "{{json .Config.Env}}", kept, check=True).stdout
        assert "DB_NAME=mine" in env and "DB_PORT" not in env and "DB_ENV_FOO" not in env
        links = cli("inspect", "-f", "{{json .HostConfig.Links}} {{json .HostConfig.ExtraHosts}}", kept,
                    check=True).stdout.strip()
        assert links == f'["/{server}:/{kept}/db"] null'
        seen = cli("exec", kept, "sh", "-c", "echo $DB_NAME $DB_PORT_80_TCP_ADDR $DB_ENV_SP", check=True).stdout
        assert seen.strip() == f"mine {ip} a b"
    finally:
        cli("rm", "-f", kept, client, server)
        cli("rmi", tag)


REFUSED = [
    (["--add-host", "nohostip"], 'invalid argument "nohostip" for "--add-host" flag: bad format for add-host: '
                                 '"nohostip"'),
    (["--add-host", "h:notip"], 'invalid argument "h:notip" for "--add-host" flag: invalid IP address in add-host: '
                                '"notip"'),
    (["--dns", "not-an-ip"], 'invalid argument "not-an-ip" for "--dns" flag: not-an-ip is not an ip address'),
    (["-w", "relative"], "the working directory 'relative' is invalid, it needs to be an absolute path."),
]


def test_run_checks(cli: Cli) -> None:  # noqa: F811 - the fixture
    """Refused with docker's words, exit 125, nothing created; what docker 20.10 accepts (a host name with a
    blank, host-gateway, an IPv6 server) is accepted."""
    before = cli("ps", "-aq", check=True).stdout.split()
    for flags, words in REFUSED:
        result = cli("run", "--rm", *flags, "busybox", "true")
        assert result.returncode == 125 and words in result.stderr, (flags, result.returncode, result.stderr)
    assert cli("ps", "-aq", check=True).stdout.split() == before
    named = cli("run", "--rm", "--hostname", "bad host", "busybox", "hostname")
    assert named.returncode == 0 and named.stdout.strip() == "bad host", named
    hosts = cli("run", "--rm", "--add-host", "gw:host-gateway", "--add-host", "six:::1", "--dns", " 10.0.0.9",
                "busybox", "sh", "-c", "grep -E 'gw|six' /etc/hosts | wc -l; grep nameserver /etc/resolv.conf")
    assert hosts.returncode == 0 and hosts.stdout.split() == ["2", "nameserver", "10.0.0.9"], hosts
