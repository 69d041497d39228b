"""Breakages of containers: options dropped or changed, networks, volumes, and a chroot with no namespaces."""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

from broken_common import (
    EXEC_FLAGS,
    RUN_FLAGS,
    Breakage,
    Option,
    become_refrt,
    breakage,
    join_options,
    mapped,
    option_values,
    refrt,
    register_run_rewrite,
    split_options,
    sub,
    without,
)

# --- container options dropped or changed -------------------------------------------------------------------

register_run_rewrite("privileged", "every container is privileged: nothing masked, /proc/sys and /sys writable, "
                     "every capability", lambda o, r: ([*o, ("--privileged", None)], r))
register_run_rewrite("uid-ignored", "-u/--user is ignored: processes run as root", without("-u", "--user"),
                     ("run", "create", "exec"))
register_run_rewrite("env-ignored", "-e/--env is ignored", without("-e", "--env", "--env-file"))
register_run_rewrite("workdir-ignored", "-w/--workdir is ignored", without("-w", "--workdir"))
register_run_rewrite("read-only-ignored", "--read-only is ignored", without("--read-only"))
register_run_rewrite("read-only-tmp", "--read-only comes with a writable tmpfs on /tmp (podman's default)",
                     lambda o, r: ([*o, ("--tmpfs", "/tmp")] if ("--read-only", None) in o else o, r))
register_run_rewrite("memory-unlimited", "-m/--memory is ignored: no memory limit",
                     without("-m", "--memory", "--memory-swap"))
register_run_rewrite("pids-unlimited", "--pids-limit is ignored", without("--pids-limit"))
register_run_rewrite("publish-ignored", "-p/--publish and -P are ignored: nothing is published",
                     without("-p", "--publish", "-P", "--publish-all"))
register_run_rewrite("alias-ignored", "--network-alias is ignored", without("--network-alias", "--net-alias"))
register_run_rewrite("volumes-from-ignored", "--volumes-from is ignored", without("--volumes-from"))


def _memory_bytes(text: str) -> int:
    match = re.fullmatch(r"(\d+)([bkmg]?)", text.lower())
    if not match:
        return 0
    return int(match.group(1)) * {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}[match.group(2)]


def _shrunk(value: str) -> list[Option]:
    limit = f"{max(6 << 20, _memory_bytes(value) // 8)}b"
    return [("-m", limit), ("--memory-swap", limit)]  # no swap to make up for it, whatever the host has


register_run_rewrite("memory-shrunk", "-m gives an eighth of the memory asked for (at least 6m), without swap",
                     lambda o, r: mapped(("-m", "--memory"), _shrunk)(*without("--memory-swap")(o, r)))
register_run_rewrite("cpus-shrunk", "--cpus gives a fifth of the CPU asked for",
                     mapped(("--cpus",), lambda v: [("--cpus", f"{float(v) / 5:g}")]))


def _user_network(value: str) -> bool:
    return value not in ("", "none", "host", "bridge", "default") and not value.startswith("container:")


def _no_user_networks(options: list[Option], rest: list[str]) -> tuple[list[Option], list[str]]:
    networks = option_values(options, "--network", "--net")
    if not any(map(_user_network, networks)):
        return options, rest
    # the default bridge takes no aliases: they go with the user network
    return [o for o in options if o[0] not in ("--network", "--net", "--network-alias", "--net-alias")], rest


register_run_rewrite("user-networks-ignored", "--network USERNET is ignored: every container is on the default "
                     "bridge", _no_user_networks)
register_run_rewrite("container-network-ignored", "--network container:NAME is ignored: the container gets its own",
                     mapped(("--network", "--net"), lambda v: [] if v.startswith("container:") else [("--network", v)]))
register_run_rewrite("network-none-is-host", "--network none gives the host's network",
                     mapped(("--network", "--net"), lambda v: [("--network", "host" if v == "none" else v)]))


def _named_volume(spec: str) -> bool:
    return ":" in spec and not spec.startswith(("/", "."))


