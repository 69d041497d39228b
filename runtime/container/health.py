"""Health checks as docker 20.10 runs them: ``--health-*`` flags, the image's ``HEALTHCHECK``, and the checker that
the container's monitor runs while the container is up.

Why here and not in the daemon: refrt has no daemon a container depends on; the monitor is the one process that
lives exactly as long as the container, so it runs the probes (on a thread, each probe an ``exec`` through
:mod:`runtime.container.exec`). What the checker learns goes to ``containers/<id>/health.json``, written only by
that thread (atomically), so the monitor's own state writes can never lose it; ``inspect`` and ``ps`` read it.

docker's rules, as measured against dockerd 20.10 here:
- the configuration is the container's (flags) over the image's, field by field; ``Test: ["NONE"]`` or no test
  at all means no checker and no ``State.Health``;
- at each start: ``starting``, failing streak 0, the log kept; the first probe one interval after the start,
  each next one an interval after the previous one ended;
- exit 0 is healthy (streak 0); anything else is a failure, which counts unless the container has never been
  healthy and the probe started within the start period; ``retries`` failures in a row make it unhealthy (the
  streak goes on counting);
- a probe over its timeout is killed and logged with exit code -1 and "Health check exceeded timeout (T)"; a
  probe that cannot be started is logged with -1 and the exec error; output is kept up to 4096 bytes (then
  "...");
- the log keeps the last 5 results; a status change is an event ``health_status: STATUS``; every probe is an
  exec (``exec_create``/``exec_start``/``exec_die`` events);
- when the container stops, the status becomes ``unhealthy`` (streak and log kept).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import select
import signal
import threading
import time
from pathlib import Path
from typing import Any

from runtime.container import events
from runtime.container.state import Container, atomic_write_json, now_iso
from runtime.errors import RefrtError, UsageError

DEFAULT_INTERVAL = 30 * 10**9
DEFAULT_TIMEOUT = 30 * 10**9
DEFAULT_RETRIES = 3
MAX_LOG = 5
MAX_OUTPUT = 4096
RECORD = "health.json"
MIN_NS = 1_000_000  # dockerd refuses a non-zero interval, timeout or start period under 1ms
_FIELDS = ("Interval", "Timeout", "StartPeriod")
FILTER_VALUES = ("starting", "healthy", "unhealthy", "none")  # docker's ``ps --filter health=``


# --------------------------------------------------------------------------------------------- configuration
def go_duration(text: str, flag: str) -> int:
    """A Go duration flag value (``1s``, ``1m30s``, ``-2s``) in nanoseconds, with the Go flag errors docker's CLI
    prints; the unit grammar itself is the Dockerfile parser's (one reading of Go durations)."""
    import re

    from runtime.build.parser import parse_duration

    body = text[1:] if text[:1] in "+-" else text
    prefix = f'invalid argument "{text}" for "{flag}" flag: time:'
    if body.replace(".", "", 1).isdigit() and body.strip("0.") != "":
        raise UsageError(f'{prefix} missing unit in duration "{text}"')
    for unit in re.findall(r"(?:\d+\.?\d*|\.\d+)([^\d.]+)", body):
        if unit not in ("ns", "us", "µs", "ms", "s", "m", "h"):
            raise UsageError(f'{prefix} unknown unit "{unit}" in duration "{text}"')
    try:
        value = parse_duration(body) if body else _invalid(text, flag)
    except ValueError:
        _invalid(text, flag)
    return -value if text.startswith("-") else value


def _invalid(text: str, flag: str) -> int:
    raise UsageError(f'invalid argument "{text}" for "{flag}" flag: time: invalid duration "{text}"')


def go_duration_text(ns: int) -> str:
    """Go's Duration.String (``500ms``, ``30s``, ``1m30s``, ``1h0m0s``), as docker's timeout message shows it."""
    if ns == 0:
        return "0s"
    sign, ns = ("-", -ns) if ns < 0 else ("", ns)
    if ns < 10**9:
        for unit, size in (("ms", 10**6), ("µs", 10**3), ("ns", 1)):
            if ns >= size:
                return sign + _decimal(ns, size) + unit
    hours, rest = divmod(ns, 3600 * 10**9)
    minutes, rest = divmod(rest, 60 * 10**9)
    text = _decimal(rest, 10**9) + "s"
    if hours or minutes:
        text = f"{minutes}m" + text
    if hours:
        text = f"{hours}h" + text
    return sign + text


