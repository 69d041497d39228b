"""docker 20.10's ``create``/``run`` flags, as one argparse definition: the single source of truth for both
refrt's command line (``refrt run``/``create``, :mod:`runtime.cli.containers`) and the Engine API's
``POST /containers/create`` (:mod:`runtime.daemon.convert` fills the same namespace from the JSON body).

Why here and not in the CLI: the daemon must read a create request exactly as the CLI reads the flags (same
defaults, same checks), without importing the command line. :func:`add_create_flags` registers them;
:func:`runtime.container.createspec.spec_from_args` gives them their meaning.

Why every flag: a pasted docker command must never run differently without a word. Every flag of docker's
``run`` is known here: those refrt honours get their help text from :data:`HELP`; the others are registered by
:func:`add_refused` and stop the command with one line naming the flag and why (exit 125), before anything is
created. A Go-boolean flag set to false (``--init=false``) asks for docker's default, which refrt has, so it
passes.
"""

from __future__ import annotations

import argparse
from typing import Any

from runtime.errors import UsageError

HELP: dict[str, str] = {
    "help": "show this help and exit",
    "detach": "run the container in the background and print its ID",
    "name": "assign a name to the container",
    "env": "set environment variables (KEY=VALUE, or KEY to pass the caller's value)",
    "env_file": "read in a file of environment variables",
    "workdir": "working directory inside the container",
    "user": "username or UID (format: <name|uid>[:<group|gid>])",
    "hostname": "container host name",
    "interactive": "keep STDIN open even if not attached",
    "tty": "allocate a pseudo-TTY",
    "entrypoint": "overwrite the default ENTRYPOINT of the image",
    "read_only": "mount the container's root filesystem as read only",
    "label": "set meta data on a container (KEY=VALUE)",
    "label_file": "read in a line delimited file of labels",
    "rm": "automatically remove the container when it exits",
    "userns": "user namespace to use (host, or private: refrt maps root to an unprivileged range)",
    "privileged": "give extended privileges to this container",
    "cap_add": "add Linux capabilities (ALL for every one)",
    "cap_drop": "drop Linux capabilities (ALL for every one)",
    "security_opt": "security options (seccomp=PROFILE|unconfined, no-new-privileges[:true|false])",
    "memory": "memory limit (bytes, or with a unit: 512k, 32m, 1g)",
    "memory_swap": "swap limit equal to memory plus swap: -1 for unlimited swap",
    "cpus": "number of CPUs",
    "cpu_shares": "CPU shares (relative weight)",
    "cpuset_cpus": "CPUs in which to allow execution (0-3, 0,1)",
    "pids_limit": "tune container pids limit (-1 for unlimited)",
    "blkio_weight": "block IO (relative weight), between 10 and 1000, or 0 to disable",
    "volume": "bind mount a volume (SRC:DST[:OPTIONS])",
    "mount": "attach a filesystem mount to the container (type=bind|volume|tmpfs,...)",
    "tmpfs": "mount a tmpfs directory (DST[:OPTIONS])",
    "volumes_from": "mount volumes from the specified container(s) (NAME[:ro|rw])",
    "network": "connect a container to a network (bridge, host, none, container:X, or a user network)",
    "network_alias": "add network-scoped alias for the container",
    "publish": "publish a container's port(s) to the host ([IP:]HOSTPORT:PORT[/PROTO])",
    "publish_all": "publish all exposed ports to random ports",
    "expose": "expose a port or a range of ports",
    "dns": "set custom DNS servers",
    "add_host": "add a custom host-to-IP mapping (host:ip)",
    "cidfile": "write the container ID to the file",
    "pull": "pull image before running (missing, never; refrt does not pull on its own)",
    "disable_content_trust": "skip image verification (default true; refrt has no content trust)",
    "platform": "set platform if server is multi-platform capable (only this host's)",
    "no_healthcheck": "disable any container-specified HEALTHCHECK",
    "health_cmd": "command to run to check health (run by the container's monitor with /bin/sh -c)",
    "health_interval": "time between running the check (ms|s|m|h) (default 30s)",
    "health_retries": "consecutive failures needed to report unhealthy (default 3)",
    "health_start_period": "start period for the container to initialize before failures count (ms|s|m|h)",
    "health_timeout": "maximum time to allow one check to run (ms|s|m|h) (default 30s)",
    "log_driver": "logging driver for the container (json-file only)",
    "isolation": "container isolation technology (default only)",
    "shm_size": "size of /dev/shm (default 64m)",
    "sysctl": "sysctl options (NAME=VALUE: net.*, and the IPC ones kernel.msg*, kernel.sem, kernel.shm*, fs.mqueue.*)",
    "group_add": "add additional groups to join (a name in the container's /etc/group, or a number)",
    "uts": "UTS namespace to use (host; the default is the container's own)",
    "ipc": "IPC mode to use (host, private or shareable: the container's own)",
    "pid": "PID namespace to use (host; the default is the container's own)",
    "oom_kill_disable": "disable the OOM killer (cgroup v1; give -m too)",
    "link": "add link to another container (NAME[:ALIAS]: its address in /etc/hosts, ALIAS_NAME in the environment)",
    "device": "add a host device to the container (HOST[:CONTAINER[:rwm]]; cgroup v1 hosts)",
    "cpu_period": "limit CPU CFS (Completely Fair Scheduler) period (with --cpu-quota)",
    "cpu_quota": "limit CPU CFS (Completely Fair Scheduler) quota",
    "init": "run an init inside the container that forwards signals and reaps processes",
}

