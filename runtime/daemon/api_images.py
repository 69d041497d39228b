"""The Engine API's images and registry part: list, inspect, history, tag, delete, prune, save/load, import,
pull, push and ``/auth``.

Every handler calls what ``refrt images/rmi/tag/save/load/push/pull`` call (``runtime.store``,
``runtime.store.archive``, ``runtime.registry``); this module only translates to docker's shapes.

Registry credentials come as docker's clients send them: the ``X-Registry-Auth`` header, base64url JSON
``{"username", "password", "serveraddress"}`` (docker's CLI sends ``{}`` when it has no login: anonymous). A
request without the header uses the logins refrt's own ``login`` stored. Pull and push progress is the text the
registry client writes (``out=``), turned line by line into docker's progress messages.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import fnmatch
import json
import re
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from runtime.daemon import Daemon
from runtime.daemon.api_system import events, normalized_filters
from runtime.daemon.http import ApiError, Request, Response
from runtime.daemon.progress import BodyReader, ChunkWriter, Emit, LineSink, produce
from runtime.errors import NotFoundError
from runtime.imageview import history_rows, inspect_image, parse_time
from runtime.store import Image, Store
from runtime.store.errors import ImageNotFound, InvalidReference
from runtime.store.reference import Reference, parse_reference

if TYPE_CHECKING:
    from runtime.registry.auth import Credentials
    from runtime.registry.client import RegistryClient

NONE_TAG = "<none>:<none>"
NONE_DIGEST = "<none>@<none>"
_LAYER_LINE = re.compile(r"^([0-9a-f]{12}): (.*)$")
_PULLING_LINE = re.compile(r"^(\S+): (Pulling from .*)$")
_DIGEST_LINE = re.compile(r"^(\S+): digest: (sha256:[0-9a-f]{64}) size: (\d+)$")


# --------------------------------------------------------------------------------------------------- shared bits


def api_filters(request: Request, allowed: tuple[str, ...]) -> dict[str, list[str]]:
    """Docker's ``filters`` (:func:`runtime.daemon.api_system.normalized_filters`), keys outside ``allowed``
    refused as dockerd refuses them ("invalid filter")."""
    filters = normalized_filters(request)
    for key in filters:
        if key not in allowed:
            raise ApiError(400, f"invalid filter '{key}'")
    return filters


def labels_match(labels: dict[str, str], wanted: list[str]) -> bool:
    """docker's ``label=KEY`` / ``label=KEY=VALUE`` filters: every one must hold."""
    for item in wanted:
        key, eq, value = item.partition("=")
        if key not in labels or (eq and labels[key] != value):
            return False
    return True


def _unix_time(text: str) -> int:
    when = parse_time(text)
    return int(when.timestamp()) if when is not None else 0


def _parse_ref(text: str) -> Reference:
    try:
        return parse_reference(text)
    except InvalidReference as exc:
        raise ApiError(400, str(exc)) from None


def auth_header(request: Request, name: str) -> dict[str, Any] | None:
    """A base64url JSON header (``X-Registry-Auth``, ``X-Registry-Config``); None when absent."""
    header = (request.headers.get(name) or "").strip()
    if not header:
        return None
    try:
        data = json.loads(base64.urlsafe_b64decode(header + "=" * (-len(header) % 4)))
    except (ValueError, binascii.Error):
        raise ApiError(400, f"invalid {name} header: not base64url-encoded JSON") from None
    if not isinstance(data, dict):
        raise ApiError(400, f"invalid {name} header: not a JSON object")
    return data


def registry_credentials(request: Request) -> tuple[bool, Credentials | None]:
    """(header given, credentials) from ``X-Registry-Auth``."""
    data = auth_header(request, "X-Registry-Auth")
    if data is None:
        return False, None
    return True, credentials_from(data)


def credentials_from(data: dict[str, Any]) -> Credentials | None:
    """Docker's AuthConfig (``username``/``password``, or ``auth`` = base64 ``user:password``)."""
    from runtime.registry.auth import Credentials

    username, password = str(data.get("username") or ""), str(data.get("password") or "")
    if not username and data.get("auth"):
        with contextlib.suppress(ValueError, binascii.Error):
            username, _, password = base64.b64decode(str(data["auth"])).decode().partition(":")
    if username and password:
        return Credentials(username, password)
    if data.get("identitytoken") or data.get("registrytoken"):
        raise ApiError(400, "identity and registry tokens are not supported by refrt: log in with a password")
    return None