register_run_rewrite("named-volumes-anonymous", "-v NAME:PATH makes a fresh anonymous volume, never NAME",
                     mapped(("-v", "--volume"), lambda v: [("-v", v.split(":")[1] if _named_volume(v) else v)]))
register_run_rewrite("volume-nocopy", "-v NAME:PATH never fills a new volume from the image (as :nocopy)",
                     mapped(("-v", "--volume"), lambda v: [("-v", f"{v}:nocopy" if _named_volume(v) else v)]))


def _drop_ro(spec: str) -> str:
    parts = spec.split(":")
    return ":".join(p for i, p in enumerate(parts) if i < 2 or p != "ro")


register_run_rewrite("ro-ignored", "the :ro of a bind mount is ignored: it is writable",
                     mapped(("-v", "--volume"), lambda v: [("-v", _drop_ro(v))]))


def _mount_fields(spec: str) -> dict[str, str]:
    return dict(part.partition("=")[::2] for part in spec.split(","))


def _bind_as_volume(spec: str) -> list[Option]:
    fields = _mount_fields(spec)
    if fields.get("type") != "bind":
        return [("--mount", spec)]
    return [("-v", fields.get("target") or fields.get("destination") or fields.get("dst", ""))]


def _bind_as_v(spec: str) -> list[Option]:
    fields = _mount_fields(spec)
    if fields.get("type") != "bind":
        return [("--mount", spec)]
    source = fields.get("source") or fields.get("src", "")
    return [("-v", f"{source}:{fields.get('target') or fields.get('destination') or fields.get('dst', '')}")]


register_run_rewrite("bind-as-volume", "--mount type=bind gives an anonymous volume at the target instead",
                     mapped(("--mount",), _bind_as_volume))
register_run_rewrite("mount-creates-source", "--mount type=bind creates a missing source directory (as -v does)",
                     mapped(("--mount",), _bind_as_v))
register_run_rewrite("tmpfs-size-ignored", "--tmpfs options (size=...) are ignored",
                     mapped(("--tmpfs",), lambda v: [("--tmpfs", v.split(":")[0])]))


def _seccomp_unconfined(options: list[Option], rest: list[str]) -> tuple[list[Option], list[str]]:
    if any(v.startswith("seccomp") for v in option_values(options, "--security-opt")):
        return options, rest
    return [*options, ("--security-opt", "seccomp=unconfined")], rest


register_run_rewrite("seccomp-unconfined", "containers run without a seccomp filter", _seccomp_unconfined)
register_run_rewrite("security-opt-ignored", "--security-opt is ignored", without("--security-opt"))
register_run_rewrite("cap-add-ignored", "--cap-add is ignored", without("--cap-add"))
register_run_rewrite("pids-limit-loose", "--pids-limit allows ten times the processes asked for",
                     mapped(("--pids-limit",), lambda v: [("--pids-limit", str(int(v) * 10))]))
VOLUME_MODES = {"ro", "rw", "z", "Z", "nocopy", "shared", "rshared", "slave", "rslave", "private", "rprivate",
                "consistent", "cached", "delegated"}


def _lenient_v(spec: str) -> list[Option]:
    parts = spec.split(":")
    if len(parts) == 3:
        modes = [m.lower() for m in parts[2].split(",") if m.lower() in VOLUME_MODES]
        if "ro" in modes and "rw" in modes:
            modes.remove("rw")
        parts = parts[:2] + ([",".join(modes)] if modes else [])
    return [("-v", ":".join(parts))]


def _lenient_mount(spec: str) -> list[Option]:
    valued = {"type", "source", "src", "target", "destination", "dst", "bind-propagation", "tmpfs-size", "tmpfs-mode"}
    boolean = {"readonly", "ro", "volume-nocopy"}
    kept = []
    for field in spec.split(","):
        key, _, value = field.partition("=")
        if key in valued or (key in boolean and value in ("", "1", "0", "true", "false")):
            kept.append(field)
    return [("--mount", ",".join(kept))]