def _decimal(value: int, size: int) -> str:
    whole, frac = divmod(value, size)
    digits = str(frac).rjust(len(str(size)) - 1, "0").rstrip("0") if frac else ""
    return f"{whole}.{digits}" if digits else str(whole)


def from_flags(cmd: str | None, interval: str, timeout: str, start_period: str, retries: str,
               disabled: bool) -> dict[str, Any] | None:
    """The ``--health-*`` / ``--no-healthcheck`` flags as docker's CLI sends them (a HealthConfig, or None)."""
    values = {"Interval": go_duration(interval, "--health-interval") if interval else 0,
              "Timeout": go_duration(timeout, "--health-timeout") if timeout else 0,
              "StartPeriod": go_duration(start_period, "--health-start-period") if start_period else 0}
    count = 0
    if retries:
        try:
            count = int(retries, 0)
        except ValueError:
            raise UsageError(f'invalid argument "{retries}" for "--health-retries" flag: strconv.ParseInt: parsing '
                             f'"{retries}": invalid syntax') from None
    given = bool(cmd) or count != 0 or any(values.values())
    if disabled:
        if given:
            raise UsageError("--no-healthcheck conflicts with --health-* options")
        return {"Test": ["NONE"]}
    if not given:
        return None
    for key, flag in (("Interval", "--health-interval"), ("Timeout", "--health-timeout"),
                      ("StartPeriod", "--health-start-period")):
        if values[key] < 0:
            raise UsageError(f"{flag} cannot be negative")
    if count < 0:
        raise UsageError("--health-retries cannot be negative")
    config: dict[str, Any] = {"Test": ["CMD-SHELL", cmd]} if cmd else {}
    config.update({k: v for k, v in values.items() if v})
    if count:
        config["Retries"] = count
    check(config)
    return config


def check(config: dict[str, Any] | None) -> dict[str, Any] | None:
    """What dockerd checks in a create request's Healthcheck (its words); the config in docker's shape."""
    if config is None:
        return None
    if not isinstance(config, dict):
        raise UsageError("invalid Healthcheck: expected an object")
    test = config.get("Test") or []
    if not isinstance(test, list) or not all(isinstance(word, str) for word in test):
        raise UsageError("invalid Healthcheck.Test: expected a list of strings")
    out: dict[str, Any] = {"Test": list(test)} if test else {}
    for key in _FIELDS:
        value = int(config.get(key) or 0)
        if value < 0 or 0 < value < MIN_NS:
            raise UsageError(f"{key} in Healthcheck cannot be less than 1ms")
        if value:
            out[key] = value
    retries = int(config.get("Retries") or 0)
    if retries < 0:
        raise UsageError("Retries in Healthcheck cannot be negative")
    if retries:
        out["Retries"] = retries
    return out


def merged(own: dict[str, Any] | None, image: dict[str, Any] | None) -> dict[str, Any] | None:
    """docker's merge of a container's (or a commit change's) HealthConfig over the image's: each field that is
    unset (empty test, zero duration or count) is taken from the image."""
    if own is None:
        return dict(image) if image else None
    out = dict(own)
    for key, value in (image or {}).items():
        if not out.get(key) and value:
            out[key] = value
    order = ("Test", *_FIELDS, "StartInterval", "Retries")  # docker's field order, for its JSON
    return {key: out[key] for key in sorted(out, key=lambda k: order.index(k) if k in order else len(order))}


def config_for(c: Container) -> dict[str, Any] | None:
    """The container's effective HealthConfig (what ``inspect`` shows as Config.Healthcheck)."""
    return merged(c.spec.healthcheck, c.image_config.get("Healthcheck"))


