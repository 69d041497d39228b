"""Every suite case can fail, and fails for its own reason.

Each breakage in ``broken/refrt_broken.py`` is refrt broken in one way a case's title describes (a dropped
``--pids-limit``, an added ``--privileged``, a chroot with the host's namespaces, writes that reach the image...).
``conformance run`` runs the cases a breakage targets against it (``--runtime custom:SHIM``), and each targeted
case must *fail* with a message naming the broken behaviour: the named step that caught it, and what it saw.
Every case of every suite is killed this way or says in its ``unbreakable`` key why it cannot be.

Each breakage gets a refrt root of its own (some damage their image on purpose) and a shim with a neutral path;
after each run everything in the root is removed, and the module checks that no link, network namespace, mount or
iptables rule of any root is left on the host.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from conformance.suite.loader import load_suite

pytestmark = pytest.mark.slow

REPO = Path(__file__).parents[2]
SUITES = REPO / "suites"
BROKEN = Path(__file__).parent / "broken" / "refrt_broken.py"


@dataclass(frozen=True)
class Kill:
    """Breakage ``breakage`` makes ``suite::case`` fail with a first message line matching ``message``."""

    breakage: str
    suite: str
    case: str
    message: str


KILLS = [
    # isolation
    Kill("no-namespaces", "isolation", "pid-1", r"sees itself as PID 1 .*stdout is '\d{2,}', expected '1'"),
    Kill("no-namespaces", "isolation", "own-processes", r"count the processes .*expected '1'"),
    Kill("no-namespaces", "isolation", "namespaces-differ",
         r"none of the container's five namespaces .*stdout contains '(ipc|uts|net|pid):\["),
    Kill("no-namespaces", "isolation", "hostname", r"the hostname given with --hostname .*expected 'cf-isolated'"),
    Kill("no-namespaces", "isolation", "dev-nodes", r"/dev/pts is a devpts of the container's own"),
    Kill("no-dev", "isolation", "dev-nodes", r"the standard device nodes exist .*missing null"),
    Kill("network-none-is-host", "isolation", "network-none", r"the only network device is lo .*has \d+ lines"),
    Kill("privileged", "isolation", "proc-files-masked", r"each masked /proc file reads as empty .* 1"),
    Kill("privileged", "isolation", "sys-firmware-masked", r"/sys/firmware lists no entries .*expected '0'"),
    Kill("privileged", "isolation", "proc-sys-read-only", r"/proc/sys file is refused .*exit status 0"),
    Kill("privileged", "isolation", "sys-read-only", r"the /sys mount has the ro option .*does not match"),
    Kill("privileged", "isolation", "capability-bounding-set", r"docker's 14 default capabilities"),
    Kill("privileged", "isolation", "no-sys-admin", r"mounting a tmpfs .* refused .*exit status 0"),
    Kill("uid-ignored", "isolation", "user", r"with -u 1000:1000 .*stdout is '0"),
    Kill("env-ignored", "isolation", "env-and-workdir", r"the variable given with -e is set"),
    Kill("workdir-ignored", "isolation", "env-and-workdir", r"the working directory is the one given with -w"),
    Kill("exit-status-lost", "isolation", "exit-codes", r"exit code 42 .*exit status 1, expected 42"),
    Kill("read-only-ignored", "isolation", "read-only-rootfs", r"writing to / is refused .*exit status 0"),
    Kill("read-only-tmp", "isolation", "read-only-tmp", r"writing to /tmp is refused too .*exit status 0"),
    Kill("stop-ignored", "isolation", "detached-lifecycle", r"after stop the container is exited .*'running'"),
    Kill("log-stderr-lost", "isolation", "logs", r"stdout and to stderr .*stderr does not contain 'err-line'"),
    # limits
    Kill("memory-unlimited", "limits", "memory-oom-kill", r"OOM-killed \(exit 137\) .*stdout is '0'"),
    Kill("oom-unreported", "limits", "memory-oom-kill", r"inspect reports State.OOMKilled true .*'false'"),
    Kill("memory-shrunk", "limits", "memory-under-limit", r"allocating 8M under -m 64m succeeds .*exit status 137"),
    Kill("pids-unlimited", "limits", "pids-limit", r"the pids limit refuses forks.*stdout is 40, expected le 20"),
    Kill("cpus-shrunk", "limits", "cpu-quota", r"about half a CPU .*expected ge 20"),
    # layering
    Kill("image-written", "layering", "writable-top-layer", r"a second container of the image does not see the file"),
    Kill("image-written", "layering", "image-unchanged", r"the file the container deleted is still in the image"),
    Kill("image-written", "layering", "copy-up", r"a new container of the image sees the original file"),
    Kill("layers-per-container", "layering", "shared-lower-layers", r"both containers use the same image layer dir"),
    Kill("whiteouts-aufs", "layering", "whiteout", r"the deleted file is a whiteout"),
    # networking
    Kill("publish-ignored", "networking", "publish-localhost", r"the host reaches .* published 127.0.0.1 port"),
    Kill("publish-ignored", "networking", "publish-random-port", r"port reports the host port picked"),
    Kill("publish-ignored", "networking", "publish-port-in-use", r"publishing the same host port fails"),
    Kill("publish-ignored", "networking", "publish-all-exposed", r"a host port for each of the two exposed ports"),
    Kill("user-networks-ignored", "networking", "user-network-names", r"reaches it by its container name"),
    Kill("alias-ignored", "networking", "user-network-names", r"reaches it by its --network-alias"),
    Kill("user-networks-ignored", "networking", "user-network-started-later", r"reaches the later one by name"),
    Kill("user-networks-ignored", "networking", "user-networks-isolated",
         r"on the other user network cannot reach it .*exit status 0"),
    Kill("internal-ignored", "networking", "internal-network",
         r"on the internal network cannot reach the outside server .*contains 'outside'"),
    Kill("subnet-ignored", "networking", "addresses-in-subnet", r"address is in the --subnet .*capture ip1"),
    Kill("connect-ignored", "networking", "connect-disconnect", r"after network connect .* second interface"),
    Kill("network-rm-forced", "networking", "network-management",
         r"a network in use by a running container cannot be removed .*exit status 0"),
    Kill("container-network-ignored", "networking", "container-network-mode",
         r"in the other one's network namespace reaches its server on 127.0.0.1"),
    # volumes
    Kill("named-volumes-anonymous", "volumes", "named-volume-persists", r"the next container of the named volume"),
    Kill("named-volumes-anonymous", "volumes", "volume-shared-live", r"sees the write at once"),
    Kill("ro-ignored", "volumes", "bind-read-only", r"writing through the :ro bind mount is refused .*exit status 0"),
    Kill("bind-as-volume", "volumes", "bind-read-write", r"the file written in the container is in the host dir"),
    Kill("mount-creates-source", "volumes", "mount-bind-missing-source",
         r"refused by the runtime \(exit 125\) .*exit status 0"),
    Kill("rm-removes-volumes", "volumes", "anonymous-volume-rm-v", r"rm without -v keeps .*does not contain"),
    Kill("rm-keeps-volumes", "volumes", "anonymous-volume-rm-v", r"rm -v removes .*stdout contains"),
    Kill("volume-rm-in-use", "volumes", "volume-in-use", r"a stopped container uses is refused .*exit status 0"),
    Kill("volumes-from-ignored", "volumes", "volumes-from", r"the container given --volumes-from reads"),
    Kill("tmpfs-size-ignored", "volumes", "tmpfs", r"/fast is a tmpfs of size 1m .*does not match"),
    Kill("volume-rm-ignored", "volumes", "volume-management", r"the removed volume is gone .*exit status 0"),
    Kill("volume-nocopy", "volumes", "image-volume-populated", r"a new named volume mounted there is filled"),
    # build
    Kill("build-user-ignored", "build", "multi-stage", r"with its ENV, USER and WORKDIR .*/app 0 /app HELLO"),
    Kill("build-arg-ignored", "build", "arg-scoping", r"has the --build-arg value"),
    Kill("dockerignore-ignored", "build", "dockerignore", r"only the files .dockerignore lets through"),
    Kill("copy-dir-as-dir", "build", "copy-directory-semantics", r"the directory's contents are at /dest"),
    Kill("heredoc-unsupported", "build", "heredoc", r"the Dockerfile with RUN and COPY heredocs builds"),
    Kill("build-label-ignored", "build", "image-metadata", r"the LABELs are in the image config"),
    Kill("cache-unused", "build", "rebuild-cached", r"rebuilding the unchanged context gives the same image id"),
    Kill("run-failures-ignored", "build", "failing-run", r"the build with a failing RUN fails .*exit status 0"),
    Kill("unknown-instructions-skipped", "build", "parse-error", r"refused with an error naming the unknown"),
    # security (probes named by their command lines: the steps are the probes)
    Kill("seccomp-unconfined", "security", "seccomp-mode", r"grep \^Seccomp .*does not match /\^Seccomp:\\s\+2\$/"),
    Kill("seccomp-unconfined", "security", "seccomp-refuses-new-namespaces", r"secprobe unshare-user .*allowed"),
    Kill("seccomp-unconfined", "security", "seccomp-refuses-keyrings", r"secprobe add_key .*allowed"),
    Kill("seccomp-unconfined", "security", "seccomp-refuses-kernel-interfaces",
         r"secprobe perf_event_open .*expected 'perf_event_open: Operation not permitted'"),
    Kill("seccomp-unconfined", "security", "seccomp-vsock", r"secprobe vsock .*expected 'vsock: Operation not perm"),
    Kill("seccomp-unconfined", "security", "seccomp-clone3-enosys", r"secprobe clone3 .*expected 'clone3: Function"),
    Kill("seccomp-unconfined", "security", "seccomp-io-uring", r"secprobe io_uring_setup .*expected 'io_uring_setup"),
    Kill("seccomp-unconfined", "security", "keyrings-unreachable", r"secprobe keyctl-read .*contains 'cf-secret'"),
    Kill("cap-add-ignored", "security", "seccomp-capability-rules", r"--cap-add SYS_ADMIN .*expected 'mounted'"),
    Kill("loopback-guard-removed", "security", "host-loopback-unreachable",
         r"the one for 127.0.0.1 is not .*does not contain 'loopback: no answer'"),
    Kill("mount-modes-lenient", "security", "mount-options-mistyped", r":/m:RO busybox true .*exit status 0, expected"),
    Kill("privileged", "security", "capabilities", r"CapPrm:\\t00000000a80425fb"),
    Kill("privileged", "security", "masked-and-read-only-paths", r"/proc/keys .*matches / \[1-9\]"),
    Kill("security-opt-ignored", "security", "no-new-privileges",
         r"--security-opt no-new-privileges busybox .*does not match /\^NoNewPrivs:\\s\+1\$/"),
    Kill("no-namespaces", "security", "mknod-without-device-access",
         r"mknod /tmp/disk b 8 0 .*stderr does not contain 'Operation not permitted'"),
    Kill("pids-limit-loose", "security", "fork-bomb", r"held at the limit.*procs=\d{3,}"),
    # cli (steps named by their command lines)
    Kill("exit-status-lost", "cli", "exit-codes", r"sh -c 'exit 3' .*exit status 1, expected 3"),
    Kill("rm-always-succeeds", "cli", "rm-exit-codes", r"rm \{\{unique\}\}-missing .*exit status 0, expected 1"),
    Kill("bool-values-ignored", "cli", "go-boolean-flags", r"run --rm=true -d=false .*expected '--rm=false'"),
    Kill("flag-prefixes-guessed", "cli", "no-abbreviations", r"run --rm --priv busybox .*exit status 0, expected 125"),
    Kill("format-ignored", "cli", "template-range-networks", r"inspect -f '\{\{range .*does not match"),
    Kill("format-ignored", "cli", "template-missing-keys", r"inspect -f '\[\{\{index .Config.Labels"),
    Kill("format-ignored", "cli", "template-logic", r"inspect -f '\{\{if eq .State.Status"),
    Kill("format-ignored", "cli", "table-format", r"--format 'table .*does not match /\^NAMES"),
    Kill("tty-ignored", "cli", "it-without-terminal", r"run -it --rm busybox true .*exit status 0, expected 1"),
    Kill("group-add-ignored", "cli", "group-add", r"--group-add 1234 --group-add root .*expected '65534 0 1234'"),
    Kill("host-namespaces-ignored", "cli", "uts-ipc-pid-host", r"--uts host busybox hostname .*expected"),
    Kill("events-die-lost", "cli", "events", r"expected 'container create .*container die"),
    Kill("exec-detach-dropped", "cli", "exec-detached", r"cat /tmp/marker .*expected 'done'"),
    Kill("attach-exit-lost", "cli", "attach-exit-code", r"attach \{\{unique\}\} .*exit status 0, expected 4"),
    Kill("cp-ignored", "cli", "cp-both-ways", r"cat \{\{tmp\}\}/out/sub/f .*expected 'hi'"),
    Kill("commit-changes-ignored", "cli", "diff-commit-export", r"run --rm \{\{unique\}\}-img:v1 .*expected 'hello'"),
    Kill("cidfile-ignored", "cli", "cidfile-and-label-file", r"cat \{\{tmp\}\}/cid .*exit status 1, expected 0"),
    Kill("ulimit-ignored", "cli", "ulimit", r"--ulimit nofile=512:1024 .*expected '512"),
    Kill("shm-size-ignored", "cli", "shm-size", r"--shm-size 128m .*does not match"),
    Kill("sysctl-ignored", "cli", "sysctl", r"--sysctl net.core.somaxconn=1000 .*expected '1000'"),
    # lifecycle
    Kill("restart-ignored", "lifecycle", "restart-on-failure", r"RestartCount.*stdout is '0 exited 3"),
    Kill("restart-ignored", "lifecycle", "restart-always-until-stopped", r"restarted at least once in 5 seconds"),
    Kill("stop-kills", "lifecycle", "stop-sends-sigterm", r"State.ExitCode.*stdout is '(137|0)', expected '7'"),
    Kill("stop-timeout-ignored", "lifecycle", "stop-kills-after-timeout", r"the stop waited the 2 seconds"),
    Kill("stop-signal-ignored", "lifecycle", "stop-signal-and-timeout-flags",
         r"the USR1 handler ran .*expected '9 3'"),
    Kill("pause-ignored", "lifecycle", "pause-freezes", r"expected 'paused true'"),
    Kill("stats-format-ignored", "lifecycle", "stats-agree-with-cgroup", r"stats --no-stream --format"),
    Kill("cpu-shares-ignored", "lifecycle", "cpu-shares-priority", r"about 4:1 .*expected ge 250"),
    Kill("uid-ignored", "lifecycle", "exec-semantics", r"-u nobody .*expected '1 /etc nobody'"),
    Kill("exit-status-lost", "lifecycle", "exec-failures", r"no-such-command .*exit status 1, expected 126"),
    Kill("log-stderr-lost", "lifecycle", "logs", r"logs \{\{unique\}\} .*stderr is '', expected 'two'"),
    Kill("health-ignored", "lifecycle", "health-status", r"starting until a probe passes .*expected 'starting'"),
    # registry
    Kill("pull-pretends", "registry", "push-pull-round-trip", r"the pulled image has the manifest digest"),
    Kill("pull-pretends", "registry", "pull-by-digest", r"pulled by digest is there under its repo@digest name"),
    Kill("pull-pretends", "registry", "pull-unknown", r"the pull of a tag the registry lacks fails.*exit status 0"),
    Kill("rmi-digest-deletes-image", "registry", "rmi-digest-keeps-other-names",
         r"still there under its tag after rmi of its repo@digest"),
]
# Kills of a suite not in this checkout (one still being written) wait for it; every case of every suite that
# is here must be killed or say why it cannot be (test_every_case_is_killed_or_says_why_it_cannot_be).
KILLS = [k for k in KILLS if (SUITES / f"{k.suite}.yaml").exists()]
BREAKAGES = sorted({k.breakage for k in KILLS})
#: breakage runs at a time (each is one `conformance run`, mostly waiting on retries, timeouts and sleeps)
PARALLEL = 3


def all_cases() -> dict[str, Any]:
    """Every case of every suite, by ``suite::case``."""
    return {f"{s.name}::{c.id}": c for s in map(load_suite, sorted(SUITES.glob("*.yaml"))) for c in s.cases}


def test_every_case_is_killed_or_says_why_it_cannot_be() -> None:
    cases = all_cases()
    killed = {f"{k.suite}::{k.case}" for k in KILLS}
    assert not killed - set(cases), "kills of cases that do not exist"
    unkilled = sorted(name for name, case in cases.items() if name not in killed and not case.unbreakable)
    assert unkilled == [], "cases no broken runtime fails and that do not say why they cannot be killed"
    overclaimed = sorted(name for name in killed if cases[name].unbreakable)
    assert overclaimed == [], "cases declared unbreakable although a breakage fails them"


def test_every_breakage_exists() -> None:
    listed = subprocess.run([sys.executable, str(BROKEN), "--list"], capture_output=True, text=True, check=False)
    assert listed.returncode == 125 and "breakages:" in listed.stderr
    known = set(listed.stderr.split("breakages:", 1)[1].strip(" )\n").split(", "))
    assert set(BREAKAGES) <= known, set(BREAKAGES) - known


def _host_state() -> dict[str, list[str]]:
    def out(argv: list[str]) -> list[str]:
        return subprocess.run(argv, capture_output=True, text=True, check=False).stdout.splitlines()

    return {
        "links": [line.split(":")[1].strip().split("@")[0] for line in out(["ip", "-o", "link"])],
        "netns": out(["ip", "netns", "list"]),
        "rules": [ln for table in ("filter", "nat") for ln in out(["iptables", "-t", table, "-S"])],
        "mounts": Path("/proc/mounts").read_text().splitlines(),
        "processes": [ln for ln in out(["ps", "-eo", "args"]) if "pytest" not in ln],
    }


def _mentioning(needles: set[str]) -> dict[str, list[str]]:
    """What of the host's links, namespaces, rules, mounts and processes mentions one of ``needles``."""
    return {key: [x for x in values if any(n in x for n in needles)] for key, values in _host_state().items()}


