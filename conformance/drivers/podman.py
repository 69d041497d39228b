"""The podman driver: Debian's podman 4.3, offline, in a store of its own for each run.

Why each setting (measured on the development machine, see /work/shared/notes/peers-and-traps.md):
- one ``storage.conf`` (CONTAINERS_STORAGE_CONF) and ``containers.conf`` (CONTAINERS_CONF) per run, with graph
  root, run root, tmp dir, volume path and network config dir all under the run's directory: changing
  ``--root`` between invocations corrupts podman's database, and a private directory keeps runs apart;
- ``default_ulimits`` nofile/nproc: the machine has no CAP_SYS_RESOURCE and caps open files at 20000, so podman's
  default nofile (1048576) fails with "setrlimit RLIMIT_NOFILE: Operation not permitted";
- ``lock_type = "file"``: the default shared-memory locks are one segment for every podman on the host;
- cgroupfs and a file events log: there is no systemd here;
- the OCI runtime: podman's default, crun, unless ``--runtime podman:runc``. crun 1.8 refuses hybrid cgroups
  ("cgroups in hybrid mode not supported, drop all controllers from cgroupv2"), so on a hybrid host the driver
  registers a wrapper that runs crun in a private mount namespace where /sys/fs/cgroup/unified is unmounted
  (the v1 limits still apply); without crun it falls back to runc. ``version()`` and ``features()``
  (``runtime.oci.crun``) say which one ran.
"""

from __future__ import annotations

import hashlib
import shlex
from typing import ClassVar

from conformance.drivers.base import RuntimeDriver, register_driver
from conformance.drivers.dockerlike import DockerLikeDriver
from conformance.errors import DriverError

#: Short on purpose: conmon's sockets and exit files live under tmp_dir, and with a tmp_dir path of ~45 characters
#: or more every ``podman run`` stalls 20 s ("Exceeded conmon timeout waiting for container to exit").
SESSION_BASE = "/var/tmp/cfpm"
#: Sub-commands that talk to a registry; the suites' registry is plain HTTP on 127.0.0.1.
_REGISTRY_COMMANDS = ("push", "pull", "login", "search")
_HYBRID_TEST = "grep -q ' /sys/fs/cgroup/unified cgroup2 ' /proc/mounts && test -d /sys/fs/cgroup/memory"
OCI_RUNTIMES = ("crun", "runc")
#: crun where the hybrid layout's cgroup2 mount is gone; podman passes the OCI runtime's arguments through.
CRUN_HYBRID_WRAPPER = """#!/bin/sh
# Written by conformance's podman driver: crun 1.8 refuses hybrid cgroups, so run it in a private mount
# namespace without the (controller-less) cgroup2 mount at /sys/fs/cgroup/unified.
exec unshare --mount sh -c 'umount /sys/fs/cgroup/unified 2>/dev/null; exec crun "$@"' crun "$@"
"""


def _plain_http(ref: str) -> bool:
    return ref.startswith(("127.", "localhost", "[::1]"))