register_run_rewrite("mount-modes-lenient", "mistyped -v modes and --mount keys are ignored or guessed, not refused",
                     lambda o, r: (mapped(("--mount",), _lenient_mount)(
                         *mapped(("-v", "--volume"), _lenient_v)(o, r))))


@breakage("loopback-guard-removed", "no guard against CVE-2020-8558: the host's loopback answers packets "
          "arriving on the bridge")
def loopback_guard_removed(args: list[str]) -> int:
    """Keep the default bridge up with a helper container, flush refrt's guard chain for this root, run."""
    if sub(args) != ("run",):
        become_refrt(args)
    from runtime.network import firewall
    from runtime.network.store import root_tag
    from runtime.paths import Paths

    helper = f"cf-guardless-{secrets.token_hex(4)}"
    refrt(["run", "-d", "--name", helper, "busybox", "sleep", "600"])
    try:
        tag = root_tag(Paths.resolve(os.environ.get("REFRT_ROOT"), os.environ.get("REFRT_STATE")))
        subprocess.run(["iptables", "-F", firewall.chain(tag, "IN")], capture_output=True, check=False)
        return refrt(args, capture=False).returncode
    finally:
        refrt(["rm", "-f", helper])


# --- the CLI's own conventions ------------------------------------------------------------------------------

def _bool_values_ignored(options: list[Option], rest: list[str]) -> tuple[list[Option], list[str]]:
    return [(f, None) if f in RUN_FLAGS and v in ("true", "false") else (f, v) for f, v in options], rest


register_run_rewrite("bool-values-ignored", "a boolean flag given =true or =false is simply on",
                     _bool_values_ignored)
LONG_FLAGS = {f for f in RUN_FLAGS if f.startswith("--")} | {
    "--name", "--network", "--memory", "--memory-swap", "--pids-limit", "--label", "--env", "--volume", "--mount",
    "--tmpfs", "--cpus", "--user", "--workdir", "--hostname", "--publish", "--expose", "--security-opt",
    "--cap-add", "--cap-drop", "--entrypoint", "--network-alias", "--volumes-from", "--cidfile", "--label-file"}


@breakage("flag-prefixes-guessed", "a long flag may be abbreviated to any unique prefix (--priv is --privileged)")
def flag_prefixes_guessed(args: list[str]) -> int:
    if sub(args) in (("run",), ("create",)):
        words, i = [args[0]], 1
        while i < len(args) and args[i].startswith("-"):
            name, eq, value = args[i].partition("=")
            if name.startswith("--") and name not in LONG_FLAGS:
                matches = [f for f in LONG_FLAGS if f.startswith(name)]
                name = matches[0] if len(matches) == 1 else name
            words.append(f"{name}{eq}{value}")
            takes_value = not eq and name not in RUN_FLAGS
            if takes_value and i + 1 < len(args):
                words.append(args[i + 1])
                i += 1
            i += 1
        args = [*words, *args[i:]]
    become_refrt(args)


def _format_ignored(commands: tuple[str, ...]) -> Breakage:
    def run(args: list[str]) -> int:
        if args and args[0] in commands:
            options, rest = split_options(args[1:], {"-a", "--all", "-q", "--quiet", "--no-trunc", "-s", "--size",
                                                     "-l", "--latest", "--no-stream"})
            args = [args[0], *join_options([o for o in options if o[0] not in ("-f", "--format")]), *rest]
        become_refrt(args)
    return run


breakage("format-ignored", "--format/-f of inspect and ps is ignored (the default output instead)")(
    _format_ignored(("inspect", "ps")))
breakage("stats-format-ignored", "--format of stats is ignored (the default table instead)")(
    _format_ignored(("stats",)))


register_run_rewrite("tty-ignored", "-t is ignored (so -it without a terminal is never refused)",
                     lambda o, r: ([("-i", None) if f in ("-it", "-ti") else (f, v) for f, v in o
                                    if f not in ("-t", "--tty")], r))
register_run_rewrite("cidfile-ignored", "--cidfile is ignored", without("--cidfile"))