def _env(root: Path) -> dict[str, str]:
    """refrt on ``root``, without its on-demand daemon: nothing of a breakage may outlive its run."""
    return {**os.environ, "REFRT_ROOT": str(root), "REFRT_STATE": f"{root}/run", "REFRT_NO_DAEMON": "1"}


def _refrt(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = _env(root)
    return subprocess.run([sys.executable, "-m", "runtime", *args], capture_output=True, text=True, env=env,
                          timeout=300, check=False)


@pytest.fixture(scope="module")
def workdir() -> Iterator[Path]:
    """Roots, shims and chroot filesystems of the run, under /var/tmp (overlayfs needs a real filesystem), in a
    directory whose name contains no case id (``-k`` also matches case titles, never the runtime's path)."""
    work = Path(subprocess.run(["mktemp", "-d", "/var/tmp/cfbrk-XXXXXX"], capture_output=True, text=True,
                               check=True).stdout.strip())
    yield work
    shutil.rmtree(work, ignore_errors=True)
    assert _mentioning({str(work)}) == {key: [] for key in _host_state()}


def _clean_root(root: Path) -> list[str]:
    """Remove everything a run left in a breakage's refrt root; what refrt or the mount table still show of it."""
    containers = _refrt(root, "ps", "-a", "-q").stdout.split()
    if containers:
        _refrt(root, "rm", "-f", "-v", *containers)
    networks = _refrt(root, "network", "ls", "-q", "--filter", "type=custom").stdout.split()
    if networks:
        _refrt(root, "network", "rm", *networks)
    _refrt(root, "volume", "prune", "-a", "-f")
    check = subprocess.run(
        [sys.executable, "-c", "import sys; from runtime.paths import Paths; import runtime.network as n\n"
         "class C:\n    paths = Paths.resolve(sys.argv[1])\nprint('\\n'.join(n.leftovers(C())))", str(root)],
        capture_output=True, text=True, env=_env(root), check=False)
    left = check.stdout.split("\n") if check.returncode == 0 else [f"leftovers check failed: {check.stderr}"]
    return [x for x in left if x] + [ln for ln in Path("/proc/mounts").read_text().splitlines() if str(root) in ln]


@dataclass
class Outcome:
    """One breakage's run: its exit code and output, results.json, and whatever of it outlived the run."""

    returncode: int
    output: str
    results: str
    leftovers: list[str]


def _run_breakage(workdir: Path, name: str, cases: list[tuple[str, str]] | None = None) -> Outcome:
    """Run the cases ``name`` kills (or ``cases``, as (suite, case)) against that breakage."""
    targets = cases or [(k.suite, k.case) for k in KILLS if k.breakage == name]
    home = workdir / name
    root = home / "root"
    home.mkdir()
    shim = home / "rt"
    shim.write_text(f'#!/bin/sh\nexec {sys.executable} {BROKEN} {name} "$@"\n')
    shim.chmod(0o755)
    made = _refrt(root, "image", "bootstrap", "busybox")
    if made.returncode != 0:
        return Outcome(made.returncode, f"bootstrap failed: {made.stderr}", "", _clean_root(root))
    suites = sorted({str(SUITES / f"{suite}.yaml") for suite, _ in targets})
    try:
        run = subprocess.run(
            [sys.executable, "-m", "conformance", "run", *suites, "--runtime", f"custom:{shim}",
             "-k", " or ".join(sorted({case for _, case in targets})), "--report-dir", str(home / "report")],
            cwd=home, env={**_env(root), "CF_BROKEN_WORK": str(home)}, capture_output=True, text=True,
            timeout=600, check=False)
    finally:
        leftovers = _clean_root(root)
    results = home / "report" / "results.json"
    text = results.read_text() if results.exists() else ""
    # the cases' own names ({{unique}}: containers, networks, namespaces, veths) are gone from the host
    mentioned = _mentioning(set(re.findall(r"cf-[0-9a-f]{8}", text)))
    leftovers += [f"{key}: {x}" for key, values in mentioned.items() for x in values]
    return Outcome(run.returncode, run.stdout[-3000:] + run.stderr[-2000:], text, leftovers)


@pytest.fixture(scope="module")
def outcomes(request: pytest.FixtureRequest, workdir: Path) -> dict[str, Outcome]:
    """Run the selected breakages, PARALLEL at a time: most of a run is waiting (retries, timeouts, sleeps)."""
    selected = _selected(request)
    with ThreadPoolExecutor(PARALLEL) as pool:
        return dict(zip(selected, pool.map(lambda name: _run_breakage(workdir, name), selected), strict=True))


def _selected(request: pytest.FixtureRequest) -> list[str]:
    names = set()
    for item in request.session.items:
        callspec = getattr(item, "callspec", None)
        if item.module is request.module and callspec is not None and "name" in callspec.params:
            names.add(callspec.params["name"])
    return sorted(names)


@pytest.mark.parametrize("name", BREAKAGES)
def test_breakage_fails_the_cases_it_targets(outcomes: dict[str, Outcome], name: str) -> None:
    outcome = outcomes[name]
    assert outcome.leftovers == []
    assert outcome.results, outcome.output
    records = {f"{c['suite']}::{c['case']}": c for c in json.loads(outcome.results)["cases"]}
    assert outcome.returncode == 1, outcome.output
    for kill in (k for k in KILLS if k.breakage == name):
        record = records[f"{kill.suite}::{kill.case}"]
        assert record["status"] == "failed", (kill, record["status"], record["message"], record.get("details"))
        assert re.search(kill.message, record["message"], re.IGNORECASE | re.DOTALL), (kill, record["message"])


def test_a_shared_pid_namespace_is_blamed_on_the_namespace_not_on_the_pids_limit(workdir: Path) -> None:
    """limits::pids-limit used to count /proc after the fork loop, so a runtime sharing the host's PID namespace
    failed it although its pids limit worked. Against a chroot with the host's namespaces whose --pids-limit is
    real (a pids cgroup), the pids case passes and the process-isolation case is the one that fails."""
    outcome = _run_breakage(workdir, "pid-namespace-shared", [("limits", "pids-limit"), ("isolation", "own-processes")])
    assert outcome.leftovers == []
    records = {f"{c['suite']}::{c['case']}": c for c in json.loads(outcome.results)["cases"]}
    assert records["limits::pids-limit"]["status"] == "passed", records["limits::pids-limit"]["message"]
    assert records["isolation::own-processes"]["status"] == "failed"
    assert "count the processes" in records["isolation::own-processes"]["message"]
