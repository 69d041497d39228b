"""One conformance run's shared state: the target, the runtime drivers, features and services.

Everything is created lazily, on the first case that needs it, and released in :meth:`RunSession.close` - which
the plugin calls at session end, also after Ctrl-C or SIGTERM. A failure to bring something up is remembered and
re-raised for every case that needs it, so each such case errors with the same clear message instead of
retrying a dead target a hundred times.

A SIGKILLed run cannot clean up, so every run keeps a *run record* on the harness host
(:data:`STATE_DIR`/``<run id>.<pid>.json``): its target, the runtimes it prepared (with their roots), its
registry data directory and the tag of its case temp directories, written *before* each of them is created. The
record is ``flock``ed for the run's whole life, and the kernel drops the lock when the process dies however it
dies. The next run takes the lock of every record it can - those are the dead runs - removes what they left,
says so in one line, and deletes the record. A live run's lock cannot be taken, so its state is never touched.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import secrets
import shlex
import shutil
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from conformance.drivers import RuntimeDriver, get_driver
from conformance.errors import ConformanceError, TargetError
from conformance.features import Feature, target_features
from conformance.targets import Target, get_target
from conformance.targets.base import progress, set_progress_writer

#: Where run records live on the harness host. Runs that should see each other must share it.
STATE_DIR = Path(os.environ.get("CONFORMANCE_STATE_DIR", "/var/tmp/conformance/runs"))
#: ``mktemp`` template prefix of a case's temp directory; ``<prefix><tag>.XXXXXX`` names the run.
CASE_TMP_PREFIX = "/tmp/conformance-case."


def new_run_id() -> str:
    return datetime.now(UTC).strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(3)


class RunRecord:
    """This process's record of what its run creates, locked for as long as the process lives."""

    def __init__(self, run_id: str, target_spec: str) -> None:
        STATE_DIR.mkdir(parents=True, exist_ok=True)
        self.path = STATE_DIR / f"{run_id}.{os.getpid()}.json"
        self.data: dict[str, Any] = {
            "run_id": run_id, "pid": os.getpid(), "target": target_spec, "started": time.time(),
            "case_tmp_tag": hashlib.sha256(f"{run_id}.{os.getpid()}".encode()).hexdigest()[:10],
            "runtimes": {}, "registry_dirs": [],
        }
        self._file: IO[str] | None = open(self.path, "w+", encoding="utf-8")  # noqa: SIM115 - held for the run
        fcntl.flock(self._file, fcntl.LOCK_EX)
        self.save()

    def save(self) -> None:
        if self._file is not None:
            self._file.seek(0)
            self._file.truncate()
            self._file.write(json.dumps(self.data))
            self._file.flush()
            os.fsync(self._file.fileno())

    def remove(self) -> None:
        """The run ended and released everything: drop the record (and its lock)."""
        if self._file is not None:
            with contextlib.suppress(OSError):
                self.path.unlink()
            self._file.close()
            self._file = None


def _dead_records() -> list[tuple[Path, dict[str, Any], IO[str]]]:
    """Records whose owner is gone (their lock can be taken), each returned locked; unreadable ones as {}."""
    found: list[tuple[Path, dict[str, Any], IO[str]]] = []
    for path in sorted(STATE_DIR.glob("*.json")) if STATE_DIR.is_dir() else []:
        try:
            handle = open(path, "r+", encoding="utf-8")  # noqa: SIM115 - returned to the caller, locked
        except OSError:
            continue
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # a live run holds it
            handle.close()
            continue
        try:
            data = json.loads(handle.read() or "{}")
        except ValueError:  # killed while writing it
            data = {}
        found.append((path, data if isinstance(data, dict) else {}, handle))
    return found


def _live_runs_on(target_spec: str) -> int:
    live = 0
    for path in STATE_DIR.glob("*.json") if STATE_DIR.is_dir() else []:
        try:
            with open(path, encoding="utf-8") as handle:
                try:
                    fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
                except OSError:
                    data = json.loads(handle.read() or "{}")
                    live += data.get("target") == target_spec
        except (OSError, ValueError):
            continue
    return live


def _plural(count: int, singular: str, plural: str = "") -> str:
    return f"{count} {singular if count == 1 else plural or singular + 's'}"


def reclaim_interrupted_runs(target_spec: str) -> str:
    """Remove what dead runs left (see the module docstring); returns the one-line notice, or "" if nothing.

    Target-side state (case temp directories, containers, daemons) is reclaimed only for records of the same
    target spec on a target that outlives runs (local, ssh); the harness-side registry data always.
    """
    counts: Counter[str] = Counter()
    runs = 0
    for path, data, handle in _dead_records():
        try:
            found = _reclaim_one(data, target_spec)
            counts += found
            runs += bool(found)
        except Exception as exc:  # never stop a run because an old one cannot be cleaned; say why
            progress(f"conformance: could not clean up after interrupted run {data.get('run_id', path.name)}: "
                     f"{' '.join(str(exc).split())}")
        finally:
            with contextlib.suppress(OSError):
                path.unlink()
            handle.close()
    if target_spec == "local":
        untagged = reclaim_untagged_case_dirs(get_target("local"), target_spec)
        if untagged:
            counts["temp_dirs"] += untagged
            runs = max(runs, 1)
    counts = +counts  # only what was actually removed
    if not counts:
        return ""
    parts = [_plural(counts[key], *names) for key, names in _NOTICE_KINDS if counts[key]]
    parts += [_plural(n, key) for key, n in sorted(counts.items()) if n and key not in dict(_NOTICE_KINDS)]
    return f"cleaned up after {'an interrupted run' if runs <= 1 else f'{runs} interrupted runs'}: {', '.join(parts)}"


