"""A container's life: create, start, stop, kill, wait, remove - and reconcile after a crash.

Every operation reads the state from disk and first reconciles it with the process table: a container whose
monitor died (SIGKILL, OOM, host trouble) is finished off here - its processes killed, cgroup and network
released, state set to exited - so ``ps -a`` tells the truth and ``rm`` can clean up.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import random
import select
import shutil
import signal
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from runtime.cgroups import driver_for_host
from runtime.container import hooks, monitor
from runtime.container.spec import ContainerSpec
from runtime.container.state import Container, State, all_containers, load_state, new_id, now_iso
from runtime.errors import ConflictError, NotFoundError, RefrtError, UsageError
from runtime.locking import locked
from runtime.paths import Paths
from runtime.spec import MountSpec

DEFAULT_PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_ADJECTIVES = ("brave", "calm", "eager", "fond", "keen", "lucid", "merry", "nifty", "quirky", "sharp", "vivid")
_NAMES = ("babbage", "curie", "dijkstra", "euler", "hopper", "knuth", "lamport", "lovelace", "noether", "turing")


def _ctx_paths(ctx: Any) -> Paths:
    paths: Paths = ctx.paths
    return paths


def resolve_image(ctx: Any, ref: str) -> tuple[str, dict[str, Any], list[str]]:
    """(image id, OCI config's ``config`` part, lower dirs top first) from the store."""
    from runtime.store.store import Store

    store = Store(_ctx_paths(ctx))
    try:
        image = store.resolve(ref)
    except NotFoundError:
        image = _pull_missing(ctx, ref)
    lowers = [str(p) for p in store.lower_dirs(image)]
    image_config: dict[str, Any] = dict(image.config.get("config") or {})
    return image.id, image_config, lowers


def _pull_missing(ctx: Any, ref: str) -> Any:
    """docker run/create: an image that is not here is pulled first; when that fails too it is a refrt failure
    (125), whatever the registry answered."""
    import sys

    from runtime.registry import pull
    from runtime.store.errors import InvalidReference
    from runtime.store.reference import parse_reference

    try:  # a malformed reference is the input's fault: one line, no pull attempt (docker's order too)
        parse_reference(ref)
    except InvalidReference as exc:
        raise UsageError(str(exc)) from None
    print(f"Unable to find image '{ref}' locally", file=sys.stderr)
    try:
        return pull(ctx, ref, out=sys.stderr)
    except RefrtError as exc:
        raise RefrtError(f"Unable to find image '{ref}' locally, and pulling it failed: {exc}") from None


def command_line(spec: ContainerSpec, image_config: dict[str, Any]) -> list[str]:
    """docker's rule: entrypoint (flag, else image's) + command (args, else image's Cmd unless entrypoint was set)."""
    if spec.entrypoint is not None:
        entrypoint = spec.entrypoint
        cmd = spec.command
    else:
        entrypoint = list(image_config.get("Entrypoint") or [])
        cmd = spec.command or list(image_config.get("Cmd") or [])
    argv = [*entrypoint, *cmd]
    if not argv or not argv[0]:
        raise UsageError("no command specified")
    if spec.init:  # --init: docker's tini is PID 1 and reaps the zombies (runtime.cli.runflags.init_mount)
        argv = ["/sbin/docker-init", "--", *argv]
    return argv


def environment(spec: ContainerSpec, image_config: dict[str, Any], hostname: str) -> list[str]:
    """PATH default, HOSTNAME, the image's Env, then ``-e`` (later wins); TERM=xterm with ``-t``."""
    merged: dict[str, str] = {}
    for item in [DEFAULT_PATH_ENV, f"HOSTNAME={hostname}", *(image_config.get("Env") or [])]:
        key, _, value = item.partition("=")
        merged[key] = value
    if spec.tty:
        merged["TERM"] = "xterm"
    for item in spec.env:
        key, sep, value = item.partition("=")
        if not sep:  # -e NAME: take the value from the CLI's environment, or drop it
            if key in os.environ:
                merged[key] = os.environ[key]
            continue
        merged[key] = value
    return [f"{k}={v}" for k, v in merged.items()]


def _random_name(taken: set[str]) -> str:
    for _ in range(100):
        name = f"{random.choice(_ADJECTIVES)}_{random.choice(_NAMES)}{random.randint(0, 999)}"
        if name not in taken:
            return name
    raise ConflictError("cannot find a free container name")


def _check_name(name: str) -> None:
    import re

    if not re.fullmatch(r"[a-zA-Z0-9][a-zA-Z0-9_.-]*", name):
        raise UsageError(f"Invalid container name ({name}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed")


def create(ctx: Any, spec: ContainerSpec) -> Container:
    """Resolve the image, reserve the name, lay out ``containers/<id>/`` and prepare volumes."""
    paths = _ctx_paths(ctx)
    hooks.check_network_mode(spec.network.mode)
    image_id, image_config, lowers = resolve_image(ctx, spec.image)
    argv = command_line(spec, image_config)
    cid = new_id()
    hostname = spec.hostname or (cid[:12] if spec.network.mode != "host" else os.uname().nodename)
    if spec.network.mode == "host" and not spec.hostname:
        spec.hostname = hostname
    spec.network.hostname = hostname
    with locked(paths.locks, "containers"):
        _sweep_debris(paths)
        taken = {c.name for c in all_containers(paths)}
        if spec.name:
            _check_name(spec.name)
            if spec.name in taken:
                owner = next(c for c in all_containers(paths) if c.name == spec.name)
                raise ConflictError(
                    f'Conflict. The container name "/{spec.name}" is already in use by container "{owner.id}". '
                    "You have to remove (or rename) that container to be able to reuse that name."
                )
        name = spec.name or _random_name(taken)
        directory = paths.containers / cid
        container = Container(
            id=cid,
            name=name,
            created=now_iso(),
            spec=spec,
            image_id=image_id,
            image_config=image_config,
            lower_dirs=lowers,
            argv=argv,
            env=environment(spec, image_config, hostname),
            mounts=[],
            cgroup_driver=driver_for_host().version,
            directory=directory,
        )
        # config.json first: a create killed half-way leaves a container that ps lists and rm removes
        directory.mkdir(parents=True)
        container.save_config()
        for sub in ("upper", "work", "merged"):
            (directory / sub).mkdir()
        if spec.userns == "private":  # the container's root owns its own layer (host ids base:base)
            from runtime.container.userns import ranges

            uids, gids = ranges()
            os.chown(directory / "upper", uids.base, gids.base)
        container.save_state()
        try:
            prepared = hooks.prepare_mounts(ctx, cid, list(spec.mounts), image_config, lowers)
            container.mounts = [vars(m).copy() for m in prepared]
            container.save_config()
        except BaseException:
            shutil.rmtree(directory, ignore_errors=True)
            raise
    return container


def start(ctx: Any, container: Container, attach: monitor.Attach | None = None) -> monitor.StartHandle:
    """Start the monitor; returns once the command runs. Raises the container's error (125/126/127) if not."""
    if not reconcile(ctx, container):
        raise NotFoundError(f"No such container: {container.id}")
    if container.state.running:
        return _no_handle()
    if container.state.status == "exited":
        container.state = State()
        container.save_state()
    handle = monitor.spawn(ctx, container, attach)
    try:
        event = handle.next_event()
    except monitor.MonitorLost:
        handle.close()
        reconcile(ctx, container)
        error = (container.directory / "monitor-error.txt")
        detail = error.read_text().strip().splitlines()[-1] if error.exists() else "monitor crashed"
        raise RefrtError(f"container {container.short_id} did not start: {detail}") from None
    if event["event"] == "error":
        handle.close()
        err = RefrtError(event["message"])
        err.exit_code = int(event["code"])
        raise err
    for warning in event.get("warnings") or []:  # docker prints these too ("Weight discarded")
        print(f"WARNING: {warning}", file=sys.stderr)
    container.reload_state()
    return handle


def _no_handle() -> monitor.StartHandle:
    r, w = os.pipe()
    os.close(w)
    return monitor.StartHandle(r)


def kill(ctx: Any, container: Container, signum: int = signal.SIGKILL) -> None:
    reconcile(ctx, container)
    if not container.state.running:
        raise ConflictError(f"Cannot kill container: {container.short_id}: container is not running")
    with contextlib.suppress(ProcessLookupError):
        os.kill(container.state.pid, signum)
    _thaw_if_paused(container)


def pause(ctx: Any, container: Container, frozen: bool = True) -> None:
    """``pause``/``unpause``: freeze or thaw every process of the container through its cgroup."""
    reconcile(ctx, container)
    if not container.state.running:
        raise ConflictError(f"Container {container.id} is not running")
    if container.state.paused == frozen:
        word = "already paused" if frozen else "not paused"
        raise ConflictError(f"Container {container.id} is {word}")
    driver_for_host().open(container.id).freeze(frozen)
    container.state.status = "paused" if frozen else "running"
    container.save_state()


def _thaw_if_paused(container: Container) -> None:
    """A signal to a frozen container is only delivered once it thaws (docker thaws after stop/kill too)."""
    if container.state.paused:
        driver_for_host().open(container.id).freeze(False)
        container.state.status = "running"
        container.save_state()


def stop(ctx: Any, container: Container, timeout: float = 10, signum: int = signal.SIGTERM) -> None:
    """SIGTERM (or the given signal), then SIGKILL after ``timeout`` seconds, then wait for the monitor."""
    reconcile(ctx, container)
    if not container.state.running:
        return
    pid = container.state.pid
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signum)
    _thaw_if_paused(container)
    if not wait_until_stopped(ctx, container, timeout):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        wait_until_stopped(ctx, container, 30)


