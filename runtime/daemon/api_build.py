"""``POST /build`` (docker's legacy builder protocol) and ``POST /commit``.

Build: the body is the context as a tar (plain, gzip, bzip2 or xz); it is unpacked into the store's scratch
space and built by refrt's builder (``runtime.build``), as ``refrt build`` builds a directory. The answer is the
legacy builder's JSON stream, because that is what docker's CLI (``DOCKER_BUILDKIT=0``), docker-py and
testcontainers read: ``{"stream": "Step 1/3 : FROM busybox\\n"}``, the RUN commands' output, ``{"aux": {"ID":
...}}``, "Successfully built <short id>" and "Successfully tagged <name>"; a failure is docker's
``{"errorDetail": ..., "error": ...}``. :class:`LegacyBuilder` only changes how progress is worded: the builder
itself (stages, cache, layers) is the one the CLI uses. What refrt does not imitate: the legacy builder's
intermediate images and containers (`` ---> Running in ...``); refrt builds without them.

Commit: a container's upper directory becomes one more layer over its image, with the container's command,
environment and the request's ``changes`` as the new image's config.
"""

from __future__ import annotations

import codecs
import contextlib
import copy
import dataclasses
import os
import re
import select
import shutil
import tarfile
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from runtime import safetar
from runtime.build.builder import Builder, BuildOptions, Step
from runtime.build.errors import DockerfileError, StepFailed
from runtime.build.parser import Dockerfile
from runtime.daemon import Daemon
from runtime.daemon.api_images import auth_header, credentials_from
from runtime.daemon.api_system import events
from runtime.daemon.http import ApiError, Request, Response
from runtime.daemon.progress import BodyReader, Cancelled, Emit, produce
from runtime.errors import RefrtError
from runtime.store import Image, Store
from runtime.store.archive import parse_changes
from runtime.store.errors import InvalidReference
from runtime.store.reference import parse_reference

_STAGE_TITLE = re.compile(r"^\[(.+) (\d+)/\d+\] (.*)$")
_BUILDKIT_PREFIX = re.compile(r"^#\d+ ")
_FAILED = re.compile(r'^process "(.*)" did not complete successfully: exit code: (\d+)')