def registry_client(daemon: Daemon, request: Request, domain: str) -> RegistryClient:
    from runtime.registry.client import RegistryClient
    from runtime.registry.endpoints import client_for, endpoint_for

    given, credentials = registry_credentials(request)
    if given:
        return RegistryClient(endpoint_for(domain), credentials=credentials)
    return client_for(domain, daemon.ctx.config_dir)


@contextlib.contextmanager
def registry_errors() -> Iterator[None]:
    """Registry failures as the status dockerd gives them (401 refused credentials, 403 denied, 404 unknown)."""
    from runtime.registry.errors import AuthenticationError, DeniedError, RegistryError

    try:
        yield
    except AuthenticationError as exc:
        raise ApiError(401, str(exc)) from None
    except DeniedError as exc:
        raise ApiError(403, str(exc)) from None
    except RegistryError as exc:
        if isinstance(exc, NotFoundError):
            raise ApiError(404, str(exc)) from None
        raise ApiError(500, str(exc)) from None


# --------------------------------------------------------------------------------------------------------- shapes


def _familiar_match(pattern: str, ref: str) -> bool:
    """docker's reference filter: the pattern matches the whole familiar reference or its name alone."""
    name = ref.partition("@")[0] if "@" in ref else ref.rpartition(":")[0]
    return fnmatch.fnmatchcase(ref, pattern) or fnmatch.fnmatchcase(name, pattern)


def image_summary(image: Image, patterns: list[str] | None = None) -> dict[str, Any] | None:
    """``GET /images/json`` entry. With ``reference`` patterns only the matching names are shown, and an image
    with none is not listed (as dockerd lists it)."""
    tags, digests = list(image.repo_tags), list(image.repo_digests)
    if patterns:
        tags = [t for t in tags if any(_familiar_match(p, t) for p in patterns)]
        digests = [d for d in digests if any(_familiar_match(p, d) for p in patterns)]
        if not tags and not digests:
            return None
    if not tags and not digests:
        tags, digests = [NONE_TAG], [NONE_DIGEST]
    return {
        "Containers": -1,
        "Created": _unix_time(image.created),
        "Id": image.id,
        "Labels": (image.config.get("config") or {}).get("Labels") or None,
        "ParentId": "",
        "RepoDigests": digests,
        "RepoTags": tags,
        "SharedSize": -1,
        "Size": image.size,
        "VirtualSize": image.size,
    }


def _listed(image: Image, filters: dict[str, list[str]], before: float | None, since: float | None) -> bool:
    dangling = not image.repo_tags
    for value in filters.get("dangling", []):
        if value.lower() in ("true", "1") and not dangling:
            return False
        if value.lower() in ("false", "0") and dangling:
            return False
    labels = (image.config.get("config") or {}).get("Labels") or {}
    if filters.get("label") and not labels_match(labels, filters["label"]):
        return False
    created = _unix_time(image.created)
    if before is not None and created >= before:
        return False
    return not (since is not None and created <= since)


# ------------------------------------------------------------------------------------------------------- handlers