def wait_until_stopped(ctx: Any, container: Container, timeout: float | None = None) -> bool:
    """Wait until the monitor recorded the exit (True) or ``timeout`` passed (False).

    The state is looked at again whenever the monitor exits (its pidfd becomes readable) and at least every
    50 ms (a monitor that stays - a restart policy - only records the exit): no fixed sleep between the
    monitor's last step and our answer."""
    deadline = None if timeout is None else time.monotonic() + timeout
    delay = 0.005
    watched: tuple[int, int] | None = None  # (monitor pid, its pidfd)
    try:
        while True:
            if not (container.directory / "state.json").exists():
                return True  # removed meanwhile (--rm)
            container.reload_state()
            if container.state.status in ("created", "running", "paused") and container.state.monitor_pid:
                reconcile(ctx, container)
            if not container.state.running and not _monitor_alive(container.state):
                return True
            if deadline is not None and time.monotonic() > deadline:
                return False
            pid = container.state.monitor_pid
            if pid and (watched is None or watched[0] != pid):
                if watched is not None:
                    os.close(watched[1])
                    watched = None
                with contextlib.suppress(OSError):
                    watched = (pid, os.pidfd_open(pid))
            if watched is not None:
                select.select([watched[1]], [], [], delay)
            else:
                time.sleep(delay)
            delay = min(delay * 2, 0.05)
    finally:
        if watched is not None:
            os.close(watched[1])