_NOTICE_KINDS: list[tuple[str, tuple[str, ...]]] = [
    ("temp_dirs", ("temp dir",)), ("registry_dirs", ("registry data dir",)), ("containers", ("container",)),
    ("networks", ("network",)), ("volumes", ("volume",)), ("dockerd", ("dockerd",)),
]


def _reclaim_one(data: dict[str, Any], target_spec: str) -> Counter[str]:
    counts: Counter[str] = Counter()
    for directory in data.get("registry_dirs", []):
        if Path(directory).is_dir() and Path(directory).name.startswith("conformance-registry-"):
            _stop_registry_of(Path(directory))
            shutil.rmtree(directory, ignore_errors=True)
            counts["registry_dirs"] += 1
    if data.get("target") != target_spec or not data.get("run_id"):
        return counts
    target = get_target(target_spec)
    if target.disposable:  # its VM went with it; a new run gets a new one
        return counts
    target.up()
    try:
        tag = str(data.get("case_tmp_tag", ""))
        if tag.isalnum():
            pattern = f"{CASE_TMP_PREFIX}{tag}.*"
            found = target.run(f"for d in {pattern}; do [ -d \"$d\" ] && rm -rf \"$d\" && echo \"$d\"; done; true",
                               timeout=120)
            counts["temp_dirs"] += len(found.stdout.split())
        for name, settings in data.get("runtimes", {}).items():
            driver = get_driver(name, target, str(data["run_id"]))
            if settings.get("root") and hasattr(driver, "root"):
                driver.root = settings["root"]
            counts.update(driver.reclaim())
    finally:
        target.down()
    return counts


def _stop_registry_of(workdir: Path) -> None:
    """A registry whose parent died should have had SIGTERM (setpriv --pdeathsig); kill one that did not."""
    config = str(workdir / "config.yml")
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if config.encode() in argv:
            with contextlib.suppress(OSError):
                os.kill(int(entry.name), 9)


def reclaim_untagged_case_dirs(target: Target, target_spec: str) -> int:
    """Case temp dirs of runs that made them without a tag (``conformance-case.XXXXXX``): removed only when
    no other run on this target is alive, since they cannot be told apart."""
    if target.disposable or _live_runs_on(target_spec) > 1:
        return 0
    found = target.run(f"for d in {CASE_TMP_PREFIX}??????; do [ -d \"$d\" ] && rm -rf \"$d\" && echo \"$d\"; "
                       "done; true", timeout=120)
    return len(found.stdout.split())


