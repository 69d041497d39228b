"""Suite loading: valid suites become models; every malformed one names file, line and key."""

from __future__ import annotations

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