def wait(ctx: Any, container: Container) -> int:
    wait_until_stopped(ctx, container)
    return container.state.exit_code


def _monitor_alive(state: State) -> bool:
    return monitor.is_alive(state.monitor_pid, state.monitor_start)


_ACTIVE = ("created", "running", "paused")


def _orphaned(container: Container, state: State) -> bool:
    """Whether the container's monitor died with work left: an active container, or an ``--rm`` one it had
    recorded as exited but not removed yet."""
    if not state.monitor_pid:
        return False
    if state.status not in _ACTIVE and not (state.status == "exited" and container.spec.auto_remove):
        return False
    return not _monitor_alive(state)


@contextlib.contextmanager
def _container_lock(container: Container) -> Iterator[bool]:
    """flock on the container's directory itself (no lock file to leave behind); False when it is gone."""
    try:
        fd = os.open(container.directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except FileNotFoundError:
        yield False
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield True
    finally:
        os.close(fd)


def reconcile(ctx: Any, container: Container) -> bool:
    """A monitor that vanished leaves its container to us: kill what is left, release cgroup and network, record
    the exit - and remove an ``--rm`` container altogether, as its monitor would have. Returns whether the
    container still exists afterwards (callers that list containers skip the ones that went).

    Concurrent reconcilers (the daemon and a CLI worker) serialize on the container directory's flock, so one
    finishes the container and the others see the result."""
    state = _reload(container)
    if state is None:
        return False
    if not _orphaned(container, state):
        return True
    with _container_lock(container) as present:
        state = _reload(container) if present else None  # another reconciler or the monitor may have finished
        if state is None:
            return False
        if not _orphaned(container, state):
            return True
        if state.status in _ACTIVE:
            _finish_off(ctx, container, state)
        if container.spec.auto_remove:
            remove_files(ctx, container, remove_volumes=True)
            return False
    return True


def _reload(container: Container) -> State | None:
    """The container's state from disk; None once it is gone (removed by someone else: config.json goes last)."""
    state = container.reload_state()
    return state if (container.directory / "config.json").exists() else None


def watch_monitors(ctx: Any, stopping: threading.Event, rescan: float = 1.0) -> None:
    """The daemon's thread that reconciles a container as soon as its monitor dies, not at the next command.

    Each live monitor is watched through a pidfd (readable when it exits); the containers directory is looked
    at again every ``rescan`` seconds for new monitors, reading only the state files that changed, so an idle
    daemon costs one directory listing a second. A monitor that exits normally has recorded the exit itself,
    and reconcile then finds nothing to do."""
    import select

    from runtime.container.state import load

    paths = _ctx_paths(ctx)
    poller = select.poll()
    watched: dict[int, tuple[Path, tuple[int, int]]] = {}  # pidfd -> (container directory, its key)
    keys: set[tuple[int, int]] = set()  # (monitor pid, start time) watched
    seen: dict[Path, int] = {}  # state.json mtime at the last look
    while not stopping.is_set():
        for entry in _changed_states(paths.containers, seen):
            state = load_state(entry)
            key = (state.monitor_pid, state.monitor_start)
            if state.status not in _ACTIVE or not state.monitor_pid or key in keys:
                continue
            try:
                fd = os.pidfd_open(state.monitor_pid)
            except OSError:
                fd = -1
            if fd < 0 or not _monitor_alive(state):  # gone already, or the pid is someone else's now
                if fd >= 0:
                    os.close(fd)
                with contextlib.suppress(RefrtError, OSError, ValueError, KeyError):
                    reconcile(ctx, load(entry))
                continue
            watched[fd] = (entry, key)
            keys.add(key)
            poller.register(fd, select.POLLIN)
        for fd, _events in poller.poll(rescan * 1000):
            poller.unregister(fd)
            os.close(fd)
            entry, key = watched.pop(fd)
            keys.discard(key)
            with contextlib.suppress(RefrtError, OSError, ValueError, KeyError):
                reconcile(ctx, load(entry))
    for fd in watched:
        os.close(fd)


def _changed_states(directory: Path, seen: dict[Path, int]) -> list[Path]:
    """Container directories whose state.json changed since the last call (``seen`` keeps the mtimes)."""
    changed: list[Path] = []
    try:
        entries = list(directory.iterdir())
    except OSError:
        return changed
    for entry in entries:
        try:
            mtime = (entry / "state.json").stat().st_mtime_ns
        except OSError:
            seen.pop(entry, None)
            continue
        if seen.get(entry) != mtime:
            seen[entry] = mtime
            changed.append(entry)
    for gone in set(seen) - set(entries):
        del seen[gone]
    return changed


def _finish_off(ctx: Any, container: Container, state: State) -> None:
    """Kill the container's processes, release its cgroup and network, and record the exit."""
    killed = False
    group = driver_for_host().open(container.id)
    if group.exists():
        killed = bool(group.procs())
        group.kill_all()
        group.remove()
    if hooks.needs_network_hook(container.spec.network.mode):
        with contextlib.suppress(Exception):
            hooks.network_detach(ctx, container.id)
    state.status = "exited"
    state.exit_code = 137 if (killed or state.pid) else 125
    state.error = "container monitor died"
    state.pid = 0
    state.finished_at = now_iso()
    if not container.spec.auto_remove:
        state.monitor_pid = 0
    container.save_state()


def rename(ctx: Any, container: Container, new_name: str) -> None:
    """``rename``: the name is unique per root, checked and changed under the same lock as ``create``."""
    paths = _ctx_paths(ctx)
    name = new_name.lstrip("/")
    _check_name(name)
    with locked(paths.locks, "containers"):
        if any(c.name == name and c.id != container.id for c in all_containers(paths)):
            raise ConflictError(f'Conflict. The container name "/{name}" is already in use')
        container.name = name
        container.save_config()


def remove(ctx: Any, container: Container, force: bool = False, volumes: bool = False) -> None:
    """``rm``: refuse a running container unless ``force`` (then SIGKILL it first), then delete everything."""
    reconcile(ctx, container)
    if container.state.running or _monitor_alive(container.state):
        if not force:
            raise ConflictError(
                f"You cannot remove a running container {container.id}. "
                "Stop the container before attempting removal or force remove"
            )
        if container.state.pid > 0:  # 0 between a restart policy's runs: kill(0) would kill our own group
            with contextlib.suppress(ProcessLookupError, OSError):
                os.kill(container.state.pid, signal.SIGKILL)
        _thaw_if_paused(container)
        wait_until_stopped(ctx, container, 30)
    if container.directory.exists():  # else an --rm container removed itself meanwhile
        remove_files(ctx, container, remove_volumes=volumes)
    paths = _ctx_paths(ctx)
    with locked(paths.locks, "containers"):
        _sweep_debris(paths)


def remove_files(ctx: Any, container: Container, remove_volumes: bool) -> None:
    """Release volumes, network and cgroup (idempotent) and delete the container's directory."""
    group = driver_for_host().open(container.id)
    if group.exists():
        group.kill_all()
        group.remove()
    if hooks.needs_network_hook(container.spec.network.mode):
        with contextlib.suppress(Exception):
            hooks.network_detach(ctx, container.id)
    mounts = [MountSpec(**m) for m in container.mounts]
    hooks.release_mounts(ctx, container.id, mounts, remove_volumes)
    container.state.status = "removing"
    _remove_directory(container.directory)


def _remove_directory(directory: Path) -> None:
    """Delete a container's directory with config.json last: a removal killed half-way (the CLI's client went,
    and the worker with it) leaves a container that ps still lists and rm finishes, never a nameless one."""
    try:
        entries = list(directory.iterdir())
    except FileNotFoundError:
        return
    for entry in entries:
        if entry.name == "config.json":
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                entry.unlink()
    with contextlib.suppress(FileNotFoundError):
        (directory / "config.json").unlink()
    shutil.rmtree(directory, ignore_errors=True)


def _sweep_debris(paths: Paths) -> None:
    """Delete container directories without config.json. Call holding the ``containers`` lock: creation runs
    under it and writes config.json first, so such a directory is a create that was killed, or the last step of
    a removal (harmless to finish)."""
    try:
        entries = list(paths.containers.iterdir())
    except FileNotFoundError:
        return
    for entry in entries:
        if entry.is_dir() and not (entry / "config.json").exists():
            shutil.rmtree(entry, ignore_errors=True)
