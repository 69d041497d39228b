"""Suite loading: valid suites become models; every malformed one names file, line and key."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conformance.errors import SuiteError
from conformance.suite.loader import load_suite

DATA = Path(__file__).parent / "data"
REPO = Path(__file__).parents[2]


@pytest.mark.parametrize(
    ("name", "line", "fragment"),
    [
        ("bad_yaml.yaml", 8, "invalid YAML"),
        ("unknown_key.yaml", 8, "unknown key 'expcet'"),
        ("wrong_type.yaml", 6, "key 'timeout' in case 'a' must be int or float, got str"),
        ("undefined_var.yaml", 7, "variable {{later}} is not defined"),
        ("duplicate_id.yaml", 8, "duplicate case id 'same' (first at line 4)"),
        ("two_actions.yaml", 7, "exactly one of run, container, check, file (found: run, container)"),
        ("alias_bomb.yaml", 8, "aliases expand this document beyond 50000 nodes (an alias bomb?)"),
        ("binary.yaml", 3, "binary file (NUL byte): a suite is UTF-8 text"),
        ("not_utf8.yaml", 5, "not UTF-8 text (byte 0xe9)"),
        ("mapping_key.yaml", 8, "a key must be a plain value, not a mapping"),
        ("deep_nesting.yaml", 8, "nesting deeper than 40 levels"),
        ("bad_retry.yaml", 8, "'attempts' in retry must be a whole number from 1 to 1000, got 'abc'"),
        ("recursive_alias.yaml", 8, "alias *s refers to the node that contains it"),
    ],
)
def test_malformed_suite_names_file_line_and_key(name: str, line: int, fragment: str) -> None:
    path = DATA / "malformed" / name
    with pytest.raises(SuiteError) as info:
        load_suite(path)
    message = str(info.value)
    assert message.startswith(f"{path}:{line}: "), message
    assert fragment in message
    assert "\n" not in message


def test_sample_suite_loads_with_lines_and_phases() -> None:
    suite = load_suite(DATA / "four_statuses.yaml")
    assert suite.name == "sample"
    assert [c.id for c in suite.cases] == ["passes", "fails", "skipped", "errors"]
    errors = suite.cases[3]
    assert errors.line == 23
    assert [s.action for s in errors.setup] == ["run"]
    assert errors.teardown[0].body == "echo cleaned"
    assert not any(c.uses_runtime for c in suite.cases)


@pytest.mark.parametrize("path", sorted((REPO / "suites").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_suite_loads(path: Path) -> None:
    suite = load_suite(path)
    assert suite.cases


def test_registry_variable_needs_the_service(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text("name: s\ndescription: d\ncases:\n  - id: a\n    title: t\n    steps:\n"
                    "      - run: echo {{registry}}\n")
    with pytest.raises(SuiteError, match=r"variable \{\{registry\}\} is not defined"):
        load_suite(path)
    path.write_text(path.read_text().replace("cases:", "services: [registry]\ncases:"))
    assert load_suite(path).services == ["registry"]


def test_differences_and_unbreakable_keys(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    head = "name: s\ndescription: d\ncases:\n  - id: a\n    title: t\n    steps:\n      - run: 'true'\n"
    path.write_text(head + "    differences: [runtime.oom-flag]\n    unbreakable: host-only fact\n")
    case = load_suite(path).cases[0]
    assert case.differences == ["runtime.oom-flag"]
    assert case.unbreakable == "host-only fact"
    path.write_text(head)
    case = load_suite(path).cases[0]
    assert (case.differences, case.unbreakable) == ([], "")
    path.write_text(head + "    differences: [oom-flag]\n")
    with pytest.raises(SuiteError, match=r"s.yaml:8: difference 'oom-flag' of case 'a' must be a 'runtime"):
        load_suite(path)
    path.write_text(head + "    unbreakable: ''\n")
    with pytest.raises(SuiteError, match=r"s.yaml:8: 'unbreakable' of case 'a' must say why"):
        load_suite(path)


#: (what the step or case says, the line of the offending key, what the message says). Each is put into a
#: minimal suite at line 7 (step keys) or line 5 (case keys).
BAD_FIELDS = [
    ("step", "timeout: x", "key 'timeout' in case 'a' steps must be int or float, got str"),
    ("step", "timeout: -1", "timeout of case 'a' steps must be a number of seconds above 0"),
    ("step", "timeout: .nan", "must be a number of seconds above 0 and at most 86400, got nan"),
    ("step", "retry: {attempts: 2, interval: soon}", "'interval' in retry must be a number of seconds"),
    ("step", "retry: {attempts: 0}", "'attempts' in retry must be a whole number from 1 to 1000, got 0"),
    ("step", "retry: [1]", "key 'retry' in case 'a' steps must be a mapping, got a list"),
    ("step", "stdin: [a]", "key 'stdin' in case 'a' steps must be str, got a list"),
    ("step", "name: {a: 1}", "key 'name' in case 'a' steps must be str, got a mapping"),
    ("step", "expect: {exit: abc}", "'exit' must be an int, a list of ints"),
    ("step", "expect: {stdout: {lines: many}}", "stdout.lines must be a whole number, got 'many'"),
    ("step", "expect: {stdout: {le: ten}}", "stdout.le must be a number, got 'ten'"),
    ("step", "expect: {stdout: {empty: maybe}}", "stdout.empty must be true or false, got 'maybe'"),
    ("step", "expect: {stdout: {contains: {a: 1}}}", "stdout.contains must be a string or a list of strings"),
    ("step", "expect: {stdout: {matches: [a]}}", "stdout.matches must be a regex string, got a list"),
    ("step", "expect: {stdout: {matches: '(a'}}", "bad regex in stdout.matches"),
    ("step", "expect: {stdout: {equals: [a]}}", "stdout.equals must be a string or number, got a list"),
    ("step", "capture: {x: {regex: [a]}}", "regex of capture 'x' must be a string"),
    ("step", "capture: {x: [stdout]}", "capture 'x' must be stdout, stderr or"),
]


@pytest.mark.parametrize(("where", "text", "fragment"), BAD_FIELDS, ids=[t for _, t, _ in BAD_FIELDS])
def test_bad_types_in_every_field_are_one_line(tmp_path: Path, where: str, text: str, fragment: str) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(f"name: s\ndescription: d\ncases:\n  - id: a\n    title: t\n    steps:\n"
                    f"      - run: 'true'\n        {text}\n")
    with pytest.raises(SuiteError) as info:
        load_suite(path)
    message = str(info.value)
    assert message.startswith(f"{path}:8: "), message
    assert fragment in message, message
    assert "\n" not in message


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ("check: {value: [1], equals: 1}", "'value' of 'check' must be a string or number, got a list"),
        ("check: {value: x, lines: x}", "check.lines must be a whole number"),
        ("file: {path: /x, mode: 0644}", "'mode' of 'file' must be an octal string"),
        ("file: {path: /x, exists: yes-please}", "'exists' of 'file' must be true or false"),
        ("file: {path: /x, type: socket}", "'type' of 'file' must be file, directory or symlink"),
        ("file: {path: [1]}", "'path' of 'file' must be a non-empty string"),
    ],
)
def test_bad_check_and_file_bodies(tmp_path: Path, body: str, fragment: str) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(f"name: s\ndescription: d\ncases:\n  - id: a\n    title: t\n    steps:\n      - {body}\n")
    with pytest.raises(SuiteError, match=re.escape(fragment)) as info:
        load_suite(path)
    assert str(info.value).startswith(f"{path}:7: ")


@pytest.mark.parametrize("name", ["alias_bomb.yaml", "binary.yaml", "not_utf8.yaml", "mapping_key.yaml",
                                  "deep_nesting.yaml", "bad_retry.yaml"])
def test_bad_suite_kinds_exit_2_with_one_line_through_conformance_run(tmp_path: Path, name: str) -> None:
    path = DATA / "malformed" / name
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "conformance", "run", str(path), "--report-dir",
                             str(tmp_path / "r")], cwd=REPO, capture_output=True, text=True, timeout=60)
    elapsed = time.monotonic() - started
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"conformance: error: {path}:"), result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    assert elapsed < 10, f"took {elapsed:.1f} s"
