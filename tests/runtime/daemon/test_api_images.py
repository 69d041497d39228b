"""The Engine API's images, build, registry, networks and volumes parts, spoken to directly over the socket.

Every check runs against refrt's daemon and against a real dockerd (``engine``), so the shapes and statuses
asserted here are docker's, not refrt's idea of them.
"""

from __future__ import annotations

import base64
import gzip
import http.client
import io
import json
import socket
import tarfile
import time
import uuid
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from conformance.services.registry import Registry
from tests.fixtures.registry import TEST_CREDENTIALS

pytestmark = [pytest.mark.peer, pytest.mark.slow]


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str) -> None:
        super().__init__("localhost", timeout=180)
        self.unix_path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(180)
        self.sock.connect(self.unix_path)


def api(host: str, method: str, url: str, body: Any = None, headers: dict[str, str] | None = None
        ) -> tuple[int, bytes]:
    """One request to the Engine API at ``unix://…``: (status, body)."""
    conn = _UnixConnection(host.removeprefix("unix://"))
    data = json.dumps(body).encode() if isinstance(body, (dict, list)) else body
    hdrs = {"Content-Type": "application/json" if isinstance(body, (dict, list)) else "application/x-tar",
            **(headers or {})}
    try:
        conn.request(method, "/v1.41" + url, body=data, headers=hdrs)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def q(value: Any) -> str:
    """A JSON query parameter (docker's filters, buildargs, labels), URL-encoded."""
    return quote(json.dumps(value))


def stream(data: bytes) -> list[dict[str, Any]]:
    return [json.loads(line) for line in data.splitlines() if line.strip()]


