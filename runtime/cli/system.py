"""``refrt info`` and ``refrt version``: what this host and this refrt offer, in docker's layout (the data, shared
with the Engine API's ``/info`` and ``/version``, is :mod:`runtime.sysinfo`)."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING, Any

from runtime.errors import UsageError
from runtime.sysinfo import info_data, version_data

if TYPE_CHECKING:
    from runtime.cli import Context

def cmd_info(args: argparse.Namespace, ctx: Context) -> int:
    from runtime.cli.format import render

    data = info_data(ctx)
    if args.format:
        print(render(args.format, data))
        return 0
    print(f"""Server:
 Containers: {data['Containers']}
  Running: {data['ContainersRunning']}
  Paused: 0
  Stopped: {data['ContainersStopped']}
 Images: {data['Images']}
 Server Version: {data['ServerVersion']}
 Storage Driver: {data['Driver']}
 Cgroup Driver: {data['CgroupDriver']}
 Cgroup Version: {data['CgroupVersion']}
 Default Runtime: refrt
 Security Options:
  seccomp
   Profile: default
 Kernel Version: {data['KernelVersion']}
 Operating System: {data['OperatingSystem']}
 OSType: linux
 Architecture: {data['Architecture']}
 CPUs: {data['NCPU']}
 Total Memory: {data['MemTotal'] / (1 << 30):.3g}GiB
 Name: {data['Name']}
 Docker Root Dir: {data['DockerRootDir']}""")
    return 0


def cmd_version(args: argparse.Namespace, ctx: Context) -> int:
    from runtime.cli.format import render

    data = version_data()
    if args.format:
        text = render(args.format, data) if args.format != "json" else json.dumps(data)
        print(text)
        return 0
    for part in ("Client", "Server"):
        d = data[part]
        print(f"{part}: refrt\n Version: {d['Version']}\n API version: {d['ApiVersion']}\n"
              f" Python: {d['GoVersion']}\n OS/Arch: {d['Os']}/{d['Arch']}")
    return 0


def cmd_daemon(args: argparse.Namespace, ctx: Context) -> int:
    from runtime.daemon.server import serve

    if args.idle_timeout < 0:
        raise UsageError("--idle-timeout must be 0 (never) or a number of seconds")
    return serve(ctx, args.host or getattr(args, "client_host", None), verbose=args.debug_requests,
                 idle_timeout=args.idle_timeout, on_demand=args.on_demand, ready_fd=args.ready_fd)


def register(sub: Any) -> None:
    p = sub.add_parser("daemon", help="serve the Docker Engine API for this root (foreground)")
    p.add_argument("-H", "--host", default=None, help="unix://PATH to listen on (default: <state>/refrt.sock)")
    p.add_argument("--debug-requests", action="store_true", help="log every request on stderr")
    p.add_argument("--idle-timeout", type=float, default=0.0, metavar="SECONDS",
                   help="stop after this long without connections (default 0: never)")
    # set by the thin client when it starts a daemon on demand
    p.add_argument("--on-demand", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--ready-fd", type=int, default=None, help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_daemon)
    p = sub.add_parser("info", help="show system-wide information")
    p.add_argument("-f", "--format", default="")
    p.set_defaults(func=cmd_info)
    p = sub.add_parser("version", help="show the refrt version")
    p.add_argument("-f", "--format", default="")
    p.set_defaults(func=cmd_version)
    system = sub.add_parser("system", help="manage refrt")
    system_sub = system.add_subparsers(dest="system_command", metavar="COMMAND")
    p = system_sub.add_parser("info", help="show system-wide information")
    p.add_argument("-f", "--format", default="")
    p.set_defaults(func=cmd_info)
    from runtime.cli.disk import register as register_disk

    register_disk(system_sub)
