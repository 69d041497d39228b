"""JUnit XML as GitLab and Jenkins read it: one ``testsuite`` per suite, ``classname=<suite>.<target>``,
``failure`` for non-conformance, ``error`` for harness faults, ``skipped`` always with its reason, and the run's
kernel, cgroup version, runtimes and target as ``properties``. Validated in the tests against ``junit.xsd``.
"""

from __future__ import annotations

import socket
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

SCHEMA = Path(__file__).with_name("junit.xsd")


def _steps_text(case: dict[str, Any]) -> str:
    out = []
    for step in case.get("steps", []):
        out.append(f"[{step['phase']}] {step['label']} -> {step['status']}"
                   + (f" (exit {step['exit_status']})" if step.get("exit_status") is not None else ""))
        for stream in ("stdout", "stderr"):
            text = step.get(stream, "").strip()
            if text:
                out.append(f"  {stream}: {text[-1000:]}")
    return "\n".join(out)


def render_junit(document: dict[str, Any]) -> bytes:
    target = document.get("target", {})
    target_name = str(target.get("name", "local")).replace(".", "_")
    suites: dict[str, list[dict[str, Any]]] = {}
    for case in document["cases"]:
        suites.setdefault(case["suite"], []).append(case)
    summary = document["summary"]
    root = ET.Element("testsuites", name="conformance", tests=str(summary["total"]),
                      failures=str(summary["failed"]), errors=str(summary["error"]),
                      skipped=str(summary["skipped"]), time=f"{document['duration']:.3f}")
    hostname = target.get("hostname") or socket.gethostname()
    for suite_name, cases in suites.items():
        counts = {s: sum(1 for c in cases if c["status"] == s) for s in ("failed", "error", "skipped")}
        element = ET.SubElement(
            root, "testsuite", name=suite_name, tests=str(len(cases)), failures=str(counts["failed"]),
            errors=str(counts["error"]), skipped=str(counts["skipped"]),
            time=f"{sum(c['duration'] for c in cases):.3f}", timestamp=document["started"][:19],
            hostname=str(hostname))
        properties = ET.SubElement(element, "properties")
        props = [("target", str(target.get("name", ""))), ("backend", str(target.get("backend", ""))),
                 ("kernel", str(target.get("kernel", ""))), ("cgroup", str(target.get("cgroup", ""))),
                 ("run_id", document["run_id"])]
        for runtime in sorted({c["runtime"] for c in cases if c["runtime"] != "none"}):
            version = document["runtimes"].get(runtime, {}).get("version", "unknown")
            props.append(("runtime", f"{runtime} {version}"))
        for name, value in props:
            ET.SubElement(properties, "property", name=name, value=value)
        for case in cases:
            testcase = ET.SubElement(element, "testcase", classname=f"{suite_name}.{target_name}",
                                     name=case["name"], time=f"{case['duration']:.3f}",
                                     file=case.get("file", ""), line=str(case.get("line", 0)))
            if case["status"] == "failed":
                node = ET.SubElement(testcase, "failure", message=case["message"], type="ConformanceFailure")
                node.text = case.get("details", "")
            elif case["status"] == "error":
                node = ET.SubElement(testcase, "error", message=case["message"], type="HarnessError")
                node.text = "\n".join(filter(None, [case.get("details", ""), case.get("evidence", "")]))
            elif case["status"] == "skipped":
                ET.SubElement(testcase, "skipped", message=case["reason"] or "skipped")
            text = _steps_text(case)
            if text:
                ET.SubElement(testcase, "system-out").text = text
    ET.indent(root)
    body: bytes = ET.tostring(root, encoding="utf-8", xml_declaration=True)
    return body + b"\n"
