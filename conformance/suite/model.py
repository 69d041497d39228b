"""The in-memory form of a suite file: what the loader validates and the runner executes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Action = Literal["run", "container", "check", "file"]
Phase = Literal["setup", "steps", "teardown"]


@dataclass
class Step:
    """One action and what is expected of it. ``line`` points into the suite file for error messages."""

    action: Action
    #: For run: the command string. container: a string or list of args. check/file: a mapping.
    body: Any
    line: int
    name: str = ""
    stdin: str | None = None
    timeout: float | None = None
    expect: dict[str, Any] = field(default_factory=dict)
    capture: dict[str, Any] = field(default_factory=dict)
    retry: dict[str, float] = field(default_factory=dict)

    def label(self) -> str:
        if self.name:
            return self.name
        if self.action in ("run", "container"):
            text = self.body if isinstance(self.body, str) else " ".join(map(str, self.body))
            return f"{self.action}: {text}"
        detail = self.body.get("path") if self.action == "file" else self.body.get("value")
        return f"{self.action} {detail}"


@dataclass
class Case:
    id: str
    title: str
    line: int
    steps: list[Step]
    spec: str = ""
    level: str = "MUST"
    requires: list[str] = field(default_factory=list)
    timeout: float = 120.0
    setup: list[Step] = field(default_factory=list)
    teardown: list[Step] = field(default_factory=list)
    #: ``runtime.*`` feature keys: on a runtime declaring one of them, a failure is a known, documented difference.
    differences: list[str] = field(default_factory=list)
    #: Why no broken runtime can make this case fail (e.g. a host-only fact); empty when it can fail.
    unbreakable: str = ""

    def phases(self) -> list[tuple[Phase, list[Step]]]:
        return [("setup", self.setup), ("steps", self.steps), ("teardown", self.teardown)]

    @property
    def uses_runtime(self) -> bool:
        return any(step.action == "container" for _, steps in self.phases() for step in steps)


@dataclass
class Suite:
    name: str
    description: str
    path: str
    cases: list[Case]
    requires: list[str] = field(default_factory=list)
    services: list[str] = field(default_factory=list)
    vars: dict[str, str] = field(default_factory=dict)