def tar_of(files: dict[str, str]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tf:
        for name, text in files.items():
            raw = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(raw)
            info.mode = 0o644
            tf.addfile(info, io.BytesIO(raw))
    return out.getvalue()


def registry_auth(username: str, password: str, server: str) -> str:
    doc = json.dumps({"username": username, "password": password, "serveraddress": server})
    return base64.urlsafe_b64encode(doc.encode()).decode()


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


# ------------------------------------------------------------------------------------------------------- images


def test_images_json_has_dockers_fields(engine: str) -> None:
    status, body = api(engine, "GET", "/images/json")
    assert status == 200
    [busybox] = [i for i in json.loads(body) if "busybox:latest" in (i["RepoTags"] or [])]
    assert {"Containers", "Created", "Id", "Labels", "ParentId", "RepoDigests", "RepoTags", "SharedSize", "Size",
            "VirtualSize"} <= set(busybox)
    assert busybox["Id"].startswith("sha256:") and isinstance(busybox["Created"], int) and busybox["Size"] > 0
    status, body = api(engine, "GET", "/images/json?filters=" + q({"reference": ["busybox"]}))
    assert status == 200 and [i["RepoTags"] for i in json.loads(body)] == [["busybox:latest"]]


def test_inspect_history_and_missing_image(engine: str) -> None:
    status, body = api(engine, "GET", "/images/busybox/json")
    assert status == 200
    data = json.loads(body)
    assert data["Id"].startswith("sha256:") and "busybox:latest" in data["RepoTags"]
    assert data["RootFS"]["Type"] == "layers" and data["Os"] == "linux"
    status, body = api(engine, "GET", "/images/busybox/history")
    assert status == 200
    history = json.loads(body)
    assert history[0]["Id"] == data["Id"] and history[0]["Tags"] == ["busybox:latest"]
    assert {"Id", "Created", "CreatedBy", "Tags", "Size", "Comment"} <= set(history[0])
    missing = unique("nosuch")
    status, body = api(engine, "GET", f"/images/{missing}/json")
    assert status == 404 and f"No such image: {missing}" in json.loads(body)["message"]


def test_tag_then_delete_untags(engine: str) -> None:
    repo = unique("h6tag")
    status, _ = api(engine, "POST", f"/images/busybox/tag?repo={repo}/x&tag=1")
    assert status == 201
    status, body = api(engine, "DELETE", f"/images/{repo}/x:1")
    assert status == 200 and json.loads(body) == [{"Untagged": f"{repo}/x:1"}]
    status, body = api(engine, "DELETE", f"/images/{repo}/x:1")
    assert status == 404


def test_save_then_load_and_import(engine: str) -> None:
    status, archive = api(engine, "GET", "/images/get?names=busybox")
    assert status == 200
    with tarfile.open(fileobj=io.BytesIO(archive)) as tf:
        manifest = json.load(tf.extractfile("manifest.json"))  # type: ignore[arg-type]
    assert manifest[0]["RepoTags"] == ["busybox:latest"]
    status, body = api(engine, "POST", "/images/load?quiet=0", archive)
    assert status == 200
    assert any("Loaded image: busybox:latest" in m.get("stream", "") for m in stream(body))
    repo = unique("h6import")
    status, body = api(engine, "POST", f"/images/create?fromSrc=-&repo={repo}&tag=1&message=hi",
                       tar_of({"hello.txt": "imported\n"}))
    assert status == 200
    [message] = stream(body)
    assert message["status"].startswith("sha256:")
    status, body = api(engine, "GET", f"/images/{repo}:1/json")
    assert status == 200 and json.loads(body)["Comment"] == "hi"
    status, body = api(engine, "DELETE", f"/images/{repo}:1")
    assert status == 200 and {"Deleted": message["status"]} in json.loads(body)


def test_prune_answers_dockers_shape(engine: str) -> None:
    status, body = api(engine, "POST", "/images/prune")
    assert status == 200 and set(json.loads(body)) == {"ImagesDeleted", "SpaceReclaimed"}


# -------------------------------------------------------------------------------------------------------- build


def test_build_streams_legacy_progress_with_args_labels_and_target(engine: str) -> None:
    tag = unique("h6build") + ":1"
    dockerfile = ("FROM busybox AS base\nARG GREETING=none\nRUN echo \"say $GREETING\" > /greeting\n"
                  "FROM base AS final\nLABEL stage=final\n"
                  "FROM busybox AS unused\nRUN exit 9\n")
    query = (f"/build?t={tag}&target=final&buildargs=" + q({"GREETING": "hello"})
             + "&labels=" + q({"built.by": "h6"}))
    status, body = api(engine, "POST", query, tar_of({"Dockerfile": dockerfile}))
    assert status == 200
    messages = stream(body)
    text = "".join(m.get("stream", "") for m in messages)
    assert not [m for m in messages if "error" in m], messages
    # the legacy builder's numbering: stages up to the target, then one LABEL step per label given
    assert "Step 1/6 : FROM busybox AS base" in text and "Step 4/6 : FROM base AS final" in text
    assert "Step 6/6 : LABEL built.by=h6" in text and "exit 9" not in text
    image_id = [m["aux"]["ID"] for m in messages if "aux" in m][-1]  # dockerd also reports each stage's image
    assert f"Successfully built {image_id[7:19]}" in text and f"Successfully tagged {tag}" in text
    status, body = api(engine, "GET", f"/images/{tag}/json")
    labels = json.loads(body)["Config"]["Labels"]
    assert labels == {"stage": "final", "built.by": "h6"}
    api(engine, "DELETE", f"/images/{tag}")


def test_build_failure_is_dockers_error_message(engine: str, request: pytest.FixtureRequest) -> None:
    status, body = api(engine, "POST", "/build?q=1", tar_of({"Dockerfile": "FROM busybox\nRUN exit 3\n"}))
    assert status == 200
    [error] = [m for m in stream(body) if "error" in m]
    assert error["error"] == "The command '/bin/sh -c exit 3' returned a non-zero code: 3"
    assert error["errorDetail"]["code"] == 3
    status, body = api(engine, "POST", "/build", tar_of({"Dockerfile": "FROM busybox\nFOO bar\n"}))
    assert status == 400
    assert json.loads(body)["message"] == "dockerfile parse error line 2: unknown instruction: FOO"
    status, body = api(engine, "POST", "/build", tar_of({"context-only.txt": "x"}))
    assert status == 500 and json.loads(body)["message"] == "Cannot locate specified Dockerfile: Dockerfile"
    if request.node.callspec.params["engine"] == "refrt":  # no unpacked context left in the store's scratch space
        from runtime.paths import Paths
        from runtime.store import Store

        root = Path(engine.removeprefix("unix://")).parent
        assert not list(Store(Paths.resolve(str(root), None)).tmp.glob("build-*"))


def test_build_takes_a_gzip_context_and_a_dockerfile_elsewhere_in_it(engine: str) -> None:
    tag = unique("h6gz") + ":1"
    context = gzip.compress(tar_of({"sub/Build.file": "FROM busybox\nCOPY a.txt /a.txt\n", "a.txt": "gz\n"}))
    status, body = api(engine, "POST", f"/build?t={tag}&dockerfile=sub/Build.file", context)
    assert status == 200 and not [m for m in stream(body) if "error" in m], body
    assert f"Successfully tagged {tag}" in "".join(m.get("stream", "") for m in stream(body))
    api(engine, "DELETE", f"/images/{tag}")


@pytest.mark.parametrize("via", ["absolute", "symlink"])
def test_build_context_cannot_hard_link_host_files(engine: str, via: str) -> None:
    """The daemon is root: a context whose hard link names a host file must not hand that file to COPY."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tf:
        dockerfile = b"FROM busybox\nCOPY leak /leak\n"
        info = tarfile.TarInfo("Dockerfile")
        info.size = len(dockerfile)
        tf.addfile(info, io.BytesIO(dockerfile))
        if via == "symlink":
            up = tarfile.TarInfo("up")
            up.type, up.linkname = tarfile.SYMTYPE, "/etc"
            tf.addfile(up)
        leak = tarfile.TarInfo("leak")
        leak.type, leak.linkname = tarfile.LNKTYPE, "/etc/hostname" if via == "absolute" else "up/hostname"
        tf.addfile(leak)
    status, body = api(engine, "POST", "/build", out.getvalue())
    assert status in (400, 500), body  # dockerd: 500 (its chrooted untar finds no such file); refrt: 400


# ------------------------------------------------------------------------------------------------ registry


def test_auth_push_pull_with_registry_auth_header(engine: str, auth_registry: Registry) -> None:
    host = auth_registry.host
    good = registry_auth(TEST_CREDENTIALS.username, TEST_CREDENTIALS.password, host)
    bad = registry_auth(TEST_CREDENTIALS.username, "wrong", host)
    status, body = api(engine, "POST", "/auth", {"username": TEST_CREDENTIALS.username, "password": "wrong",
                                                  "serveraddress": host})
    # dockerd 20.10 answers 500, later ones 401; both with the registry's refusal in the message
    assert status in (401, 500) and "401 Unauthorized" in json.loads(body)["message"], body
    status, body = api(engine, "POST", "/auth", {"username": TEST_CREDENTIALS.username,
                                                  "password": TEST_CREDENTIALS.password, "serveraddress": host})
    assert status == 200 and json.loads(body)["Status"] == "Login Succeeded"
    repo = f"{host}/h6/api"
    assert api(engine, "POST", f"/images/busybox/tag?repo={repo}&tag=v1")[0] == 201
    status, body = api(engine, "POST", f"/images/{repo}/push?tag=v1", headers={"X-Registry-Auth": bad})
    assert status != 200 or any("error" in m for m in stream(body))
    status, body = api(engine, "POST", f"/images/{repo}/push?tag=v1", headers={"X-Registry-Auth": good})
    assert status == 200
    messages = stream(body)
    assert not [m for m in messages if "error" in m], messages
    [aux] = [m["aux"] for m in messages if "aux" in m]
    assert aux["Tag"] == "v1" and aux["Digest"].startswith("sha256:") and aux["Size"] > 0
    assert f"v1: digest: {aux['Digest']} size: {aux['Size']}" in [m.get("status") for m in messages]
    assert api(engine, "DELETE", f"/images/{repo}:v1")[0] == 200
    status, body = api(engine, "POST", f"/images/create?fromImage={repo}&tag=v1", headers={"X-Registry-Auth": good})
    assert status == 200
    assert f"Digest: {aux['Digest']}" in [m.get("status") for m in stream(body)]
    status, body = api(engine, "POST", f"/images/create?fromImage={repo}&tag=nope", headers={"X-Registry-Auth": good})
    assert status == 404 and "not found" in json.loads(body)["message"]
    status, body = api(engine, "GET", f"/images/{repo}:v1/json")
    assert f"{repo}@{aux['Digest']}" in json.loads(body)["RepoDigests"]
    api(engine, "DELETE", f"/images/{repo}:v1")


# ------------------------------------------------------------------------------------------- networks, volumes


def test_network_create_inspect_duplicate_delete_prune(engine: str) -> None:
    name = unique("h6net")
    status, body = api(engine, "POST", "/networks/create",
                       {"Name": name, "CheckDuplicate": True, "Driver": "bridge", "Labels": {"h6": name},
                        "IPAM": {"Driver": "default", "Config": [{"Subnet": "10.213.7.0/24"}]}})
    assert status == 201, body
    created = json.loads(body)
    assert set(created) == {"Id", "Warning"}
    try:
        status, body = api(engine, "GET", f"/networks/{name}")
        assert status == 200
        data = json.loads(body)
        assert data["Id"] == created["Id"] and data["Driver"] == "bridge" and data["Labels"] == {"h6": name}
        assert data["IPAM"]["Config"][0]["Subnet"] == "10.213.7.0/24"
        status, body = api(engine, "POST", "/networks/create", {"Name": name, "CheckDuplicate": True})
        assert status == 409, body
        listed = json.loads(api(engine, "GET", "/networks?filters=" + q({"name": [name]}))[1])
        assert [n["Name"] for n in listed] == [name]
        status, body = api(engine, "POST", "/networks/prune?filters=" + q({"label": [f"h6={name}"]}))
        assert status == 200 and json.loads(body)["NetworksDeleted"] == [name]
    finally:
        api(engine, "DELETE", f"/networks/{name}")
    status, body = api(engine, "GET", f"/networks/{name}")
    assert status == 404


def test_volume_create_list_inspect_delete_prune(engine: str) -> None:
    name = unique("h6vol")
    status, body = api(engine, "POST", "/volumes/create", {"Name": name, "Labels": {"h6": "1"}})
    assert status == 201
    created = json.loads(body)
    assert created["Name"] == name and created["Driver"] == "local" and created["Labels"] == {"h6": "1"}
    status, body = api(engine, "GET", "/volumes?filters=" + q({"name": [name]}))
    assert status == 200
    listed = json.loads(body)
    assert set(listed) >= {"Volumes", "Warnings"} and [v["Name"] for v in listed["Volumes"]] == [name]
    status, body = api(engine, "GET", f"/volumes/{name}")
    assert status == 200 and json.loads(body)["Mountpoint"] == created["Mountpoint"]
    assert api(engine, "DELETE", f"/volumes/{name}")[0] == 204
    assert api(engine, "DELETE", f"/volumes/{name}")[0] == 404
    other = unique("h6vol")
    api(engine, "POST", "/volumes/create", {"Name": other, "Labels": {"h6prune": other}})
    status, body = api(engine, "POST", "/volumes/prune?filters=" + q({"label": [f"h6prune={other}"]}))
    assert status == 200 and json.loads(body)["VolumesDeleted"] == [other]


def test_image_network_and_volume_actions_are_events(engine: str) -> None:
    start = time.time() - 1
    repo, net, vol = unique("h6ev"), unique("h6evnet"), unique("h6evvol")
    assert api(engine, "POST", f"/images/busybox/tag?repo={repo}&tag=1")[0] == 201
    assert api(engine, "DELETE", f"/images/{repo}:1")[0] == 200
    assert api(engine, "POST", "/networks/create", {"Name": net})[0] == 201
    assert api(engine, "DELETE", f"/networks/{net}")[0] == 204
    assert api(engine, "POST", "/volumes/create", {"Name": vol})[0] == 201
    assert api(engine, "DELETE", f"/volumes/{vol}")[0] == 204
    status, body = api(engine, "GET", f"/events?since={start:.3f}&until={time.time() + 1:.3f}")
    assert status == 200
    seen = {(e["Type"], e["Action"], e["Actor"]["Attributes"].get("name", e["Actor"]["ID"])) for e in stream(body)}
    assert {("image", "tag", f"{repo}:1"), ("network", "create", net), ("network", "destroy", net),
            ("volume", "create", vol), ("volume", "destroy", vol)} <= seen, seen
    assert any(t == "image" and a == "untag" for t, a, _ in seen)


class _BrokenRegistry(BaseHTTPRequestHandler):
    """Answers ``/v2/`` and fails everything else with a 500, as a registry whose storage is down."""

    def _answer(self) -> None:
        body = b"{}" if self.path == "/v2/" else b'{"errors":[{"code":"UNKNOWN","message":"storage is down"}]}'
        self.send_response(200 if self.path == "/v2/" else 500)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = _answer


def test_registry_5xx_is_an_error_status_or_an_in_stream_error(refrt_daemon: str, tiny_server: Any) -> None:
    """refrt only: dockerd retries a 5xx with back-off for long, which a test cannot wait for."""
    host = tiny_server(_BrokenRegistry).host
    status, body = api(refrt_daemon, "POST", f"/images/create?fromImage={host}/h6/broken&tag=1")
    assert status == 500 and "storage is down" in json.loads(body)["message"]
    assert api(refrt_daemon, "POST", f"/images/busybox/tag?repo={host}/h6/broken&tag=1")[0] == 201
    try:
        status, body = api(refrt_daemon, "POST", f"/images/{host}/h6/broken/push?tag=1")
        assert status == 200
        messages = stream(body)
        assert messages[0] == {"status": f"The push refers to repository [{host}/h6/broken]"}
        assert "500" in messages[-1]["error"] and messages[-1]["errorDetail"]["message"] == messages[-1]["error"]
    finally:
        api(refrt_daemon, "DELETE", f"/images/{host}/h6/broken:1")


def test_each_engine_pulls_the_multi_layer_image_the_other_built_and_pushed(
        refrt_daemon: str, dockerd: str, registry: Registry) -> None:
    """Interop through a real registry, both ways: the pulling engine has none of the two RUN layers' blobs (the
    other engine compressed them), so it downloads them (in parallel in refrt) and reports each one."""
    anonymous = {"X-Registry-Auth": registry_auth("", "", registry.host)}
    for builder, puller in ((dockerd, refrt_daemon), (refrt_daemon, dockerd)):
        tag = unique("h6layers")
        dockerfile = f"FROM busybox\nRUN echo {tag} > /one\nRUN echo two > /two\n"
        status, body = api(builder, "POST", f"/build?t={tag}:1&q=1", tar_of({"Dockerfile": dockerfile}))
        assert status == 200 and not [m for m in stream(body) if "error" in m], body
        repo = f"{registry.host}/h6/{tag}"
        assert api(builder, "POST", f"/images/{tag}:1/tag?repo={repo}&tag=1")[0] == 201
        status, body = api(builder, "POST", f"/images/{repo}/push?tag=1", headers=anonymous)
        assert status == 200 and not [m for m in stream(body) if "error" in m], body
        status, body = api(puller, "POST", f"/images/create?fromImage={repo}&tag=1", headers=anonymous)
        assert status == 200
        messages = stream(body)
        assert not [m for m in messages if "error" in m], messages
        completed = {m["id"] for m in messages if m.get("status") == "Pull complete"}
        assert len(completed) >= 2 and all(len(i) == 12 for i in completed), messages
        layers = [json.loads(api(e, "GET", f"/images/{ref}/json")[1])["RootFS"]["Layers"]
                  for e, ref in ((builder, f"{tag}:1"), (puller, f"{repo}:1"))]
        assert len(layers[0]) == 3 and layers[0] == layers[1]  # the same diff_ids on both sides
        for engine, ref in ((builder, f"{tag}:1"), (builder, f"{repo}:1"), (puller, f"{repo}:1")):
            api(engine, "DELETE", f"/images/{ref}")


def test_token_registry_login_and_push(engine: str, token_registry: Registry) -> None:
    """The Docker Hub flow (Bearer tokens from a token server) with the credentials the client sends."""
    host = token_registry.host
    credentials = {"username": TEST_CREDENTIALS.username, "password": TEST_CREDENTIALS.password,
                   "serveraddress": host}
    status, body = api(engine, "POST", "/auth", credentials)
    assert status == 200 and json.loads(body)["Status"] == "Login Succeeded", body
    repo = f"{host}/h6/token"
    assert api(engine, "POST", f"/images/busybox/tag?repo={repo}&tag=1")[0] == 201
    try:
        good = {"X-Registry-Auth": registry_auth(TEST_CREDENTIALS.username, TEST_CREDENTIALS.password, host)}
        status, body = api(engine, "POST", f"/images/{repo}/push?tag=1", headers=good)
        assert status == 200 and [m for m in stream(body) if "aux" in m], body
        status, body = api(engine, "POST", f"/images/create?fromImage={repo}&tag=1", headers=good)
        assert status == 200 and any(m.get("status", "").startswith("Digest: ") for m in stream(body)), body
    finally:
        api(engine, "DELETE", f"/images/{repo}:1")