@register_driver
class PodmanDriver(DockerLikeDriver):
    name = "podman"
    binary = "podman"
    #: "crun", "runc" or "" (crun when installed, else runc); set with ``--runtime podman:<oci>``.
    oci_choice: ClassVar[str] = ""
    oci_runtime = ""  # what containers.conf names: crun, runc or crunhybrid
    oci_note = ""

    @classmethod
    def parametrize(cls, argument: str) -> type[RuntimeDriver]:
        if argument not in OCI_RUNTIMES:
            raise DriverError(f"podman:{argument}: the OCI runtime must be one of {', '.join(OCI_RUNTIMES)}")
        return type(f"PodmanDriver_{argument}", (cls,), {"oci_choice": argument, "name": f"podman:{argument}"})

    @property
    def session(self) -> str:
        return f"{SESSION_BASE}/{hashlib.sha256(self.run_id.encode()).hexdigest()[:8]}"

    def base_argv(self) -> list[str]:
        return ["env", f"CONTAINERS_CONF={self.session}/containers.conf",
                f"CONTAINERS_STORAGE_CONF={self.session}/storage.conf", self.binary]

    def translate(self, args: list[str]) -> list[str]:
        """podman needs ``--tls-verify=false`` to talk to a plain-HTTP registry (docker trusts 127.0.0.0/8)."""
        if args and args[0] in _REGISTRY_COMMANDS and any(_plain_http(a) for a in args[1:]):
            return [args[0], "--tls-verify=false", *args[1:]]
        if args[:2] == ["image", "push"] and any(_plain_http(a) for a in args[2:]):
            return ["image", "push", "--tls-verify=false", *args[2:]]
        return args

    def force_remove_args(self) -> list[str]:
        # podman 4.3's rm -f first stops with a 10 s grace period; docker's kills at once.
        return ["rm", "-f", "-v", "--time", "0"]

    def containers_conf(self) -> str:
        s = self.session
        runtime = f'runtime = "{self.oci_runtime}"\n' if self.oci_runtime else ""
        if self.oci_runtime == "crunhybrid":
            runtime += f'[engine.runtimes]\ncrunhybrid = ["{s}/crun-hybrid"]\n'
        return (
            "[containers]\n"
            'default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]\n'
            "[engine]\n"
            'cgroup_manager = "cgroupfs"\n'
            'events_logger = "file"\n'
            f'events_logfile_path = "{s}/events.log"\n'
            f'tmp_dir = "{s}/tmp"\n'
            f'volume_path = "{s}/volumes"\n'
            f'static_dir = "{s}/root/libpod"\n'
            'lock_type = "file"\n'
            f"{runtime}"
            "[network]\n"
            f'network_config_dir = "{s}/networks"\n'
        )

    def storage_conf(self) -> str:
        return f'[storage]\ndriver = "overlay"\ngraphroot = "{self.session}/root"\nrunroot = "{self.session}/runroot"\n'

    def _installed(self, program: str) -> bool:
        return self.target.run(f"command -v {program}", timeout=30).exit_status == 0

    def choose_oci_runtime(self) -> None:
        want = self.oci_choice or ("crun" if self._installed("crun") else "runc")
        if not self._installed(want):
            raise DriverError(f"podman: OCI runtime {want} is not installed on target {self.target.name}")
        hybrid = self.target.run(_HYBRID_TEST, timeout=30).exit_status == 0
        if want == "crun" and hybrid:
            self.oci_runtime = "crunhybrid"
            self.oci_note = "crun, without /sys/fs/cgroup/unified"
        else:
            self.oci_runtime, self.oci_note = want, want

    def write_configs(self) -> None:
        q = shlex.quote(self.session)
        files = [("containers.conf", self.containers_conf()), ("storage.conf", self.storage_conf())]
        if self.oci_runtime == "crunhybrid":
            files.append(("crun-hybrid", CRUN_HYBRID_WRAPPER))
        for name, text in files:
            result = self.target.run(f"mkdir -p {q} && cat > {q}/{name}", stdin=text, timeout=30)
            if result.exit_status != 0:
                raise DriverError(f"podman: cannot write {self.session}/{name}: {result.stderr.strip()}")
        self.target.run(f"chmod 755 {q}/crun-hybrid 2>/dev/null; true", timeout=30)

    def prepare(self) -> None:
        self.require_binary()
        self.choose_oci_runtime()
        self.write_configs()
        self.ensure_busybox()

    def version(self) -> str:
        result = self.cli(["version", "--format", "{{.Client.Version}}"], timeout=60)
        version = result.stdout.strip() if result.exit_status == 0 else "unknown"
        return f"{version} ({self.oci_note or 'default OCI runtime'})"

    def features(self) -> dict[str, bool]:
        return {
            "runtime.podman": True,
            "runtime.oci.crun": self.oci_runtime in ("crun", "crunhybrid"),
            # Known differences from docker (podman 4.3 + netavark + buildah 1.28), declared, never patched over:
            "runtime.inspect_oom_killed": False,  # State.OOMKilled stays false after an OOM kill
            "runtime.network_isolation": False,  # user networks reach each other unless created isolate=true
            "runtime.build.heredoc": False,  # no Dockerfile heredocs
            "runtime.push_prints_digest": False,  # push prints no digest without --digestfile
            "runtime.read_only_covers_tmp": False,  # --read-only keeps a writable tmpfs on /tmp
            # containers-common's seccomp.json, not docker's: refused calls fail with ENOSYS (not EPERM); unshare,
            # clone namespace flags, clone3, keyctl and AF_VSOCK sockets are allowed (root's user keyring is then
            # readable from a container)
            "runtime.seccomp.docker_profile": False,
            "runtime.seccomp.io_uring_refused": True,
            "runtime.seccomp.vsock_refused": False,
            # netavark 1.4 turns route_localnet on for its bridge once a port is published on 127.0.0.1 and adds
            # no drop rule: from then on a container's hand-made packets reach the host's loopback
            "runtime.loopback_guard": False,
            # podman 4.3 runs health checks from systemd timers; with no systemd (PID 1 here) none ever runs: the
            # status stays "starting" ("unable to get systemd connection to add healthchecks")
            "runtime.health_checks": False,
            # suites/cli.yaml, podman 4.3's CLI: its own error words and exit 125 where docker's CLI exits 1 (rm,
            # inspect template errors, cp, --cidfile); table headers pass through template functions ("status");
            # -it without a terminal only warns; attach exits 0 whatever the container's code; commit prints
            # the bare image id, without "sha256:"
            "runtime.cli.docker_error_messages": False,
            "runtime.cli.table_header_functions": False,
            "runtime.cli.tty_refusal": False,
            "runtime.cli.attach_exit_code": False,
            "runtime.cli.commit_prints_digest": False,
            "runtime.cli.ulimit": False,  # any --ulimit: crun re-applies the conf's nproc, EPERM here (exit 126)
            "runtime.cli.docker_events": False,  # events: its own message (no .Actor.Attributes); nothing shown
            "runtime.cli.exec_exit_codes": False,  # exec: missing command 127 (docker: 126), stopped container 255 (1)
        }

    def leftovers_exist(self) -> bool:
        return self.target.run(f"test -f {shlex.quote(self.session)}/containers.conf", timeout=30).exit_status == 0

    def close(self) -> None:
        """Drop the run's whole store (``system reset`` unmounts what podman mounted), then its directory."""
        try:
            self.cli(["system", "reset", "--force"], timeout=300)
            q = shlex.quote(self.session)
            self.target.run(
                f"grep -o ' {self.session}/[^ ]*' /proc/mounts | sort -r | xargs -r -n1 umount -l; rm -rf {q}; "
                # empty cgroup parents podman (cgroupfs manager) leaves; rmdir refuses populated ones
                "for d in /sys/fs/cgroup/*/libpod_parent /sys/fs/cgroup/libpod_parent; do "
                "[ -d $d ] && find $d -depth -type d -exec rmdir {} + 2>/dev/null; done; true",
                timeout=120,
            )
        except Exception as exc:  # close must not raise
            print(f"conformance: podman close incomplete: {exc}")