def probe_argv(c: Container, config: dict[str, Any] | None) -> list[str] | None:
    """The probe's command line, or None when the container has no checker (no test, NONE, unknown kind)."""
    test = (config or {}).get("Test") or []
    if not test:
        return None
    if test[0] == "CMD" and len(test) > 1:
        return list(test[1:])
    if test[0] == "CMD-SHELL" and len(test) > 1:
        shell = c.image_config.get("Shell") or ["/bin/sh", "-c"]
        return [*shell, " ".join(test[1:])]
    return None


# --------------------------------------------------------------------------------------------------- record
def read(c: Container) -> dict[str, Any] | None:
    """State.Health: ``{Status, FailingStreak, Log}``, or None when no checker ever ran for this container. A
    container that is not running, or paused, is unhealthy (docker stops its checker then)."""
    try:
        data: dict[str, Any] = json.loads((c.directory / RECORD).read_text())
    except (OSError, ValueError):
        return None
    if c.state.status != "running":
        data["Status"] = "unhealthy"
    return data


def check_filter_values(words: list[str]) -> None:
    """dockerd refuses an unknown ``health`` filter value before it looks at any container (``ps`` and the
    Engine API's container list both ask here)."""
    from runtime.container.query import FilterValueError

    for word in words:
        key, _, value = word.partition("=")
        if key.lower() == "health" and value not in FILTER_VALUES:
            raise FilterValueError(f"Unrecognised filter value for health: {value}")


def status(c: Container) -> str:
    """``starting``/``healthy``/``unhealthy``, or ``none`` (docker's word for the ``health`` filter)."""
    record = read(c)
    return str(record["Status"]) if record else "none"


def _write(directory: Path, record: dict[str, Any]) -> None:
    with contextlib.suppress(FileNotFoundError):  # removed meanwhile (rm -f, --rm)
        atomic_write_json(directory / RECORD, record)