# docker's run flags refrt cannot honour here, with the reason given to the user. (flag, takes a value, why)
REFUSED: tuple[tuple[str, bool, str], ...] = (
    ("--attach", True, "refrt attaches all three streams (no -a)"),
    ("--blkio-weight-device", True, "per-device block IO weights are not implemented"),
    ("--cgroup-parent", True, "refrt places containers under its own cgroup"),
    ("--cgroupns", True, "cgroup namespaces are not implemented"),
    ("--cpu-rt-period", True, "real-time scheduling is not implemented"),
    ("--cpu-rt-runtime", True, "real-time scheduling is not implemented"),
    ("--cpuset-mems", True, "memory node sets are not implemented"),
    ("--device-cgroup-rule", True, "device cgroup rules are not implemented"),
    ("--device-read-bps", True, "block IO throttling is not implemented"),
    ("--device-read-iops", True, "block IO throttling is not implemented"),
    ("--device-write-bps", True, "block IO throttling is not implemented"),
    ("--device-write-iops", True, "block IO throttling is not implemented"),
    ("--dns-option", True, "resolv.conf options are not implemented"),
    ("--dns-search", True, "resolv.conf search domains are not implemented"),
    ("--domainname", True, "the NIS domain name is not set"),
    ("--gpus", True, "GPUs are not supported"),
    ("--ip", True, "static addresses are not implemented"),
    ("--ip6", True, "IPv6 is not implemented"),
    ("--kernel-memory", True, "kernel memory limits are deprecated and not implemented"),
    ("--link-local-ip", True, "link-local addresses are not implemented"),
    ("--log-opt", True, "log options are not implemented"),
    ("--mac-address", True, "fixed MAC addresses are not implemented"),
    ("--memory-reservation", True, "soft memory limits are not implemented"),
    ("--memory-swappiness", True, "swappiness is not implemented"),
    ("--oom-score-adj", True, "OOM score adjustment is not implemented"),
    ("--runtime", True, "refrt is its own runtime"),
    ("--storage-opt", True, "storage options are not implemented"),
    ("--volume-driver", True, "only the local volume driver exists"),
)


def refusal(action: argparse.Action) -> str:
    return f"{action.option_strings[0]}: not supported by refrt: {str(action.help).removeprefix('refused: ')}"


class _Refuse(argparse.Action):
    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        raise UsageError(refusal(self))


class _RefuseTrue(argparse._StoreTrueAction):
    """A refused boolean: ``--init`` stops the command, ``--init=false`` (docker's default) is fine."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        raise UsageError(refusal(self))


def add_refused(p: argparse.ArgumentParser) -> None:
    for flag, takes_value, why in REFUSED:
        if takes_value:
            p.add_argument(flag, action=_Refuse, help=f"refused: {why}", metavar="VALUE")
        else:
            p.add_argument(flag, action=_RefuseTrue, help=f"refused: {why}")


def add_accepted(p: argparse.ArgumentParser) -> None:
    """Flags refrt honours by doing what docker's default does, or that only the CLI handles."""
    p.add_argument("--label-file", action="append", default=[])
    p.add_argument("--cidfile", default="")
    p.add_argument("--pull", default="missing", choices=["missing", "never"])
    p.add_argument("--disable-content-trust", action="store_true", default=True)
    p.add_argument("--platform", default="")
    p.add_argument("--no-healthcheck", action="store_true")
    p.add_argument("--health-cmd", default=None)
    p.add_argument("--health-interval", default="")
    p.add_argument("--health-retries", default="")
    p.add_argument("--health-start-period", default="")
    p.add_argument("--health-timeout", default="")
    p.add_argument("--log-driver", default="json-file", choices=["json-file"])
    p.add_argument("--isolation", default="default", choices=["default"])



