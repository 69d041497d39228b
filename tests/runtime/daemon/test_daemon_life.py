"""The daemon's life: one per root, started on demand once under concurrency, idling out, stopping cleanly, and
live restore (a SIGKILLed daemon leaves its containers running, and the next one finds them).

No daemon, zygote or worker of the test's root may be left after any test.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import socket
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.runtime.daemon.cli_helpers import (
    REPO,
    daemon_pid,
    env,
    lean,
    processes,
    refrt,
    stop_daemons,
    wait_until,
)

pytestmark = pytest.mark.usefixtures("no_daemon_left")


def _explicit_daemon(root: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(lean(root, "daemon", *args), env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)


def _listening(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX) as probe:
        try:
            probe.connect(str(path))
            return True
        except OSError:
            return False


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: Path) -> None:
        super().__init__("localhost", timeout=30)
        self.path = str(path)

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(self.path)


def _api_get(path: Path, url: str) -> tuple[int, Any]:
    conn = _UnixConnection(path)
    try:
        conn.request("GET", url)
        answer = conn.getresponse()
        return answer.status, json.loads(answer.read() or b"null")
    finally:
        conn.close()


def _api_post(path: Path, url: str) -> int:
    conn = _UnixConnection(path)
    try:
        conn.request("POST", url)
        answer = conn.getresponse()
        answer.read()
        return answer.status
    finally:
        conn.close()


def test_one_daemon_per_root(tmp_path: Path) -> None:
    first = _explicit_daemon(tmp_path)
    try:
        sock = tmp_path / "run" / "refrt.sock"
        assert wait_until(lambda: _listening(sock), timeout=30), "the daemon does not listen"
        second = subprocess.run(lean(tmp_path, "daemon"), env=env(), capture_output=True, text=True, timeout=60,
                                check=False)
        assert second.returncode == 1
        assert second.stderr.strip() == (f"refrt: a daemon already serves the root {tmp_path} "
                                         f"(pid {first.pid}, unix://{sock})")
        assert refrt(tmp_path, "ps", "-q").returncode == 0  # the client uses the explicit daemon
        first.send_signal(signal.SIGTERM)
        assert first.wait(timeout=30) == 0
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    assert not sock.exists() and not (tmp_path / "run" / "refrt-daemon.pid").exists()
    assert not processes(tmp_path)


def test_explicit_daemon_takes_over_from_an_on_demand_one(tmp_path: Path) -> None:
    assert refrt(tmp_path, "ps").returncode == 0
    on_demand = daemon_pid(tmp_path)
    api = tmp_path / "api.sock"
    explicit = _explicit_daemon(tmp_path, "--host", f"unix://{api}")
    try:
        assert wait_until(lambda: _listening(api), timeout=30)
        assert wait_until(lambda: not any(pid == on_demand for pid, _ in processes(tmp_path)), timeout=10)
        result = refrt(tmp_path, "ps", "-q")  # the default socket is gone: the pidfile names the explicit one
        assert result.returncode == 0, result.stderr
        assert [pid for pid, name in processes(tmp_path) if name == "refrt-daemon"] == [explicit.pid]
    finally:
        explicit.terminate()
        explicit.wait(timeout=30)
    assert not processes(tmp_path)


def test_ten_clients_at_once_start_one_daemon(tmp_path: Path) -> None:
    with ThreadPoolExecutor(10) as pool:
        results = list(pool.map(lambda _: refrt(tmp_path, "ps", "-q"), range(10)))
    assert [r.returncode for r in results] == [0] * 10, [r.stderr for r in results]
    assert len(processes(tmp_path, ("refrt-daemon",))) == 1
    log = (tmp_path / "run" / "refrt-daemon.log").read_text()
    assert log.count(" serving ") == 1, log
    stop_daemons(tmp_path)


def test_an_on_demand_daemon_idles_out(tmp_path: Path) -> None:
    assert refrt(tmp_path, "ps", environ=env(REFRT_DAEMON_IDLE="1")).returncode == 0
    assert processes(tmp_path, ("refrt-daemon",))
    assert wait_until(lambda: not processes(tmp_path), timeout=15), "the idle daemon did not stop"
    assert "stopping: idle for 1s" in (tmp_path / "run" / "refrt-daemon.log").read_text()
    assert not (tmp_path / "run" / "refrt.sock").exists()


def test_a_running_command_keeps_an_idle_daemon(busybox_root: Path) -> None:
    result = refrt(busybox_root, "run", "--rm", "busybox", "sleep", "3", environ=env(REFRT_DAEMON_IDLE="1"))
    assert result.returncode == 0, result.stderr
    assert processes(busybox_root, ("refrt-daemon",)), "the daemon stopped under a running command"


def test_a_killed_zygote_is_replaced_and_no_command_is_lost(busybox_root: Path) -> None:
    assert refrt(busybox_root, "ps").returncode == 0
    (zygote,) = [pid for pid, name in processes(busybox_root) if name == "refrt-zygote"]
    os.kill(zygote, signal.SIGKILL)
    result = refrt(busybox_root, "run", "--rm", "busybox", "echo", "still here")
    assert (result.returncode, result.stdout) == (0, "still here\n"), result.stderr
    assert [pid for pid, name in processes(busybox_root) if name == "refrt-zygote"] not in ([], [zygote])
    assert "the zygote died; started another" in (busybox_root / "run" / "refrt-daemon.log").read_text()


def test_edited_sources_get_a_fresh_zygote(busybox_root: Path) -> None:
    """A checkout edited under a running daemon: new commands run the new code, the old zygote leaves."""
    assert refrt(busybox_root, "ps").returncode == 0
    (old,) = [pid for pid, name in processes(busybox_root) if name == "refrt-zygote"]
    source = REPO / "runtime" / "humanize.py"
    st = source.stat()
    try:
        os.utime(source, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
        result = refrt(busybox_root, "run", "--rm", "busybox", "echo", "fresh")
        assert (result.returncode, result.stdout) == (0, "fresh\n"), result.stderr
    finally:
        os.utime(source, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert "the runtime's sources changed" in (busybox_root / "run" / "refrt-daemon.log").read_text()
    assert wait_until(lambda: old not in [pid for pid, _ in processes(busybox_root)], timeout=10)


def test_a_daemon_stops_when_its_socket_goes(tmp_path: Path) -> None:
    assert refrt(tmp_path, "ps").returncode == 0
    (tmp_path / "run" / "refrt.sock").unlink()
    assert wait_until(lambda: not processes(tmp_path), timeout=10)


def test_live_restore(busybox_root: Path) -> None:
    """SIGKILL the daemon under running containers; the next daemon lists them running, through the thin client
    and the Engine API, and they can be stopped through either."""
    root = busybox_root
    ids, pids = [], []
    for name in ("survivor", "survivor-api"):
        started = refrt(root, "run", "-d", "--name", name, "busybox", "sleep", "300")
        assert started.returncode == 0, started.stderr
        ids.append(started.stdout.strip())
        pids.append(json.loads((root / "containers" / ids[-1] / "state.json").read_text())["pid"])
    os.kill(daemon_pid(root), signal.SIGKILL)
    assert wait_until(lambda: not processes(root), timeout=10), "zygote or workers outlived the daemon"
    for pid in pids:
        os.kill(pid, 0)  # still there
    sock = root / "run" / "refrt.sock"
    try:
        listed = refrt(root, "ps", "--format", "{{.Names}} {{.Status}}")  # starts the next daemon on demand
        assert listed.returncode == 0, listed.stderr
        assert sorted(line.split(" Up")[0] for line in listed.stdout.splitlines()) == ["survivor", "survivor-api"]
        assert "2 running" in (root / "run" / "refrt-daemon.log").read_text().splitlines()[-1]
        status, body = _api_get(sock, "/v1.41/containers/json")
        assert status == 200
        assert sorted((c["Id"], c["State"]) for c in body) == sorted((cid, "running") for cid in ids)
        for cid, pid in zip(ids, pids, strict=True):
            assert json.loads((root / "containers" / cid / "state.json").read_text())["pid"] == pid
        stopped = refrt(root, "stop", "-t", "1", "survivor")
        assert stopped.returncode == 0, stopped.stderr
        assert _api_post(sock, f"/v1.41/containers/{ids[1]}/stop?t=1") == 204
        status, body = _api_get(sock, "/v1.41/containers/json?all=1")
        assert sorted((c["Id"], c["State"]) for c in body) == sorted((cid, "exited") for cid in ids)
    finally:
        refrt(root, "rm", "-f", *ids)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, 0)
            raise AssertionError(f"container process {pid} outlived rm -f")