# -------------------------------------------------------------------------------------------------- checker
class Checker:
    """The probes of one run of a container, on a thread of its monitor."""

    def __init__(self, ctx: Any, c: Container, argv: list[str], config: dict[str, Any]) -> None:
        self.ctx, self.c, self.argv = ctx, c, argv
        self.interval = int(config.get("Interval") or DEFAULT_INTERVAL) / 1e9
        self.timeout_ns = int(config.get("Timeout") or DEFAULT_TIMEOUT)
        self.start_period = int(config.get("StartPeriod") or 0) / 1e9
        self.retries = int(config.get("Retries") or DEFAULT_RETRIES)
        self.started = time.time()
        self._stop = threading.Event()
        previous = read(c) or {}
        self.record: dict[str, Any] = {"Status": "starting", "FailingStreak": 0, "Log": previous.get("Log") or []}
        _write(c.directory, self.record)
        self._thread = threading.Thread(target=self._run, name="health", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """The container stopped: no more probes, and the status is unhealthy (docker's, streak and log kept)."""
        self._stop.set()
        self._thread.join(timeout=self.timeout_ns / 1e9 + 5)
        self.record["Status"] = "unhealthy"
        _write(self.c.directory, self.record)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            with contextlib.suppress(Exception):  # a probe's trouble never takes the monitor down
                self._once()

    def _once(self) -> None:
        from runtime.container.state import load

        current = load(self.c.directory)
        if current.state.status != "running":  # paused (an exec would freeze with it) or going
            if current.state.status == "paused" and self.record["Status"] != "unhealthy":
                self.record["Status"] = "unhealthy"  # and it stays so after unpause until a probe says otherwise
                _write(self.c.directory, self.record)
            return
        exec_id = secrets.token_hex(32)
        words = " ".join(self.argv)
        self._event(f"exec_create: {words}", execID=exec_id)
        self._event(f"exec_start: {words}", execID=exec_id)
        begun = now_iso()
        code, output, died = self._probe(current)
        ended = now_iso()
        if died is not None:
            self._event("exec_die", execID=exec_id, exitCode=str(died))
        if self._stop.is_set():
            return  # the container went while the probe ran: its result says nothing about it
        self._account(code, output, begun, ended)

    def _account(self, code: int, output: str, begun: str, ended: str) -> None:
        from runtime.container.inspect import parse_time

        record = self.record
        before = record["Status"]
        record["Log"] = [*record["Log"], {"Start": begun, "End": ended, "ExitCode": code, "Output": output}][-MAX_LOG:]
        if code == 0:
            record["FailingStreak"] = 0
            record["Status"] = "healthy"
        elif before != "starting" or parse_time(begun) - self.started >= self.start_period:
            record["FailingStreak"] += 1
            if record["FailingStreak"] >= self.retries:
                record["Status"] = "unhealthy"
        _write(self.c.directory, record)
        if record["Status"] != before:
            self._event(f"health_status: {record['Status']}")

    def _event(self, action: str, **attributes: str) -> None:
        root = getattr(getattr(self.ctx, "paths", None), "root", None)
        if root is not None:
            events.container_event(root, self.c, action, **attributes)

    def _probe(self, current: Container) -> tuple[int, str, int | None]:
        """Run the probe once: (exit code, output, the exec's own exit code or None when it never ran); the code
        is -1 for a probe that could not start or ran out of time."""
        from runtime.container import exec as container_exec

        out_r, out_w = os.pipe()
        null = os.open(os.devnull, os.O_RDONLY)
        try:
            proc = container_exec.spawn(self.ctx, current, self.argv, env=[], stdio=(null, out_w, out_w),
                                        keep_fds_only=True)
        except RefrtError as exc:
            os.close(out_r)
            return -1, str(exc), None
        finally:
            os.close(out_w)
            os.close(null)
        output, status = _collect(out_r, proc.pid, time.monotonic() + self.timeout_ns / 1e9)
        if status is None:
            return -1, f"Health check exceeded timeout ({go_duration_text(self.timeout_ns)})", 137
        code = os.waitstatus_to_exitcode(status)
        code = 128 - code if code < 0 else code
        text = output[:MAX_OUTPUT].decode(errors="replace") + ("..." if len(output) > MAX_OUTPUT else "")
        return code, text, code


def _collect(fd: int, pid: int, deadline: float) -> tuple[bytes, int | None]:
    """The probe's output (a little over the kept size at most) and its wait status; None when the deadline came
    first, after killing the probe (its process group inside the container, then our exec child)."""
    output = b""
    status: int | None = None
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    os.set_blocking(fd, False)
    try:
        while True:
            if status is None:
                done, raw = os.waitpid(pid, os.WNOHANG)
                if done:
                    status = raw
            left = deadline - time.monotonic()
            if status is None and left <= 0:
                _kill_probe(pid)
                return output, None
            ready = poller.poll(0 if status is not None else min(max(left, 0), 0.05) * 1000)
            if not ready:
                if status is not None:
                    return output, status
                continue
            try:
                chunk = os.read(fd, 65536)
            except BlockingIOError:
                continue
            if not chunk:
                if status is None:
                    time.sleep(0.01)  # every writer closed; the exit is a moment away
                    continue
                return output, status
            if len(output) <= MAX_OUTPUT:
                output += chunk
    finally:
        os.close(fd)


def _kill_probe(pid: int) -> None:
    """Our exec child waits for the probe, which leads a session (and process group) of its own in the
    container: kill that group and let the child reap it (killed first, the child would leave the probe a zombie
    of the container's PID 1); the child itself only if it does not end."""
    with contextlib.suppress(OSError):
        for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
            with contextlib.suppress(OSError):
                os.killpg(int(child), signal.SIGKILL)
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline:
        if os.waitpid(pid, os.WNOHANG)[0]:
            return
        time.sleep(0.01)
    with contextlib.suppress(OSError):
        os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)


def start(ctx: Any, c: Container) -> Checker | None:
    """The checker for this run of ``c`` (None when it has no health check)."""
    config = config_for(c)
    argv = probe_argv(c, config)
    if argv is None or config is None:
        return None
    return Checker(ctx, c, argv, config)
