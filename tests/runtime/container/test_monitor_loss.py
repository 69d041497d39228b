"""Monitor loss: a container whose monitor was SIGKILLed is finished off by the next command on its root.

Why: the monitor is the container's parent and the one that records its exit and, for ``--rm``, removes it.
When it dies (SIGKILL, OOM) nobody else would; ``reconcile`` in runtime/container/lifecycle.py does its work on
the next command: the exit is recorded, and an ``--rm`` container goes with its cgroup, port rules, veth and -
when it was the last one - the root's bridge. Checked through the daemon (the default path) and in-process.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

import runtime.network as rn
from runtime.paths import Paths
from tests.runtime.container.conftest import Refrt, assert_nothing_left, pid_alive, unique, wait_for
from tests.runtime.daemon.cli_helpers import stop_daemons


@dataclass(frozen=True)
class _Ctx:
    paths: Paths


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _rules_mentioning(text: str) -> list[str]:
    saved = subprocess.run(["iptables-save"], capture_output=True, text=True, check=True).stdout
    return [line for line in saved.splitlines() if text in line]


def _veths_of(container_id: str) -> list[str]:
    return [p.name for p in Path("/sys/class/net").iterdir() if p.name.startswith(f"rv{container_id[:10]}")]


def _kill_monitor(refrt: Refrt, container_id: str) -> tuple[int, int]:
    state = refrt.state(container_id)
    monitor_pid, pid = state["monitor_pid"], state["pid"]
    assert pid_alive(monitor_pid) and pid_alive(pid)
    os.kill(monitor_pid, signal.SIGKILL)
    wait_for(lambda: not pid_alive(monitor_pid))
    return monitor_pid, pid


@pytest.fixture(scope="module")
def own_root(refrt: Refrt, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Refrt]:
    """A root of its own (no other test's container on its bridge), so the bridge must go with the container."""
    runner = replace(refrt, root=tmp_path_factory.mktemp("refrt-lost"))
    runner("image", "bootstrap", "busybox", check=True)
    yield runner
    stop_daemons(runner.root)


@pytest.mark.parametrize("mode", ["daemon", "in-process"])
def test_rm_container_with_published_port_leaves_no_trace(own_root: Refrt, mode: str) -> None:
    runner = own_root if mode == "daemon" else replace(own_root, env={**own_root.env, "REFRT_NO_DAEMON": "1"})
    if mode == "in-process":
        stop_daemons(runner.root)  # its watcher would reconcile first: here the in-process command must
    port = _free_port()
    name = unique("lost-rm")
    started = runner("run", "-d", "--rm", "--name", name, "-p", f"127.0.0.1:{port}:80", "busybox",
                     "sleep", "300")
    assert started.returncode == 0, started.stderr
    cid = started.stdout.strip()
    assert _rules_mentioning(f"--dport {port}") != []
    assert _veths_of(cid) != []
    pids = _kill_monitor(runner, cid)

    listed = runner("ps", "-a", "--no-trunc", "--format", "{{.ID}} {{.Names}}")
    assert listed.returncode == 0, listed.stderr
    assert cid not in listed.stdout and name not in listed.stdout
    assert_nothing_left(runner, cid, list(pids))  # directory, mounts, cgroup, processes
    assert _rules_mentioning(f"--dport {port}") == []
    assert _rules_mentioning(cid[:12]) == []
    assert _veths_of(cid) == []
    assert not Path(f"/proc/{pids[1]}/ns/net").exists()  # its netns went with its last process
    assert rn.leftovers(_Ctx(Paths.resolve(str(runner.root)))) == []  # its last container: bridge, chains too
    assert runner("inspect", name).returncode == 1


def test_kept_container_records_the_exit(refrt: Refrt) -> None:
    name = unique("lost")
    cid = refrt("run", "-d", "--name", name, "busybox", "sleep", "300", check=True).stdout.strip()
    monitor_pid, pid = _kill_monitor(refrt, cid)

    rows = refrt("ps", "-a", "--filter", f"name={name}", "--format", "{{.Status}}").stdout.splitlines()
    assert len(rows) == 1 and rows[0].startswith("Exited (137)"), rows
    state = refrt.inspect(name)["State"]
    assert (state["Status"], state["ExitCode"], state["Error"]) == ("exited", 137, "container monitor died")
    assert not pid_alive(pid)
    assert _veths_of(cid) == []
    # it starts again like any exited container, and goes with rm
    refrt("start", name, check=True)
    again = refrt.state(cid)
    assert pid_alive(again["pid"])
    refrt("rm", "-f", name, check=True)
    assert_nothing_left(refrt, cid, [monitor_pid, pid, again["pid"], again["monitor_pid"]])


def test_rm_container_whose_monitor_died_while_removing_it(own_root: Refrt) -> None:
    """The monitor recorded the exit of an --rm container and was killed before removing it: the next command
    removes it (the state still names the dead monitor). In-process, with the root's daemon stopped: its watcher
    would race the state file written below."""
    stop_daemons(own_root.root)
    refrt = replace(own_root, env={**own_root.env, "REFRT_NO_DAEMON": "1"})
    name = unique("lost-late")
    cid = refrt("run", "-d", "--rm", "--name", name, "--network", "none", "busybox", "sleep", "300",
                check=True).stdout.strip()
    monitor_pid, pid = _kill_monitor(refrt, cid)
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not pid_alive(pid))
    state_path = refrt.root / "containers" / cid / "state.json"
    state = json.loads(state_path.read_text())
    state.update(status="exited", exit_code=137, pid=0)  # as _finish leaves it before _auto_remove
    state_path.write_text(json.dumps(state))
    assert name not in refrt("ps", "-a", "--format", "{{.Names}}").stdout
    assert_nothing_left(refrt, cid, [monitor_pid, pid])


def test_daemon_notices_a_dead_monitor_without_a_command(refrt: Refrt) -> None:
    """The root's daemon watches each monitor (pidfd): an --rm container goes within seconds of its monitor's
    death, with no command run meanwhile."""
    name = unique("lost-watched")
    cid = refrt("run", "-d", "--rm", "--name", name, "busybox", "sleep", "300", check=True).stdout.strip()
    assert _veths_of(cid) != []
    pids = _kill_monitor(refrt, cid)
    wait_for(lambda: not (refrt.root / "containers" / cid).exists(), timeout=10)
    assert_nothing_left(refrt, cid, list(pids))
    assert _veths_of(cid) == []