register_run_rewrite("group-add-ignored", "--group-add is ignored: no supplementary groups are added",
                     without("--group-add"))
register_run_rewrite("host-namespaces-ignored", "--uts/--ipc/--pid host are ignored: the container keeps its own",
                     without("--uts", "--ipc", "--pid"))


@breakage("events-die-lost", "events never reports a container's die (so its exit code is lost)")
def events_die_lost(args: list[str]) -> int:
    if sub(args) != ("events",):
        become_refrt(args)
    done = refrt(args)
    sys.stdout.write("".join(line for line in done.stdout.splitlines(True) if " die " not in line))
    sys.stderr.write(done.stderr)
    return done.returncode


@breakage("rm-always-succeeds", "rm exits 0 whatever happened")
def rm_always_succeeds(args: list[str]) -> int:
    if sub(args) != ("rm",):
        become_refrt(args)
    refrt(args, capture=False)
    return 0


@breakage("exec-detach-dropped", "exec -d answers success and runs nothing")
def exec_detach_dropped(args: list[str]) -> int:
    if sub(args) == ("exec",) and any(f in ("-d", "--detach") for f, _ in split_options(args[1:], EXEC_FLAGS)[0]):
        return 0
    become_refrt(args)


@breakage("attach-exit-lost", "attach exits 0 whatever the container's exit code")
def attach_exit_lost(args: list[str]) -> int:
    if sub(args) != ("attach",):
        become_refrt(args)
    refrt(args, capture=False)
    return 0


@breakage("cp-ignored", "cp answers success and copies nothing")
def cp_ignored(args: list[str]) -> int:
    if sub(args) != ("cp",):
        become_refrt(args)
    return 0


@breakage("commit-changes-ignored", "commit ignores -c/--change")
def commit_changes_ignored(args: list[str]) -> int:
    if sub(args) == ("commit",):
        options, rest = split_options(args[1:], {"-p", "--pause"})
        args = ["commit", *join_options([o for o in options if o[0] not in ("-c", "--change")]), *rest]
    become_refrt(args)


# --- lifecycle ------------------------------------------------------------------------------------------------

register_run_rewrite("restart-ignored", "--restart is ignored: nothing is ever restarted", without("--restart"))
register_run_rewrite("stop-signal-ignored", "--stop-signal is ignored: stop sends SIGTERM", without("--stop-signal"))
register_run_rewrite("ulimit-ignored", "--ulimit is ignored", without("--ulimit"))
register_run_rewrite("shm-size-ignored", "--shm-size is ignored: /dev/shm keeps its default size",
                     without("--shm-size"))
register_run_rewrite("sysctl-ignored", "--sysctl is ignored", without("--sysctl"))
register_run_rewrite("cpu-shares-ignored", "-c/--cpu-shares is ignored: every container weighs the same",
                     without("-c", "--cpu-shares"))
register_run_rewrite("health-ignored", "--health-cmd and the other --health-* flags are ignored: no check runs",
                     without("--health-cmd", "--health-interval", "--health-retries", "--health-start-period",
                             "--health-timeout"))


@breakage("stop-kills", "stop sends SIGKILL at once (no SIGTERM first)")
def stop_kills(args: list[str]) -> int:
    if sub(args) == ("stop",):
        _, names = split_options(args[1:], set())
        args = ["kill", *names]
    become_refrt(args)


@breakage("stop-timeout-ignored", "stop -t is ignored: SIGKILL follows SIGTERM at once")
def stop_timeout_ignored(args: list[str]) -> int:
    if sub(args) == ("stop",):
        _, names = split_options(args[1:], set())
        args = ["stop", "-t", "0", *names]
    become_refrt(args)


@breakage("pause-ignored", "pause answers success and freezes nothing")
def pause_ignored(args: list[str]) -> int:
    if sub(args) != ("pause",):
        become_refrt(args)
    return 0


@breakage("exit-status-lost", "the runtime exits 1 whatever non-zero code the container ended with")
def exit_status_lost(args: list[str]) -> int:
    code = refrt(args, capture=False).returncode
    return 0 if code == 0 else 1


