"""The Go-template subset behind --format, flag parsing, and ``info``/``version``."""

from __future__ import annotations

import json

import pytest

from runtime.cli.format import TemplateError, format_rows, go_string, render
from runtime.container.createspec import parse_size
from runtime.container.signals import parse_signal
from runtime.errors import UsageError
from tests.runtime.container.conftest import Refrt

DATA = {"State": {"Pid": 42, "Running": True, "Error": None}, "Config": {"Labels": {"a": "b"}, "Cmd": ["sh", "-c"]}}


def test_render_fields_json_index_and_go_values() -> None:
    assert render("{{.State.Pid}}", DATA) == "42"
    assert render("{{.State.Running}} {{.State.Error}}", DATA) == "true <nil>"
    assert render("{{json .Config.Cmd}}", DATA) == '["sh","-c"]'
    assert render("{{index .Config.Labels \"a\"}}", DATA) == "b"
    assert render("{{.Config.Cmd}} {{.Config.Labels}}", DATA) == "[sh -c] map[a:b]"
    assert render("{{join .Config.Cmd \",\"}}|{{upper .Config.Labels.a}}|{{len .Config.Cmd}}", DATA) == "sh,-c|B|2"
    assert render("{{.Config.Cmd | json}}", DATA) == '["sh","-c"]'
    assert render("{{.state.pid}}", DATA) == "42"  # docker's lookup is case-insensitive for map keys too
    assert go_string([True, None, {"k": "1"}]) == "[true <nil> map[k:1]]"  # a string map (a struct: {1})


def test_render_rejects_unknown_fields_and_functions() -> None:
    with pytest.raises(TemplateError):
        render("{{.State.Nope}}", DATA)
    with pytest.raises(TemplateError):
        render("{{frobnicate .State}}", DATA)


def test_table_aligns_like_tabwriter() -> None:
    rows = [{"ID": "abc", "Names": "x"}, {"ID": "abcdef", "Names": "y"}]
    text = format_rows("table {{.ID}}\t{{.Names}}", rows, {"ID": "CONTAINER ID", "Names": "NAMES"})
    assert text.splitlines() == ["CONTAINER ID   NAMES", "abc            x", "abcdef         y"]
    assert format_rows("{{.ID}}", rows, {}) == "abc\nabcdef"


def test_flag_parsers() -> None:
    assert parse_size("32m") == 32 << 20 and parse_size("1g") == 1 << 30 and parse_size("512") == 512
    assert parse_size("-1") == -1
    with pytest.raises(UsageError):
        parse_size("lots")
    assert parse_signal("TERM") == 15 and parse_signal("SIGKILL") == 9 and parse_signal("1") == 1
    # -v/--mount/--tmpfs: runtime.volumes.parse, tested in tests/runtime/volumes


def test_info_and_version(refrt: Refrt) -> None:
    info = refrt("info", "--format", "{{json .}}")
    assert info.returncode == 0, info.stderr
    data = json.loads(info.stdout)
    assert data["CgroupVersion"] in ("1", "2") and data["Driver"] == "overlay2"
    assert data["Images"] >= 1
    assert data["ContainersRunning"] + data["ContainersStopped"] == data["Containers"]
    text = refrt("info").stdout
    assert "Cgroup Version:" in text and "Kernel Version:" in text
    version = refrt("version", "--format", "{{.Server.Version}}")
    assert version.returncode == 0 and version.stdout.strip()
