"""The containers part of the Engine API (``/containers/...``), on the same ``runtime.container`` functions the
refrt CLI calls, answering in docker's shapes, status codes and words.

Where refrt differs from dockerd (see also :mod:`runtime.daemon.attach`):
- ``attach`` to a container that already runs goes through its monitor's attach socket; input reaches it only
  when the container was started ``-d -i`` (the stdin of a container started attached belongs to that first
  attach). Without the socket (a monitor of an older refrt) it follows the log, output only.
- ``resize`` of a ``-t`` container goes to the monitor, which holds the pty master (else TIOCSWINSZ through the
  init's stdin, /proc/PID/fd/0); for other containers it is accepted and does nothing, as in docker.
- No detach keys (ctrl-p ctrl-q): the bytes reach the container.
- ``create`` refuses settings refrt has no knob for (``--init``, ``--restart``, ``--device`` ...:
  :func:`runtime.daemon.convert.check_supported`) rather than dropping them.
- Events cover what is done through this daemon (:mod:`runtime.daemon.api_system`).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from typing import Any

from runtime.container import lifecycle, logs
from runtime.container import restart as restart_policy
from runtime.container.state import Container, all_containers, find
from runtime.daemon import Daemon, attach
from runtime.daemon.api_system import events, normalized_filters
from runtime.daemon.http import ApiError, Handler, Request, Response
from runtime.daemon.streams import STDERR, STDOUT, STREAM_IDS, Client, frame, peer_closed
from runtime.errors import ConflictError, NotFoundError, RefrtError
from runtime.sizes import tree_size

RAW_STREAM = "application/vnd.docker.raw-stream"


def container_attributes(c: Container, **extra: str) -> dict[str, str]:
    """docker's event attributes: the image, the name and every label."""
    labels = {**(c.image_config.get("Labels") or {}), **c.spec.labels}
    return {**{str(k): str(v) for k, v in labels.items()}, "image": c.spec.image, "name": c.name, **extra}


def publisher(daemon: Daemon, c: Container) -> Any:
    def publish(action: str, **extra: str) -> None:
        events(daemon).publish("container", action, c.id, container_attributes(c, **extra))

    return publish


def lookup(daemon: Daemon, ref: str) -> Container:
    """The container by id, name or prefix, its state reconciled with the process table."""
    c = find(daemon.paths, ref)
    lifecycle.reconcile(daemon.ctx, c)
    return c


def _signal(value: str | None, default: int) -> int:
    from runtime.container.signals import parse_signal

    return parse_signal(value) if value else default


def _ports(c: Container) -> list[dict[str, Any]]:
    """``ps`` ports: published ones with their host side, exposed ones without."""
    result: list[dict[str, Any]] = []
    published = (c.state.network_settings or {}).get("Ports") or {} if c.state.running else {}
    exposed = set(c.spec.network.exposed) | set((c.image_config.get("ExposedPorts") or {}).keys())
    for port in sorted(set(published) | exposed):
        number, _, proto = port.partition("/")
        bindings = published.get(port) or []
        if not bindings:
            result.append({"PrivatePort": int(number), "Type": proto or "tcp"})
        for b in bindings:
            result.append({"IP": b.get("HostIp") or "0.0.0.0", "PrivatePort": int(number),
                           "PublicPort": int(b.get("HostPort") or 0), "Type": proto or "tcp"})
    return result


def list_entry(c: Container, size: bool) -> dict[str, Any]:
    """One container of ``GET /containers/json``."""
    from runtime.container.inspect import inspect, parse_time, status_text

    data = inspect(c)
    entry: dict[str, Any] = {
        "Id": c.id, "Names": ["/" + c.name], "Image": c.spec.image, "ImageID": c.image_id,
        "Command": " ".join(c.argv), "Created": int(parse_time(c.created)), "Ports": _ports(c),
        "Labels": data["Config"]["Labels"], "State": data["State"]["Status"], "Status": status_text(c),
        "HostConfig": {"NetworkMode": c.spec.network.mode},
        "NetworkSettings": {"Networks": (c.state.network_settings or {}).get("Networks") or {}},
        "Mounts": data["Mounts"],
    }
    if size:
        entry["SizeRw"] = tree_size(str(c.upper))
        entry["SizeRootFs"] = entry["SizeRw"] + sum(tree_size(p) for p in c.lower_dirs)
    return entry


