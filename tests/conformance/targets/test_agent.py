"""The guest side of the command agent, run here as it runs in a guest (``python3 -I -S -c SOURCE`` with its stdin
and stdout as the channel): what each command reports must be what a channel per command reported - exit status
(128+N for a signal), stdout, stderr, stdin fed, the pid of its own process group - and a ``python3 -I -S SCRIPT``
command run in a child of the agent must answer exactly as a new interpreter does. The harness side is exercised
in a real guest by tests/vm/test_conformance_in_vm.py."""

from __future__ import annotations

import ast
import base64
import json
import os
import shlex
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conformance.targets.agent import SOURCE

REPO = Path(__file__).parents[3]


class LocalAgent:
    def __init__(self) -> None:
        self.proc = subprocess.Popen(["python3", "-I", "-S", "-c", SOURCE], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE)
        self.next = 0

    def send(self, command: str, stdin: bytes = b"") -> int:
        assert self.proc.stdin is not None
        self.next += 1
        line = json.dumps({"id": self.next, "cmd": command, "stdin": base64.b64encode(stdin).decode()})
        self.proc.stdin.write(line.encode() + b"\n")
        self.proc.stdin.flush()
        return self.next

    def results(self, count: int) -> dict[int, dict[str, Any]]:
        assert self.proc.stdout is not None
        found: dict[int, dict[str, Any]] = {}
        while sum("exit" in r for r in found.values()) < count:
            message = json.loads(self.proc.stdout.readline())
            record = found.setdefault(message["id"], {"out": b"", "err": b""})
            for stream in ("out", "err"):
                if stream in message:
                    record[stream] += base64.b64decode(message[stream])
            for key in ("pid", "exit"):
                if key in message:
                    record[key] = message[key]
        return found

    def run(self, command: str, stdin: bytes = b"") -> dict[str, Any]:
        ident = self.send(command, stdin)
        return self.results(1)[ident]


@pytest.fixture
def agent() -> Iterator[LocalAgent]:
    local = LocalAgent()
    yield local
    assert local.proc.stdin is not None
    local.proc.stdin.close()  # the channel closing ends the agent
    assert local.proc.wait(timeout=10) == 0


def test_exit_status_output_and_stdin_as_over_a_channel(agent: LocalAgent) -> None:
    result = agent.run("echo out; echo err >&2; exit 3")
    assert (result["exit"], result["out"], result["err"]) == (3, b"out\n", b"err\n")
    assert agent.run("cat; cat", b"line 1\nline 2\n")["out"] == b"line 1\nline 2\n"
    assert agent.run("cat")["out"] == b""  # no stdin: EOF at once
    assert agent.run("kill -KILL $$")["exit"] == 128 + 9


def test_each_command_leads_its_own_process_group(agent: LocalAgent) -> None:
    result = agent.run("ps -o pid=,pgid=,sid= -p $$")
    pid, pgid, sid = result["out"].split()
    assert int(pid) == int(pgid) == int(sid) == result["pid"]


def test_commands_run_at_once_and_a_background_process_does_not_hold_the_result(agent: LocalAgent) -> None:
    started = time.monotonic()
    first = agent.send("sleep 1; echo slow")
    second = agent.send("echo fast")
    holder = agent.send("sleep 30 & echo $!")
    results = agent.results(3)
    assert results[first]["out"] == b"slow\n" and results[second]["out"] == b"fast\n"
    sleeper = int(results[holder]["out"])
    os.kill(sleeper, signal.SIGKILL)
    assert results[holder]["exit"] == 0
    assert time.monotonic() - started < 10  # the held pipe was given up after the agent's linger (2 s)


def test_a_python_script_in_a_child_answers_as_a_new_interpreter(agent: LocalAgent, tmp_path: Path) -> None:
    script = tmp_path / "probe.py"
    script.write_text("import os, sys\nprint(sys.argv[1:], sys.flags.isolated, sys.flags.no_site, "
                      "os.isatty(0), os.getpgid(0) == os.getpid())\n"
                      "print('to stderr', file=sys.stderr)\nsys.exit(int(sys.argv[1]))\n")
    for code in ("0", "5"):
        argv = ["python3", "-I", "-S", str(script), code, "two words"]
        direct = subprocess.run(argv, capture_output=True, stdin=subprocess.DEVNULL, start_new_session=True,
                                check=False)
        through = agent.run(shlex.join(argv))
        assert (through["exit"], through["out"], through["err"]) == (direct.returncode, direct.stdout,
                                                                     direct.stderr)
    refrt = ["python3", "-I", "-S", str(REPO / "runtime" / "__main__.py"), "--root", str(tmp_path / "r"),
             "--no-daemon", "no-such-command"]
    direct = subprocess.run(refrt, capture_output=True, stdin=subprocess.DEVNULL, check=False)
    through = agent.run(shlex.join(refrt))
    assert (through["exit"], through["out"], through["err"]) == (direct.returncode, direct.stdout, direct.stderr)
    assert direct.returncode != 0 and b"no-such-command" in direct.stderr


def test_an_uncaught_exception_exits_1_with_its_traceback(agent: LocalAgent, tmp_path: Path) -> None:
    script = tmp_path / "boom.py"
    script.write_text("raise RuntimeError('boom')\n")
    result = agent.run(shlex.join(["python3", "-I", "-S", str(script)]))
    assert result["exit"] == 1 and b"RuntimeError: boom" in result["err"] and b"Traceback" in result["err"]


def test_the_source_runs_on_the_oldest_guest_python() -> None:
    """bullseye's python3 is 3.9: the agent's source must compile there (no newer syntax)."""
    ast.parse(SOURCE, feature_version=(3, 9))
