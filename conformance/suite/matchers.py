"""Expectations: exit codes and text matchers. Each returns ``None`` when met, else what was wrong.

Regexes come from suites and text from whatever a container printed, so a catastrophic pattern (``(a+)+$`` on
``'a' * 40 + '!'``) would otherwise hang the run past every deadline: Python's ``re`` cannot be interrupted, not
even from another thread. So every search runs in one long-lived worker process (started on first use, compiling
each pattern once and keeping it), under the case's deadline; a search that outlives it kills the worker and
raises :class:`conformance.errors.MatchTimeout`. Text is searched up to :data:`SEARCH_LIMIT` characters.
"""

from __future__ import annotations

import atexit
import functools
import json
import os
import re
import select
import subprocess
import sys
import threading
import time
from typing import Any

from conformance.errors import MatchTimeout

#: At most this many characters of a text are searched by a regex (the rest is ignored, and a miss says so).
SEARCH_LIMIT = 256 * 1024
#: A search always gets at least this long, even when the case's deadline is (nearly) used up.
MIN_SEARCH_TIME = 0.5

# The worker: one JSON request per line ({"p": pattern, "t": text}), one JSON answer per line
# ({"g": [group 0, group 1...]} or {"g": null}); patterns are compiled once and kept.
_WORKER = """
import json, re, sys
compiled = {}
for line in sys.stdin:
    request = json.loads(line)
    pattern = compiled.get(request["p"])
    if pattern is None:
        pattern = compiled[request["p"]] = re.compile(request["p"], re.MULTILINE)
    found = pattern.search(request["t"])
    groups = [found.group(0), *found.groups()] if found else None
    sys.stdout.write(json.dumps({"g": groups}) + "\\n")
    sys.stdout.flush()
"""

_NUMERIC = {"lt": float.__lt__, "le": float.__le__, "gt": float.__gt__, "ge": float.__ge__,
            "eq": float.__eq__, "ne": float.__ne__}


def check_exit(spec: Any, status: int) -> str | None:
    if spec == "any":
        return None
    if isinstance(spec, int):
        ok = status == spec
        expected = str(spec)
    elif isinstance(spec, list):
        ok = status in spec
        expected = f"one of {spec}"
    else:
        ok = status != spec["not"]
        expected = f"anything but {spec['not']}"
    return None if ok else f"exit status {status}, expected {expected}"


@functools.lru_cache(maxsize=512)
def compile_pattern(pattern: str) -> re.Pattern[str]:
    """Compile (and keep) a suite's regex in this process: the loader validates patterns with it."""
    return re.compile(pattern, re.MULTILINE)


class _RegexWorker:
    """The process every regex search runs in, so that a runaway search can be stopped by killing it."""

    def __init__(self) -> None:
        self._proc: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()
        atexit.register(self.stop)

    def _start(self) -> subprocess.Popen[bytes]:
        if self._proc is None or self._proc.poll() is not None:
            self._proc = subprocess.Popen([sys.executable, "-I", "-S", "-c", _WORKER], stdin=subprocess.PIPE,
                                          stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        return self._proc

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            proc.kill()
            proc.wait()
            for pipe in (proc.stdin, proc.stdout):
                if pipe is not None:
                    pipe.close()

    def search(self, pattern: str, text: str, timeout: float) -> list[str | None] | None:
        """Group 0 and the pattern's groups of the first match, or None; MatchTimeout after ``timeout`` s."""
        with self._lock:
            proc = self._start()
            assert proc.stdin is not None and proc.stdout is not None
            try:
                proc.stdin.write(json.dumps({"p": pattern, "t": text}).encode() + b"\n")
                proc.stdin.flush()
            except BrokenPipeError:
                self.stop()
                raise MatchTimeout(f"the regex worker died before matching /{pattern}/") from None
            answer = b""
            deadline = time.monotonic() + timeout
            fd = proc.stdout.fileno()
            while not answer.endswith(b"\n"):
                left = deadline - time.monotonic()
                if left <= 0 or not select.select([fd], [], [], left)[0]:
                    self.stop()
                    raise MatchTimeout(f"/{pattern}/ did not finish searching within {round(timeout, 1):g} s "
                                       "(the case's deadline); it backtracks catastrophically: simplify it")
                chunk = os.read(fd, 65536)
                if not chunk:
                    self.stop()
                    raise MatchTimeout(f"the regex worker died while matching /{pattern}/")
                answer += chunk
            groups: list[str | None] | None = json.loads(answer)["g"]
            return groups


_WORKER_PROCESS = _RegexWorker()


def search(pattern: str, text: str, deadline: float | None = None) -> list[str | None] | None:
    """``re.search(pattern, text, re.MULTILINE)`` that ends by ``deadline`` (a ``time.monotonic()`` value).

    Returns group 0 followed by the pattern's groups, or None when nothing matched. Only the first
    :data:`SEARCH_LIMIT` characters of ``text`` are searched.
    """
    compile_pattern(pattern)  # a bad pattern raises re.error here, in this process
    left = 3600.0 if deadline is None else deadline - time.monotonic()
    return _WORKER_PROCESS.search(pattern, text[:SEARCH_LIMIT], max(left, MIN_SEARCH_TIME))


def check_text(spec: Any, text: str, what: str, deadline: float | None = None) -> str | None:
    """Match ``text`` against a matcher (a plain value means: equals, after stripping).

    Regex matchers end by ``deadline`` (monotonic time) or raise :class:`conformance.errors.MatchTimeout`.
    """
    value = text.strip()
    if not isinstance(spec, dict):
        spec = {"equals": spec}
    for key, expected in spec.items():
        problem = _check_one(key, expected, value, deadline)
        if problem:
            return f"{what} {problem}"
    return None


def _check_one(key: str, expected: Any, value: str, deadline: float | None) -> str | None:
    shown = _shorten(value)
    if key == "equals":
        return None if value == str(expected).strip() else f"is {shown}, expected {str(expected).strip()!r}"
    if key in ("contains", "not_contains"):
        wanted = expected if isinstance(expected, list) else [expected]
        for item in map(str, wanted):
            if (item in value) != (key == "contains"):
                verb = "does not contain" if key == "contains" else "contains"
                return f"{verb} {item!r} (it is {shown})"
        return None
    if key in ("matches", "not_matches"):
        found = search(str(expected), value, deadline) is not None
        if found != (key == "matches"):
            verb = "does not match" if key == "matches" else "matches"
            cut = f"; only its first {SEARCH_LIMIT} characters were searched" if len(value) > SEARCH_LIMIT else ""
            return f"{verb} /{expected}/ (it is {shown}{cut})"
        return None
    if key == "empty":
        return None if (value == "") == bool(expected) else f"is {shown}, expected {'' if expected else 'non-'}empty"
    if key == "lines":
        count = len([line for line in value.splitlines() if line.strip()])
        return None if count == int(expected) else f"has {count} lines, expected {expected}"
    try:
        number = float(value)
    except ValueError:
        return f"is {shown}, not a number (for {key} {expected})"
    return None if _NUMERIC[key](number, float(expected)) else f"is {number:g}, expected {key} {expected}"


def _shorten(text: str, limit: int = 200) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "...")
