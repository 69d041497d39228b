"""Detached containers, their monitor, logs, stop/kill/rm/wait, crash recovery and docker's exit codes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

from tests.runtime.container.conftest import Refrt, assert_nothing_left, pid_alive, unique, wait_for

TICKER = "i=0; while true; do echo tick $i; echo err $i >&2; i=$((i+1)); sleep 0.2; done"


def test_detached_logs_stop_rm_leave_nothing(refrt: Refrt) -> None:
    name = unique("detached")
    started = refrt("run", "-d", "--name", name, "--network", "none", "busybox", "sh", "-c", TICKER)
    assert started.returncode == 0, started.stderr
    cid = started.stdout.strip()
    assert len(cid) == 64
    state = refrt.state(cid)
    monitor_pid, pid = state["monitor_pid"], state["pid"]
    assert pid_alive(monitor_pid) and pid_alive(pid)
    parent = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    assert parent == monitor_pid  # the monitor is the container's parent
    wait_for(lambda: "tick 2" in refrt("logs", name).stdout)
    logs = refrt("logs", name)
    assert logs.stdout.startswith("tick 0\ntick 1\n")
    assert logs.stderr.startswith("err 0\n")
    tail = refrt("logs", "--tail", "1", name).stdout
    assert tail.count("tick") <= 1
    ps = refrt("ps", "--format", "{{.Names}} {{.State}}").stdout.splitlines()
    assert f"{name} running" in ps
    before = time.monotonic()
    assert refrt("stop", "-t", "1", name).stdout.strip() == name
    assert time.monotonic() - before < 8
    info = refrt.inspect(name)
    assert info["State"]["Status"] == "exited" and info["State"]["ExitCode"] == 137  # sh ignores TERM as PID 1
    assert not pid_alive(pid) and not pid_alive(monitor_pid)
    assert refrt("rm", name).returncode == 0
    assert_nothing_left(refrt, cid, [pid, monitor_pid])
    assert refrt("inspect", name).returncode == 1


def test_stop_delivers_sigterm_to_pid1(refrt: Refrt) -> None:
    name = unique("trap")
    cid = refrt("run", "-d", "--name", name, "--network", "none", "busybox", "sh", "-c",
                "trap 'echo got-term; exit 7' TERM; while true; do sleep 0.1; done", check=True).stdout.strip()
    time.sleep(0.3)
    before = time.monotonic()
    refrt("stop", "-t", "10", name, check=True)
    assert time.monotonic() - before < 5  # the handler ran; no 10 s wait for SIGKILL
    assert refrt("wait", name).stdout.strip() == "7"
    assert "got-term" in refrt("logs", name).stdout
    refrt("rm", name, check=True)
    assert_nothing_left(refrt, cid, [])


def test_kill_with_signal_and_wait(refrt: Refrt) -> None:
    name = unique("kill")
    refrt("run", "-d", "--name", name, "--network", "none", "busybox", "sleep", "60", check=True)
    waiter = refrt.popen("wait", name, stdout=subprocess.PIPE)
    assert refrt("kill", "-s", "KILL", name).returncode == 0
    out, _ = waiter.communicate(timeout=20)
    assert out.strip() == "137"
    assert refrt("kill", name).returncode != 0  # not running any more
    refrt("rm", name, check=True)


def test_follow_logs_until_exit(refrt: Refrt) -> None:
    name = unique("follow")
    refrt("run", "-d", "--name", name, "--network", "none", "busybox", "sh", "-c",
          "for i in 1 2 3; do echo line $i; sleep 0.3; done", check=True)
    result = refrt("logs", "-f", name, timeout=20)
    assert result.stdout == "line 1\nline 2\nline 3\n"
    refrt("rm", name, check=True)


def test_rm_refuses_running_and_force_removes(refrt: Refrt) -> None:
    name = unique("rmf")
    cid = refrt("run", "-d", "--name", name, "--network", "none", "busybox", "sleep", "60", check=True).stdout.strip()
    state = refrt.state(cid)
    refused = refrt("rm", name)
    assert refused.returncode != 0 and "running" in refused.stderr
    assert refrt("rm", "-f", name).returncode == 0
    assert_nothing_left(refrt, cid, [state["pid"], state["monitor_pid"]])
    missing = refrt("rm", name)
    assert missing.returncode == 1 and "No such container" in missing.stderr


def test_sigkilled_monitor_is_reconciled(refrt: Refrt) -> None:
    name = unique("crash")
    cid = refrt("run", "-d", "--name", name, "--network", "none", "busybox", "sleep", "60", check=True).stdout.strip()
    state = refrt.state(cid)
    os.kill(state["monitor_pid"], signal.SIGKILL)
    line = wait_for(lambda: next((ln for ln in refrt("ps", "-a", "--format", "{{.Names}} {{.Status}}").stdout
                                  .splitlines() if ln.startswith(name) and "Exited" in ln), None))
    assert "Exited (137)" in line
    assert not pid_alive(state["pid"])
    assert refrt("rm", name).returncode == 0
    assert_nothing_left(refrt, cid, [state["pid"], state["monitor_pid"]])


def test_sigkilled_cli_leaves_container_running_then_rm_cleans(refrt: Refrt) -> None:
    name = unique("clikill")
    cli = refrt.popen("run", "--name", name, "--network", "none", "busybox", "sh", "-c", "echo up; sleep 60",
                      stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert cli.stdout is not None
    assert cli.stdout.readline().strip() == "up"
    cli.kill()
    cli.wait()
    info = refrt.inspect(name)
    assert info["State"]["Running"] is True  # like docker: the container does not depend on its CLI
    cid = info["Id"]
    state = refrt.state(cid)
    assert refrt("rm", "-f", name).returncode == 0
    assert_nothing_left(refrt, cid, [state["pid"], state["monitor_pid"]])


def test_exit_codes_follow_docker(refrt: Refrt) -> None:
    assert refrt("run", "--rm", "--network", "none", "busybox", "sh", "-c", "exit 3").returncode == 3
    missing = refrt("run", "--rm", "--network", "none", "busybox", "no-such-command")
    assert missing.returncode == 127 and "executable file not found" in missing.stderr
    assert refrt("run", "--rm", "--network", "none", "busybox", "/etc").returncode == 126
    assert refrt("run", "--rm", "--network", "none", "no-such-image:1").returncode == 125
    assert refrt("run", "--rm", "--bogus-flag", "busybox", "true").returncode == 125
    assert refrt("run", "--rm", "--network", "none", "-m", "lots", "busybox", "true").returncode == 125
    # PID 1 of a PID namespace cannot be killed from inside it (the kernel drops the signal), as in docker
    assert refrt("run", "--rm", "--network", "none", "busybox", "sh", "-c", "kill -9 $$; exit 4").returncode == 4


def test_foreground_stdin_env_workdir_user_hostname(refrt: Refrt, tmp_path: object) -> None:
    env_file = os.path.join(str(tmp_path), "env")
    with open(env_file, "w") as f:
        f.write("# comment\nFROM_FILE=yes\n")
    result = refrt("run", "--rm", "-i", "--network", "none", "-e", "GREETING=hi there", "--env-file", env_file,
                   "-w", "/made/here", "-u", "nobody", "--hostname", "box1", "busybox", "sh", "-c",
                   'echo "$GREETING|$FROM_FILE|$(pwd)|$(id -un)|$(hostname)|$HOME"; '
                   "grep ^nobody: /etc/passwd | cut -d: -f6; cat", input="from stdin\n")
    assert result.returncode == 0, result.stderr
    first, passwd_home, rest = result.stdout.split("\n", 2)
    assert first == f"hi there|yes|/made/here|nobody|box1|{passwd_home}"  # HOME from the container's passwd
    assert rest == "from stdin\n"


def test_entrypoint_and_labels_in_inspect(refrt: Refrt) -> None:
    name = unique("inspect")
    result = refrt("run", "--name", name, "--network", "none", "--entrypoint", "echo", "-l", "team=qa",
                   "busybox", "a", "b")
    assert result.stdout == "a b\n"
    try:
        info = refrt.inspect(name)
        assert info["Name"] == f"/{name}"
        assert info["Config"]["Entrypoint"] == ["echo"] and info["Config"]["Cmd"] == ["a", "b"]
        assert info["Config"]["Labels"] == {"team": "qa"}
        assert info["Config"]["Image"] == "busybox"
        assert info["State"]["Status"] == "exited" and info["State"]["Pid"] == 0
        assert info["HostConfig"]["NetworkMode"] == "none"
        assert set(info["GraphDriver"]["Data"]) == {"LowerDir", "UpperDir", "WorkDir", "MergedDir"}
        assert refrt("inspect", "-f", "{{.State.ExitCode}} {{json .Config.Cmd}}", name).stdout == '0 ["a","b"]\n'
        assert refrt("ps", "-a", "-q", "--filter", f"name={name}").stdout.strip() == info["Id"][:12]
        assert refrt("ps", "-a", "-q", "--filter", "label=team=qa", "--filter", f"name={name}").stdout.strip()
        assert refrt("ps", "-q", "--filter", f"name={name}").stdout.strip() == ""  # not running
        image = json.loads(refrt("inspect", "busybox").stdout)[0]  # falls back to images
        assert image["Id"].startswith("sha256:")
    finally:
        refrt("rm", name)


def test_name_conflict(refrt: Refrt) -> None:
    name = unique("dup")
    refrt("create", "--name", name, "--network", "none", "busybox", "true", check=True)
    second = refrt("create", "--name", name, "--network", "none", "busybox", "true")
    assert second.returncode == 125 and "already in use" in second.stderr
    assert refrt("start", name).returncode == 0
    assert refrt("wait", name).stdout.strip() == "0"
    refrt("rm", name, check=True)


def test_tty_is_a_real_pty(refrt: Refrt) -> None:
    result = refrt("run", "--rm", "-t", "--network", "none", "busybox", "sh", "-c",
                   "tty; [ -t 1 ] && echo is-a-tty; echo $TERM")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.replace("\r", "").split("\n")
    assert lines[0] == "/dev/pts/0"
    assert lines[1:3] == ["is-a-tty", "xterm"]


def test_exec_joins_every_namespace(refrt: Refrt) -> None:
    name = unique("exec")
    cid = refrt("run", "-d", "--name", name, "--network", "none", "--hostname", "inner", "busybox", "sh", "-c",
                "echo marker > /tmp-marker; sleep 60", check=True).stdout.strip()
    try:
        wait_for(lambda: "tmp-marker" in refrt("exec", name, "ls", "/").stdout.split())
        result = refrt("exec", "-e", "X=1", "-w", "/etc", "-u", "nobody", name, "sh", "-c",
                       'echo "$X $(pwd) $(id -un) $(hostname)"; cat /tmp-marker; tr "\\0" " " < /proc/1/cmdline; echo;'
                       " ip -o link | wc -l; cat /proc/self/cgroup")
        assert result.returncode == 0, result.stderr
        lines = result.stdout.splitlines()
        assert lines[0] == "1 /etc nobody inner"  # env, workdir, user, UTS namespace
        assert lines[1] == "marker"  # mount namespace: the container's own layer
        assert lines[2].strip() == "sleep 60"  # PID namespace: PID 1 is the container's command (sh exec'd it)
        assert lines[3] == "1"  # network namespace: only lo
        assert any(f"/refrt/{cid}" in line for line in lines[4:])  # joined the cgroup
        assert refrt("exec", name, "sh", "-c", "exit 5").returncode == 5
        assert refrt("exec", name, "no-such-cmd").returncode == 126  # docker 20.10's exec: 126, run: 127
        assert refrt("exec", "-t", name, "tty").stdout.strip() == "/dev/pts/0"
        assert refrt("exec", "-i", name, "cat", input="piped\n").stdout == "piped\n"
    finally:
        refrt("rm", "-f", name, check=True)
    stopped = refrt("exec", name, "true")
    assert stopped.returncode == 1


def test_run_in_rootfs_for_the_builder(refrt: Refrt, tmp_path: object) -> None:
    """The builder's RUN: one command over given lower dirs; the upper dir keeps what it wrote."""
    from pathlib import Path

    from runtime.container import run_in_rootfs
    from runtime.paths import Paths
    from runtime.store.store import Store

    store = Store(Paths.resolve(str(refrt.root)))
    lowers = store.lower_dirs(store.resolve("busybox"))
    upper = Path(str(tmp_path)) / "upper"
    out_r, out_w = os.pipe()
    code = run_in_rootfs(None, lowers, upper, ["sh", "-c", "echo built > /artifact; echo out; exit 3"],
                         ["PATH=/bin"], "/", "", network="none", stdout=out_w, stderr=out_w)
    os.close(out_w)
    with os.fdopen(out_r) as f:
        assert f.read() == "out\n"
    assert code == 3
    assert (upper / "artifact").read_text() == "built\n"
    assert not any((Path(lo) / "artifact").exists() for lo in lowers)
    assert list(upper.parent.glob(".run-*")) == []


