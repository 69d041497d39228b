"""The docker driver: Debian's docker.io 20.10, with a dockerd of the run's own, started and stopped by the driver.

dockerd gets its own ``--data-root``, ``--exec-root``, ``--pidfile`` and unix socket, so it never meets a
system docker (or another run's), and its own bridge (``--bridge``, a name and /24 derived from the run id)
instead of docker0, so two runs never fight over 172.17.0.1. The client is ``/usr/bin/docker`` (Debian's 20.10,
matching the daemon) named explicitly: ``/usr/local/bin/docker`` on this machine is a newer, different client.
``close`` stops dockerd by its pidfile and removes what it leaves: the bridge, its DOCKER* iptables chains (only
when no other dockerd runs), empty ``docker`` cgroup directories and the run's directories.
"""

from __future__ import annotations

import hashlib
import shlex
import time
from typing import ClassVar

from conformance.drivers.base import RuntimeDriver, register_driver
from conformance.drivers.dockerlike import DockerLikeDriver
from conformance.drivers.refrt import CLI_FEATURES
from conformance.errors import DriverError

CLIENT = "/usr/bin/docker"
DAEMON = "dockerd"
SESSION_BASE = "/var/tmp/conformance/docker"
START_TIMEOUT = 60.0
DOCKER_CHAINS = {"filter": ("DOCKER", "DOCKER-ISOLATION-STAGE-1", "DOCKER-ISOLATION-STAGE-2", "DOCKER-USER"),
                 "nat": ("DOCKER",)}


