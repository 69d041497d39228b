"""The zygote on its own, driven as the daemon drives it: a real zygote process (started as the daemon starts a
fresh one), real client halves (:mod:`runtime.client`'s header and wait, in a lean interpreter), real commands.

What is checked here is the spare worker: one waits ahead of each command, a command runs in it (the spare's pid
becomes the worker's), a fresh one follows, a dead spare costs nothing but a fork, ``REFRT_DAEMON_SPARE=0``
means none, and a zygote that drains or is killed leaves no spare, worker or zombie behind.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.runtime.daemon.cli_helpers import wait_until

REPO = Path(__file__).resolve().parents[3]
CLIENT = (f"import sys; sys.path.insert(0, {str(REPO)!r}); import _socket; from runtime import client; "
          "s = _socket.socket(fileno=int(sys.argv[1])); client._send_header(s, sys.argv[2:]); "
          "sys.exit(client._wait(s, b''))")


class Zygote:
    """A zygote process and the daemon's end of its control pair."""

    def __init__(self, root: Path, spare: bool = True) -> None:
        self.root = root
        self.control, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        code = (f"import sys; sys.path.insert(0, {str(REPO)!r}); "
                "from runtime.daemon.zygote import main; main(sys.argv[1:])")
        env = {k: v for k, v in os.environ.items() if not k.startswith("REFRT_")}
        env["REFRT_DAEMON_SPARE"] = "1" if spare else "0"
        self.proc = subprocess.Popen([sys.executable, "-I", "-S", "-c", code, str(theirs.fileno()), str(root),
                                      str(root / "run")], pass_fds=[theirs.fileno()], env=env)
        theirs.close()
        self.sessions = 0

    def children(self) -> dict[int, str]:
        """The zygote's live children: pid -> process name (refrt-spare, refrt-worker)."""
        found = {}
        for task in Path(f"/proc/{self.proc.pid}/task").iterdir():
            for pid in (task / "children").read_text().split():
                try:
                    stat = Path(f"/proc/{pid}/stat").read_text()
                except OSError:
                    continue
                if stat.rsplit(") ", 1)[1][:1] != "Z":
                    found[int(pid)] = Path(f"/proc/{pid}/comm").read_text().strip()
        return found

    def spare(self) -> int:
        """The pid of the spare once one waits."""
        spares = wait_until(lambda: [p for p, name in self.children().items() if name == "refrt-spare"], timeout=30)
        assert spares, f"no spare worker: {self.children()}"
        assert len(spares) == 1, spares
        return int(spares[0])

    def command(self, *argv: str) -> subprocess.CompletedProcess[str]:
        """Run one command as a client of this zygote: the session's connection goes to the zygote, the client
        half sends its header over the other end and waits for the exit code."""
        self.sessions += 1
        client, server = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        socket.send_fds(self.control, [b"S%d" % self.sessions], [server.fileno()])
        server.close()
        env = {k: v for k, v in os.environ.items() if not k.startswith("REFRT_")}
        try:
            done = subprocess.run([sys.executable, "-I", "-S", "-c", CLIENT, str(client.fileno()),
                                   "--root", str(self.root), *argv], pass_fds=[client.fileno()], env=env,
                                  capture_output=True, text=True, timeout=60, check=False)
        finally:
            client.close()
        assert self.control.recv(64) == b"D%d" % self.sessions  # the zygote reports the session's end
        return done

    def stop(self) -> None:
        """As the daemon stops it: close the control pair; the zygote finishes and leaves."""
        self.control.close()
        assert self.proc.wait(timeout=30) == 0


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / "run").mkdir()
    return tmp_path


@pytest.fixture
def zygote(root: Path) -> Iterator[Zygote]:
    z = Zygote(root)
    yield z
    if z.proc.poll() is None:
        z.proc.kill()
        z.proc.wait()


def _gone(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1][:1] == "Z"
    except OSError:
        return True


def test_a_command_runs_in_the_spare_and_a_fresh_spare_follows(zygote: Zygote) -> None:
    first = zygote.spare()
    done = zygote.command("version")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip()
    assert _gone(first), "the spare should have run the command and exited"
    second = zygote.spare()
    assert second != first
    failed = zygote.command("image", "inspect", "no-such-image")  # the worker's exit code reaches the client
    assert failed.returncode != 0
    assert "no-such-image" in failed.stderr
    assert _gone(second)
    last = zygote.spare()
    zygote.stop()
    assert _gone(last), "a draining zygote must take its spare with it"


def test_commands_back_to_back_and_a_dead_spare(zygote: Zygote) -> None:
    """Commands faster than a spare is made fork their workers; a spare killed while it waits is replaced."""
    for _ in range(3):
        assert zygote.command("ps", "-q").returncode == 0
    os.kill(zygote.spare(), signal.SIGKILL)
    done = zygote.command("ps", "-q")
    assert done.returncode == 0, done.stderr
    last = zygote.spare()
    zygote.stop()
    assert _gone(last)


def test_a_worker_killed_by_a_signal_is_reported(zygote: Zygote, root: Path) -> None:
    """The spare's pid is the session's: its death by a signal reaches the client as 128 + n."""
    zygote.spare()
    client, server = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    socket.send_fds(zygote.control, [b"S1"], [server.fileno()])
    server.close()
    env = {k: v for k, v in os.environ.items() if not k.startswith("REFRT_")}
    proc = subprocess.Popen([sys.executable, "-I", "-S", "-c", CLIENT, str(client.fileno()), "--root", str(root),
                             "events"], pass_fds=[client.fileno()], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    client.close()
    workers = wait_until(lambda: [p for p, n in zygote.children().items() if n == "refrt-worker"], timeout=30)
    assert workers, zygote.children()
    time.sleep(0.2)
    os.kill(workers[0], signal.SIGTERM)
    assert proc.wait(timeout=30) == 128 + signal.SIGTERM
    assert zygote.control.recv(64) == b"D1"
    zygote.stop()


def test_no_spare_when_turned_off(root: Path) -> None:
    z = Zygote(root, spare=False)
    try:
        done = z.command("ps", "-q")
        assert done.returncode == 0, done.stderr
        time.sleep(0.3)
        assert "refrt-spare" not in z.children().values()
        z.stop()
    finally:
        if z.proc.poll() is None:
            z.proc.kill()
            z.proc.wait()


def test_a_killed_zygote_leaves_no_spare(zygote: Zygote) -> None:
    spare = zygote.spare()
    zygote.proc.kill()
    zygote.proc.wait()
    assert wait_until(lambda: _gone(spare), timeout=10), "the spare outlived its zygote"


WARM_PROBE = """
import re, sys
sys.path.insert(0, sys.argv[1])
from runtime.daemon import zygote
import runtime.cli
zygote.preload()
before = set(re._cache)
for argv in (["ps"], ["ps", "-a", "-q"], ["images"], ["run", "--rm", "--network", "none", "busybox", "true"],
             ["image", "inspect", "busybox"], ["volume", "ls"], ["network", "ls"], ["pull", "x"]):
    runtime.cli.build_parser(argv[0]).parse_args(argv)
print(sorted(str(key[1]) for key in set(re._cache) - before))
"""


def test_the_zygote_compiles_what_parsing_a_command_needs() -> None:
    """Workers parse their command line without compiling a regular expression: the zygote did it once."""
    done = subprocess.run([sys.executable, "-I", "-S", "-c", WARM_PROBE, str(REPO)], capture_output=True,
                          text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