def describe(p: argparse.ArgumentParser) -> None:
    """Give every option of ``p`` without help its text from :data:`HELP`."""
    for action in p._actions:
        if action.help is None and action.dest in HELP:
            action.help = HELP[action.dest]




def add_create_flags(p: argparse.ArgumentParser) -> None:
    """Register every flag of docker's ``create``/``run`` on ``p``, with the image and command after them."""
    p.add_argument("--name", default="")
    p.add_argument("-e", "--env", action="append", default=[])
    p.add_argument("--env-file", action="append", default=[])
    p.add_argument("-w", "--workdir", default="")
    p.add_argument("-u", "--user", default="")
    p.add_argument("-h", "--hostname", default="")
    p.add_argument("-i", "--interactive", action="store_true")
    p.add_argument("-t", "--tty", action="store_true")
    p.add_argument("--entrypoint", default=None)
    p.add_argument("--read-only", action="store_true")
    p.add_argument("-l", "--label", action="append", default=[])
    p.add_argument("--rm", action="store_true")
    p.add_argument("--init", action="store_true")
    p.add_argument("--uts", default="")
    p.add_argument("--cpu-period", type=int, default=0)
    p.add_argument("--cpu-quota", type=int, default=0)
    p.add_argument("--device", action="append", default=[])
    p.add_argument("--link", action="append", default=[])
    p.add_argument("--oom-kill-disable", action="store_true")
    p.add_argument("--pid", default="")
    p.add_argument("--ipc", default="")
    p.add_argument("--group-add", action="append", default=[])
    p.add_argument("--shm-size", default="")
    p.add_argument("--sysctl", action="append", default=[])
    p.add_argument("--ulimit", action="append", default=[], help="ulimit options (NAME=SOFT[:HARD], e.g. nofile=1024)")
    p.add_argument("--stop-signal", default="", help="signal to stop the container (default SIGTERM)")
    p.add_argument("--stop-timeout", type=int, default=None, help="timeout (in seconds) to stop a container")
    p.add_argument("--restart", default="no",
                   help="restart policy when the container exits: no, always, unless-stopped, on-failure[:N]")
    p.add_argument("--userns", default="host")
    p.add_argument("--privileged", action="store_true")
    p.add_argument("--cap-add", action="append", default=[])
    p.add_argument("--cap-drop", action="append", default=[])
    p.add_argument("--security-opt", action="append", default=[])
    p.add_argument("-m", "--memory", default="")
    p.add_argument("--memory-swap", default="")
    p.add_argument("--cpus", default="")
    p.add_argument("-c", "--cpu-shares", type=int, default=0)
    p.add_argument("--cpuset-cpus", default="")
    p.add_argument("--pids-limit", type=int, default=0)
    p.add_argument("--blkio-weight", type=int, default=0)
    p.add_argument("-v", "--volume", action="append", default=[])
    p.add_argument("--mount", action="append", default=[])
    p.add_argument("--tmpfs", action="append", default=[])
    p.add_argument("--volumes-from", action="append", default=[])
    p.add_argument("--network", "--net", default="")
    p.add_argument("--network-alias", "--net-alias", action="append", default=[])
    p.add_argument("-p", "--publish", action="append", default=[])
    p.add_argument("-P", "--publish-all", action="store_true")
    p.add_argument("--expose", action="append", default=[])
    p.add_argument("--dns", action="append", default=[])
    p.add_argument("--add-host", action="append", default=[])
    add_accepted(p)
    add_refused(p)
    describe(p)
    p.add_argument("image", help="the image to run")
    p.add_argument("command", nargs=argparse.REMAINDER, help="the command and its arguments")

