"""Load and validate suite files, keeping line numbers so every error names file, line and key.

PyYAML drops positions once it builds Python objects, so mappings are built as :class:`_Node` dicts that remember
the line of each key. Validation is hand-written rather than a JSON Schema so that messages can say exactly which
key on which line is wrong, and so that variable use can be checked in document order.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from conformance.errors import SuiteError
from conformance.suite.matchers import compile_pattern
from conformance.suite.model import Action, Case, Phase, Step, Suite
from conformance.suite.template import BUILTIN_VARS, variables_in

SUITE_KEYS = {"name", "description", "requires", "services", "vars", "cases"}
CASE_KEYS = {"id", "title", "spec", "level", "requires", "timeout", "setup", "steps", "teardown", "differences",
             "unbreakable"}
ACTIONS: tuple[Action, ...] = ("run", "container", "check", "file")
STEP_KEYS = {*ACTIONS, "name", "stdin", "timeout", "expect", "capture", "retry"}
EXPECT_KEYS = {"exit", "stdout", "stderr"}
MATCHER_KEYS = {"equals", "contains", "not_contains", "matches", "not_matches", "empty", "lines",
                "lt", "le", "gt", "ge", "eq", "ne"}
FILE_KEYS = {"path", "exists", "type", "mode", "content"}
RETRY_KEYS = {"attempts", "interval"}
LEVELS = {"MUST", "SHOULD", "MAY"}
KNOWN_SERVICES = {"registry"}
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
CASE_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
VAR_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class _Node(dict[Any, Any]):
    """A YAML mapping that knows its own line and the line of each key."""

    line: int
    key_lines: dict[Any, int]


class _Loader(yaml.SafeLoader):
    pass


def _construct_mapping(loader: _Loader, node: yaml.MappingNode) -> _Node:
    loader.flatten_mapping(node)
    result = _Node()
    result.line = node.start_mark.line + 1
    result.key_lines = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        line = key_node.start_mark.line + 1
        if key in result:
            raise SuiteError(f"duplicate key {key!r}", line=line)
        result[key] = loader.construct_object(value_node, deep=True)
        result.key_lines[key] = line
    return result


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def load_suite(path: str | Path) -> Suite:
    """Parse and validate one suite file. Raises :class:`SuiteError` with file and line."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SuiteError(f"cannot read suite: {exc.strerror}", path=str(path)) from None
    try:
        data = yaml.load(text, Loader=_Loader)
    except SuiteError as exc:
        raise SuiteError(str(exc).split(": ", 1)[-1], path=str(path), line=exc.line) from None
    except yaml.MarkedYAMLError as exc:
        line = exc.problem_mark.line + 1 if exc.problem_mark else None
        raise SuiteError(f"invalid YAML: {exc.problem}", path=str(path), line=line) from None
    except yaml.YAMLError as exc:
        raise SuiteError(f"invalid YAML: {exc}", path=str(path)) from None
    return _Validator(str(path)).suite(data)


