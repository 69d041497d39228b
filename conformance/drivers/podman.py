"""The podman driver: Debian's podman 4.3, offline, in a store of its own for each run.

Why each setting (measured on the development machine, see /work/shared/notes/peers-and-traps.md):
- one ``storage.conf`` (CONTAINERS_STORAGE_CONF) and ``containers.conf`` (CONTAINERS_CONF) per run, with graph
  root, run root, tmp dir, volume path and network config dir all under the run's directory: changing
  ``--root`` between invocations corrupts podman's database, and a private directory keeps runs apart;
- ``default_ulimits`` nofile/nproc: the machine has no CAP_SYS_RESOURCE and caps open files at 20000, so podman's
  default nofile (1048576) fails with "setrlimit RLIMIT_NOFILE: Operation not permitted";
- ``lock_type = "file"``: the default shared-memory locks are one segment for every podman on the host;
- cgroupfs and a file events log: there is no systemd here;
- the OCI runtime: crun 1.8 refuses hybrid cgroups ("cgroups in hybrid mode not supported"), so on a hybrid host
  the driver picks runc and says so in ``features()`` (``runtime.oci.crun`` false); on pure v1/v2 hosts podman
  keeps its default (crun).
"""

from __future__ import annotations

import shlex

from conformance.drivers.base import register_driver
from conformance.drivers.dockerlike import DockerLikeDriver
from conformance.errors import DriverError

SESSION_BASE = "/var/tmp/conformance/podman"
#: Sub-commands that talk to a registry; the suites' registry is plain HTTP on 127.0.0.1.
_REGISTRY_COMMANDS = ("push", "pull", "login", "search")
_HYBRID_TEST = "grep -q ' /sys/fs/cgroup/unified cgroup2 ' /proc/mounts && test -d /sys/fs/cgroup/memory"


def _plain_http(ref: str) -> bool:
    return ref.startswith(("127.", "localhost", "[::1]"))


@register_driver
class PodmanDriver(DockerLikeDriver):
    name = "podman"
    binary = "podman"
    oci_runtime = ""  # "" = podman's default

    @property
    def session(self) -> str:
        return f"{SESSION_BASE}/{self.run_id}"

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

    def choose_oci_runtime(self) -> None:
        hybrid = self.target.run(_HYBRID_TEST, timeout=30).exit_status == 0
        if hybrid:
            if self.target.run("command -v runc", timeout=30).exit_status != 0:
                raise DriverError("podman: hybrid cgroups here and crun refuses them; runc (Debian package runc) "
                                  "is needed instead and is not installed")
            self.oci_runtime = "runc"

    def write_configs(self) -> None:
        q = shlex.quote(self.session)
        for name, text in (("containers.conf", self.containers_conf()), ("storage.conf", self.storage_conf())):
            result = self.target.run(f"mkdir -p {q} && cat > {q}/{name}", stdin=text, timeout=30)
            if result.exit_status != 0:
                raise DriverError(f"podman: cannot write {self.session}/{name}: {result.stderr.strip()}")

    def prepare(self) -> None:
        self.require_binary()
        self.choose_oci_runtime()
        self.write_configs()
        self.ensure_busybox()

    def version(self) -> str:
        result = self.cli(["version", "--format", "{{.Client.Version}}"], timeout=60)
        version = result.stdout.strip() if result.exit_status == 0 else "unknown"
        return f"{version} ({self.oci_runtime or 'default OCI runtime'})"

    def features(self) -> dict[str, bool]:
        return {
            "runtime.podman": True,
            "runtime.oci.crun": self.oci_runtime != "runc",
            # Known differences from docker (podman 4.3 + netavark + buildah 1.28), declared, never patched over:
            "runtime.inspect_oom_killed": False,  # State.OOMKilled stays false after an OOM kill
            "runtime.network_isolation": False,  # user networks reach each other unless created isolate=true
            "runtime.build.heredoc": False,  # no Dockerfile heredocs
            "runtime.push_prints_digest": False,  # push prints no digest without --digestfile
        }

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