@breakage("stop-ignored", "stop answers success and leaves the container running")
def stop_ignored(args: list[str]) -> int:
    if sub(args) != ("stop",):
        become_refrt(args)
    _, names = split_options(args[1:], set())
    print("\n".join(names))
    return 0


@breakage("log-stderr-lost", "logs shows only what the container wrote to stdout")
def log_stderr_lost(args: list[str]) -> int:
    if sub(args) != ("logs",):
        become_refrt(args)
    result = refrt(args)
    sys.stdout.write(result.stdout)
    return result.returncode


@breakage("oom-unreported", "inspect says State.OOMKilled false after an OOM kill (as podman 4.3 does)")
def oom_unreported(args: list[str]) -> int:
    if args and args[0] == "inspect":
        args = [a.replace("{{.State.OOMKilled}}", "false") for a in args]
    become_refrt(args)


# --- networks --------------------------------------------------------------------------------------------------

def _network_create_without(*flags: str) -> Breakage:
    def run(args: list[str]) -> int:
        if sub(args, 2) == ("network", "create"):
            options, rest = split_options(args[2:], {"--internal", "--attachable", "--ipv6"})
            args = ["network", "create", *join_options([o for o in options if o[0] not in flags]), *rest]
        become_refrt(args)
    return run


breakage("internal-ignored", "network create --internal makes an ordinary network")(
    _network_create_without("--internal"))
breakage("subnet-ignored", "network create ignores --subnet and --gateway")(
    _network_create_without("--subnet", "--gateway"))


@breakage("connect-ignored", "network connect answers success and connects nothing")
def connect_ignored(args: list[str]) -> int:
    if sub(args, 2) != ("network", "connect"):
        become_refrt(args)
    return 0


@breakage("network-rm-forced", "network rm disconnects the containers using the network, then removes it")
def network_rm_forced(args: list[str]) -> int:
    if sub(args, 2) == ("network", "rm"):
        containers = refrt(["ps", "-a", "-q"]).stdout.split()
        for network in args[2:]:
            for container in containers:
                refrt(["network", "disconnect", "-f", network, container])
    become_refrt(args)


# --- volumes ----------------------------------------------------------------------------------------------------

@breakage("rm-keeps-volumes", "rm -v keeps the container's anonymous volumes")
def rm_keeps_volumes(args: list[str]) -> int:
    if sub(args) == ("rm",):
        kept = ["rm"]
        for word in args[1:]:
            if re.fullmatch(r"-[fvl]+", word):
                word = word.replace("v", "")
            if word not in ("-", "--volumes"):
                kept.append(word)
        args = kept
    become_refrt(args)


@breakage("rm-removes-volumes", "rm removes the container's anonymous volumes even without -v")
def rm_removes_volumes(args: list[str]) -> int:
    if sub(args) == ("rm",):
        args = ["rm", "-v", *args[1:]]
    become_refrt(args)


def _users_of_volume(volume: str) -> list[str]:
    users = []
    for container in refrt(["ps", "-a", "-q"]).stdout.split():
        mounts = refrt(["inspect", "--format", "{{json .Mounts}}", container]).stdout
        try:
            if any(m.get("Name") == volume for m in json.loads(mounts or "[]")):
                users.append(container)
        except json.JSONDecodeError:
            continue
    return users


@breakage("volume-rm-in-use", "volume rm of a volume in use removes the containers using it, then the volume")
def volume_rm_in_use(args: list[str]) -> int:
    if sub(args, 2) == ("volume", "rm"):
        for volume in [a for a in args[2:] if not a.startswith("-")]:
            users = _users_of_volume(volume)
            if users:
                refrt(["rm", "-f", *users])
    become_refrt(args)


@breakage("volume-rm-ignored", "volume rm answers success and removes nothing")
def volume_rm_ignored(args: list[str]) -> int:
    if sub(args, 2) != ("volume", "rm"):
        become_refrt(args)
    print("\n".join(a for a in args[2:] if not a.startswith("-")))
    return 0