class _Validator:
    def __init__(self, path: str) -> None:
        self.path = path

    def fail(self, message: str, line: int | None) -> SuiteError:
        return SuiteError(message, path=self.path, line=line)

    def mapping(self, value: Any, what: str, line: int | None, allowed: set[str]) -> _Node:
        if not isinstance(value, _Node):
            raise self.fail(f"{what} must be a mapping, got {_type_name(value)}", line)
        for key in value:
            if key not in allowed:
                raise self.fail(f"unknown key {key!r} in {what} (allowed: {', '.join(sorted(allowed))})",
                                value.key_lines.get(key, value.line))
        return value

    def typed(self, node: _Node, key: str, types: type | tuple[type, ...], what: str, default: Any = None,
              required: bool = False) -> Any:
        if key not in node:
            if required:
                raise self.fail(f"missing required key {key!r} in {what}", node.line)
            return default
        value = node[key]
        names = types if isinstance(types, tuple) else (types,)
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in names):
            expected = " or ".join(t.__name__ for t in names)
            raise self.fail(f"key {key!r} in {what} must be {expected}, got {_type_name(value)}",
                            node.key_lines[key])
        return value

    def str_list(self, node: _Node, key: str, what: str) -> list[str]:
        value = self.typed(node, key, list, what, default=[])
        if not all(isinstance(item, str) for item in value):
            raise self.fail(f"key {key!r} in {what} must be a list of strings", node.key_lines[key])
        return list(value)

    def suite(self, data: Any) -> Suite:
        if data is None:
            raise self.fail("empty suite file", None)
        node = self.mapping(data, "suite", 1, SUITE_KEYS)
        name = self.typed(node, "name", str, "suite", required=True)
        if not NAME_RE.match(name):
            raise self.fail(f"suite name {name!r} must match {NAME_RE.pattern}", node.key_lines["name"])
        description = self.typed(node, "description", str, "suite", required=True)
        services = self.str_list(node, "services", "suite")
        for service in services:
            if service not in KNOWN_SERVICES:
                raise self.fail(f"unknown service {service!r} (known: {', '.join(sorted(KNOWN_SERVICES))})",
                                node.key_lines["services"])
        variables = self.vars(node)
        defined = set(variables) | BUILTIN_VARS - ({"registry"} if "registry" not in services else set())
        cases_value = self.typed(node, "cases", list, "suite", required=True)
        if not cases_value:
            raise self.fail("a suite needs at least one case", node.key_lines["cases"])
        cases: list[Case] = []
        seen: dict[str, int] = {}
        for item in cases_value:
            case = self.case(item, defined, node.key_lines["cases"])
            if case.id in seen:
                raise self.fail(f"duplicate case id {case.id!r} (first at line {seen[case.id]})", case.line)
            seen[case.id] = case.line
            cases.append(case)
        return Suite(name=name, description=description, path=self.path, cases=cases,
                     requires=self.str_list(node, "requires", "suite"), services=services, vars=variables)

    def vars(self, node: _Node) -> dict[str, str]:
        raw = self.typed(node, "vars", _Node, "suite", default=None)
        if raw is None:
            return {}
        result: dict[str, str] = {}
        for key, value in raw.items():
            line = raw.key_lines[key]
            if not isinstance(key, str) or not VAR_NAME_RE.match(key):
                raise self.fail(f"variable name {key!r} must match {VAR_NAME_RE.pattern}", line)
            if key in BUILTIN_VARS:
                raise self.fail(f"variable {key!r} is built in and cannot be redefined", line)
            if isinstance(value, bool) or not isinstance(value, (str, int, float)):
                raise self.fail(f"variable {key!r} must be a string or number, got {_type_name(value)}", line)
            result[key] = str(value)
        return result

    def case(self, data: Any, defined: set[str], line: int) -> Case:
        node = self.mapping(data, "case", line, CASE_KEYS)
        case_id = self.typed(node, "id", str, "case", required=True)
        what = f"case {case_id!r}"
        if not CASE_ID_RE.match(case_id):
            raise self.fail(f"case id {case_id!r} must match {CASE_ID_RE.pattern}", node.key_lines["id"])
        level = self.typed(node, "level", str, what, default="MUST")
        if level not in LEVELS:
            raise self.fail(f"level of {what} must be one of MUST, SHOULD, MAY, got {level!r}",
                            node.key_lines["level"])
        timeout = self.typed(node, "timeout", (int, float), what, default=120)
        if timeout <= 0:
            raise self.fail(f"timeout of {what} must be positive", node.key_lines["timeout"])
        differences = self.str_list(node, "differences", what)
        for key in differences:
            if not key.startswith("runtime.") or key == "runtime.":
                raise self.fail(f"difference {key!r} of {what} must be a 'runtime.*' feature key",
                                node.key_lines["differences"])
        unbreakable = self.typed(node, "unbreakable", str, what, default="")
        if "unbreakable" in node and not unbreakable.strip():
            raise self.fail(f"'unbreakable' of {what} must say why no broken runtime can fail it",
                            node.key_lines["unbreakable"])
        known = set(defined)
        phases: dict[Phase, list[Step]] = {}
        for phase in ("setup", "steps", "teardown"):
            raw = self.typed(node, phase, list, what, default=[], required=phase == "steps")
            if phase == "steps" and not raw:
                raise self.fail(f"{what} has no steps", node.key_lines["steps"])
            phases[phase] = [self.step(item, known, f"{what} {phase}", node.key_lines.get(phase, node.line))
                             for item in raw]
        return Case(
            id=case_id,
            title=self.typed(node, "title", str, what, required=True),
            line=node.line,
            spec=self.typed(node, "spec", str, what, default=""),
            level=level,
            requires=self.str_list(node, "requires", what),
            timeout=float(timeout),
            setup=phases["setup"],
            steps=phases["steps"],
            teardown=phases["teardown"],
            differences=differences,
            unbreakable=unbreakable.strip(),
        )

    def step(self, data: Any, known: set[str], what: str, line: int) -> Step:
        node = self.mapping(data, f"step of {what}", line, STEP_KEYS)
        actions = [key for key in ACTIONS if key in node]
        if len(actions) != 1:
            found = ", ".join(actions) or "none"
            raise self.fail(f"a step needs exactly one of {', '.join(ACTIONS)} (found: {found})", node.line)
        action: Action = actions[0]
        body = node[action]
        body_line = node.key_lines[action]
        if action == "run" and not isinstance(body, str):
            raise self.fail(f"'run' must be a string, got {_type_name(body)}", body_line)
        if action == "container" and not (isinstance(body, str) or (
                isinstance(body, list) and all(isinstance(a, (str, int)) for a in body))):
            raise self.fail("'container' must be a string or a list of arguments", body_line)
        if action == "check":
            self.mapping(body, "check", body_line, MATCHER_KEYS | {"value"})
            if "value" not in body:
                raise self.fail("'check' needs a 'value'", body_line)
        if action == "file":
            self.mapping(body, "file", body_line, FILE_KEYS)
            if "path" not in body:
                raise self.fail("'file' needs a 'path'", body_line)
            if "content" in body:
                self.matcher(body["content"], "content", body.key_lines["content"])
        expect = self.typed(node, "expect", _Node, what, default=_Node())
        if expect:
            self.mapping(expect, "expect", node.key_lines["expect"], EXPECT_KEYS)
            for stream in ("stdout", "stderr"):
                if stream in expect:
                    self.matcher(expect[stream], stream, expect.key_lines[stream])
            if "exit" in expect:
                self.exit_spec(expect["exit"], expect.key_lines["exit"])
        retry = self.typed(node, "retry", _Node, what, default=_Node())
        if retry:
            self.mapping(retry, "retry", node.key_lines["retry"], RETRY_KEYS)
        timeout = self.typed(node, "timeout", (int, float), what, default=None)
        stdin = self.typed(node, "stdin", str, what, default=None)
        for name in sorted(variables_in([body, expect, stdin])):
            if name not in known:
                raise self.fail(f"variable {{{{{name}}}}} is not defined here (define it in 'vars' or capture "
                                f"it in an earlier step)", body_line)
        capture = self.capture(node, what)
        known.update(capture)
        return Step(action=action, body=body, line=node.line,
                    name=self.typed(node, "name", str, what, default=""), stdin=stdin,
                    timeout=float(timeout) if timeout is not None else None, expect=dict(expect),
                    capture=capture, retry={k: float(v) for k, v in retry.items()})

    def capture(self, node: _Node, what: str) -> dict[str, Any]:
        raw = self.typed(node, "capture", _Node, what, default=_Node())
        for name, source in raw.items():
            line = raw.key_lines[name]
            if not isinstance(name, str) or not VAR_NAME_RE.match(name) or name in BUILTIN_VARS:
                raise self.fail(f"cannot capture into {name!r}", line)
            if source in ("stdout", "stderr"):
                continue
            if isinstance(source, _Node) and set(source) <= {"from", "regex"} and \
                    source.get("from", "stdout") in ("stdout", "stderr"):
                if "regex" in source:
                    try:
                        compile_pattern(str(source["regex"]))
                    except re.error as exc:
                        raise self.fail(f"bad regex for capture {name!r}: {exc}", line) from None
                continue
            raise self.fail(f"capture {name!r} must be stdout, stderr or {{from: stdout|stderr, regex: ...}}", line)
        return dict(raw)

    def matcher(self, value: Any, what: str, line: int) -> None:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return
        node = self.mapping(value, f"matcher {what!r}", line, MATCHER_KEYS)
        for key in ("matches", "not_matches"):
            if key in node:
                try:
                    compile_pattern(str(node[key]))
                except re.error as exc:
                    raise self.fail(f"bad regex in {what}.{key}: {exc}", node.key_lines[key]) from None

    def exit_spec(self, value: Any, line: int) -> None:
        if value == "any" or (isinstance(value, int) and not isinstance(value, bool)):
            return
        if isinstance(value, list) and value and all(isinstance(v, int) for v in value):
            return
        if isinstance(value, _Node) and set(value) == {"not"} and isinstance(value["not"], int):
            return
        raise self.fail(f"'exit' must be an int, a list of ints, {{not: N}} or 'any', got {value!r}", line)


def _type_name(value: Any) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return type(value).__name__
