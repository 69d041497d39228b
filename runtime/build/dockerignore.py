"""``.dockerignore``: which context files a build may see.

Docker's rules (moby's pattern matcher): one pattern per line, ``#`` lines and blank lines skipped, surrounding
blanks trimmed, a leading ``/`` dropped and the pattern cleaned like a path; ``*`` ``?`` ``[...]`` never cross a
``/``, ``**`` matches any number of directories, ``\\`` escapes; a pattern that matches a directory also excludes
everything below it; ``!pattern`` re-includes; the last matching pattern decides. The Dockerfile and
``.dockerignore`` themselves are still read by the builder even when ignored (they are only hidden from COPY).
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Pattern:
    text: str
    exclusion: bool
    regex: re.Pattern[str]


def _translate(pattern: str) -> str:
    """A Go ``filepath.Match`` pattern extended with ``**`` as a regular expression over ``/`` paths."""
    out: list[str] = []
    i, n = 0, len(pattern)
    while i < n:
        ch = pattern[i]
        if ch == "*":
            if pattern.startswith("**", i):
                i += 2
                if pattern.startswith("/", i):  # "**/" : zero or more whole directories
                    out.append("(?:.*/)?")
                    i += 1
                else:
                    out.append(".*")
                continue
            out.append("[^/]*")
        elif ch == "?":
            out.append("[^/]")
        elif ch == "[":
            end = pattern.find("]", i + 1)
            if end == -1:
                raise ValueError(f"syntax error in pattern {pattern!r}")
            body = pattern[i + 1 : end]
            negate = body[:1] in ("^", "!")
            if negate:
                body = body[1:]
            body = body.replace("\\", "\\\\")
            out.append(f"[{'^' if negate else ''}{body}]")
            i = end
        elif ch == "\\" and i + 1 < n:
            i += 1
            out.append(re.escape(pattern[i]))
        else:
            out.append(re.escape(ch))
        i += 1
    return "".join(out)


def compile_patterns(lines: list[str]) -> list[Pattern]:
    """Compile ``.dockerignore`` lines; raises ValueError for a malformed pattern."""
    patterns: list[Pattern] = []
    for raw in lines:
        text = raw.strip()
        if not text or text.startswith("#"):
            continue
        exclusion = text.startswith("!")
        if exclusion:
            text = text[1:].strip()
        if not text:
            continue
        cleaned = posixpath.normpath(text).lstrip("/")
        if cleaned in ("", "."):
            cleaned = "."
        regex = re.compile("^" + _translate(cleaned) + "$", re.S)
        patterns.append(Pattern(cleaned, exclusion, regex))
    return patterns


class Ignore:
    """The compiled ``.dockerignore`` of one context."""

    def __init__(self, patterns: list[Pattern]) -> None:
        self.patterns = patterns

    @classmethod
    def load(cls, context: Path) -> Ignore:
        path = context / ".dockerignore"
        if not path.is_file():
            return cls([])
        return cls(compile_patterns(path.read_text(errors="replace").splitlines()))

    @property
    def has_exclusions(self) -> bool:
        return any(p.exclusion for p in self.patterns)

    def ignored(self, rel: str) -> bool:
        """Whether the context path ``rel`` (``a/b/c``, no leading slash) is hidden from the build."""
        rel = posixpath.normpath(rel).lstrip("/")
        parents = [rel]
        head = posixpath.dirname(rel)
        while head:
            parents.append(head)
            head = posixpath.dirname(head)
        matched = False
        for pattern in self.patterns:
            if pattern.exclusion != matched:  # only a pattern that could flip the verdict matters
                continue
            if any(pattern.regex.match(p) for p in parents):
                matched = not pattern.exclusion
        return matched