def test_foreground_run_forwards_signals(refrt: Refrt) -> None:
    cli = refrt.popen("run", "--rm", "--network", "none", "busybox", "sh", "-c",
                      "trap 'echo got-int; exit 9' INT; echo ready; while true; do sleep 0.1; done",
                      stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert cli.stdout is not None
    assert cli.stdout.readline().strip() == "ready"
    cli.send_signal(signal.SIGINT)
    out, _ = cli.communicate(timeout=20)
    assert "got-int" in out
    assert cli.returncode == 9


def test_top_lists_the_container_processes(refrt: Refrt) -> None:
    name = unique("top")
    refrt("run", "-d", "--name", name, "--network", "none", "busybox", "sh", "-c", "sleep 41 & sleep 42",
          check=True)
    try:
        def listing() -> str | None:
            text = refrt("top", name).stdout
            return text if "sleep 42" in text else None

        lines = wait_for(listing).splitlines()
        assert lines[0].split()[:3] == ["UID", "PID", "PPID"]
        assert len(lines) == 3 and "sleep 41" in lines[2]  # header, sh exec'd into sleep 42, its child
    finally:
        refrt("rm", "-f", name, check=True)


def test_rename_restart_and_container_group(refrt: Refrt) -> None:
    first, second = unique("rn"), unique("rn")
    cid = refrt("container", "run", "-d", "--name", first, "--label", f"pr={first}", "--network", "none",
                "busybox", "sleep", "30", check=True).stdout.strip()
    pid_before = refrt.state(cid)["pid"]
    refrt("rename", first, second, check=True)
    assert refrt("inspect", "-f", "{{.Name}}", cid).stdout.strip() == f"/{second}"
    refrt("restart", "-t", "1", second, check=True)
    state = refrt.state(cid)
    assert state["status"] == "running" and state["pid"] != pid_before
    listed = refrt("container", "ls", "--format", "{{.Names}}", "--filter", f"label=pr={first}").stdout.split()
    assert listed == [second]
    refrt("stop", "-t", "1", second, check=True)
    pruned = refrt("container", "prune", "-f", "--filter", f"label=pr={first}")
    assert cid in pruned.stdout
    assert_nothing_left(refrt, cid, [state["pid"], state["monitor_pid"]])


def test_pause_freezes_and_stop_still_works(refrt: Refrt) -> None:
    name = unique("pause")
    cid = refrt("run", "-d", "--name", name, "--network", "none", "busybox", "sh", "-c",
                "while true; do echo t; sleep 0.1; done", check=True).stdout.strip()
    wait_for(lambda: refrt("logs", name).stdout.count("t") >= 2)
    refrt("pause", name, check=True)
    info = refrt.inspect(name)["State"]
    assert (info["Status"], info["Paused"], info["Running"]) == ("paused", True, True)
    assert "(Paused)" in refrt("ps", "--format", "{{.Status}}", "--filter", f"name={name}").stdout
    frozen_at = refrt("logs", name).stdout.count("t")
    time.sleep(0.6)
    assert refrt("logs", name).stdout.count("t") == frozen_at  # nothing runs while frozen
    assert refrt("pause", name).returncode != 0  # already paused
    refrt("unpause", name, check=True)
    wait_for(lambda: refrt("logs", name).stdout.count("t") > frozen_at)
    refrt("pause", name, check=True)
    refrt("stop", "-t", "1", name, check=True)  # thaws, so SIGTERM/SIGKILL are delivered
    assert refrt("wait", name).stdout.strip() == "137"
    refrt("rm", name, check=True)
    assert_nothing_left(refrt, cid, [])
