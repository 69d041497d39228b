"""The one template engine (runtime.cli.gotemplate) against docker 20.10's own output.

``DOCKER_DATA`` is the part of ``docker inspect`` of a container (``docker run -d --name tpl -l a=1 -l b=two -e
X=1 busybox sleep 1000``) that the templates below read; each expected string is what ``docker inspect -f
TEMPLATE tpl`` printed for it on this machine (docker 20.10.24). :func:`test_same_as_live_dockerd` repeats the
comparison against a real dockerd, on that container's full inspect output.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from runtime.cli.format import format_rows, render
from runtime.cli.gotemplate import TemplateError
from tests.runtime.container.conftest import Refrt, unique

DOCKER_DATA: dict[str, Any] = {
    "Name": "/tpl",
    "State": {"Status": "running", "Running": True, "Paused": False, "Pid": 4309, "ExitCode": 0,
              "StartedAt": "2026-12-01T11:41:40.674394971Z"},
    "Config": {"Labels": {"a": "1", "b": "two"}, "Cmd": ["sleep", "1000"], "Image": "busybox",
               "Env": ["X=1", "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]},
    "HostConfig": {"Memory": 0, "RestartPolicy": {"Name": "no", "MaximumRetryCount": 0}},
    "Mounts": [],
    "NetworkSettings": {"Networks": {"bridge": {"IPAddress": "10.130.77.2", "Gateway": "10.130.77.1",
                                                "MacAddress": "02:42:0a:82:4d:02"}}},
}

# (template, docker's output) — outputs copied from docker 20.10 on this machine
CASES = [
    ('{{index .Config.Labels "x"}}', ""),
    ("{{.Config.Labels.x}}", "<no value>"),
    ('{{index .Config.Labels "a"}}', "1"),
    ("{{.Config.Labels}}", "map[a:1 b:two]"),
    ("{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", "10.130.77.2"),
    ('{{index .NetworkSettings.Networks "x"}}', "<nil>"),
    ("{{json .Config.Labels}}", '{"a":"1","b":"two"}'),
    ("{{.Config.Cmd}}", "[sleep 1000]"),
    ("{{len .Config.Env}}", "2"),
    ('{{if eq .State.Status "running"}}up{{else}}down{{end}}', "up"),
    ('{{if eq .State.Status "exited"}}a{{else if .State.Running}}b{{else}}c{{end}}', "b"),
    ('{{printf "%q %5s|%-4s|%d" .Name "ab" "c" 42}}', '"/tpl"    ab|c   |42'),
    ('{{.State.Pid | printf "%T"}}', "int"),
    ("{{.HostConfig.Memory}}", "0"),
    ("{{.Config.Labels.a | len}}", "1"),
    ("{{println .Name}}", "/tpl\n"),
    ('{{print 1 2 "a" "b" 3}}', "1 2ab3"),
    ('{{title "hello world"}}', "Hello World"),
    ('{{split "a,b" ","}}', "[a b]"),
    ('{{join .Config.Cmd "+"}}', "sleep+1000"),
    ("{{(index .Config.Cmd 0)}}", "sleep"),
    ("{{range $k, $v := .Config.Labels}}{{$k}}={{$v}};{{end}}", "a=1;b=two;"),
    ('{{.State.Running}} {{not .State.Running}} {{and 1 0}} {{or 0 "" "x"}}', "true false 0 x"),
    ('{{lt 1 2}} {{le 2 2}} {{gt "b" "a"}} {{ge 1 2}} {{ne 1 2}} {{eq 1 2 1}}', "true true true false true true"),
    ("{{.Config.Env}}", "[X=1 PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin]"),
    ('{{pad "x" 1 2}}|', " x  |"),
    ('{{truncate "abcdef" 3}}', "abc"),
    ('{{eq .State.Pid "x"}}', "false"),
    ("{{range .Config.Env}}[{{.}}]{{else}}none{{end}}",
     "[X=1][PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin]"),
    ("{{range .Mounts}}x{{else}}nomounts{{end}}", "nomounts"),
    ('{{- .Name -}}  {{ "x" }}', "/tplx"),
    ('{{printf "%v" .Config.Labels}}', "map[a:1 b:two]"),
    ('{{printf "%s" .State.Running}}', "%!s(bool=true)"),
    ('{{printf "%.2f" 3.14159}}', "3.14"),
    ('{{printf "%x" 255}}', "ff"),
    ("{{len .Name}}", "4"),
    ('{{index .Config.Labels "a" | upper}}', "1"),
    ("{{.HostConfig.RestartPolicy}}", "{no 0}"),
    ('{{.State.StartedAt | lower | len | printf "%d"}}', "30"),
    ('{{with .Config.Labels.a}}[{{.}}]{{end}}', "[1]"),
    ("{{/* a comment */}}{{$n := .Name}}{{$n}}", "/tpl"),
]

# (template, the start of docker's error) — docker exits 1 with these
ERRORS = [
    ("{{.Nope}}", 'map has no entry for key "Nope"'),
    ("{{.Nope.Deeper}}", 'map has no entry for key "Nope"'),
    ("{{index .Config.Env 5}}", "error calling index: index out of range: 5"),
    ("{{.Config.Labels.a.b}}", "can't evaluate field b"),
]


@pytest.mark.parametrize(("template", "expected"), CASES)
def test_matches_docker(template: str, expected: str) -> None:
    assert render(template, DOCKER_DATA) == expected


@pytest.mark.parametrize(("template", "message"), ERRORS)
def test_errors_like_docker(template: str, message: str) -> None:
    with pytest.raises(TemplateError, match=message.replace("(", r"\(").replace(")", r"\)")):
        render(template, DOCKER_DATA)


@pytest.mark.parametrize("template", ["{{if}}", "{{end}}", "{{range .A}}", "{{.A", '{{"x}}', "{{nofunc 1}}",
                                      "{{else}}", "{{(.A}}", "{{1 | 2}}"])
def test_malformed_templates_are_one_line_errors(template: str) -> None:
    with pytest.raises(TemplateError):
        render(template, DOCKER_DATA)


def test_table_directive_header_and_tabwriter_widths() -> None:
    rows = [{"ID": "abc", "Names": "x", "Status": "Up"}, {"ID": "abcdef", "Names": "y", "Status": "Exited (0)"}]
    headers = {"ID": "CONTAINER ID", "Names": "NAMES", "Status": "STATUS"}
    text = format_rows("table {{.Status}}\t{{.Names}}\t{{.ID}}", rows, headers)
    # docker's tabwriter: min width 10, padding 3
    assert text.splitlines() == ["STATUS       NAMES     CONTAINER ID", "Up           x         abc",
                                 "Exited (0)   y         abcdef"]
    assert format_rows("{{.Names | upper}}", rows, headers) == "X\nY"


def test_one_liners_on_refrt(refrt: Refrt) -> None:
    name = unique("tpl")
    refrt("run", "-d", "--name", name, "-l", "a=1", "busybox", "sleep", "60", check=True)
    try:
        ip = refrt("inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", name)
        assert ip.returncode == 0 and ip.stdout.count(".") == 3, ip
        template = '{{index .Config.Labels "x"}}|{{.Config.Labels.x}}|{{index .Config.Labels "a"}}'
        labels = refrt("inspect", "-f", template, name)
        assert labels.stdout == "|<no value>|1\n"
        bad = refrt("inspect", "-f", "{{.Nope}}", name)
        assert bad.returncode == 1 and 'map has no entry for key "Nope"' in bad.stderr
        assert "Traceback" not in bad.stderr
        table = refrt("ps", "--filter", f"name={name}", "--format", "table {{.Names}}\t{{.Status | lower}}")
        assert table.stdout.splitlines()[0].split() == ["NAMES", "STATUS"]  # docker: header functions pass through
        assert table.stdout.splitlines()[1].split()[1] == "up"
    finally:
        refrt("rm", "-f", name)


@pytest.mark.peer
def test_same_as_live_dockerd(request: pytest.FixtureRequest) -> None:
    """Every case above against a real dockerd's container and its full inspect output."""
    pytest.importorskip("conformance.drivers")
    from tests.runtime.daemon.conftest import docker

    host = request.getfixturevalue("dockerd")
    name = "tpl-live"
    docker(host, "rm", "-f", name)
    made = docker(host, "run", "-d", "--pull=never", "--name", name, "-l", "a=1", "-l", "b=two", "-e", "X=1",
                  "busybox", "sleep", "1000")
    assert made.returncode == 0, made.stderr
    try:
        data = json.loads(docker(host, "inspect", name).stdout)[0]
        for template, _ in CASES:
            theirs = docker(host, "inspect", "-f", template, name)
            assert theirs.returncode == 0, (template, theirs.stderr)
            assert render(template, data) + "\n" == theirs.stdout, template
        for template, message in ERRORS:
            theirs = docker(host, "inspect", "-f", template, name)
            assert theirs.returncode == 1 and message in theirs.stderr, (template, theirs.stderr)
    finally:
        docker(host, "rm", "-f", name)