class LegacyBuilder(Builder):
    """refrt's builder, with progress worded as docker's legacy builder words it (``Step N/M : INSTR``).

    Steps are numbered over the whole Dockerfile (FROM lines included), as the legacy builder numbers them;
    stages the target does not need are skipped, so their numbers are skipped too."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._offsets: dict[str, int] = {}
        self._names: dict[str, str] = {}
        self._total = 0
        self._from_steps: set[int] = set()

    def load(self) -> Dockerfile:
        """Number the steps as the legacy builder does: global ARGs, then every stage up to the target, then one
        ``LABEL`` step per ``labels`` entry (the legacy builder adds them as instructions)."""
        df = super().load()
        self._total = len(df.meta_args)
        for stage in df.stages[: self._target(df).index + 1]:
            self._offsets[stage.label] = self._total
            if stage.name:
                self._names[stage.label] = stage.name
            self._total += len(stage.instructions) + 1
        self._total += len(self.opts.labels)
        for number, instr in enumerate(df.meta_args, start=1):
            self.say(f"Step {number}/{self._total} : {' '.join(instr.original.split())}")
        return df

    def begin(self, title: str) -> Step:
        self.counter += 1
        step = Step(self.counter, title)
        found = _STAGE_TITLE.match(title)
        if found and found.group(1) in self._offsets:
            number = self._offsets[found.group(1)] + int(found.group(2))
            text = found.group(3)
            if text.upper().startswith("FROM "):
                self._from_steps.add(step.number)
                if found.group(1) in self._names:
                    text += f" AS {self._names[found.group(1)]}"  # the builder's title has the base only
            self.say(f"Step {number}/{self._total} : {text}")
        elif "ONBUILD]" in title:
            self.say(f"# Executing build trigger: {title.partition('] ')[2]}")
        elif title == "exporting to image":
            first = self._total - len(self.opts.labels) + 1
            for number, key in enumerate(sorted(self.opts.labels), start=first):
                self.say(f"Step {number}/{self._total} : LABEL {key}={self.opts.labels[key]}")
        return step

    def done(self, step: Step, cached: bool = False) -> None:
        if cached and step.number not in self._from_steps and _STAGE_TITLE.match(step.title):
            self.say(" ---> Using cache")

    def say(self, text: str) -> None:
        if _BUILDKIT_PREFIX.match(text):
            rest = _BUILDKIT_PREFIX.sub("", text, count=1)
            if not rest.startswith("WARNING"):
                return  # BuildKit's export lines ("writing image", "naming to"): the legacy stream says it after
            text = "[" + rest.replace(":", "]", 1)
        super().say(text)


def _context_check(member: tarfile.TarInfo, dest: str) -> None:
    """What the ``tar`` policy (no absolute names, nothing written outside ``dest``, no setuid bits) lets through
    but a build context must not have: hard links to files outside the context (through an absolute name, ``..``
    or a symlink: the daemon runs as root and would hand the host's file to ``COPY``) and device nodes."""
    safetar.check_hard_link_inside(member, dest)
    safetar.refuse_devices(member)


def _unpack_context(request: Request, dest: Path) -> None:
    """The tar body into ``dest``; nothing may land outside it or link to the host (:func:`_context_check`)."""
    stream = BodyReader(request)
    try:
        with tarfile.open(fileobj=stream, mode="r|*") as tar:
            safetar.extract_all(tar, dest, "tar", extra=_context_check)
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise ApiError(400, f"invalid build context: {exc}") from None


def _build_context(daemon: Daemon, request: Request, scratch: Path) -> Any:
    """The context the builder runs with: the daemon's, but when the client sent ``X-Registry-Config`` (docker's
    CLI sends its logins so that a ``FROM`` of a private image can be pulled) with those logins instead of the
    daemon's, in a config dir of the build's own (removed with the build)."""
    from runtime.registry.auth import CredentialStore
    from runtime.registry.endpoints import server_domain

    logins = auth_header(request, "X-Registry-Config")
    if logins is None:
        return daemon.ctx
    config_dir = scratch / "registry-config"
    store = CredentialStore(config_dir)
    config_dir.mkdir(mode=0o700)
    for server, entry in logins.items():
        credentials = credentials_from(entry) if isinstance(entry, dict) else None
        if credentials is not None:
            store.store(server_domain(str(server)), credentials)
    return dataclasses.replace(daemon.ctx, config_dir=str(config_dir))


def _dict_arg(request: Request, name: str) -> dict[str, str]:
    value = request.json_arg(name) or {}
    if not isinstance(value, dict):
        raise ApiError(400, f"invalid {name}: not a JSON object")
    return {str(k): str(v) for k, v in value.items() if v is not None}


def _legacy_error(exc: BaseException) -> dict[str, Any]:
    """The legacy builder's words for a failed RUN ("returned a non-zero code"); other errors as they are."""
    message = str(exc)
    failed = _FAILED.match(message)
    if isinstance(exc, StepFailed) and failed:
        message = f"The command '{failed.group(1)}' returned a non-zero code: {failed.group(2)}"
        return {"errorDetail": {"code": int(failed.group(2)), "message": message}, "error": message}
    return {"errorDetail": {"message": message}, "error": message}


def _relay(fd: int, worker: threading.Thread, emit_text: Callable[[str], None]) -> None:
    """Forward what the build writes to its pipe until the pipe ends (the build closes its end when it is done)
    or, failing that, until the build thread ends: a process forked meanwhile by another request may hold a copy
    of the write end."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    while True:
        finished = not worker.is_alive()
        ready, _, _ = select.select([fd], [], [], 0 if finished else 0.05)
        if ready:
            data = os.read(fd, 65536)
            if not data:
                break
            emit_text(decoder.decode(data))
        elif finished:
            break
    tail = decoder.decode(b"", final=True)
    if tail:
        emit_text(tail)


def run_build(daemon: Daemon, request: Request) -> None:
    if request.arg("remote"):
        raise ApiError(400, "remote build contexts are not supported: send the context as a tar body")
    if request.arg("version") == "2":
        raise ApiError(400, "BuildKit (version=2) is not supported: use the legacy builder (DOCKER_BUILDKIT=0)")
    tags = request.query.get("t", [])
    for tag in tags:
        try:
            parse_reference(tag)
        except InvalidReference as exc:
            raise ApiError(400, f"invalid tag {tag!r}: {exc}") from None
    quiet = request.flag("q")
    store = Store(daemon.paths)
    store.ensure()
    build_args, labels = _dict_arg(request, "buildargs"), _dict_arg(request, "labels")
    scratch = Path(tempfile.mkdtemp(prefix="build-", dir=store.tmp))
    handed_over = False  # once the worker runs, it removes the context (a client gone early must not pull the
    try:                 # context from under a build that still runs)
        build_ctx = _build_context(daemon, request, scratch)
        context = scratch / "context"
        context.mkdir()
        _unpack_context(request, context)
        dockerfile = (context / (request.arg("dockerfile") or "Dockerfile")).resolve()
        if not dockerfile.is_relative_to(context.resolve()):
            raise ApiError(400, "the Dockerfile must be inside the build context")
        if not dockerfile.is_file():
            raise ApiError(500, f"Cannot locate specified Dockerfile: {request.arg('dockerfile') or 'Dockerfile'}")
        read_fd, write_fd = os.pipe()
        out = os.fdopen(write_fd, "w", encoding="utf-8", errors="replace")
        options = BuildOptions(context=context, dockerfile=dockerfile, tags=list(tags), build_args=build_args,
                               labels=labels, target=request.arg("target") or None, no_cache=request.flag("nocache"),
                               out=out)
        outcome: dict[str, Any] = {}

        def build() -> None:
            try:
                outcome["image"] = LegacyBuilder(build_ctx, options).build()
            except BaseException as exc:  # reported in the stream by the relaying thread
                outcome["error"] = exc
            finally:
                with contextlib.suppress(OSError):
                    out.close()  # the relay sees the end of the pipe at once

        def work(emit: Emit) -> None:
            nonlocal handed_over
            handed_over = True
            gone = False
            held: list[str] = []  # -q: the output is only shown if the build fails, as dockerd does

            def emit_text(text: str) -> None:
                nonlocal gone
                if quiet:
                    held.append(text)
                    return
                if gone:
                    return
                try:
                    emit({"stream": text})
                except Cancelled:
                    gone = True  # keep draining the pipe: the build must never block on it

            worker = threading.Thread(target=build, name="refrt-build", daemon=True)
            worker.start()
            try:
                _relay(read_fd, worker, emit_text)
                worker.join()
            finally:
                out.close()
                os.close(read_fd)
                shutil.rmtree(scratch, ignore_errors=True)
            if gone:
                raise Cancelled()
            if "error" in outcome:
                if held:
                    emit({"stream": "".join(held)})
                raise outcome["error"]
            image: Image = outcome["image"]
            for tag in tags:
                events(daemon).publish("image", "tag", image.id, {"name": parse_reference(tag).familiar})
            emit({"aux": {"ID": image.id}})
            if quiet:
                emit({"stream": image.id + "\n"})
                return
            emit({"stream": f"Successfully built {image.short_id}\n"})
            for tag in tags:
                emit({"stream": f"Successfully tagged {parse_reference(tag).familiar}\n"})

        try:
            produce(request, work, on_error=_legacy_error)
        except DockerfileError as exc:  # before any step: dockerd's 400 and wording
            where = f" line {exc.line}" if exc.line else ""
            raise ApiError(400, f"dockerfile parse error{where}: {exc.reason}") from None
    finally:
        if not handed_over:
            shutil.rmtree(scratch, ignore_errors=True)


# ---------------------------------------------------------------------------------------------------- commit


def _committed_config(image: Image, container: Any, body: dict[str, Any], changes: list[str]) -> dict[str, Any]:
    """The new image's config: the image's, with what the container ran and the request's overrides."""
    inner: dict[str, Any] = copy.deepcopy(image.config.get("config") or {})
    spec = container.spec
    if spec.command:
        inner["Cmd"] = list(spec.command)
    if spec.entrypoint is not None:
        inner["Entrypoint"] = list(spec.entrypoint) or None
    env = {item.partition("=")[0]: item for item in inner.get("Env") or []}
    from runtime.container.inspect import config_env

    for item in config_env(container):  # without what --link added, as docker's Config.Env
        key = item.partition("=")[0]
        if key != "HOSTNAME":
            env[key] = item
    inner["Env"] = list(env.values())
    if spec.workdir:
        inner["WorkingDir"] = spec.workdir
    if spec.user:
        inner["User"] = spec.user
    if spec.labels:
        inner["Labels"] = {**(inner.get("Labels") or {}), **spec.labels}
    for key, value in body.items():
        if key in ("Cmd", "Entrypoint", "Env", "WorkingDir", "User", "Labels", "ExposedPorts", "Volumes",
                   "StopSignal") and value:
            inner[key] = value
    if spec.healthcheck is not None:  # the container's own over the image's (runtime.container.health)
        from runtime.container.health import config_for

        inner["Healthcheck"] = config_for(container)
    checks = [c for c in changes if c.lstrip().upper().startswith("HEALTHCHECK")]
    changed = parse_changes([c for c in changes if c not in checks])
    if "Env" in changed:
        for item in changed.pop("Env"):
            env[item.partition("=")[0]] = item
        inner["Env"] = list(env.values())
    inner.update(changed)
    if checks:  # read as the CLI's commit reads them (runtime.build.changes), merged over the container's
        from runtime.build.changes import apply_change
        from runtime.build.changes import parse_changes as parse_instructions

        for instr in parse_instructions(checks):
            apply_change(inner, instr)
    return inner


def commit(daemon: Daemon, request: Request) -> Response:
    from runtime.container import lifecycle
    from runtime.container.state import find

    ref = request.arg("container") or ""
    if not ref:
        raise ApiError(400, "container is required")
    repo, tag = request.arg("repo") or "", request.arg("tag") or ""
    tags = [f"{repo}:{tag}" if tag else repo] if repo else []
    for name in tags:
        try:
            parse_reference(name)
        except InvalidReference as exc:
            raise ApiError(400, str(exc)) from None
    body = request.json() or {}  # docker's CLI sends null when it has no config to merge
    if not isinstance(body, dict):
        raise ApiError(400, "invalid container config: not a JSON object")
    container = find(daemon.paths, ref)
    store = Store(daemon.paths)
    image = store.resolve(container.image_id)
    changes = request.query.get("changes", [])
    config = _committed_config(image, container, body, [c for c in changes if c.strip()])
    pause = request.flag("pause", True) and container.state.running and not container.state.paused
    if pause:
        lifecycle.pause(daemon.ctx, container, True)
    try:
        layer = store.add_layer_from_dir(container.upper)
    finally:
        if pause:
            with contextlib.suppress(RefrtError):
                lifecycle.pause(daemon.ctx, container, False)
    doc = copy.deepcopy(image.config)
    doc.pop("rootfs", None)
    doc.pop("created", None)
    doc["config"] = config
    author, comment = request.arg("author") or "", request.arg("comment") or ""
    entry: dict[str, Any] = {"created_by": " ".join(container.argv)}
    if author:
        doc["author"] = entry["author"] = author
    if comment:
        doc["comment"] = entry["comment"] = comment
    if layer is None:
        entry["empty_layer"] = True
    layers = [*image.layers, *([layer] if layer is not None else [])]
    from runtime.store.store import now_rfc3339

    doc["created"] = entry["created"] = now_rfc3339()
    doc["history"] = [*(image.config.get("history") or []), entry]
    new = store.commit_image(doc, layers, tags)
    events(daemon).publish("container", "commit", container.id,
                           {"comment": comment, "imageID": new.id, "imageRef": tags[0] if tags else "",
                            "name": container.name, "image": container.spec.image})
    return Response({"Id": new.id}, status=201)


def routes(daemon: Daemon) -> list[tuple[str, str, Callable[[Request], Response | None]]]:
    return [
        ("POST", "/build", lambda request: run_build(daemon, request)),
        ("POST", "/commit", lambda request: commit(daemon, request)),
    ]