# --- no namespaces at all: a chroot -----------------------------------------------------------------------------

def _chroot_rootfs(name: str) -> Path:
    from conformance.drivers.dockerlike import busybox_rootfs_tar

    work = Path(os.environ.get("CF_BROKEN_WORK") or tempfile.gettempdir())
    rootfs = work / f"{name}-rootfs"
    if not (rootfs / "bin" / "busybox").exists():
        staging = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=work))
        with tarfile.open(busybox_rootfs_tar(staging / "rootfs.tar")) as tar:
            tar.extractall(staging / "rootfs", filter="tar")
        (staging / "rootfs").rename(rootfs)
        shutil.rmtree(staging)
    return rootfs


def _pids_parent() -> Path | None:
    """Where a pids cgroup can be made: the v1 pids hierarchy, or the v2 root when it hands out pids."""
    v1 = Path("/sys/fs/cgroup/pids")
    if (v1 / "cgroup.procs").exists():
        return v1
    v2 = Path("/sys/fs/cgroup")
    control = v2 / "cgroup.subtree_control"
    return v2 if control.exists() and "pids" in control.read_text().split() else None


def _chroot_run(name: str, args: list[str], binds: tuple[str, ...], pids_limit: bool = False) -> int:
    """``run`` (in the foreground) as a chroot into a busybox root filesystem, with the host's own namespaces
    (only a private mount namespace, so the bind mounts go away with it); everything else goes to refrt.
    With ``pids_limit``, ``--pids-limit`` is applied through a pids cgroup of the run's own."""
    if sub(args) != ("run",):
        become_refrt(args)
    options, rest = split_options(args[1:], RUN_FLAGS)
    if {f for f, _ in options} & {"-d", "--detach"} or not rest:
        become_refrt(args)
    command = rest[1:] or ["sh"]
    rootfs = _chroot_rootfs(name)
    env = ["PATH=/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root", *option_values(options, "-e", "--env")]
    workdir = (option_values(options, "-w", "--workdir") or ["/"])[-1]
    steps = [f'mount --rbind /{d} "$0/{d}"' for d in binds]
    group: Path | None = None
    limits = option_values(options, "--pids-limit")
    parent = _pids_parent() if pids_limit and limits else None
    if parent is not None:
        group = parent / f"cf-broken-{secrets.token_hex(4)}"
        group.mkdir()
        (group / "pids.max").write_text(limits[-1])
        steps.insert(0, f"echo $$ > {group}/cgroup.procs")
    script = " && ".join([*steps, 'exec chroot "$0" /bin/busybox env -i "$@"'])
    inner = ["/bin/sh", "-c", 'cd "$0" && exec "$@"', workdir, *command]
    argv = ["unshare", "--mount", "--propagation", "private", "/bin/sh", "-c", script, str(rootfs), *env, *inner]
    try:
        return subprocess.run(argv, check=False).returncode
    finally:
        if group is not None:
            _empty_and_remove(group)


def _empty_and_remove(group: Path) -> None:
    """Kill what the command left in its cgroup (with no PID namespace nothing else ends it), then remove it."""
    for _ in range(100):
        pids = (group / "cgroup.procs").read_text().split()
        if not pids:
            group.rmdir()
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)
        time.sleep(0.05)
    raise RuntimeError(f"{group} did not empty")


breakage("no-namespaces", "a chroot with the host's PID, UTS, IPC and network namespaces and the host's "
         "/proc, /sys and /dev")(lambda args: _chroot_run("no-namespaces", args, ("proc", "sys", "dev")))
breakage("no-dev", "a chroot whose /dev is left empty (no device nodes)")(
    lambda args: _chroot_run("no-dev", args, ("proc", "sys")))
breakage("pid-namespace-shared", "a chroot with the host's namespaces that does apply --pids-limit (a pids cgroup)")(
    lambda args: _chroot_run("pid-namespace-shared", args, ("proc", "sys", "dev"), pids_limit=True))
