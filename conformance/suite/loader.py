"""Load and validate suite files, keeping line numbers so every error names file, line and key.

PyYAML drops positions once it builds Python objects, so mappings are built as :class:`_Node` dicts that remember
the line of each key. Validation is hand-written rather than a JSON Schema so that messages can say exactly which
key on which line is wrong, and so that variable use can be checked in document order.
"""

from __future__ import annotations

import math
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


#: Suites are small text files; a larger one is refused before parsing.
MAX_BYTES = 1024 * 1024
#: Deeper nesting than any suite needs; refused before Python's recursion limit is anywhere near.
MAX_DEPTH = 40
#: Nodes in the document with every alias expanded: bounds alias bombs ("billion laughs").
MAX_NODES = 50_000


class _Loader(yaml.SafeLoader):
    """SafeLoader that bounds nesting and alias expansion while composing, before anything is constructed."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0
        self._sizes: dict[int, int] = {}  # id(node) -> size of the node with its aliases expanded
        self._open_anchors: set[str] = set()

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        event = self.peek_event()  # type: ignore[no-untyped-call]
        line = event.start_mark.line + 1
        if isinstance(event, yaml.AliasEvent):
            if event.anchor in self._open_anchors:
                raise SuiteError(f"alias *{event.anchor} refers to the node that contains it", line=line)
            return super().compose_node(parent, index)
        self._depth += 1
        if self._depth > MAX_DEPTH:
            raise SuiteError(f"nesting deeper than {MAX_DEPTH} levels", line=line)
        anchor = getattr(event, "anchor", None)
        if anchor:
            self._open_anchors.add(anchor)
        try:
            node: yaml.Node | None = super().compose_node(parent, index)
        finally:
            self._depth -= 1
            if anchor:
                self._open_anchors.discard(anchor)
        if isinstance(node, yaml.SequenceNode):
            children = list(node.value)
        elif isinstance(node, yaml.MappingNode):
            children = [item for pair in node.value for item in pair]
        else:
            children = []
        size = 1 + sum(self._sizes.get(id(child), 1) for child in children)
        if size > MAX_NODES:
            raise SuiteError(f"aliases expand this document beyond {MAX_NODES} nodes (an alias bomb?)", line=line)
        self._sizes[id(node)] = size
        return node


def _construct_mapping(loader: _Loader, node: yaml.MappingNode) -> _Node:
    loader.flatten_mapping(node)
    result = _Node()
    result.line = node.start_mark.line + 1
    result.key_lines = {}
    for key_node, value_node in node.value:
        line = key_node.start_mark.line + 1
        if not isinstance(key_node, yaml.ScalarNode):
            kind = "a mapping" if isinstance(key_node, yaml.MappingNode) else "a list"
            raise SuiteError(f"a key must be a plain value, not {kind}", line=line)
        key = loader.construct_object(key_node, deep=True)
        if key in result:
            raise SuiteError(f"duplicate key {key!r}", line=line)
        result[key] = loader.construct_object(value_node, deep=True)
        result.key_lines[key] = line
    return result


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _read_text(path: Path) -> str:
    """The file as UTF-8 text; binary, non-UTF-8 and oversized files are refused with the offending line."""
    try:
        with path.open("rb") as handle:
            raw = handle.read(MAX_BYTES + 1)
    except OSError as exc:
        raise SuiteError(f"cannot read suite: {exc.strerror}", path=str(path)) from None
    if len(raw) > MAX_BYTES:
        raise SuiteError(f"file larger than {MAX_BYTES // 1024} KiB: not a suite", path=str(path))
    if b"\0" in raw:
        line = raw[: raw.index(b"\0")].count(b"\n") + 1
        raise SuiteError("binary file (NUL byte): a suite is UTF-8 text", path=str(path), line=line)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise SuiteError(f"not UTF-8 text (byte 0x{raw[exc.start]:02x}): a suite is UTF-8 text", path=str(path),
                         line=line) from None


def load_suite(path: str | Path) -> Suite:
    """Parse and validate one suite file. Raises :class:`SuiteError` with file and line - and nothing else,
    whatever the file holds."""
    path = Path(path)
    text = _read_text(path)
    try:
        data = yaml.load(text, Loader=_Loader)
    except SuiteError as exc:
        raise SuiteError(exc.message, path=str(path), line=exc.line) from None
    except yaml.MarkedYAMLError as exc:
        line = exc.problem_mark.line + 1 if exc.problem_mark else None
        raise SuiteError(f"invalid YAML: {exc.problem}", path=str(path), line=line) from None
    except yaml.reader.ReaderError as exc:
        line = text[: exc.position].count("\n") + 1
        raise SuiteError(f"invalid YAML: character {exc.character!r} is not allowed", path=str(path),
                         line=line) from None
    except yaml.YAMLError as exc:
        raise SuiteError(f"invalid YAML: {' '.join(str(exc).split())}", path=str(path)) from None
    except RecursionError:  # the depth bound should make this unreachable; still one line, never a traceback
        raise SuiteError(f"nesting deeper than {MAX_DEPTH} levels", path=str(path)) from None
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
            expected = " or ".join({"_Node": "a mapping", "list": "a list"}.get(t.__name__, t.__name__)
                                   for t in names)
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
        timeout = self.seconds(node, "timeout", what, default=120)
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
            if not _is_scalar(body["value"]):
                raise self.fail(f"'value' of 'check' must be a string or number, got {_type_name(body['value'])}",
                                body.key_lines["value"])
            self.matcher_keys(body, "check", exclude={"value"})
        if action == "file":
            self.file(body, body_line)
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
            attempts = retry.get("attempts", 1)
            if not _is_int(attempts) or not 1 <= attempts <= 1000:
                raise self.fail(f"'attempts' in retry must be a whole number from 1 to 1000, got {attempts!r}",
                                retry.key_lines.get("attempts", retry.line))
            interval = retry.get("interval", 0.5)
            if not _is_number(interval) or not 0 <= interval <= 3600:
                raise self.fail(f"'interval' in retry must be a number of seconds from 0 to 3600, got {interval!r}",
                                retry.key_lines.get("interval", retry.line))
        timeout = self.seconds(node, "timeout", what, default=None)
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
            if isinstance(source, str) and source in ("stdout", "stderr"):
                continue
            if isinstance(source, _Node) and set(source) <= {"from", "regex"} and \
                    source.get("from", "stdout") in ("stdout", "stderr"):
                if "regex" in source:
                    if not isinstance(source["regex"], str):
                        raise self.fail(f"regex of capture {name!r} must be a string", line)
                    try:
                        compile_pattern(source["regex"])
                    except (re.error, RecursionError, OverflowError) as exc:
                        raise self.fail(f"bad regex for capture {name!r}: {exc}", line) from None
                continue
            raise self.fail(f"capture {name!r} must be stdout, stderr or {{from: stdout|stderr, regex: ...}}", line)
        return dict(raw)

    def seconds(self, node: _Node, key: str, what: str, default: float | None) -> Any:
        """A positive, finite number of seconds (at most a day)."""
        value = self.typed(node, key, (int, float), what, default=default)
        if value is not None and not 0 < value <= 86400:  # also refuses nan and inf
            raise self.fail(f"{key} of {what} must be a number of seconds above 0 and at most 86400, got {value!r}",
                            node.key_lines[key])
        return value

    def file(self, body: _Node, line: int) -> None:
        self.mapping(body, "file", line, FILE_KEYS)
        if "path" not in body:
            raise self.fail("'file' needs a 'path'", line)
        checks: dict[str, tuple[Any, str]] = {
            "path": (lambda v: isinstance(v, str) and v.strip() != "", "a non-empty string"),
            "exists": (lambda v: isinstance(v, bool), "true or false"),
            "type": (lambda v: v in ("file", "directory", "symlink"), "file, directory or symlink"),
            "mode": (lambda v: isinstance(v, str) and re.fullmatch(r"0?[0-7]{3,4}", v) is not None,
                     "an octal string such as \"0644\" (quoted: YAML reads 0644 as a number)"),
        }
        for key, (ok, expected) in checks.items():
            if key in body and not ok(body[key]):
                raise self.fail(f"'{key}' of 'file' must be {expected}, got {body[key]!r}", body.key_lines[key])
        if "content" in body:
            self.matcher(body["content"], "content", body.key_lines["content"])

    def matcher(self, value: Any, what: str, line: int) -> None:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return
        node = self.mapping(value, f"matcher {what!r}", line, MATCHER_KEYS)
        self.matcher_keys(node, what)

    def matcher_keys(self, node: _Node, what: str, exclude: frozenset[str] | set[str] = frozenset()) -> None:
        """Each matcher key's value has the type its check needs (so nothing fails only when the case runs)."""
        for key, value in node.items():
            if key in exclude:
                continue
            line = node.key_lines[key]
            if key in ("matches", "not_matches"):
                if not isinstance(value, str):
                    raise self.fail(f"{what}.{key} must be a regex string, got {_type_name(value)}", line)
                try:
                    compile_pattern(value)
                except (re.error, RecursionError, OverflowError) as exc:
                    raise self.fail(f"bad regex in {what}.{key}: {exc}", line) from None
            elif key in ("contains", "not_contains"):
                items = value if isinstance(value, list) else [value]
                if not items or not all(_is_scalar(item) and not isinstance(item, bool) for item in items):
                    raise self.fail(f"{what}.{key} must be a string or a list of strings, got {value!r}", line)
            elif key == "equals":
                if not _is_scalar(value):
                    raise self.fail(f"{what}.equals must be a string or number, got {_type_name(value)}", line)
            elif key == "empty":
                if not isinstance(value, bool):
                    raise self.fail(f"{what}.empty must be true or false, got {value!r}", line)
            elif key == "lines":
                if not _is_int(value) or value < 0:
                    raise self.fail(f"{what}.lines must be a whole number, got {value!r}", line)
            elif not _is_number(value):  # lt le gt ge eq ne
                raise self.fail(f"{what}.{key} must be a number, got {value!r}", line)

    def exit_spec(self, value: Any, line: int) -> None:
        if value == "any" or (isinstance(value, int) and not isinstance(value, bool)):
            return
        if isinstance(value, list) and value and all(isinstance(v, int) for v in value):
            return
        if isinstance(value, _Node) and set(value) == {"not"} and isinstance(value["not"], int):
            return
        raise self.fail(f"'exit' must be an int, a list of ints, {{not: N}} or 'any', got {value!r}", line)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _is_scalar(value: Any) -> bool:
    """A string or a finite number (what a matcher compares text with)."""
    return isinstance(value, str) or _is_number(value)


def _type_name(value: Any) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return type(value).__name__
