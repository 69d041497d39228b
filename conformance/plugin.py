"""pytest plugin: every ``*.yaml`` suite file becomes a collector, every case (per runtime) an item.

The verdicts map onto pytest's own outcomes so that pytest, JUnit consumers and our reports agree: the case's
``setup:`` *and* ``steps:`` run during the item's setup phase, so anything the harness cannot do there surfaces
as a pytest *error*; a failed expectation in ``steps:`` is stored and raised from ``runtest`` - a *failure*;
``teardown:`` runs in the item's teardown (an error there is an *error*); a missing feature is a *skip* raised in
setup with the key in its reason. Each item's full record travels in ``report.user_properties`` so reports also
work under pytest-xdist, where items run in worker processes.

Two verdicts go beyond pytest's (see ``conformance/reports/status.py``): a case whose steps passed only on a retry
is ``flaky`` (a pytest pass), and a failure on a runtime whose driver declares one of the case's ``differences:``
keys absent is a ``known_difference`` (pytest's xfail, unless ``--strict-differences``). ``--shard K/N`` keeps a
stable part of the items; testinfra's ``--hosts`` is turned into the target or refused, never ignored.
"""

from __future__ import annotations

import hashlib
import json
import signal
import sys
import time
from collections.abc import Generator, Iterator
from datetime import UTC
from pathlib import Path
from typing import Any

import pytest

from conformance.drivers import RuntimeDriver
from conformance.errors import ConformanceError, SuiteError, TargetError
from conformance.features import missing
from conformance.reports.shards import in_shard, parse_shard
from conformance.reports.status import STRICT_BAD, counts, difference_note, exit_code, flaky_note, retried_steps
from conformance.reports.text import visible
from conformance.session import RunSession
from conformance.suite.loader import load_suite
from conformance.suite.model import Case, Suite
from conformance.suite.runner import CaseRunner, ExpectationFailed, StepResult
from conformance.suite.template import variables_in

RECORD_KEY = "conformance_record"
_session_key = pytest.StashKey[RunSession]()
_results_key = pytest.StashKey[dict[str, Any]]()
_hosts_error_key = pytest.StashKey[str]()


class SetupFailed(ConformanceError):
    """A case's ``setup:`` steps did not do what they should: the case cannot be judged."""


class TeardownFailed(ConformanceError):
    """A case's ``teardown:`` steps failed: the target may hold leftovers."""


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("conformance", "conformance suites")
    group.addoption("--target", default=None,
                    help="target host: local (default), ssh://user@host, qemu, vagrant (testinfra's --hosts also works "
                         "for one local:// or ssh:// host)")
    group.addoption("--runtime", action="append", default=None,
                    help="runtime under test (repeatable): refrt, podman, docker. Default: refrt")
    group.addoption("--report-dir", default=None, help="write junit.xml, results.json, report.html, summary.md")
    group.addoption("--destroy", default="always", choices=("always", "passing", "never"),
                    help="what to do with a disposable VM target at the end (as Test Kitchen)")
    group.addoption("--strict-differences", action="store_true", default=False,
                    help="a known difference (a case failing on a runtime that declares one of its differences: "
                         "keys absent) counts as a failure: exit 1")
    group.addoption("--shard", default=None, type=_shard_option, metavar="K/N",
                    help="run only shard K of N: a stable split of the cases by the hash of their ids; join the "
                         "shards' results.json with 'conformance report merge'")


def _shard_option(value: str) -> tuple[int, int]:
    import argparse

    try:
        return parse_shard(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def pytest_configure(config: pytest.Config) -> None:
    runtimes = config.getoption("runtime") or ["refrt"]
    worker = getattr(config, "workerinput", None)
    run_id = worker.get("conformance_run_id") if worker else None
    target = config.getoption("target")
    try:
        target = target_from_hosts(config, target)
    except ConformanceError as exc:
        # Refused only if suites are collected: the same pytest may run plain testinfra tests with --hosts.
        config.stash[_hosts_error_key] = str(exc)
    config.stash[_session_key] = RunSession(target or "local", runtimes, run_id=run_id,
                                            destroy=config.getoption("destroy"))
    config.stash[_results_key] = {"cases": [], "collect_errors": [], "started": time.time(),
                                  "shard": config.getoption("shard")}
    for level in ("must", "should", "may"):
        config.addinivalue_line("markers", f"{level}: a suite case of level {level.upper()} (select with -m)")
    # SIGTERM unwinds like Ctrl-C, so sessionfinish still destroys VMs and removes containers.
    if worker is None and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _raise_interrupt)


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