def routes(daemon: Daemon) -> list[tuple[str, str, Callable[[Request], Response | None]]]:
    def store() -> Store:
        return Store(daemon.paths)

    def event(action: str, actor: str, name: str) -> None:
        """dockerd's image events: the actor is the image id (or the reference pulled/pushed)."""
        events(daemon).publish("image", action, actor, {"name": name})

    def list_images(request: Request) -> Response:
        filters = api_filters(request, ("dangling", "reference", "label", "before", "since"))
        if request.arg("filter"):  # the pre-1.25 spelling of reference=
            filters.setdefault("reference", []).append(str(request.arg("filter")))
        st = store()
        bounds = [max((_unix_time(st.resolve(r).created) for r in filters.get(k, [])), default=None)
                  for k in ("before", "since")]
        images = [i for i in st.images() if _listed(i, filters, bounds[0], bounds[1])]
        summaries = [image_summary(i, filters.get("reference")) for i in images]
        return Response([s for s in summaries if s is not None])

    def inspect(request: Request) -> Response:
        data = inspect_image(store(), request.params["name"])
        data.setdefault("Container", "")
        data.setdefault("ContainerConfig", {})
        data.setdefault("VirtualSize", data["Size"])
        return Response(data)

    def history(request: Request) -> Response:
        image = store().resolve(request.params["name"])
        rows = history_rows(image, no_trunc=True, human=False)
        return Response([
            {"Id": row["ID"], "Created": _unix_time(row["CreatedAt"]), "CreatedBy": row["CreatedBy"],
             "Tags": (image.repo_tags or None) if i == 0 else None, "Size": int(row["Size"]),
             "Comment": row["Comment"]}
            for i, row in enumerate(rows)
        ])

    def tag(request: Request) -> Response:
        repo = request.arg("repo") or ""
        if not repo:
            raise ApiError(400, "repository name must have at least one component")
        target = f"{repo}:{request.arg('tag')}" if request.arg("tag") else repo
        _parse_ref(target)
        st = store()
        image = st.tag(st.resolve(request.params["name"]), target)
        event("tag", image.id, _parse_ref(target).familiar)
        return Response(None, status=201)

    def delete(request: Request) -> Response:
        st = store()
        image_id = st.resolve(request.params["name"]).id
        lines = st.remove(request.params["name"], force=request.flag("force"))
        report = []
        for line in lines:
            kind, _, what = line.partition(": ")
            report.append({kind: what})
            event("untag" if kind == "Untagged" else "delete", image_id, image_id)
        return Response(report)

    def prune(request: Request) -> Response:
        filters = api_filters(request, ("dangling",))
        every = any(v.lower() in ("false", "0") for v in filters.get("dangling", []))
        lines, freed = store().prune(all_images=every)
        report = []
        for line in lines:
            kind, _, what = line.partition(": ")
            report.append({kind.capitalize(): what})
            event("delete" if kind == "deleted" else "untag", what, what)
        if report:
            events(daemon).publish("image", "prune", "", {"reclaimed": str(freed)})
        return Response({"ImagesDeleted": report or None, "SpaceReclaimed": freed})

    def save(request: Request) -> None:
        names = [request.params["name"]] if "name" in request.params else request.query.get("names", [])
        if not names:
            raise ApiError(400, "no image names given")
        st = store()
        for name in names:
            st.resolve(name)  # 404 before the answer starts

        def work(emit: Emit) -> None:
            from runtime.store.archive import save_docker_archive

            writer = ChunkWriter(emit)
            save_docker_archive(st, names, writer)  # type: ignore[arg-type]
            writer.flush()
            for name in names:
                event("save", st.resolve(name).id, name)

        produce(request, work, raw=True, content_type="application/x-tar")

    def load(request: Request) -> Response:
        from runtime.store.archive import load_archive

        report = load_archive(store(), BodyReader(request))  # type: ignore[arg-type]
        for line in report:
            event("load", line.rpartition(": ")[2], line.rpartition(": ")[2])
        body = b"".join(json.dumps({"stream": line + "\n"}).encode() + b"\n" for line in report)
        return Response(body, content_type="application/json")

    def create(request: Request) -> Response | None:
        source = request.arg("fromSrc")
        if source is not None:
            return import_image(request, source)
        pull(request)
        return None

    def import_image(request: Request, source: str) -> Response:
        from runtime.store.archive import import_tarball

        if source != "-":
            raise ApiError(400, "importing from a URL is not supported: send the tarball as the body (fromSrc=-)")
        repo, tag_name = request.arg("repo") or "", request.arg("tag") or ""
        tags = [f"{repo}:{tag_name}" if tag_name else repo] if repo else []
        for name in tags:
            _parse_ref(name)
        image = import_tarball(store(), BodyReader(request), tags,  # type: ignore[arg-type]
                               message=request.arg("message") or "", changes=request.query.get("changes", []))
        event("import", image.id, image.id)
        return Response(json.dumps({"status": image.id}).encode() + b"\n")

    def pull(request: Request) -> None:
        from runtime.registry.pull import pull_image

        name, tag_name = request.arg("fromImage") or "", request.arg("tag") or ""
        if not name:
            raise ApiError(400, "fromImage or fromSrc is required")
        if tag_name:
            name = f"{name}@{tag_name}" if tag_name.startswith("sha256:") else f"{name}:{tag_name}"
        ref = _parse_ref(name)
        platform = request.arg("platform") or None
        client = registry_client(daemon, request, ref.domain)
        st = store()

        def on_line(emit: Emit, line: str) -> None:
            if line == str(ref) or not line:
                return  # the reference itself: docker's CLI prints it after the stream
            pulling = _PULLING_LINE.match(line)
            layer = _LAYER_LINE.match(line)
            if pulling:
                emit({"status": pulling.group(2), "id": pulling.group(1)})
            elif layer:
                emit({"status": layer.group(2), "progressDetail": {}, "id": layer.group(1)})
            else:
                emit({"status": line})

        def work(emit: Emit) -> None:
            sink = LineSink(lambda line: on_line(emit, line))
            with registry_errors(), client:
                pull_image(st, client, ref, out=sink, platform=platform)  # type: ignore[arg-type]
            sink.close()
            event("pull", ref.familiar, ref.familiar_name)

        produce(request, work, hold=1)  # "Pulling from" comes before the manifest: its errors are statuses

    def push(request: Request) -> None:
        from runtime.registry.push import push_image

        name, tag_name = request.params["name"], request.arg("tag") or ""
        st = store()
        refs: list[Reference]
        if tag_name:
            refs = [_parse_ref(f"{name}:{tag_name}")]
        elif ":" in name.rpartition("/")[2]:
            refs = [_parse_ref(name)]
        else:  # no tag: every tag of the repository, as docker push --all-tags
            repo = _parse_ref(name).name
            refs = [_parse_ref(t) for i in st.images() for t in i.repo_tags if _parse_ref(t).name == repo]
        images = []
        for ref in refs:
            try:
                images.append(st.resolve(ref.familiar))
            except ImageNotFound:
                raise ImageNotFound(f"An image does not exist locally with the tag: {ref.familiar_name}") from None
        if not images:
            raise ImageNotFound(f"An image does not exist locally with the tag: {_parse_ref(name).familiar_name}")

        def on_line(emit: Emit, line: str) -> None:
            layer = _LAYER_LINE.match(line)
            pushed = _DIGEST_LINE.match(line)
            if layer:
                emit({"status": layer.group(2), "progressDetail": {}, "id": layer.group(1)})
            elif pushed:
                emit({"status": line})
                emit({"progressDetail": {}, "aux": {"Tag": pushed.group(1), "Digest": pushed.group(2),
                                                    "Size": int(pushed.group(3))}})
            elif line:
                emit({"status": line})

        def work(emit: Emit) -> None:
            for ref, image in zip(refs, images, strict=True):
                sink = LineSink(lambda line: on_line(emit, line))
                with registry_errors(), registry_client(daemon, request, ref.domain) as client:
                    push_image(st, client, ref, image, out=sink)  # type: ignore[arg-type]
                sink.close()
                event("push", ref.familiar, ref.familiar_name)

        produce(request, work)

    def auth(request: Request) -> Response:
        from runtime.registry.auth import Credentials
        from runtime.registry.client import RegistryClient
        from runtime.registry.endpoints import endpoint_for, server_domain
        from runtime.registry.errors import AuthenticationError, RegistryError

        body = request.json()
        if not isinstance(body, dict):
            raise ApiError(400, "invalid auth body: not a JSON object")
        username, password = str(body.get("username") or ""), str(body.get("password") or "")
        if not username or not password:
            raise ApiError(400, "username and password are required")
        domain = server_domain(str(body.get("serveraddress") or ""))
        with RegistryClient(endpoint_for(domain), credentials=Credentials(username, password)) as client:
            try:
                client.login()
            except AuthenticationError:
                raise ApiError(401, f"login attempt to {client.base_url}/v2/ failed with status: 401 Unauthorized"
                               ) from None
            except RegistryError as exc:
                raise ApiError(500, str(exc)) from None
        return Response({"Status": "Login Succeeded", "IdentityToken": ""})

    return [
        ("GET", "/images/json", list_images),
        ("POST", "/images/create", create),
        ("POST", "/images/load", load),
        ("GET", "/images/get", save),
        ("POST", "/images/prune", prune),
        ("GET", "/images/{name:path}/json", inspect),
        ("GET", "/images/{name:path}/history", history),
        ("GET", "/images/{name:path}/get", save),
        ("POST", "/images/{name:path}/push", push),
        ("POST", "/images/{name:path}/tag", tag),
        ("DELETE", "/images/{name:path}", delete),
        ("POST", "/auth", auth),
    ]
