"""What this host and this refrt offer, in docker's layout: ``refrt info``/``version`` print it, the Engine API's
``/info`` and ``/version`` answer it."""

from __future__ import annotations

import os
import platform
import sys
from typing import Any

import runtime

API_VERSION = "1.41"


def _image_count(ctx: Any) -> int:
    try:
        from runtime.store.store import Store

        return len(Store(ctx.paths).images())
    except Exception:
        return 0


def info_data(ctx: Any) -> dict[str, Any]:
    from runtime.cgroups import driver_for_host
    from runtime.container import lifecycle
    from runtime.container.state import all_containers

    containers = all_containers(ctx.paths)
    for c in containers:
        lifecycle.reconcile(ctx, c)
    running = sum(1 for c in containers if c.state.running)
    driver = driver_for_host()
    uname = os.uname()
    return {
        "ID": "",
        "Containers": len(containers),
        "ContainersRunning": running,
        "ContainersPaused": 0,
        "ContainersStopped": len(containers) - running,
        "Images": _image_count(ctx),
        "Driver": "overlay2",
        "DriverStatus": [["Backing Filesystem", "overlay"], ["Supports d_type", "true"]],
        "CgroupDriver": driver.name,
        "CgroupVersion": str(driver.version),
        "KernelVersion": uname.release,
        "OperatingSystem": _os_name(),
        "OSType": "linux",
        "Architecture": uname.machine,
        "NCPU": os.cpu_count() or 1,
        "MemTotal": os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"),
        "Name": uname.nodename,
        "DockerRootDir": str(ctx.paths.root),
        "ExecRoot": str(ctx.paths.state),
        "ServerVersion": runtime.__version__,
        "SecurityOptions": ["name=seccomp,profile=default"],  # no_new_privs only on request, as docker's default
        "Runtimes": {"refrt": {"path": sys.executable}},
        "DefaultRuntime": "refrt",
    }


def _os_name() -> str:
    try:
        with open("/etc/os-release") as f:
            for line in f:
                if line.startswith("PRETTY_NAME="):
                    return line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    return platform.system()


def version_data() -> dict[str, Any]:
    component = {
        "Version": runtime.__version__,
        "ApiVersion": API_VERSION,
        "GoVersion": f"python{platform.python_version()}",
        "Os": "linux",
        "Arch": {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine()),
        "KernelVersion": os.uname().release,
    }
    return {"Client": dict(component), "Server": dict(component)}
