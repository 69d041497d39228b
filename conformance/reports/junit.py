"""JUnit XML as GitLab and Jenkins read it: one ``testsuite`` per suite, ``classname=<suite>.<target>``,
``failure`` for non-conformance, ``error`` for harness faults, ``skipped`` always with its reason, and the run's
kernel, cgroup version, runtimes and target as ``properties``. Validated in the tests against ``junit.xsd``.

JUnit has no words for our two extra verdicts, so each maps onto what a CI system should do with it and carries
its real status as a testcase ``property`` (``status``): a ``flaky`` case is a passing testcase with the retried
steps in an ``attempts`` property; a ``known_difference`` is ``skipped`` (message naming the ``runtime.*`` key),
or a ``failure`` of type ``KnownDifference`` in a strict run. Every text goes through the report sanitiser.
"""

from __future__ import annotations

import socket
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from conformance.reports.text import visible_tree

SCHEMA = Path(__file__).with_name("junit.xsd")


def _steps_text(case: dict[str, Any]) -> str:
    out = []
    for step in case.get("steps", []):
        notes = [f"exit {step['exit_status']}"] if step.get("exit_status") is not None else []
        if int(step.get("attempts", 1)) > 1:
            notes.append(f"attempt {step['attempts']}")
        out.append(f"[{step['phase']}] {step['label']} -> {step['status']}"
                   + (f" ({', '.join(notes)})" if notes else ""))
        for stream in ("stdout", "stderr"):
            text = step.get(stream, "").strip()
            if text:
                out.append(f"  {stream}: {text[-1000:]}")
    return "\n".join(out)


def _junit_outcome(case: dict[str, Any], strict: bool) -> str:
    """What the testcase is to a JUnit reader: passed, failed, error or skipped."""
    status = str(case["status"])
    if status == "flaky":
        return "passed"
    if status == "known_difference":
        return "failed" if strict else "skipped"
    return status


def _case_properties(case: dict[str, Any]) -> list[tuple[str, str]]:
    if case["status"] == "flaky":
        attempts = "; ".join(f"{s['label']}: {s['attempts']}" for s in case.get("retried", []))
        return [("status", "flaky"), ("attempts", attempts)]
    if case["status"] == "known_difference":
        difference = case.get("difference") or {}
        return [("status", "known_difference"), ("difference", str(difference.get("key", ""))),
                ("difference_note", str(difference.get("note", "")))]
    return []


def render_junit(document: dict[str, Any]) -> bytes:
    document = visible_tree(document)
    strict = bool(document.get("strict_differences"))
    target = document.get("target", {})
    target_name = str(target.get("name", "local")).replace(".", "_")
    suites: dict[str, list[dict[str, Any]]] = {}
    for case in document["cases"]:
        suites.setdefault(case["suite"], []).append(case)

    def tally(cases: list[dict[str, Any]]) -> dict[str, str]:
        outcomes = [_junit_outcome(c, strict) for c in cases]
        return {"tests": str(len(cases)), "failures": str(outcomes.count("failed")),
                "errors": str(outcomes.count("error")), "skipped": str(outcomes.count("skipped"))}

    root = ET.Element("testsuites", {"name": "conformance", **tally(document["cases"]),
                                     "time": f"{document['duration']:.3f}"})
    hostname = target.get("hostname") or socket.gethostname()
    for suite_name, cases in suites.items():
        element = ET.SubElement(root, "testsuite", {
            "name": suite_name, **tally(cases), "time": f"{sum(c['duration'] for c in cases):.3f}",
            "timestamp": document["started"][:19], "hostname": str(hostname)})
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
            case_props = _case_properties(case)
            if case_props:
                holder = ET.SubElement(testcase, "properties")
                for name, value in case_props:
                    ET.SubElement(holder, "property", name=name, value=value)
            outcome = _junit_outcome(case, strict)
            if case["status"] == "known_difference":
                message = str(case.get("reason") or "known difference")
                if outcome == "failed":
                    node = ET.SubElement(testcase, "failure", message=message, type="KnownDifference")
                    node.text = case.get("details", "")
                else:
                    ET.SubElement(testcase, "skipped", message=message).text = case.get("message", "")
            elif outcome == "failed":
                node = ET.SubElement(testcase, "failure", message=case["message"], type="ConformanceFailure")
                node.text = case.get("details", "")
            elif outcome == "error":
                node = ET.SubElement(testcase, "error", message=case["message"], type="HarnessError")
                node.text = "\n".join(filter(None, [case.get("details", ""), case.get("evidence", "")]))
            elif outcome == "skipped":
                ET.SubElement(testcase, "skipped", message=case["reason"] or "skipped")
            text = _steps_text(case)
            if text:
                ET.SubElement(testcase, "system-out").text = text
    ET.indent(root)
    body: bytes = ET.tostring(root, encoding="utf-8", xml_declaration=True)
    return body + b"\n"