_TESTINFRA_SSH = ("ssh", "paramiko", "safe-ssh")


def target_from_hosts(config: pytest.Config, target: str | None) -> str | None:
    """The target named by testinfra's own ``--hosts`` (pytest-testinfra is installed, so users reach for it).

    One ``local://`` or ``ssh://``/``paramiko://`` host (with testinfra's ``--ssh-identity-file``, ``--sudo`` and
    its ``ssh_identity_file``/``timeout``/``sudo`` URL options) becomes that target; anything this harness cannot
    honour exactly - several hosts, another backend, options it would have to ignore, a different ``--target`` -
    raises a :class:`ConformanceError` naming it. Without ``--hosts`` this returns ``target`` unchanged.
    """
    from urllib.parse import parse_qs, quote, urlsplit

    hosts = config.getoption("hosts", None)
    if not hosts:
        return target
    specs = [h.strip() for h in str(hosts).split(",") if h.strip()]
    if len(specs) != 1:
        raise ConformanceError(f"--hosts={hosts}: a conformance run has one target; give one host "
                               "(run once per host, or split one run with --shard)")
    raw = specs[0]
    for option in ("ssh_config", "ssh_extra_args", "sudo_user", "ansible_inventory", "force_ansible"):
        if config.getoption(option, None):
            raise ConformanceError(f"--hosts={raw}: testinfra's --{option.replace('_', '-')} is not supported by "
                                   "the conformance targets; use --target ssh://user@host:port?key=PATH")
    connection = config.getoption("connection", None)
    if "://" not in raw:
        raw = "local://" if raw == "local" else f"{connection or 'ssh'}://{raw}"
    parts = urlsplit(raw)
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    if parts.scheme == "local":
        mapped = "local"
    elif parts.scheme in _TESTINFRA_SSH and parts.hostname:
        options: dict[str, str] = {}
        key = query.pop("ssh_identity_file", None) or config.getoption("ssh_identity_file", None)
        if key:
            options["key"] = key
        if "timeout" in query:
            options["timeout"] = query.pop("timeout")
        if config.getoption("sudo", False) or query.pop("sudo", "false").lower() in ("1", "true", "yes"):
            options["sudo"] = "true"
        if query:
            raise ConformanceError(f"--hosts={specs[0]}: option {sorted(query)[0]!r} is not supported by the "
                                   "conformance ssh target (supported: ssh_identity_file, timeout, sudo)")
        user = f"{quote(parts.username)}@" if parts.username else "root@"
        port = f":{parts.port}" if parts.port else ""
        mapped = f"ssh://{user}{parts.hostname}{port}" + (
            "?" + "&".join(f"{k}={quote(v, safe='/~')}" for k, v in options.items()) if options else "")
    else:
        raise ConformanceError(f"--hosts={specs[0]}: testinfra's {parts.scheme!r} backend cannot be a conformance "
                               "target; use --target local, ssh://user@host[:port], qemu or vagrant")
    if target is not None and target != mapped:
        raise ConformanceError(f"--hosts={specs[0]} and --target {target} name different targets; give one")
    return mapped


def pytest_configure_node(node: Any) -> None:
    """(xdist) Every worker shares the controller's run id; each brings up its own target."""
    node.workerinput["conformance_run_id"] = node.config.stash[_session_key].run_id


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    if file_path.suffix in (".yaml", ".yml") and not file_path.name.startswith("_"):
        return SuiteFile.from_parent(parent, path=file_path)
    return None


class SuiteFile(pytest.File):
    suite: Suite

    def collect(self) -> Iterator[pytest.Item]:
        self.suite = load_suite(self.path)
        runtimes = self.config.stash[_session_key].runtimes
        for case in self.suite.cases:
            for runtime in (runtimes if case.uses_runtime else [None]):
                name = f"{case.id}[{runtime_label(runtime)}]" if runtime else case.id
                item = CaseItem.from_parent(self, name=name, suite=self.suite, case=case, runtime=runtime)
                item.add_marker(getattr(pytest.mark, case.level.lower()))
                # -k sees the item's name (case id and runtime label), its file, its level, and these:
                item.extra_keyword_matches.update((self.suite.name, case.title))
                yield item

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> str:
        if isinstance(excinfo.value, SuiteError):
            return str(excinfo.value)
        return str(super().repr_failure(excinfo))