@register_driver
class DockerDriver(DockerLikeDriver):
    name = "docker"
    binary = CLIENT
    #: ``--runtime docker:unix:///path/api.sock``: an Engine API socket served by someone else (refrt's daemon,
    #: another dockerd). The driver then neither starts nor stops a daemon, and takes the server's features.
    external_socket: ClassVar[str] = ""

    @classmethod
    def parametrize(cls, argument: str) -> type[RuntimeDriver]:
        if not argument.startswith("unix:///"):
            raise DriverError(f"docker:{argument}: the argument must be an Engine API socket, unix:///path")
        return type("DockerDriver_socket", (cls,), {"external_socket": argument.removeprefix("unix://"),
                                                     "name": f"docker:{argument}"})

    @property
    def _tag(self) -> str:
        return hashlib.sha256(self.run_id.encode()).hexdigest()[:8]

    @property
    def session(self) -> str:
        return f"{SESSION_BASE}/{self._tag}"

    @property
    def exec_root(self) -> str:
        # containerd's socket lives under exec-root: keep the path short (unix sockets allow 108 bytes).
        return f"/run/cfdk-{self._tag}"

    @property
    def socket(self) -> str:
        return self.external_socket or f"{self.exec_root}/docker.sock"

    @property
    def bridge(self) -> str:
        return f"cfdk{self._tag[:6]}"

    @property
    def subnet_octet(self) -> int:
        return 16 + int(self._tag, 16) % 200

    @property
    def pidfile(self) -> str:
        return f"{self.exec_root}/dockerd.pid"

    def base_argv(self) -> list[str]:
        return [CLIENT, "-H", f"unix://{self.socket}"]

    def prepare(self) -> None:
        self.require_binary()
        if self.external_socket:
            if self.cli(["version", "--format", "{{.Server.Version}}"], timeout=30).exit_status != 0:
                raise DriverError(f"docker: nothing answers the Engine API on {self.external_socket}")
            self.ensure_busybox()
            return
        if self.target.run(f"command -v {DAEMON}", timeout=30).exit_status != 0:
            raise DriverError(f"docker: {DAEMON} is not installed on target {self.target.name} (Debian docker.io)")
        self.create_bridge()
        self.start_daemon()
        self.ensure_busybox()

    def create_bridge(self) -> None:
        br, octet = self.bridge, self.subnet_octet
        script = (f"ip link show {br} >/dev/null 2>&1 || {{ ip link add {br} type bridge && "
                  f"ip addr add 10.{octet}.77.1/24 dev {br} && ip link set {br} up; }}")
        result = self.target.run(script, timeout=30)
        if result.exit_status != 0:
            raise DriverError(f"docker: cannot create bridge {br}: {result.stderr.strip()}")

    def daemon_command(self) -> str:
        argv = [
            DAEMON, "--data-root", f"{self.session}/data", "--exec-root", self.exec_root,
            "--pidfile", self.pidfile, "-H", f"unix://{self.socket}", "--bridge", self.bridge,
            "--default-ulimit", "nofile=20000:20000", "--default-ulimit", "nproc=32768:32768",
            "--log-level", "warn",
        ]
        log = f"{self.session}/dockerd.log"
        return (f"mkdir -p {shlex.quote(self.session)} {shlex.quote(self.exec_root)} && "
                f"setsid {shlex.join(argv)} >{shlex.quote(log)} 2>&1 </dev/null & echo started")

    def start_daemon(self) -> None:
        self.target.run(self.daemon_command(), timeout=30)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.cli(["version", "--format", "{{.Server.Version}}"], timeout=30).exit_status == 0:
                return
            time.sleep(0.3)
        tail = self.target.run(f"tail -n 20 {shlex.quote(self.session)}/dockerd.log", timeout=30).stdout
        self.close()
        raise DriverError(f"docker: dockerd did not answer on {self.socket} within {START_TIMEOUT:.0f}s: {tail}")

    def version(self) -> str:
        result = self.cli(["version", "--format", "{{.Server.Version}}"], timeout=60)
        return result.stdout.strip() if result.exit_status == 0 and result.stdout.strip() else "unknown"

    def features(self) -> dict[str, bool]:
        if self.external_socket and self.cli(["version", "--format", "{{.Server.Platform.Name}}"],
                                             timeout=30).stdout.strip() == "refrt":
            from conformance.drivers.refrt import RefrtDriver

            return RefrtDriver(self.target, self.run_id).features()  # the docker CLI in front of refrt
        return {
            "runtime.docker": True,
            "runtime.inspect_oom_killed": True,
            "runtime.network_isolation": True,
            "runtime.build.heredoc": False,  # 20.10's classic builder (no BuildKit here) has no heredocs
            "runtime.push_prints_digest": True,
            "runtime.read_only_covers_tmp": True,
            "runtime.seccomp.docker_profile": True,
            "runtime.seccomp.io_uring_refused": False,  # docker < 25 still allows io_uring_* (moby #46762)
            "runtime.seccomp.vsock_refused": False,  # 20.10's profile has no socket-family filter yet
            "runtime.loopback_guard": True,  # docker0 never gets route_localnet (the userland proxy serves 127.0.0.1)
            **dict.fromkeys(CLI_FEATURES, True),  # docker is the reference of suites/cli.yaml
        }

    def stop_daemon(self) -> None:
        pidfile = shlex.quote(self.pidfile)
        self.target.run(
            f"if [ -f {pidfile} ]; then pid=$(cat {pidfile}); kill -TERM $pid 2>/dev/null; "
            f"for i in $(seq 150); do kill -0 $pid 2>/dev/null || break; sleep 0.1; done; "
            f"kill -KILL $pid 2>/dev/null; fi; true",
            timeout=60,
        )

    def remove_leftovers(self) -> None:
        """What dockerd leaves behind: its bridge, mounts under its roots, DOCKER chains, empty cgroup dirs."""
        s, e = shlex.quote(self.session), shlex.quote(self.exec_root)
        chains = " ".join(
            f"iptables -t {table} -F {chain} 2>/dev/null;" for table, names in DOCKER_CHAINS.items() for chain in names
        )
        deletes = " ".join(
            f"iptables -t {table} -X {chain} 2>/dev/null;" for table, names in DOCKER_CHAINS.items() for chain in names
        )
        jumps = (
            "for t in filter nat; do iptables -t $t -S | grep -e '-j DOCKER' | sed 's/^-A/-D/' | "
            "while read -r rule; do eval iptables -t $t $rule; done; done;"
        )
        # docker's per-bridge rules (FORWARD accepts, POSTROUTING masquerade) name our bridge: delete each one.
        bridge_rules = (
            f"for t in filter nat; do iptables -t $t -S | grep -w -e {self.bridge} | sed 's/^-A/-D/' | "
            "while read -r rule; do eval iptables -t $t $rule; done; done;"
        )
        script = (
            f"{bridge_rules} ip link del {self.bridge} 2>/dev/null; "
            f"grep -oE ' ({self.session}|{self.exec_root})/[^ ]*' /proc/mounts | sort -r | xargs -r -n1 umount -l; "
            f"if ! pgrep -x dockerd >/dev/null; then {jumps} {chains} {deletes} "
            "for d in /sys/fs/cgroup/*/docker /sys/fs/cgroup/docker; do "
            "[ -d $d ] && find $d -depth -type d -exec rmdir {} + 2>/dev/null; done; fi; "
            f"rm -rf {s} {e}; true"
        )
        self.target.run(script, timeout=120)

    def leftovers_exist(self) -> bool:
        s, e = shlex.quote(self.session), shlex.quote(self.exec_root)
        return self.target.run(f"test -d {s} || test -d {e}", timeout=30).exit_status == 0

    def reclaim(self) -> dict[str, int]:
        """An interrupted run's dockerd outlives it (it runs in a session of its own): count and stop it too."""
        alive = self.leftovers_exist() and self.target.run(
            f"kill -0 $(cat {shlex.quote(self.pidfile)} 2>/dev/null) 2>/dev/null", timeout=30).exit_status == 0
        removed = super().reclaim()
        if alive:
            removed["dockerd"] = 1
        return removed

    def close(self) -> None:
        if self.external_socket:
            return  # not ours to stop
        try:
            self.stop_daemon()
            self.remove_leftovers()
        except Exception as exc:  # close must not raise
            print(f"conformance: docker close incomplete: {exc}")