def until_time(value: str) -> float:
    """docker's ``until`` filter: a Unix time, an RFC 3339 time, or a duration before now (``24h``, ``90m``)."""
    import re

    from runtime.daemon.api_system import _when

    match = re.fullmatch(r"(\d+(?:\.\d+)?)(h|m|s)", value.strip())
    if match:
        return time.time() - float(match.group(1)) * {"h": 3600, "m": 60, "s": 1}[match.group(2)]
    when = _when(value)
    if when is None:
        raise ApiError(400, f"invalid until filter: {value!r}")
    return when


def filter_words(request: Request) -> list[str]:
    """docker's JSON filters as the CLI's ``key=value`` words (one matcher for ``refrt ps`` and the API)."""
    return [f"{key}={value}" for key, values in normalized_filters(request).items() for value in values]


def _selected(daemon: Daemon, request: Request, *, everything: bool) -> list[Container]:
    from runtime.container.health import check_filter_values
    from runtime.container.query import matches

    words = filter_words(request)
    try:
        check_filter_values(words)  # even with no container to match, as dockerd
    except RefrtError as exc:
        raise ApiError(400, str(exc)) from None
    chosen = []
    for c in all_containers(daemon.paths):
        if not lifecycle.reconcile(daemon.ctx, c):
            continue  # an --rm container whose monitor died: removed just now
        if words and not matches(c, words):
            continue
        if not everything and not c.state.running and not any(w.startswith(("status=", "exited=")) for w in words):
            continue
        chosen.append(c)
    return chosen


def log_chunks(daemon: Daemon, c: Container, request: Request) -> Any:
    """The log records the request asks for, framed unless the container has a TTY."""
    wanted = {STDOUT: request.flag("stdout"), STDERR: request.flag("stderr")}
    if not any(wanted.values()):
        raise ApiError(400, "Bad parameters: you must choose at least one stream")
    tail_text = request.arg("tail", "all") or "all"
    try:
        tail = None if tail_text == "all" else int(tail_text)
    except ValueError:
        raise ApiError(400, f"invalid value for tail: {tail_text!r}") from None
    since = float(request.arg("since") or 0)
    until = float(request.arg("until") or 0)
    stamps, follow, tty = request.flag("timestamps"), request.flag("follow"), c.spec.tty
    records, offset = logs.read_records(c.log_path, tail)

    connection = request.handler.connection

    def running() -> bool:
        if not c.directory.exists() or peer_closed(connection):
            return False
        lifecycle.reconcile(daemon.ctx, c)
        return c.state.running or (c.state.status == "created" and bool(c.state.monitor_pid))

    def chunks() -> Any:
        from runtime.container.inspect import parse_time

        stream = iter(records)
        if follow and c.log_path.exists():
            stream = _chain(records, logs.follow(c.log_path, offset, running))
        for record in stream:
            sid = STREAM_IDS.get(record.stream, STDOUT)
            if not wanted[sid]:
                continue
            when = parse_time(record.time)
            if (since and when < since) or (until and when > until):
                continue
            data = (record.time.encode() + b" " + record.data) if stamps else record.data
            yield data if tty else frame(sid, data)

    return chunks()


def _chain(first: Any, second: Any) -> Any:
    yield from first
    yield from second