def runtime_label(spec: str) -> str:
    """How a runtime appears in item names (and so to ``-k``): its spec, except that an argument holding a path
    (``custom:/x/no-user``) is replaced by a short hash of it (``custom-1a2b3c``). pytest's ``-k`` matches any
    substring of an item's name, so ``-k user`` would otherwise select every case run by ``/x/no-user``.
    Records and reports keep the full spec in ``runtime``."""
    name, _, argument = spec.partition(":")
    if "/" not in argument:
        return spec
    return f"{name}-{hashlib.sha256(argument.encode()).hexdigest()[:6]}"


class CaseItem(pytest.Item):
    def __init__(self, *, suite: Suite, case: Case, runtime: str | None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.suite = suite
        self.case = case
        self.runtime = runtime
        self.runner: CaseRunner | None = None
        self.failure: ExpectationFailed | None = None
        self.tmp = ""
        self.record: dict[str, Any] | None = None
        self.position = 0

    @property
    def session_state(self) -> RunSession:
        return self.config.stash[_session_key]

    def setup(self) -> None:
        state = self.session_state
        self.started = time.monotonic()
        requires = [*self.suite.requires, *self.case.requires]
        features = dict(state.features())
        driver = state.driver(self.runtime) if self.runtime else None
        if self.runtime:
            features.update(state.runtime_features(self.runtime))
        reason = missing(requires, features)
        if reason:
            pytest.skip(reason)
        variables = {**self.suite.vars, "runtime": self.runtime or "none", "target": state.target.name,
                     "run_id": state.run_id, "unique": f"cf-{_token()}"}
        if "registry" in self.suite.services:
            variables["registry"] = state.service("registry").address
        # A temp directory costs two commands on the target (make, remove): over SSH into a TCG guest ~0.4 s a
        # case, so only the cases that name {{tmp}} get one.
        if _uses_tmp(self.suite, self.case):
            self.tmp = variables["tmp"] = state.case_tmp()
        self.runner = CaseRunner(state.target, driver, variables, time.monotonic() + self.case.timeout)
        try:
            self.runner.run_steps("setup", self.case.setup)
        except ExpectationFailed as exc:
            raise SetupFailed(f"setup failed: {exc}") from None
        try:
            self.runner.run_steps("steps", self.case.steps)
        except ExpectationFailed as exc:
            self.failure = exc

    def runtest(self) -> None:
        if self.failure is not None:
            raise self.failure

    def teardown(self) -> None:
        if self.runner is None:
            return
        state = self.session_state
        # Teardown gets its own time budget: it must run even when the case used up its timeout.
        self.runner.deadline = time.monotonic() + max(60.0, self.case.timeout / 2)
        try:
            self.runner.run_steps("teardown", self.case.teardown)
        except ExpectationFailed as exc:
            raise TeardownFailed(f"teardown failed: {exc}") from None
        finally:
            if self.tmp:
                state.target.run(f"rm -rf {self.tmp}", timeout=60)

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> str:
        # What the target printed is shown escaped (reports/text.py): a raw NUL or terminal escape would garble
        # the terminal, and undecodable bytes could not even cross to the pytest-xdist controller.
        exc = excinfo.value
        if isinstance(exc, ExpectationFailed):
            return visible(_describe_failure(exc.result))
        if isinstance(exc, ConformanceError):
            evidence = getattr(exc, "evidence", "")
            return visible(f"{type(exc).__name__}: {exc}" + (f"\n--- evidence ---\n{evidence}" if evidence else ""))
        return str(super().repr_failure(excinfo))

    def _repr_failure_py(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> Any:
        # pytest renders setup/teardown exceptions with this private hook; harness errors get one clear line.
        if isinstance(excinfo.value, (ConformanceError, ExpectationFailed)):
            return self.repr_failure(excinfo)
        return super()._repr_failure_py(excinfo, style)

    def reportinfo(self) -> tuple[Path, int, str]:
        return self.path, self.case.line - 1, f"{self.suite.name}::{self.name}"


def _uses_tmp(suite: Suite, case: Case) -> bool:
    """Whether any step of ``case`` (or a suite variable) names ``{{tmp}}``."""
    fields = [[step.body, step.stdin, step.expect] for _, steps in case.phases() for step in steps]
    return "tmp" in variables_in([fields, list(suite.vars.values())])


def _describe_failure(result: StepResult) -> str:
    lines = [f"{result.label} (line {result.line}): {result.message}"]
    if result.command:
        lines.append(f"command: {result.command}")
    for stream in ("stdout", "stderr"):
        text = getattr(result, stream).strip()
        if text:
            lines.append(f"--- {stream} ---\n{text[-2000:]}")
    return "\n".join(lines)


def _token() -> str:
    import secrets

    return secrets.token_hex(4)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, Any]:
    report = yield
    if not isinstance(item, CaseItem):
        return report
    if item.record is None:
        item.record = _new_record(item)
    record = item.record
    record["duration"] = round(record["duration"] + report.duration, 3)
    if report.skipped and record["status"] == "passed":
        record["status"] = "skipped"
        longrepr = report.longrepr
        record["reason"] = str(longrepr[2] if isinstance(longrepr, tuple) else longrepr).removeprefix("Skipped: ")
    elif report.failed:
        message = str(report.longrepr) if report.longrepr else "failed"
        if report.when == "call":
            record["message"] = message.split("\n", 1)[0]
            difference = known_difference(item)
            if difference is None:
                record["status"] = "failed"
            else:
                record["status"], record["difference"] = "known_difference", difference
                record["reason"] = difference_note(difference)
                if not item.config.getoption("strict_differences"):
                    # pytest's own name for an expected failure: shown as "x", not counted as failed.
                    report.outcome, report.wasxfail = "skipped", record["reason"]
        elif record["status"] not in ("failed", "known_difference"):
            record["status"] = "error"
            record["message"] = message.split("\n", 1)[0]
        record["details"] = (record.get("details", "") + "\n" + message).strip()
        if call.excinfo is not None and isinstance(call.excinfo.value, TargetError):
            record["evidence"] = call.excinfo.value.evidence
    if report.when == "teardown":
        state = item.session_state
        if item.runner is not None:
            record["steps"] = [r.to_dict() for r in item.runner.results]
            record["captured"] = item.runner.captured
        retried = retried_steps(record["steps"])
        if record["status"] == "passed" and retried:
            record["status"], record["reason"] = "flaky", flaky_note(retried)
            record["retried"] = [{k: s[k] for k in ("phase", "label", "attempts")} for s in retried]
        record["target"] = {"name": state.target_spec, **state.facts}
        if item.runtime and record["status"] != "skipped":
            record["runtime_version"] = _safe_version(state, item.runtime)
        report.user_properties.append((RECORD_KEY, json.dumps(record)))
    return report


def known_difference(item: CaseItem) -> dict[str, str] | None:
    """The first of the case's ``differences:`` keys that the runtime's driver declares absent (``False``), with
    the comment the driver wrote next to that declaration; None when the failure is not a declared difference."""
    if not item.case.differences or not item.runtime:
        return None
    try:
        driver = item.session_state.driver(item.runtime)
        declared = driver.features()
    except ConformanceError:
        return None
    for key in item.case.differences:
        if declared.get(key) is False:
            return {"key": key, "note": _declaration_comment(driver, key)}
    return None


def _declaration_comment(driver: RuntimeDriver, key: str) -> str:
    """The ``# comment`` on the line of ``features()`` that declares ``key``: drivers document each difference
    there, and the report should say what the driver says."""
    import inspect
    import io
    import textwrap
    import tokenize

    try:
        source = textwrap.dedent(inspect.getsource(type(driver).features))
        line = -1
        for token in tokenize.generate_tokens(io.StringIO(source).readline):
            if token.type == tokenize.STRING and token.string.strip("\"'") == key:
                line = token.start[0]
            elif token.type == tokenize.COMMENT and token.start[0] == line:
                return token.string.lstrip("#").strip()
    except (OSError, TypeError, tokenize.TokenError, SyntaxError):
        pass
    return ""


def _safe_version(state: RunSession, runtime: str) -> str:
    try:
        return state.runtime_versions().get(runtime, "unknown")
    except Exception:
        return "unknown"


def _new_record(item: CaseItem) -> dict[str, Any]:
    return {
        "suite": item.suite.name, "case": item.case.id, "name": item.name, "title": item.case.title,
        "spec": item.case.spec, "level": item.case.level, "runtime": item.runtime or "none",
        "file": str(item.path), "line": item.case.line, "status": "passed", "reason": "", "message": "",
        "duration": 0.0, "steps": [], "captured": {}, "position": item.position,
    }


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    for key, value in report.user_properties:
        if key == RECORD_KEY:
            results = _controller_results(report)
            if results is not None:
                results["cases"].append(json.loads(str(value)))


_CONFIG: list[pytest.Config] = []


def _controller_results(report: pytest.TestReport) -> dict[str, Any] | None:
    return _CONFIG[0].stash[_results_key] if _CONFIG else None


@pytest.hookimpl(tryfirst=True)
def pytest_sessionstart(session: pytest.Session) -> None:
    _CONFIG[:] = [session.config]


def pytest_collectreport(report: pytest.CollectReport) -> None:
    if report.failed and _CONFIG:
        _CONFIG[0].stash[_results_key]["collect_errors"].append(
            {"file": report.nodeid, "message": str(report.longrepr).strip().splitlines()[-1]})


def _refuse_hosts(config: pytest.Config) -> None:
    problem = config.stash.get(_hosts_error_key, "")
    if problem:
        sys.stderr.write(f"conformance: error: {problem}\n")
        pytest.exit(problem, returncode=2)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_node_collection_finished(node: Any, ids: list[str]) -> None:
    """(xdist) The controller collects nothing itself: it refuses a bad ``--hosts`` once a worker has collected
    suite cases, before any is scheduled."""
    if any(".yaml::" in i or ".yml::" in i for i in ids):
        _refuse_hosts(node.config)


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    """Refuse a ``--hosts`` the harness cannot honour (once suites are collected), then keep only this shard."""
    cases = [item for item in items if isinstance(item, CaseItem)]
    if not cases:
        return
    if not hasattr(config, "workerinput"):  # under pytest-xdist the controller refuses, see below
        _refuse_hosts(config)
    for position, item in enumerate(cases):
        item.position = position  # results list cases in collection order, whatever order they ran in
    shard = config.getoption("shard")
    if shard is None:
        return
    index, count = shard
    dropped = [item for item in cases if not in_shard(f"{item.suite.name}::{item.name}", index, count)]
    if dropped:
        gone = set(map(id, dropped))
        items[:] = [item for item in items if id(item) not in gone]
        config.hook.pytest_deselected(items=dropped)


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    config = session.config
    state = config.stash[_session_key]
    results = config.stash[_results_key]
    strict = bool(config.getoption("strict_differences"))
    bad = STRICT_BAD if strict else ("failed", "error")
    state.any_failed = any(c["status"] in bad for c in results["cases"])
    state.close()
    if hasattr(config, "workerinput"):
        return
    # A shard may legitimately hold no case; its (empty) results still belong to the merge.
    conformance_mode = bool(results["cases"]) or results["shard"] is not None or any(
        e["file"].endswith((".yaml", ".yml")) for e in results["collect_errors"])
    if not conformance_mode:
        return
    code = exit_code(results["cases"], results["collect_errors"], strict=strict,
                     empty_ok=results["shard"] is not None)
    if exitstatus == pytest.ExitCode.INTERRUPTED:
        code = 2
    document = build_document(state, results, code, strict=strict)
    config.stash[_document_key] = document
    report_dir = config.getoption("report_dir")
    if report_dir:
        from conformance.reports import write_all

        write_all(document, Path(report_dir))
    session.exitstatus = code


_document_key = pytest.StashKey[dict[str, Any]]()


def build_document(state: RunSession, results: dict[str, Any], code: int, *, strict: bool = False) -> dict[str, Any]:
    """The results.json document: the run's header, its summary and every case record."""
    cases = sorted(results["cases"], key=lambda case: case["position"])
    target = next((c["target"] for c in cases if c.get("target")), {"name": state.target_spec})
    runtimes: dict[str, dict[str, str]] = {}
    for case in cases:
        if case["runtime"] != "none":
            runtimes.setdefault(case["runtime"], {"version": case.get("runtime_version", "unknown")})
    document = {
        "format": "conformance-results/1",
        "run_id": state.run_id,
        "started": _iso(results["started"]),
        "finished": _iso(time.time()),
        "duration": round(time.time() - results["started"], 3),
        "target": target,
        "runtimes": runtimes,
        "summary": counts(cases),
        "exit_code": code,
        "strict_differences": strict,
        "collect_errors": results["collect_errors"],
        "cases": cases,
    }
    if results["shard"] is not None:
        document["shard"] = {"index": results["shard"][0], "count": results["shard"][1]}
    return document


def _iso(timestamp: float) -> str:
    from datetime import datetime

    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="seconds")


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    document = config.stash.get(_document_key, None)
    if document is None:
        return
    from conformance.reports.summary import terminal_table

    terminalreporter.write_sep("=", "conformance summary")
    terminalreporter.write_line(terminal_table(document))
    report_dir = config.getoption("report_dir")
    if report_dir:
        terminalreporter.write_line(f"reports: {report_dir}")