class RunSession:
    def __init__(self, target_spec: str, runtimes: list[str], run_id: str | None = None,
                 destroy: str = "always") -> None:
        self.target_spec = target_spec
        self.runtimes = runtimes
        self.run_id = run_id or os.environ.get("CONFORMANCE_RUN_ID") or new_run_id()
        self.destroy = destroy
        self.started = time.time()
        self.any_failed = False
        self._target: Target | None = None
        self._drivers: dict[str, RuntimeDriver] = {}
        self._versions: dict[str, str] = {}
        self._features: dict[str, Feature] | None = None
        self._facts: dict[str, str] = {}
        self._services: dict[str, Any] = {}
        self._service_dirs: list[Path] = []
        self._broken: dict[str, ConformanceError] = {}
        self._record: RunRecord | None = None
        #: What this run removed after interrupted runs ("" when nothing), said once when it began to work.
        self.reclaimed = ""
        self._install_progress()

    @property
    def record(self) -> RunRecord:
        """This run's record, made when the run first needs the target or a service - a pytest session that
        never does (unit tests with the plugin loaded) neither records nor reclaims. Making it first removes
        what interrupted runs left (the controller does; xdist workers only record)."""
        if self._record is None:
            self._record = RunRecord(self.run_id, self.target_spec)
            if os.environ.get("PYTEST_XDIST_WORKER") is None:
                self.reclaimed = reclaim_interrupted_runs(self.target_spec)
                if self.reclaimed:
                    progress(f"conformance: {self.reclaimed}")
        return self._record

    def _install_progress(self) -> None:
        """Send targets' progress lines (VM boot, provisioning) to the stderr the run started with.

        The target comes up inside the first case that needs it, where pytest captures file descriptor 2; a
        duplicate of it taken now (pytest_configure, capture suspended) still reaches the terminal or CI log.
        """
        try:
            stream = os.fdopen(os.dup(2), "w", encoding="utf-8", errors="replace", closefd=True)
        except OSError:
            return
        self._progress_stream = stream

        def write(line: str) -> None:
            with contextlib.suppress(OSError, ValueError):
                stream.write(line + "\n")
                stream.flush()

        set_progress_writer(write)

    def _remembered(self, key: str) -> None:
        if key in self._broken:
            raise self._broken[key]

    @property
    def target(self) -> Target:
        self._remembered("target")
        if self._target is None:
            self.record  # noqa: B018 - recorded (and earlier runs reclaimed) before anything is created
            target = get_target(self.target_spec)
            if hasattr(target, "destroy_policy"):
                target.destroy_policy = self.destroy
            try:
                target.up()
                self._facts = target.facts()
            except ConformanceError as exc:
                self._broken["target"] = exc
                with contextlib.suppress(Exception):
                    target.down()
                raise
            self._target = target
        return self._target

    @property
    def facts(self) -> dict[str, str]:
        return dict(self._facts)

    def features(self) -> dict[str, Feature]:
        self._remembered("features")
        if self._features is None:
            try:
                self._features = target_features(self.target)
            except ConformanceError as exc:
                self._broken["features"] = exc
                raise
            forwards = hasattr(self.target, "forward_to_host")
            self._features["service.registry"] = Feature(
                self.target.scheme == "local" or forwards,
                "docker-registry on 127.0.0.1" if self.target.scheme == "local" else
                "docker-registry on the host's 127.0.0.1, forwarded to the guest's over its SSH connection"
                if forwards else "the registry service runs on the harness host; reaching it from this target "
                "is not supported")
        return self._features

    def driver(self, name: str) -> RuntimeDriver:
        key = f"driver:{name}"
        self._remembered(key)
        if name not in self._drivers:
            try:
                driver = get_driver(name, self.target, self.run_id)
                # Recorded before prepare() creates anything, so a run killed during it is reclaimed too.
                self.record.data["runtimes"][name] = {"root": getattr(driver, "root", "")}
                self.record.save()
                driver.prepare()
            except ConformanceError as exc:
                self._broken[key] = exc
                raise
            self._drivers[name] = driver
        return self._drivers[name]

    def runtime_features(self, name: str) -> dict[str, Feature]:
        return {key: Feature(ok, f"declared by the {name} driver")
                for key, ok in self.driver(name).features().items()}

    def service(self, name: str) -> Any:
        """Start a service (``registry``) once per run; returns its handle (``.address`` is host:port)."""
        key = f"service:{name}"
        self._remembered(key)
        if name not in self._services:
            try:
                from conformance.services.registry import Registry

                workdir = Path(tempfile.mkdtemp(prefix="conformance-registry-"))
                self._service_dirs.append(workdir)
                self.record.data["registry_dirs"].append(str(workdir))
                self.record.save()
                service = Registry(workdir=workdir)
                service.start()
                forward = getattr(self.target, "forward_to_host", None)
                if forward is not None and service.port is not None:
                    forward(service.port)
            except ConformanceError as exc:
                self._broken[key] = exc
                raise
            self._services[name] = service
        return self._services[name]

    def case_tmp(self) -> str:
        """Make a case's temp directory on the target, named so that this run's record finds it after a SIGKILL
        (``/tmp/conformance-case.<run tag>.XXXXXX``)."""
        template = f"{CASE_TMP_PREFIX}{self.record.data['case_tmp_tag']}.XXXXXX"
        made = self.target.run(f"mktemp -d {shlex.quote(template)}", timeout=30)
        if made.exit_status != 0:
            raise TargetError(f"cannot create a temporary directory on the target: {made.stderr.strip()}")
        return made.stdout.strip()

    def runtime_versions(self) -> dict[str, str]:
        """Each prepared runtime's version, asked once per run: every case record names it, and on a VM target
        each question is a command over SSH."""
        for name, driver in self._drivers.items():
            if name not in self._versions:
                try:
                    self._versions[name] = driver.version()
                except ConformanceError:
                    self._versions[name] = "unknown"
        return {name: self._versions[name] for name in self._drivers}

    def close(self) -> None:
        """Release everything, in reverse order of creation. Never raises."""
        for driver in self._drivers.values():
            with contextlib.suppress(Exception):
                driver.cleanup()
            with contextlib.suppress(Exception):
                driver.close()
        self._drivers.clear()
        for service in self._services.values():
            with contextlib.suppress(Exception):
                service.stop()
        self._services.clear()
        for directory in self._service_dirs:
            shutil.rmtree(directory, ignore_errors=True)
        self._service_dirs.clear()
        if self._target is not None:
            keep = self.destroy == "never" or (self.destroy == "passing" and self.any_failed)
            if not keep:
                with contextlib.suppress(Exception):
                    self._target.down()
            self._target = None
        if self._record is not None:
            self._record.remove()
            self._record = None
        set_progress_writer(None)
        stream = getattr(self, "_progress_stream", None)
        if stream is not None:
            with contextlib.suppress(OSError):
                stream.close()