def routes(daemon: Daemon) -> list[tuple[str, str, Handler]]:
    from runtime.container import hooks
    from runtime.daemon import archive, convert
    from runtime.daemon.stats import stats_stream

    # Imported once here rather than in every monitor forked from this process (the network package alone takes
    # ~45 ms to import), and before any request thread exists to hold an import lock across a fork.
    hooks.network_module()
    hooks.volumes_module()

    def list_containers(request: Request) -> Response:
        chosen = _selected(daemon, request, everything=request.flag("all"))
        limit = request.int_arg("limit", -1) or -1
        if limit > 0:
            chosen = chosen[:limit]
        return Response([list_entry(c, request.flag("size")) for c in chosen])

    def create(request: Request) -> Response:
        from runtime.store.overlay import check_depth
        from runtime.store.store import Store

        body = request.json()
        spec = convert.spec_from_body(daemon.ctx, body, request.arg("name", "") or "")
        try:
            image = Store(daemon.paths).resolve(spec.image)
        except NotFoundError:
            ref = spec.image if ":" in spec.image.rsplit("/", 1)[-1] or "@" in spec.image else f"{spec.image}:latest"
            raise ApiError(404, f"No such image: {ref}") from None
        check_depth(len(image.layers))  # dockerd's 500 "max depth exceeded" before anything is created
        c = lifecycle.create(daemon.ctx, spec)
        publisher(daemon, c)("create")
        return Response({"Id": c.id, "Warnings": []}, status=201)

    def inspect_one(request: Request) -> Response:
        from runtime.container.inspect import inspect
        from runtime.container.query import live_network_settings

        c = lookup(daemon, request.params["id"])
        data = inspect(c)
        _api_defaults(data, c)
        live = live_network_settings(daemon.ctx, c)
        if live is not None:
            data["NetworkSettings"] = live
        if request.flag("size"):
            data["SizeRw"] = tree_size(str(c.upper))
            data["SizeRootFs"] = data["SizeRw"] + sum(tree_size(p) for p in c.lower_dirs)
        return Response(data)

    def start(request: Request) -> Response:
        c = lookup(daemon, request.params["id"])
        if c.state.running:
            return Response(status=304)
        attach.start(daemon, c, publisher(daemon, c))
        return Response(status=204)

    def attach_to(request: Request) -> None:
        c = lookup(daemon, request.params["id"])
        stream = request.flag("stream")
        client = Client(request.handler.connection, multiplex=not c.spec.tty, stdin=request.flag("stdin"),
                        stdout=request.flag("stdout"), stderr=request.flag("stderr"), opened=False)
        parked = stream and not c.state.running
        if parked:  # before the client hears the 101: docker's client starts the container right after it
            attach.park(daemon, c, client)
        try:
            request.hijack(RAW_STREAM)
        except BaseException:
            client.opened(ok=False)
            if parked:
                attach.unpark(daemon, c.id, client)
            raise
        client.opened()
        if request.flag("logs"):
            records, _ = logs.read_records(c.log_path)
            for record in records:
                client.send(STREAM_IDS.get(record.stream, STDOUT), record.data)
        if not stream:
            client.finish()
            return None
        publisher(daemon, c)("attach")
        if not parked:
            if not attach.attach_running(c, client):
                _follow_running(daemon, c, client)  # a monitor without an attach socket
            return None
        try:
            while not client.done.wait(1.0):
                if not c.directory.exists():
                    client.finish()
        finally:
            attach.unpark(daemon, c.id, client)
        return None

    def wait(request: Request) -> None:
        condition = request.arg("condition", "not-running") or "not-running"
        if condition not in ("not-running", "next-exit", "removed"):
            raise ApiError(400, f"invalid condition: {condition!r}")
        c = find(daemon.paths, request.params["id"])
        connection = request.handler.connection

        def result() -> Iterator[bytes]:
            # the status line goes out at once: docker's client waits for it before it starts the container
            yield b" "
            result = attach.wait(daemon, c, condition, lambda: not peer_closed(connection))
            if result is None:
                return
            code, error = result
            yield json.dumps({"StatusCode": code, "Error": {"Message": error} if error else None}).encode() + b"\n"

        request.stream(result())

    def get_logs(request: Request) -> None:
        c = find(daemon.paths, request.params["id"])
        request.stream(log_chunks(daemon, c, request), content_type=RAW_STREAM)

    def top(request: Request) -> Response:
        from runtime.cgroups import driver_for_host

        c = lookup(daemon, request.params["id"])
        if not c.state.running:
            raise ApiError(409, f"Container {c.id} is not running")
        pids = driver_for_host().open(c.id).procs()
        ps_args = (request.arg("ps_args") or "-ef").split()
        result = subprocess.run(["ps", *ps_args], capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise ApiError(500, f"ps: {result.stderr.strip()}")
        lines = result.stdout.splitlines()
        titles = lines[0].split() if lines else []
        if "PID" not in titles:
            raise ApiError(500, f"Couldn't find PID field in ps output: {lines[:1]}")
        column = titles.index("PID")
        rows = [line.split(None, len(titles) - 1) for line in lines[1:]]
        wanted = {str(p) for p in pids}
        return Response({"Titles": titles, "Processes": [r for r in rows if len(r) > column and r[column] in wanted]})

    def stats(request: Request) -> Response | None:
        c = lookup(daemon, request.params["id"])
        one_shot = request.flag("one-shot")
        if not request.flag("stream", True) or one_shot:
            return Response(next(stats_stream(c, once=True, one_shot=one_shot)))
        request.stream(json.dumps(s).encode() + b"\n" for s in stats_stream(c, once=False))
        return None

    def stop(request: Request) -> Response:
        c = lookup(daemon, request.params["id"])
        restart_policy.mark_stopped(c.directory)  # before the look: the policy must never undo a stop
        c.reload_state()
        if not c.state.running:
            return Response(status=304)
        timeout = request.int_arg("t", 10)
        lifecycle.stop(daemon.ctx, c, 10 if timeout is None else max(timeout, 0),
                       _signal(c.image_config.get("StopSignal"), signal.SIGTERM))
        publisher(daemon, c)("stop")
        return Response(status=204)

    def kill(request: Request) -> Response:
        c = lookup(daemon, request.params["id"])
        signum = _signal(request.arg("signal"), signal.SIGKILL)
        restart_policy.mark_stopped(c.directory)
        try:
            lifecycle.kill(daemon.ctx, c, signum)
        except ConflictError:
            raise ApiError(409, f"Cannot kill container: {request.params['id']}: Container {c.id} is not running") \
                from None
        publisher(daemon, c)("kill", signal=str(signum))
        return Response(status=204)

    def restart(request: Request) -> Response:
        c = lookup(daemon, request.params["id"])
        timeout = request.int_arg("t", 10)
        restart_policy.mark_stopped(c.directory)  # the new start clears it
        c.reload_state()
        if c.state.running:  # stop returns once the monitor recorded the exit
            lifecycle.stop(daemon.ctx, c, 10 if timeout is None else max(timeout, 0))
        lookup(daemon, c.id)
        attach.start(daemon, c, publisher(daemon, c))
        publisher(daemon, c)("restart")
        return Response(status=204)

    def pause(request: Request) -> Response:
        c = lookup(daemon, request.params["id"])
        lifecycle.pause(daemon.ctx, c, True)
        publisher(daemon, c)("pause")
        return Response(status=204)

    def unpause(request: Request) -> Response:
        c = lookup(daemon, request.params["id"])
        lifecycle.pause(daemon.ctx, c, False)
        publisher(daemon, c)("unpause")
        return Response(status=204)

    def resize(request: Request) -> Response:
        c = lookup(daemon, request.params["id"])
        if not c.state.running:
            raise ApiError(409, f"Container {c.id} is not running")
        if c.spec.tty:
            from runtime.container import attach as monitor_attach

            rows, cols = request.int_arg("h", 0) or 0, request.int_arg("w", 0) or 0
            if (c.directory / monitor_attach.SOCKET_NAME).exists():
                monitor_attach.send_resize(c.directory, rows, cols)  # the monitor holds the pty master
            else:
                set_window(f"/proc/{c.state.pid}/fd/0", rows, cols)
        return Response(status=200, body=b"", content_type="text/plain")

    def rename(request: Request) -> Response:
        c = lookup(daemon, request.params["id"])
        new = request.arg("name") or ""
        if not new:
            raise ApiError(400, "Error when allocating new name: Invalid container name")
        old = c.name
        lifecycle.rename(daemon.ctx, c, new)
        publisher(daemon, c)("rename", oldName="/" + old)
        return Response(status=204)

    def delete(request: Request) -> Response:
        c = lookup(daemon, request.params["id"])
        if request.flag("force"):
            restart_policy.mark_stopped(c.directory)
        lifecycle.remove(daemon.ctx, c, force=request.flag("force"), volumes=request.flag("v"))
        publisher(daemon, c)("destroy")
        return Response(status=204)

    def prune(request: Request) -> Response:
        from runtime.container.inspect import parse_time
        from runtime.container.query import matches

        words = filter_words(request)
        untils = [until_time(w.partition("=")[2]) for w in words if w.startswith("until=")]
        words = [w for w in words if not w.startswith("until=")]
        removed = []
        reclaimed = 0
        for c in all_containers(daemon.paths):
            lifecycle.reconcile(daemon.ctx, c)
            if c.state.running or (words and not matches(c, words)):
                continue
            if any(parse_time(c.created) >= limit for limit in untils):
                continue
            size = tree_size(str(c.upper))
            try:
                lifecycle.remove(daemon.ctx, c)
            except RefrtError:
                continue
            publisher(daemon, c)("destroy")
            removed.append(c.id)
            reclaimed += size
        return Response({"ContainersDeleted": removed or None, "SpaceReclaimed": reclaimed})

    return [
        ("GET", "/containers/json", list_containers),
        ("POST", "/containers/create", create),
        ("POST", "/containers/prune", prune),
        ("GET", "/containers/{id}/json", inspect_one),
        ("POST", "/containers/{id}/start", start),
        ("POST", "/containers/{id}/attach", attach_to),
        ("POST", "/containers/{id}/wait", wait),
        ("GET", "/containers/{id}/logs", get_logs),
        ("GET", "/containers/{id}/top", top),
        ("GET", "/containers/{id}/stats", stats),
        ("POST", "/containers/{id}/stop", stop),
        ("POST", "/containers/{id}/kill", kill),
        ("POST", "/containers/{id}/restart", restart),
        ("POST", "/containers/{id}/pause", pause),
        ("POST", "/containers/{id}/unpause", unpause),
        ("POST", "/containers/{id}/resize", resize),
        ("POST", "/containers/{id}/rename", rename),
        ("DELETE", "/containers/{id}", delete),
        *archive.routes(daemon),
    ]


#: What dockerd sends for settings refrt has no knob for (create refuses other values: runtime.daemon.convert).
_HOST_CONFIG_ZEROS: dict[str, Any] = {
    "LogConfig": {"Type": "json-file", "Config": {}}, "RestartPolicy": {"Name": "no", "MaximumRetryCount": 0},
    "ContainerIDFile": "", "VolumeDriver": "", "CgroupnsMode": "host", "DnsOptions": [], "DnsSearch": [],
    "GroupAdd": None, "IpcMode": "private", "Cgroup": "", "Links": None, "OomScoreAdj": 0, "PidMode": "",
    "UTSMode": "", "ShmSize": 64 << 20, "ConsoleSize": [0, 0], "Isolation": "", "Runtime": "refrt",
    "CgroupParent": "", "BlkioWeightDevice": [], "BlkioDeviceReadBps": None, "BlkioDeviceWriteBps": None,
    "BlkioDeviceReadIOps": None, "BlkioDeviceWriteIOps": None, "CpuPeriod": 0, "CpuQuota": 0,
    "CpuRealtimePeriod": 0, "CpuRealtimeRuntime": 0, "CpusetMems": "", "Devices": [], "DeviceCgroupRules": None,
    "DeviceRequests": None, "KernelMemory": 0, "KernelMemoryTCP": 0, "MemoryReservation": 0,
    "MemorySwappiness": None, "OomKillDisable": False, "Ulimits": None, "CpuCount": 0, "CpuPercent": 0,
    "IOMaximumIOps": 0, "IOMaximumBandwidth": 0, "MaskedPaths": None, "ReadonlyPaths": None,
}


def _api_defaults(data: dict[str, Any], c: Container) -> None:
    """Fields dockerd always sends, which clients index without checking (docker-py reads LogConfig.Type)."""
    host = data.setdefault("HostConfig", {})
    for key, value in _HOST_CONFIG_ZEROS.items():
        host.setdefault(key, value)
    host.setdefault("PublishAllPorts", c.spec.network.publish_all)
    for key, value in (("RestartCount", 0), ("ExecIDs", None), ("AppArmorProfile", ""), ("MountLabel", ""),
                       ("ProcessLabel", "")):
        data.setdefault(key, value)
    config = data.setdefault("Config", {})
    for key, value in (("Domainname", ""), ("OnBuild", None), ("StdinOnce", False),
                       ("AttachStdout", not config.get("Tty", False)),
                       ("AttachStderr", not config.get("Tty", False))):
        config.setdefault(key, value)


def _follow_running(daemon: Daemon, c: Container, client: Client) -> None:
    """``attach`` to a running container: its output from the log, from now until it stops."""
    _, offset = logs.read_records(c.log_path)

    def running() -> bool:
        if client.gone or not c.directory.exists():
            return False
        lifecycle.reconcile(daemon.ctx, c)
        return c.state.running

    try:
        if c.log_path.exists():
            for record in logs.follow(c.log_path, offset, running):
                client.send(STREAM_IDS.get(record.stream, STDOUT), record.data)
    finally:
        client.finish()


def set_window(tty_path: str, rows: int, cols: int) -> None:
    """TIOCSWINSZ on the terminal at ``tty_path`` (a /proc/PID/fd/N link to a pty slave)."""
    try:
        fd = os.open(tty_path, os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError:
        return
    try:
        set_window_fd(fd, rows, cols)
    finally:
        os.close(fd)


def set_window_fd(fd: int, rows: int, cols: int) -> None:
    """TIOCSWINSZ on a terminal descriptor (the kernel then sends SIGWINCH to its foreground process group)."""
    import fcntl
    import struct
    import termios

    if os.isatty(fd):
        fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))

