"""The misuse catalogue: whatever a careless or hostile user types, refrt answers with one line and an exit code.

Why: a traceback is not an answer - it hides what was wrong with the input and looks like a crash. Every case
below runs through the thin client and the daemon's worker (the default) and the path options also in-process
(``--no-daemon``), since the client itself must refuse ``--root ''`` before it looks for the default root's daemon.
Each case states the exit code: 125 for bad input (docker's "the command could not be run"), 1 where docker
answers "no such object".
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.runtime.container.conftest import REPO, Refrt
from tests.runtime.container.conftest import refrt as refrt  # the shared root with busybox (a fixture)

# (id, arguments, exit code). {file} is a regular file, {dir} a directory, {ro} a read-only mount, {missing} a path
# that does not exist; all made fresh for the run.
CATALOGUE: list[tuple[str, list[str], int]] = [
    # unknown flags and commands
    ("unknown-global-flag", ["--bogus", "ps"], 125),
    ("unknown-command", ["frobnicate"], 125),
    ("unknown-flag", ["ps", "--bogus"], 125),
    ("unknown-short-flag", ["run", "-Z", "busybox", "true"], 125),
    ("flag-missing-value", ["run", "--name"], 125),
    ("unsupported-run-flag", ["run", "--runtime", "runc", "busybox", "true"], 125),
    ("missing-argument", ["rm"], 125),
    ("extra-argument", ["tag", "busybox", "a", "b"], 125),
    # bad sizes and numbers
    ("memory-suffix", ["run", "-m", "12x", "busybox", "true"], 125),
    ("memory-negative", ["run", "-m", "-1", "busybox", "true"], 125),
    ("memory-huge", ["run", "-m", "99999999999999999999999999T", "busybox", "true"], 125),
    ("memory-swap-word", ["run", "--memory-swap", "lots", "busybox", "true"], 125),
    ("shm-size", ["run", "--shm-size", "1q", "busybox", "true"], 125),
    ("cpus-word", ["run", "--cpus", "abc", "busybox", "true"], 125),
    ("cpus-negative", ["run", "--cpus", "-2", "busybox", "true"], 125),
    ("pids-limit-word", ["run", "--pids-limit", "x", "busybox", "true"], 125),
    ("cpu-shares-word", ["run", "--cpu-shares", "x", "busybox", "true"], 125),
    ("stop-timeout-word", ["stop", "-t", "abc", "nosuch"], 125),
    ("tail-word", ["logs", "--tail", "abc", "nosuch"], 1),  # docker too looks the container up first
    ("build-memory", ["build", "-m", "1z", "{dir}"], 125),
    # bad ports
    ("port-too-big", ["run", "-p", "99999:80", "busybox", "true"], 125),
    ("port-word", ["run", "-p", "abc", "busybox", "true"], 125),
    ("port-protocol", ["run", "-p", "80/xyz", "busybox", "true"], 125),
    ("port-range-mismatch", ["run", "-p", "1000-1001:80-82", "busybox", "true"], 125),
    ("port-bad-ip", ["run", "-p", "300.1.1.1:80:80", "busybox", "true"], 125),
    ("port-empty-container", ["run", "-p", "8080:", "busybox", "true"], 125),
    ("port-colons", ["run", "-p", ":::", "busybox", "true"], 125),
    ("expose-word", ["run", "--expose", "http", "busybox", "true"], 125),
    # bad names and references
    ("name-space", ["run", "--name", "a b", "busybox", "true"], 125),
    ("name-slash", ["create", "--name", "a/b", "busybox", "true"], 125),
    ("rename-bad", ["rename", "nosuch", "bad name"], 1),
    ("image-uppercase", ["run", "BusyBox", "true"], 125),
    ("image-bad-digest", ["run", "busybox@sha256:zz", "true"], 125),
    ("tag-bad", ["tag", "busybox", "a:b:c"], 125),
    ("tag-uppercase", ["tag", "busybox", "Upper"], 125),
    ("pull-bad-ref", ["pull", "Bad Name"], 125),
    ("rmi-colons", ["rmi", "::"], 1),
    ("inspect-empty", ["inspect", ""], 125),
    ("rm-empty", ["rm", ""], 1),
    ("network-bad-name", ["network", "create", "bad name"], 125),
    ("network-bad-subnet", ["network", "create", "--subnet", "10.0.0.0/99", "n{tag}"], 125),
    ("volume-bad-name", ["volume", "create", "a/b"], 125),
    ("network-missing", ["run", "--network", "nosuch{tag}", "busybox", "true"], 1),  # docker: 125
    ("signal-bad", ["kill", "-s", "BOGUS", "nosuch"], 125),
    ("stop-signal-bad", ["run", "--stop-signal", "BOGUS", "busybox", "true"], 125),
    ("ip-bad", ["run", "--ip", "1.2.3", "busybox", "true"], 125),
    ("env-empty-name", ["run", "-e", "=x", "busybox", "true"], 125),
    ("add-host-no-ip", ["run", "--add-host", "nohostip", "busybox", "true"], 125),
    ("add-host-bad-ip", ["run", "--add-host", "h:notip", "busybox", "true"], 125),
    ("dns-not-ip", ["run", "--dns", "not-an-ip", "busybox", "true"], 125),
    ("workdir-relative", ["run", "-w", "relative", "busybox", "true"], 125),
    ("health-interval-no-unit", ["run", "--health-interval", "1", "busybox", "true"], 125),
    ("health-retries-negative", ["run", "--health-retries", "-1", "busybox", "true"], 125),
    ("no-healthcheck-conflict", ["run", "--no-healthcheck", "--health-cmd", "true", "busybox", "true"], 125),
    ("user-bad", ["run", "-u", "a:b:c", "busybox", "true"], 125),
    ("volume-relative", ["run", "-v", "relative/dir:/x", "busybox", "true"], 125),
    ("volume-target-relative", ["run", "-v", "/tmp:x", "busybox", "true"], 125),
    ("mount-bad", ["run", "--mount", "type=nosuch,target=/x", "busybox", "true"], 125),
    ("format-unclosed", ["images", "--format", "{{{{"], 1),  # str.format: {{ is a literal {
    ("filter-bad", ["ps", "--filter", "bogus"], 125),
    # bad paths
    ("root-empty", ["--root", "", "ps"], 125),
    ("root-file", ["--root", "{file}", "ps"], 125),
    ("root-under-file", ["--root", "{file}/sub", "ps"], 125),
    ("root-read-only", ["--root", "{ro}/root", "ps"], 125),
    ("state-empty", ["--state", "", "ps"], 125),
    ("state-file", ["--state", "{file}", "ps"], 125),
    ("config-file", ["--config", "{file}", "ps"], 125),
    ("save-unwritable", ["save", "-o", "{ro}/x.tar", "busybox"], 125),
    ("save-proc", ["save", "-o", "/proc/x.tar", "busybox"], 125),
    ("save-missing-dir", ["save", "-o", "{missing}/x.tar", "busybox"], 125),
    ("save-to-dir", ["save", "-o", "{dir}", "busybox"], 125),
    ("load-missing", ["load", "-i", "{missing}"], 125),
    ("load-dir", ["load", "-i", "{dir}"], 125),
    ("load-not-tar", ["load", "-i", "{file}"], 125),
    ("import-missing", ["import", "{missing}"], 125),
    ("import-dir", ["import", "{dir}"], 125),
    ("build-missing-context", ["build", "{missing}"], 1),  # docker: 1 as well
    ("build-context-file", ["build", "{file}"], 1),
    ("build-missing-dockerfile", ["build", "-f", "{missing}", "{dir}"], 1),
    ("env-file-missing", ["run", "--env-file", "{missing}", "busybox", "true"], 125),
    ("env-file-dir", ["run", "--env-file", "{dir}", "busybox", "true"], 125),
    ("label-file-missing", ["run", "--label-file", "{missing}", "busybox", "true"], 125),
    ("cidfile-missing-dir", ["run", "--cidfile", "{missing}/cid", "busybox", "true"], 125),
    ("cidfile-exists", ["run", "--cidfile", "{file}", "busybox", "true"], 1),  # docker's CLI: 1 too
    ("cidfile-read-only", ["run", "--cidfile", "{ro}/cid", "busybox", "true"], 125),
]

# The path cases again, with the command run in this process rather than by the daemon's worker.
IN_PROCESS = [case for case in CATALOGUE if case[0].startswith(("root-", "state-", "config-", "save-"))]


@pytest.fixture(scope="module")
def places(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    base = tmp_path_factory.mktemp("misuse")
    (base / "file").write_text("not a directory, not an archive\n")
    (base / "dir").mkdir()
    ro = base / "ro"
    ro.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "refrt-misuse", str(ro)], check=True)
    try:
        yield {"file": str(base / "file"), "dir": str(base / "dir"), "ro": str(ro), "missing": str(base / "nope"),
               "tag": os.urandom(3).hex()}
    finally:
        subprocess.run(["umount", str(ro)], check=True)


def _run(refrt: Refrt, args: list[str], places: dict[str, str], *,
         in_process: bool) -> subprocess.CompletedProcess[str]:
    words = [a.format(**places) for a in args]
    env = {**refrt.env, "REFRT_NO_DAEMON": "1"} if in_process else refrt.env
    root_given = any(w in ("--root", "--state") for w in words)
    argv = [sys.executable, "-m", "runtime", *([] if root_given else ["--root", str(refrt.root)]), *words]
    if root_given:  # the case names its own root or state: the other one is the test root's
        env = {**env, "REFRT_ROOT": str(refrt.root)} if "--root" not in words else env
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, env=env, cwd=REPO, stdin=subprocess.DEVNULL)


def _assert_one_line(result: subprocess.CompletedProcess[str], code: int) -> None:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert "Traceback" not in result.stderr, result.stderr
    assert "internal error" not in result.stderr, result.stderr
    assert len(lines) == 1 and lines[0].startswith(("refrt: ", "Error response from daemon: ")), result.stderr
    assert result.returncode == code, (result.returncode, result.stderr)


@pytest.mark.parametrize(("case", "args", "code"), CATALOGUE, ids=[c[0] for c in CATALOGUE])
def test_misuse_gets_one_line(refrt: Refrt, places: dict[str, str], case: str, args: list[str], code: int) -> None:
    result = _run(refrt, args, places, in_process=False)
    _assert_one_line(result, code)


@pytest.mark.parametrize(("case", "args", "code"), IN_PROCESS, ids=[c[0] for c in IN_PROCESS])
def test_path_misuse_in_process(refrt: Refrt, places: dict[str, str], case: str, args: list[str], code: int) -> None:
    result = _run(refrt, args, places, in_process=True)
    _assert_one_line(result, code)


def test_empty_root_never_reaches_a_daemon(refrt: Refrt) -> None:
    """``--root ''`` is refused by the client before it looks for (or starts) the default root's daemon: with a
    daemon host that does not exist, the answer is still about ``--root``, not about connecting."""
    env = {k: v for k, v in refrt.env.items() if k not in ("REFRT_ROOT", "REFRT_STATE")}
    env["REFRT_HOST"] = f"unix://{refrt.root}/no-such-daemon.sock"
    result = subprocess.run([sys.executable, "-m", "runtime", "--root", "", "ps"], capture_output=True, text=True,
                            timeout=30, env=env, cwd=REPO)
    _assert_one_line(result, 125)
    assert "invalid --root ''" in result.stderr


def test_nothing_is_created_by_refused_paths(refrt: Refrt, places: dict[str, str]) -> None:
    """A refused --root under a missing directory leaves the file system as it was."""
    target = Path(places["missing"]) / "deeper"
    result = _run(refrt, ["--root", f"{places['file']}/x", "--state", str(target), "ps"], places,
                  in_process=False)
    _assert_one_line(result, 125)
    assert not Path(places["missing"]).exists()
