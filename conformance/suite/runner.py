"""Execute a case's steps on a target, through a runtime driver, and record what happened.

A failed expectation raises :class:`ExpectationFailed` (a conformance verdict); anything the harness could not do
raises a :class:`conformance.errors.ConformanceError` (a harness error). A step that outlives its timeout is a
failed expectation: the runtime or host under test did not do what was asked in time.
"""

from __future__ import annotations

import secrets
import shlex
import time
from dataclasses import asdict, dataclass
from typing import Any

from conformance.drivers.base import RuntimeDriver
from conformance.errors import CommandTimeout, DriverError, MatchTimeout
from conformance.suite.matchers import check_exit, check_text, search
from conformance.suite.model import Phase, Step
from conformance.suite.template import render
from conformance.targets.base import CommandResult, Target, seconds

OUTPUT_LIMIT = 64 * 1024


class ExpectationFailed(Exception):
    """A step's outcome did not meet its expectations: the target or runtime does not conform."""

    def __init__(self, message: str, result: StepResult) -> None:
        super().__init__(message)
        self.result = result


@dataclass
class StepResult:
    phase: str
    label: str
    action: str
    line: int
    command: str = ""
    exit_status: int | None = None
    stdout: str = ""
    stderr: str = ""
    duration: float = 0.0
    status: str = "passed"
    message: str = ""
    attempts: int = 1

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class CaseRunner:
    """Runs the steps of one case, keeping its variables and the record of every step."""

    def __init__(self, target: Target, driver: RuntimeDriver | None, variables: dict[str, str],
                 deadline: float) -> None:
        self.target = target
        self.driver = driver
        self.variables = dict(variables)
        self.deadline = deadline
        self.results: list[StepResult] = []
        self.captured: dict[str, str] = {}

    def run_steps(self, phase: Phase, steps: list[Step]) -> None:
        for step in steps:
            self.run_step(phase, step)

    def run_step(self, phase: Phase, step: Step) -> None:
        attempts = int(step.retry.get("attempts", 1))
        interval = step.retry.get("interval", 0.5)
        for attempt in range(1, attempts + 1):
            result = self._attempt(phase, step)
            result.attempts = attempt
            if result.status != "failed" or attempt == attempts or time.monotonic() >= self.deadline:
                break
            time.sleep(max(0.0, min(interval, self.deadline - time.monotonic())))
        self.results.append(result)
        if result.status == "error":
            raise MatchTimeout(f"{result.label} (line {step.line}): {result.message}")
        if result.status == "failed":
            raise ExpectationFailed(f"{result.label} (line {step.line}): {result.message}", result)
        self._capture(step, result)

    def _attempt(self, phase: Phase, step: Step) -> StepResult:
        result = StepResult(phase=phase, label=step.label(), action=step.action, line=step.line)
        body = render(step.body, self.variables)
        expect = render(step.expect, self.variables)
        stdin = render(step.stdin, self.variables) if step.stdin is not None else None
        started = time.monotonic()
        try:
            if step.action in ("run", "container"):
                outcome = self._command(step, body, stdin, result)
                result.exit_status, result.stdout, result.stderr = (
                    outcome.exit_status, outcome.stdout[-OUTPUT_LIMIT:], outcome.stderr[-OUTPUT_LIMIT:])
                default_exit: Any = "any" if phase == "teardown" else 0
                problems = [check_exit(expect.get("exit", default_exit), outcome.exit_status)]
                problems += [check_text(expect[s], getattr(outcome, s), s, self.deadline)
                             for s in ("stdout", "stderr") if s in expect]
            elif step.action == "check":
                spec = {k: v for k, v in body.items() if k != "value"}
                result.command = f"check {body['value']!r}"
                problems = [check_text(spec, str(body["value"]), "value", self.deadline)]
            else:
                problems = self._file(body, result)
        except CommandTimeout as exc:
            problems = [str(exc)]
        except MatchTimeout as exc:  # the suite's regex, not the runtime, is at fault: no verdict
            result.duration = round(time.monotonic() - started, 3)
            result.status, result.message = "error", str(exc)
            return result
        result.duration = round(time.monotonic() - started, 3)
        failed = [p for p in problems if p]
        if failed:
            result.status, result.message = "failed", "; ".join(failed)
        return result

    def _timeout(self, step: Step) -> tuple[float, str]:
        """The step's time limit, and which limit it is (for the message when it runs out)."""
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise CommandTimeout("timed out: the case's timeout was used up before this step")
        if step.timeout and step.timeout <= left:
            return step.timeout, ""
        return left, " (what was left of the case's timeout)"

    def _command(self, step: Step, body: Any, stdin: str | None, result: StepResult) -> CommandResult:
        timeout, which = self._timeout(step)
        if step.action == "run":
            result.command = body
            try:
                return self.target.run(body, timeout=timeout, stdin=stdin)
            except CommandTimeout as exc:
                raise self._timed_out(exc, timeout, which, None) from None
        if self.driver is None:
            raise DriverError("a container step ran without a runtime driver")
        args = shlex.split(body) if isinstance(body, str) else [str(a) for a in body]
        marker = secrets.token_hex(6)
        argv = self.driver.step_argv(args, marker)
        result.command = shlex.join(argv)
        try:
            return self.target.run_argv(argv, timeout=timeout, stdin=stdin)
        except CommandTimeout as exc:
            # The CLI is dead, but the container it started lives on under the runtime's monitor: remove it.
            raise self._timed_out(exc, timeout, which, self.driver.kill_step(marker)) from None

    @staticmethod
    def _timed_out(exc: CommandTimeout, timeout: float, which: str, containers: list[str] | None) -> CommandTimeout:
        """A message that says exactly what ran out and what was killed."""
        killed = exc.killed or "nothing (the target did not say)"
        if containers:
            killed += f" and container{'s' if len(containers) > 1 else ''} {', '.join(containers)}"
        elif containers is not None:
            killed += " (no container of this step was left to remove)"
        return CommandTimeout(f"timed out after {seconds(timeout)} s{which}; killed {killed}",
                              evidence=exc.evidence, killed=killed)

    def _file(self, body: dict[str, Any], result: StepResult) -> list[str | None]:
        path = str(body["path"])
        result.command = f"file {path}"
        file = self.target.host.file(path)
        exists = bool(file.exists)
        problems: list[str | None] = []
        if "exists" in body and exists != bool(body["exists"]):
            problems.append(f"{path} {'exists' if exists else 'does not exist'}, expected exists={body['exists']}")
        if not exists:
            if any(k in body for k in ("type", "mode", "content")):
                problems.append(f"{path} does not exist")
            return problems
        if "type" in body:
            kind = "symlink" if file.is_symlink else "directory" if file.is_directory else "file"
            if kind != body["type"]:
                problems.append(f"{path} is a {kind}, expected a {body['type']}")
        if "mode" in body:
            mode = int(file.mode)
            if mode != int(str(body["mode"]), 8):
                problems.append(f"{path} has mode {mode:04o}, expected {body['mode']}")
        if "content" in body:
            problems.append(check_text(body["content"], file.content_string, f"content of {path}", self.deadline))
        return problems

    def _capture(self, step: Step, result: StepResult) -> None:
        for name, source in step.capture.items():
            if isinstance(source, str):
                value = getattr(result, source)
            else:
                text = getattr(result, source.get("from", "stdout"))
                groups = search(source["regex"], text, self.deadline) if "regex" in source else None
                if "regex" in source and groups is None:
                    result.status = "failed"
                    result.message = f"capture {name}: /{source['regex']}/ not found in {source.get('from', 'stdout')}"
                    raise ExpectationFailed(f"{result.label} (line {step.line}): {result.message}", result)
                value = (groups[1] if len(groups) > 1 else groups[0]) or "" if groups else text
            self.variables[name] = self.captured[name] = value.strip()
