"""``run``/``create`` flags parsed as docker parses them, and docker's exit codes for ``rm``.

Go booleans (``--rm=true``, ``-d=false``), no abbreviations (``--pid=host`` is not ``--pids-limit``), every docker
``run`` flag either honoured or refused by name before anything is created, help text for every option. The
peer test runs the same command lines through docker 20.10 against a real dockerd and compares exit codes.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from runtime.cli import build_parser
from runtime.container.createflags import REFUSED
from tests.runtime.container.conftest import Refrt, unique


def _run_parser() -> argparse.ArgumentParser:
    parser = build_parser("run")
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    run: argparse.ArgumentParser = sub.choices["run"]
    return run


def test_every_run_option_has_help() -> None:
    missing = [a.option_strings or a.dest for a in _run_parser()._actions if not a.help]
    assert not missing


def test_go_booleans_and_no_abbreviations(refrt: Refrt) -> None:
    ran = refrt("run", "--rm=true", "-d=false", "--read-only=False", "busybox", "echo", "--rm=false")
    assert ran.returncode == 0 and ran.stdout == "--rm=false\n", ran  # the command's words are its own
    for abbreviation in ("--priv", "--pids=5", "--net-al=x", "--hostn=x"):
        result = refrt("run", "--rm", abbreviation, "busybox", "true")
        assert result.returncode == 125, (abbreviation, result)
        assert abbreviation.split("=")[0] in result.stderr
    bad = refrt("run", "--rm=maybe", "busybox", "true")
    assert bad.returncode == 125 and "strconv.ParseBool" in bad.stderr


def test_refused_flags_name_themselves_and_create_nothing(refrt: Refrt) -> None:
    before = refrt("ps", "-aq").stdout
    for flag, takes_value, _ in REFUSED:
        words = [flag, "x"] if takes_value else [flag]
        result = refrt("create", *words, "busybox", "true")
        assert result.returncode == 125, (flag, result)
        assert result.stderr.startswith(f"refrt: {flag}: not supported by refrt"), result.stderr
    assert refrt("run", "--rm", "--init=false", "--oom-kill-disable=false", "busybox", "true").returncode == 0
    assert refrt("ps", "-aq").stdout == before


def test_label_file_and_cidfile(refrt: Refrt, tmp_path: pytest.TempPathFactory) -> None:
    labels = tmp_path / "labels"  # type: ignore[operator]
    labels.write_text("a=1\n# comment\n\nb=two\n")
    cidfile = tmp_path / "cid"  # type: ignore[operator]
    name = unique("flags")
    made = refrt("create", "--name", name, "--label-file", str(labels), "-l", "c=3", "--cidfile", str(cidfile),
                 "busybox", "true")
    try:
        assert made.returncode == 0, made.stderr
        assert cidfile.read_text() == made.stdout.strip()
        assert refrt.inspect(name)["Config"]["Labels"] == {"a": "1", "b": "two", "c": "3"}
        again = refrt("create", "--cidfile", str(cidfile), "busybox", "true")
        assert again.returncode == 1 and "container ID file found" in again.stderr  # docker's words and code
    finally:
        refrt("rm", "-f", name)


def test_rm_exit_codes_and_version(refrt: Refrt) -> None:
    assert refrt("rm", "-f", "nosuch-ctr").returncode == 0
    missing = refrt("rm", "nosuch-ctr")
    assert missing.returncode == 1 and missing.stderr == "Error: No such container: nosuch-ctr\n"
    name = unique("rm")
    refrt("run", "-d", "--name", name, "busybox", "sleep", "60", check=True)
    try:
        running = refrt("rm", name)
        assert running.returncode == 1
        assert "You cannot remove a running container" in running.stderr
    finally:
        assert refrt("rm", "-f", name).returncode == 0
    version = refrt("--version")
    assert version.returncode == 0 and version.stdout.startswith("refrt version ")


COMPARED = [
    ["rm", "-f", "nosuch-ctr"],
    ["rm", "nosuch-ctr"],
    ["run", "--rm=true", "-d=false", "busybox", "true"],
    ["run", "--rm", "--priv", "busybox", "true"],
    ["run", "--rm", "busybox", "sh", "-c", "exit 3"],
    ["run", "--rm", "busybox", "no-such-command"],
    ["inspect", "-f", "{{.Nope}}", "nosuch-ctr"],
    ["exec", "nosuch-ctr", "true"],
]


@pytest.mark.peer
def test_exit_codes_as_docker(refrt: Refrt, request: pytest.FixtureRequest) -> None:
    from tests.runtime.daemon.conftest import docker

    host = request.getfixturevalue("dockerd")
    for words in COMPARED:
        theirs = docker(host, *[w if w != "run" else "run" for w in words][:1],
                        *(["--pull=never"] if words[0] == "run" else []), *words[1:])
        ours = refrt(*words)
        assert ours.returncode == theirs.returncode, (words, ours.stderr, theirs.stderr)


def test_stop_signal_and_timeout(refrt: Refrt) -> None:
    name = unique("stopsig")
    refrt("run", "-d", "--name", name, "--stop-signal", "USR1", "--stop-timeout", "2", "busybox", "sh", "-c",
          'trap "echo got-usr1; exit 9" USR1; while true; do sleep 0.1; done', check=True)
    try:
        import time

        time.sleep(0.5)
        assert refrt("stop", name).returncode == 0
        data = refrt.inspect(name)
        assert data["State"]["ExitCode"] == 9
        assert (data["Config"]["StopSignal"], data["Config"]["StopTimeout"]) == ("USR1", 2)
        assert refrt("logs", name).stdout == "got-usr1\n"
    finally:
        refrt("rm", "-f", name)
    bad = refrt("create", "--stop-signal", "BOGUS", "busybox", "true")
    assert bad.returncode == 125 and "Invalid signal: BOGUS" in bad.stderr


def test_ulimit(refrt: Refrt) -> None:
    ran = refrt("run", "--rm", "--ulimit", "nofile=512:1024", "--ulimit", "core=0", "busybox", "sh", "-c",
                "ulimit -n; ulimit -Hn; ulimit -c")
    assert ran.stdout == "512\n1024\n0\n", ran.stderr
    before = refrt("ps", "-aq").stdout
    too_high = refrt("run", "--rm", "--ulimit", "nofile=999999999", "busybox", "true")
    assert too_high.returncode == 125 and "nofile" in too_high.stderr  # no CAP_SYS_RESOURCE here, as docker
    assert refrt("ps", "-aq").stdout == before
    bad = refrt("run", "--rm", "--ulimit", "bogus=1", "busybox", "true")
    assert bad.returncode == 125 and "invalid ulimit type: bogus" in bad.stderr


def test_init(refrt: Refrt) -> None:
    ps = refrt("run", "--rm", "--init", "busybox", "ps", "-o", "pid,comm")
    assert ps.stdout.split()[2:4] == ["1", "docker-init"], ps
    assert refrt("run", "--rm", "--init", "busybox", "sh", "-c", "exit 4").returncode == 4
    # an orphan re-parented to PID 1: a zombie under `sleep` as PID 1, reaped under tini
    for flags, zombies in (([], "1"), (["--init"], "0")):
        name = unique("zombie")
        refrt("run", "-d", "--name", name, *flags, "busybox", "sh", "-c", "(sleep 0.1 &); exec sleep 30",
              check=True)
        try:
            import time

            time.sleep(1)
            listing = refrt("exec", name, "ps", "-o", "stat,comm").stdout
            assert str(sum(line.startswith("Z") for line in listing.splitlines())) == zombies, (flags, listing)
        finally:
            refrt("rm", "-f", name)
    name = unique("init")
    refrt("create", "--name", name, "--init", "busybox", "sleep", "100", check=True)
    try:
        data = refrt.inspect(name)
        assert (data["Path"], data["Args"], data["HostConfig"]["Init"]) == ("sleep", ["100"], True)
    finally:
        refrt("rm", "-f", name)


def test_shm_size(refrt: Refrt) -> None:
    for flag, kib in (("128m", "131072"), ("0", "65536")):  # 0: docker's default 64m
        df = refrt("run", "--rm", "--shm-size", flag, "busybox", "sh", "-c", "df -k /dev/shm | tail -1")
        assert df.stdout.split()[1] == kib, (flag, df)
    assert refrt("run", "--rm", "--shm-size", "-5", "busybox", "true").returncode == 125


def test_sysctl(refrt: Refrt) -> None:
    host = Path("/proc/sys/net/core/somaxconn").read_text()
    ran = refrt("run", "--rm", "--sysctl", "net.core.somaxconn=1000", "--sysctl", "kernel.shmmax=1073741824",
                "busybox", "sh", "-c", "cat /proc/sys/net/core/somaxconn /proc/sys/kernel/shmmax")
    assert ran.stdout == "1000\n1073741824\n", ran.stderr
    assert Path("/proc/sys/net/core/somaxconn").read_text() == host  # the host's stays
    for words, message in ((["--sysctl", "kernel.hostname=x"], "is not whitelisted"),
                           (["--network", "host", "--sysctl", "net.core.somaxconn=5"], "host network namespace"),
                           (["--sysctl", "net.nope.x=1"], "net.nope.x")):
        bad = refrt("run", "--rm", *words, "busybox", "true")
        assert bad.returncode == 125 and message in bad.stderr, (words, bad)


def test_group_add(refrt: Refrt) -> None:
    ran = refrt("run", "--rm", "-u", "nobody", "--group-add", "1234", "--group-add", "root", "busybox", "id")
    assert ran.stdout.strip() == "uid=65534(nobody) gid=65534(nobody) groups=0(root),1234,65534(nobody)", ran
    missing = refrt("run", "--rm", "--group-add", "nosuchgroup", "busybox", "true")
    assert missing.returncode == 125 and "unable to find group nosuchgroup" in missing.stderr
    name = unique("groups")
    refrt("run", "-d", "--name", name, "--group-add", "1234", "busybox", "sleep", "60", check=True)
    try:
        assert refrt("exec", name, "id", "-G").stdout.split() == ["0", "1234"]  # exec gets them too
    finally:
        refrt("rm", "-f", name)


def test_uts_and_ipc_host(refrt: Refrt) -> None:
    import socket

    assert refrt("run", "--rm", "--uts", "host", "busybox", "hostname").stdout.strip() == socket.gethostname()
    own = Path("/proc/self/ns/ipc").readlink()
    assert refrt("run", "--rm", "--ipc", "host", "busybox", "readlink", "/proc/self/ns/ipc").stdout.strip() == str(own)
    assert refrt("run", "--rm", "busybox", "readlink", "/proc/self/ns/ipc").stdout.strip() != str(own)
    shared = refrt("run", "--rm", "--ipc", "container:other", "busybox", "true")
    assert shared.returncode == 125 and shared.stderr.startswith("refrt: --ipc container:other")


def test_pid_host(refrt: Refrt) -> None:
    own = str(Path("/proc/self/ns/pid").readlink())
    assert refrt("run", "--rm", "--pid", "host", "busybox", "readlink", "/proc/self/ns/pid").stdout.strip() == own
    assert refrt("run", "--rm", "--pid=host", "busybox", "sh", "-c", "echo $$").stdout.strip() != "1"
    assert refrt("run", "--rm", "busybox", "sh", "-c", "echo $$").stdout.strip() == "1"


def test_oom_kill_disable(refrt: Refrt) -> None:
    """Under its limit with the OOM killer off, the allocating process waits instead of being killed."""
    name = unique("oom")
    refrt("run", "-d", "--name", name, "-m", "32m", "--memory-swap", "32m", "--oom-kill-disable", "busybox", "sh",
          "-c", "dd if=/dev/zero of=/dev/null bs=64M count=1; echo done", check=True)
    try:
        import time

        time.sleep(3)
        data = refrt.inspect(name)
        assert (data["State"]["Status"], data["State"]["OOMKilled"]) == ("running", False)
        assert data["HostConfig"]["OomKillDisable"] is True
    finally:
        assert refrt("rm", "-f", name).returncode == 0


def test_link(refrt: Refrt) -> None:
    server = unique("srv")
    refrt("run", "-d", "--name", server, "busybox", "sleep", "60", check=True)
    try:
        ran = refrt("run", "--rm", "--name", unique("cli"), "--link", f"{server}:db", "busybox", "sh", "-c",
                    "ping -c1 -W2 db >/dev/null && ping -c1 -W2 " + server + " >/dev/null && echo $DB_NAME")
        assert ran.returncode == 0 and ran.stdout.strip().endswith("/db"), ran
        assert refrt("run", "--rm", "--link", "nosuch-ctr", "busybox", "true").returncode == 125
        refrt("stop", "-t", "0", server, check=True)
        stopped = refrt("run", "--rm", "--link", server, "busybox", "true")
        assert stopped.returncode == 125 and "Cannot link to a non running container" in stopped.stderr
    finally:
        refrt("rm", "-f", server)


def test_device(refrt: Refrt) -> None:
    """/dev/loop-control (10:237) is not among the default devices: usable only when --device gives it."""
    probe = "dd if={} of=/dev/null count=0 2>&1 | head -1"
    denied = refrt("run", "--rm", "busybox", "sh", "-c", "mknod /tmp/k c 10 237 && " + probe.format("/tmp/k"))
    assert "Operation not permitted" in denied.stdout
    given = refrt("run", "--rm", "--device", "/dev/loop-control", "busybox", "sh", "-c",
                  probe.format("/dev/loop-control"))
    assert given.stdout.strip() == "0+0 records in", given
    read_only = refrt("run", "--rm", "--device", "/dev/loop-control:/dev/lc:r", "busybox", "sh", "-c",
                      probe.format("/dev/lc") + "; echo x > /dev/lc")
    assert read_only.stdout.strip() == "0+0 records in" and "Operation not permitted" in read_only.stderr
    missing = refrt("run", "--rm", "--device", "/dev/nosuch", "busybox", "true")
    assert missing.returncode == 125 and "error gathering device information" in missing.stderr


def test_cpu_quota_and_period(refrt: Refrt) -> None:
    name = unique("quota")
    refrt("run", "-d", "--name", name, "--cpu-quota", "25000", "--cpu-period", "50000", "busybox", "sleep", "30",
          check=True)
    try:
        assert refrt.inspect(name)["HostConfig"]["NanoCpus"] == 500_000_000  # half a CPU, the same CFS quota
    finally:
        refrt("rm", "-f", name)
    both = refrt("run", "--rm", "--cpus", "1", "--cpu-quota", "5000", "busybox", "true")
    assert both.returncode == 125 and "Conflicting options" in both.stderr
