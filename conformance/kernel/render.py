"""Rendering a manifest: terminal table (grouped like check-config.sh), JSON, Markdown and HTML.

The terminal form keeps check-config.sh's shape (``- CONFIG_X: enabled``, drivers indented under their name) so
people who know that script read it at a glance; the probes follow, then one verdict line.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import jinja2

from conformance.kernel.config import Classification
from conformance.kernel.manifest import Manifest
from conformance.kernel.options import GROUP_TITLES
from conformance.kernel.probes import ProbeResult

FORMATS = ("table", "json", "html", "md")
_COLORS = {"enabled": "32", "module": "32", "ok": "32", "missing": "1;31", "FAILED": "1;31", "n/a": "90"}
_PROBE_GROUPS = (
    ("Namespaces", "ns."),
    ("Cgroups", "cgroup."),
    ("Storage", "overlay"),
    ("Network", "net."),
    ("Security and virtualisation", ""),
)


def _label(status: str) -> str:
    return "enabled (as module)" if status == "module" else status


def _paint(text: str, status: str, color: bool) -> str:
    code = _COLORS.get(status)
    return f"\033[{code}m{text}\033[0m" if color and code else text


def grouped(manifest: Manifest) -> Iterator[tuple[str, str, list[Classification]]]:
    """(group, section, classifications) in table order."""
    for group in GROUP_TITLES:
        sections: dict[str, list[Classification]] = {}
        for c in manifest.classifications:
            if c.option.group == group:
                sections.setdefault(c.option.section, []).append(c)
        for section, items in sections.items():
            yield group, section, items


def probe_groups(manifest: Manifest) -> Iterator[tuple[str, list[tuple[str, ProbeResult]]]]:
    remaining = dict(manifest.probes)
    for title, prefix in _PROBE_GROUPS:
        chosen = [(k, p) for k, p in remaining.items() if k.startswith(prefix)]
        for k, _ in chosen:
            remaining.pop(k)
        if chosen:
            yield title, chosen


def _probe_value(probe: ProbeResult) -> str:
    if probe.value is None or isinstance(probe.value, dict | list):
        return ""
    return f" [{probe.value}]"


def header_line(manifest: Manifest) -> str:
    if manifest.config_source:
        where = f"config {manifest.config_source}"
        if manifest.config_version:
            where += f" (Linux {manifest.config_version[0]}.{manifest.config_version[1]})"
    else:
        where = "kernel config unavailable (tried " + (", ".join(manifest.config_tried) or "nothing") + ")"
    return f"target {manifest.target}: kernel {manifest.release} ({manifest.machine}), {where}"


def render_table(manifest: Manifest, *, color: bool = False) -> str:
    lines = [f"info: {header_line(manifest)}", ""]
    current = ""
    for group, section, items in grouped(manifest):
        if group != current:
            if current:
                lines.append("")
            current = group
            lines.append(f"- {GROUP_TITLES[group]}:" if section else f"{GROUP_TITLES[group]}:")
        indent = "    " if section else ""
        if section:
            lines.append(f'  - "{section}":')
        for c in items:
            text = _paint(_label(c.status), c.status, color)
            note = f" ({c.note})" if c.note else ""
            lines.append(f"{indent}- {c.option.symbol}: {text}{note}")
    lines += ["", "Live probes (on the target):"]
    for title, probes in probe_groups(manifest):
        lines.append(f"  {title}:")
        for key, probe in probes:
            status = "ok" if probe.ok else "FAILED"
            lines.append(f"  - {key}: {_paint(status, status, color)}{_probe_value(probe)} - {probe.evidence}")
    lines += ["", f"Verdict: {_paint(manifest.verdict.summary, 'ok' if manifest.verdict.ok else 'missing', color)}"]
    return "\n".join(lines) + "\n"


def render_json(manifest: Manifest) -> str:
    return json.dumps(manifest.to_json(), indent=2) + "\n"


def _md(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_md(manifest: Manifest) -> str:
    lines = ["# Kernel check", "", header_line(manifest), "", f"**Verdict:** {_md(manifest.verdict.summary)}", ""]
    current = ""
    for group, section, items in grouped(manifest):
        if group != current:
            current = group
            lines += [f"## {GROUP_TITLES[group]}", ""]
        if section:
            lines += [f"### {section}", ""]
        lines += ["| option | status | note |", "|---|---|---|"]
        lines += [f"| `{c.option.symbol}` | {_label(c.status)} | {_md(c.note)} |" for c in items]
        lines.append("")
    lines += ["## Live probes", "", "| key | ok | value | evidence |", "|---|---|---|---|"]
    for _, probes in probe_groups(manifest):
        for key, probe in probes:
            value = _probe_value(probe).strip(" []")
            lines.append(f"| `{key}` | {'yes' if probe.ok else '**no**'} | {_md(value)} | {_md(probe.evidence)} |")
    return "\n".join(lines) + "\n"


_ENV = jinja2.Environment(
    loader=jinja2.FileSystemLoader(str(Path(__file__).with_name("templates"))),
    autoescape=jinja2.select_autoescape(["html", "j2"]),
)


def render_html(manifest: Manifest) -> str:
    template = _ENV.get_template("features.html.j2")
    return template.render(
        m=manifest,
        header=header_line(manifest),
        groups=list(grouped(manifest)),
        titles=GROUP_TITLES,
        probe_groups=list(probe_groups(manifest)),
        label=_label,
        value=lambda p: _probe_value(p).strip(" []"),
    )


def render(manifest: Manifest, fmt: str, *, color: bool = False) -> str:
    if fmt == "json":
        return render_json(manifest)
    if fmt == "md":
        return render_md(manifest)
    if fmt == "html":
        return render_html(manifest)
    return render_table(manifest, color=color)
