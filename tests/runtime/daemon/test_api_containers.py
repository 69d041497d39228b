"""The containers, exec and system API at the HTTP level: docker's shapes, status codes and stream formats, each
checked against refrt's daemon and a real dockerd (``engine``)."""

from __future__ import annotations

import base64
import http.client
import json
import socket
import struct
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from runtime.daemon.streams import EventBus, event_matches, frame

pytestmark = [pytest.mark.peer, pytest.mark.slow]


class _Unix(http.client.HTTPConnection):
    def __init__(self, path: str) -> None:
        super().__init__("localhost", timeout=60)
        self.unix_path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(60)
        self.sock.connect(self.unix_path)


def call(engine: str, method: str, url: str, body: Any = None) -> tuple[int, Any, dict[str, str]]:
    conn = _Unix(engine.removeprefix("unix://"))
    data = json.dumps(body).encode() if body is not None else None
    conn.request(method, "/v1.41" + url, body=data, headers={"Content-Type": "application/json"})
    response = conn.getresponse()
    raw = response.read()
    conn.close()
    try:
        parsed: Any = json.loads(raw) if raw.strip() else None
    except ValueError:
        parsed = raw
    return response.status, parsed, dict(response.getheaders())


def hijack(engine: str, url: str, body: Any = None) -> socket.socket:
    """POST with ``Upgrade: tcp`` as docker's client does; the socket after the 101 answer."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(60)
    sock.connect(engine.removeprefix("unix://"))
    data = json.dumps(body).encode() if body is not None else b""
    sock.sendall(f"POST /v1.41{url} HTTP/1.1\r\nHost: docker\r\nConnection: Upgrade\r\nUpgrade: tcp\r\n"
                 f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n".encode() + data)
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(1)
        assert chunk, head
        head += chunk
    assert head.startswith(b"HTTP/1.1 101"), head
    return sock


def read_frames(sock: socket.socket) -> list[tuple[int, bytes]]:
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    frames = []
    while data:
        stream, size = struct.unpack(">BxxxL", data[:8])
        frames.append((stream, data[8 : 8 + size]))
        data = data[8 + size :]
    return frames


def create(engine: str, **config: Any) -> str:
    status, body, _ = call(engine, "POST", f"/containers/create?name=api-{uuid.uuid4().hex[:8]}",
                           {"Image": "busybox", **config})
    assert status == 201, body
    assert set(body) == {"Id", "Warnings"}
    return str(body["Id"])


def test_ping_version_info(engine: str) -> None:
    status, body, headers = call(engine, "GET", "/_ping")
    assert (status, body) == (200, b"OK") and headers["Api-Version"] == "1.41"
    _, version, _ = call(engine, "GET", "/version")
    assert version["ApiVersion"] == "1.41" and version["Os"] == "linux"
    _, info, _ = call(engine, "GET", "/info")
    assert {"Containers", "Images", "Driver", "KernelVersion", "NCPU", "MemTotal"} <= set(info)


def test_errors_in_docker_words(engine: str) -> None:
    status, body, _ = call(engine, "POST", "/containers/create", {"Image": "no-such-image-cf:1"})
    assert (status, body["message"]) == (404, "No such image: no-such-image-cf:1")
    status, body, _ = call(engine, "GET", "/containers/no-such-container-cf/json")
    assert status == 404 and "No such container: no-such-container-cf" in body["message"]
    cid = create(engine, Cmd=["true"])
    try:
        status, body, _ = call(engine, "POST", f"/containers/{cid}/exec", {"Cmd": ["true"]})
        assert status == 409 and "is not running" in body["message"]
        status, _, _ = call(engine, "POST", f"/containers/{cid}/stop")
        assert status == 304
    finally:
        call(engine, "DELETE", f"/containers/{cid}?force=1")


def test_attach_before_start_multiplexes_and_wait_reports(engine: str) -> None:
    cid = create(engine, Cmd=["sh", "-c", "echo out; echo err >&2; exit 7"], AttachStdout=True, AttachStderr=True)
    try:
        sock = hijack(engine, f"/containers/{cid}/attach?stream=1&stdout=1&stderr=1")
        waited: list[Any] = []
        waiter = threading.Thread(target=lambda: waited.append(
            call(engine, "POST", f"/containers/{cid}/wait?condition=next-exit")))
        waiter.start()
        time.sleep(0.2)
        assert call(engine, "POST", f"/containers/{cid}/start")[0] == 204
        frames = read_frames(sock)
        sock.close()
        assert sorted(frames) == [(1, b"out\n"), (2, b"err\n")]
        waiter.join(60)
        assert waited[0][:2] == (200, {"StatusCode": 7, "Error": None})
        _, body, _ = call(engine, "POST", f"/containers/{cid}/wait")
        assert body["StatusCode"] == 7
        _, body, _ = call(engine, "GET", f"/containers/{cid}/json")
        assert body["State"]["Status"] == "exited" and body["State"]["ExitCode"] == 7
    finally:
        call(engine, "DELETE", f"/containers/{cid}?force=1")


def test_exec_inspect_and_archive(engine: str) -> None:
    cid = create(engine, Cmd=["sleep", "60"])
    try:
        assert call(engine, "POST", f"/containers/{cid}/start")[0] == 204
        status, body, _ = call(engine, "POST", f"/containers/{cid}/exec",
                               {"Cmd": ["sh", "-c", "echo hello > /tmp/f; cat /tmp/f; exit 3"],
                                "AttachStdout": True, "AttachStderr": True})
        assert status == 201
        eid = body["Id"]
        sock = hijack(engine, f"/exec/{eid}/start", {"Detach": False, "Tty": False})
        assert read_frames(sock) == [(1, b"hello\n")]
        sock.close()
        _, info, _ = call(engine, "GET", f"/exec/{eid}/json")
        assert (info["ExitCode"], info["Running"], info["ContainerID"]) == (3, False, cid)
        status, _, headers = call(engine, "HEAD", f"/containers/{cid}/archive?path=/tmp/f")
        assert status == 200
        stat = json.loads(base64.b64decode(headers["X-Docker-Container-Path-Stat"]))
        assert (stat["name"], stat["size"], stat["mode"] & 0o777) == ("f", 6, 0o644)
        status, _, headers = call(engine, "HEAD", f"/containers/{cid}/archive?path=/tmp")
        assert json.loads(base64.b64decode(headers["X-Docker-Container-Path-Stat"]))["mode"] & (1 << 31)
        assert call(engine, "HEAD", f"/containers/{cid}/archive?path=/no/such")[0] == 404
        _, changes, _ = call(engine, "GET", f"/containers/{cid}/changes")
        assert {"Path": "/tmp/f", "Kind": 1} in changes
    finally:
        call(engine, "DELETE", f"/containers/{cid}?force=1")


def test_list_filters_and_stats_shape(engine: str) -> None:
    label = f"api-test-{uuid.uuid4().hex[:8]}"
    cid = create(engine, Cmd=["sleep", "60"], Labels={"cf.test": label})
    try:
        filters = json.dumps({"label": {f"cf.test={label}": True}})
        from urllib.parse import quote

        _, running, _ = call(engine, "GET", f"/containers/json?filters={quote(filters)}")
        assert running == []
        _, every, _ = call(engine, "GET", f"/containers/json?all=1&filters={quote(filters)}")
        assert [c["Id"] for c in every] == [cid] and every[0]["State"] == "created"
        assert every[0]["Labels"]["cf.test"] == label and every[0]["Names"][0].startswith("/api-")
        call(engine, "POST", f"/containers/{cid}/start")
        _, stats, _ = call(engine, "GET", f"/containers/{cid}/stats?stream=false")
        assert stats["memory_stats"]["usage"] > 0 and stats["memory_stats"]["limit"] > 0
        assert stats["cpu_stats"]["system_cpu_usage"] > stats["precpu_stats"]["system_cpu_usage"] > 0
        assert stats["pids_stats"]["current"] == 1
    finally:
        call(engine, "DELETE", f"/containers/{cid}?force=1")


def test_events_follow_a_container(engine: str) -> None:
    since = time.time() - 1
    cid = create(engine, Cmd=["true"])
    call(engine, "POST", f"/containers/{cid}/start")
    call(engine, "POST", f"/containers/{cid}/wait")
    call(engine, "DELETE", f"/containers/{cid}")
    until = time.time() + 1
    filters = json.dumps({"container": [cid]})
    from urllib.parse import quote

    status, body, _ = call(engine, "GET", f"/events?since={since}&until={until}&filters={quote(filters)}")
    assert status == 200
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    actions = [json.loads(line)["Action"] for line in raw.splitlines() if line.strip()]
    assert [a for a in actions if a in ("create", "start", "die", "destroy")] == ["create", "start", "die", "destroy"]


def test_stream_helpers() -> None:
    assert frame(2, b"ab") == b"\x02\x00\x00\x00\x00\x00\x00\x02ab"
    bus = EventBus()
    bus.publish("container", "start", "abc", {"name": "web", "image": "busybox", "tier": "front"})
    _, past = bus.subscribe(0)
    assert past[0]["status"] == "start" and past[0]["from"] == "busybox"
    assert event_matches(past[0], {"container": ["web"], "label": ["tier=front"]})
    assert not event_matches(past[0], {"event": ["die"]})


def test_a_vanished_attach_client_does_not_stop_the_container(engine: str) -> None:
    chatty = "while true; do head -c 20000 /dev/zero | tr '\\0' x; echo; sleep 0.01; done"
    cid = create(engine, Cmd=["sh", "-c", chatty], HostConfig={"NetworkMode": "none"})
    try:
        sock = hijack(engine, f"/containers/{cid}/attach?stream=1&stdout=1&stderr=1")
        assert call(engine, "POST", f"/containers/{cid}/start")[0] == 204
        sock.recv(1000)
        sock.close()  # the client goes away without a word while the container writes much more than a pipe holds

        def logged() -> int:
            return len(call(engine, "GET", f"/containers/{cid}/logs?stdout=1&tail=all")[1])

        before = logged()
        time.sleep(1.5)
        assert logged() > before + 200_000
        _, body, _ = call(engine, "GET", f"/containers/{cid}/json")
        assert body["State"]["Running"] is True
    finally:
        call(engine, "DELETE", f"/containers/{cid}?force=1")


def test_create_body_becomes_the_cli_spec(tmp_path: Any) -> None:
    from runtime.cli import Context
    from runtime.daemon.convert import spec_from_body
    from runtime.errors import UsageError
    from runtime.paths import Paths

    ctx = Context(paths=Paths.resolve(str(tmp_path / "root"), str(tmp_path / "state")), config_dir=None, debug=False)
    body = {
        "Image": "busybox", "Cmd": ["sh", "-c", "true"], "Entrypoint": [""], "Env": ["A=1"], "WorkingDir": "/w",
        "User": "nobody", "Hostname": "h1", "Tty": True, "OpenStdin": True, "Labels": {"k": "v"},
        "Volumes": {"/anon": {}}, "ExposedPorts": {"80/tcp": {}},
        "HostConfig": {"Binds": ["/srv:/srv:ro", "named:/data"], "Tmpfs": {"/run": "size=1m"},
                       "Mounts": [{"Type": "bind", "Source": "/opt", "Target": "/opt", "ReadOnly": True}],
                       "Memory": 64 << 20, "NanoCpus": 500_000_000, "PidsLimit": 50, "NetworkMode": "none",
                       "PortBindings": {"80/tcp": [{"HostIp": "127.0.0.1", "HostPort": "8080"}]},
                       "AutoRemove": True, "ReadonlyRootfs": True, "CapDrop": ["NET_RAW"],
                       "RestartPolicy": {"Name": "no"}, "LogConfig": {"Type": "", "Config": {}}},
    }
    spec = spec_from_body(ctx, body, "named-one")
    assert (spec.name, spec.command, spec.entrypoint, spec.workdir, spec.user) == (
        "named-one", ["sh", "-c", "true"], [], "/w", "nobody")
    assert spec.tty and spec.interactive and spec.auto_remove and spec.read_only and spec.cap_drop == ["NET_RAW"]
    assert (spec.resources.memory, spec.resources.nano_cpus, spec.resources.pids_limit) == (64 << 20, 500_000_000, 50)
    assert spec.network.mode == "none" and spec.network.publish == ["127.0.0.1:8080:80/tcp"]
    assert spec.labels == {"k": "v"} and spec.env == ["A=1"] and spec.restart == "no"
    policy = {"HostConfig": {"RestartPolicy": {"Name": "on-failure", "MaximumRetryCount": 2}}}
    assert spec_from_body(ctx, {"Image": "busybox", **policy}, "").restart == "on-failure:2"
    mounts = {(m.type, m.target, m.source, m.read_only) for m in spec.mounts}
    assert mounts == {("bind", "/srv", "/srv", True), ("volume", "/data", "named", False),
                      ("tmpfs", "/run", "", False), ("bind", "/opt", "/opt", True), ("volume", "/anon", "", False)}
    conflicting = {"HostConfig": {"RestartPolicy": {"Name": "always"}, "AutoRemove": True}}
    for extra in ({"HostConfig": {"Init": True}}, conflicting, {"HostConfig": {"Memory": 1024}},
                  {"Healthcheck": {"Test": ["CMD", "true"], "Interval": 500}}):  # dockerd: under 1ms
        with pytest.raises(UsageError):
            spec_from_body(ctx, {"Image": "busybox", **extra}, "")


def _raw(engine: str, method: str, url: str, body: bytes = b"") -> tuple[int, bytes]:
    conn = _Unix(engine.removeprefix("unix://"))
    conn.request(method, "/v1.41" + url, body=body or None, headers={"Content-Type": "application/x-tar"})
    response = conn.getresponse()
    data = response.read()
    conn.close()
    return response.status, data


def test_files_of_a_stopped_container(engine: str) -> None:
    """cp and export of a container that does not run (refrt mounts its overlay in a private namespace)."""
    import io
    import tarfile

    cid = create(engine, Cmd=["sh", "-c", "echo kept > /kept"], HostConfig={"NetworkMode": "none"})
    try:
        call(engine, "POST", f"/containers/{cid}/start")
        call(engine, "POST", f"/containers/{cid}/wait")
        status, data = _raw(engine, "GET", f"/containers/{cid}/archive?path=/kept")
        assert status == 200
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            member = tar.getmember("kept")
            assert tar.extractfile(member).read() == b"kept\n"  # type: ignore[union-attr]
        upload = io.BytesIO()
        with tarfile.open(fileobj=upload, mode="w") as tar:
            info = tarfile.TarInfo("added")
            info.size = 6
            tar.addfile(info, io.BytesIO(b"added\n"))
        assert _raw(engine, "PUT", f"/containers/{cid}/archive?path=/tmp", upload.getvalue())[0] == 200
        status, data = _raw(engine, "GET", f"/containers/{cid}/export")
        assert status == 200
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            names = set(tar.getnames())
            assert {"bin/busybox", "kept", "tmp/added"} <= names
            assert tar.extractfile("tmp/added").read() == b"added\n"  # type: ignore[union-attr]
        assert cid not in Path("/proc/mounts").read_text()
    finally:
        call(engine, "DELETE", f"/containers/{cid}?force=1")


def test_detached_exec_with_tty_keeps_its_terminal(engine: str) -> None:
    """``docker exec -d -t C sh``: Detach with Tty gives the shell a terminal nobody types on, so it keeps
    running (without Tty it reads EOF and ends); its exit code is recorded when it ends."""
    cid = create(engine, Cmd=["sleep", "60"])
    try:
        assert call(engine, "POST", f"/containers/{cid}/start")[0] == 204
        ids = {}
        for tty in (True, False):
            status, body, _ = call(engine, "POST", f"/containers/{cid}/exec", {"Cmd": ["sh"], "Tty": tty})
            assert status == 201, body
            ids[tty] = body["Id"]
            assert call(engine, "POST", f"/exec/{ids[tty]}/start", {"Detach": True, "Tty": tty})[0] == 200
        time.sleep(1.5)
        with_tty = call(engine, "GET", f"/exec/{ids[True]}/json")[1]
        without = call(engine, "GET", f"/exec/{ids[False]}/json")[1]
        assert (with_tty["Running"], with_tty["ExitCode"]) == (True, None), with_tty
        assert (without["Running"], without["ExitCode"]) == (False, 0), without
        status, body, _ = call(engine, "POST", f"/containers/{cid}/exec",
                               {"Cmd": ["kill", "-HUP", str(_exec_pid_in_container(engine, cid))]})
        assert call(engine, "POST", f"/exec/{body['Id']}/start", {"Detach": True})[0] == 200
        deadline = time.monotonic() + 10
        while call(engine, "GET", f"/exec/{ids[True]}/json")[1]["Running"]:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        assert call(engine, "GET", f"/exec/{ids[True]}/json")[1]["ExitCode"] == 129
    finally:
        call(engine, "DELETE", f"/containers/{cid}?force=1")


def _exec_pid_in_container(engine: str, cid: str) -> int:
    """The pid (in the container) of its one ``sh``, from ``ps`` run through an attached exec."""
    _, body, _ = call(engine, "POST", f"/containers/{cid}/exec",
                      {"Cmd": ["ps", "-o", "pid,args"], "AttachStdout": True})
    sock = hijack(engine, f"/exec/{body['Id']}/start", {"Detach": False, "Tty": False})
    out = b"".join(data for _, data in read_frames(sock)).decode()
    sock.close()
    pids = [int(line.split()[0]) for line in out.splitlines()[1:] if line.split()[1:] == ["sh"]]
    assert len(pids) == 1, out
    return pids[0]
