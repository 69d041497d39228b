"""Dockerfile text -> logical instructions: the first of the parser's two passes, with BuildKit's syntax rules.

Physical lines (any line ending, at most 64 KiB each) become logical instructions: parser directives,
escape-character continuations with comments and blank lines inside them, heredocs, JSON vs shell form (a JSON
array with NaN or Infinity falls back to shell form, as BuildKit's does) and builder flags (repeats kept in
order). Nothing is checked against an instruction's own rules here: that is the second pass
(:mod:`runtime.build.parser`), so ``commit --change`` and the builder share both.

Every error is a :class:`DockerfileError` naming the line where the instruction starts.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

from runtime.build.errors import DockerfileError, ExpansionError
from runtime.build.expand import Lexer

KNOWN = frozenset(
    [
        "ADD",
        "ARG",
        "CMD",
        "COPY",
        "ENTRYPOINT",
        "ENV",
        "EXPOSE",
        "FROM",
        "HEALTHCHECK",
        "LABEL",
        "MAINTAINER",
        "ONBUILD",
        "RUN",
        "SHELL",
        "STOPSIGNAL",
        "USER",
        "VOLUME",
        "WORKDIR",
    ]
)
HEREDOC_KEYWORDS = frozenset({"RUN", "COPY", "ADD"})
_WHITESPACE = re.compile(r"[\t\v\f\r ]+")
_DIRECTIVE = re.compile(r"^#\s*([a-zA-Z][a-zA-Z0-9]*)\s*=\s*(.+?)\s*$")
_HEREDOC_WORD = re.compile(r"^(\d*)<<(-?)\s*([^<]*)$")

@dataclass(frozen=True)
class Heredoc:
    """One ``<<NAME`` document. ``expand`` is false when the delimiter was quoted; ``chomp`` for ``<<-``."""

    name: str
    content: str
    expand: bool
    chomp: bool
    fd: int = 0  # ``3<<EOF``: the descriptor it is fed on (BuildKit records it)

    def text(self) -> str:
        """The content as the command sees it (leading tabs removed for ``<<-``)."""
        return re.sub(r"(?m)^\t+", "", self.content) if self.chomp else self.content


@dataclass
class Instruction:
    """One logical instruction. ``args`` are still unexpanded; quotes are kept where the builder expands later.

    ``json`` is true for the exec (JSON array) form. ENV/LABEL carry ``pairs``; ONBUILD carries ``trigger`` (the
    parsed instruction) and ``args == [its text]``.
    """

    keyword: str
    args: list[str]
    original: str
    line: int
    end_line: int
    flags: dict[str, str] = field(default_factory=dict)
    flag_words: list[str] = field(default_factory=list)  # as written, in order, repeats kept (``--mount=a``)
    json: bool = False
    heredocs: list[Heredoc] = field(default_factory=list)
    pairs: list[tuple[str, str]] = field(default_factory=list)
    legacy_pair: bool = False  # ENV/LABEL ``name value`` (no ``=``)
    trigger: Instruction | None = None

    def fail(self, message: str) -> DockerfileError:
        return DockerfileError(message, self.line)


# ---------------------------------------------------------------------------------------------- pass 1: lines


@dataclass
class _Lines:
    """The file's physical lines (line endings kept, as heredoc contents need them) and a cursor."""

    lines: list[str]
    pos: int = 0

    def next(self) -> str | None:
        if self.pos >= len(self.lines):
            return None
        self.pos += 1
        return self.lines[self.pos - 1]


@dataclass
class _Directives:
    escape: str = "\\"
    syntax: str | None = None
    done: bool = False
    seen: set[str] = field(default_factory=set)
    continuation: re.Pattern[str] = field(default_factory=lambda: _continuation_regex("\\"))

    def check(self, text: str, lineno: int) -> None:
        """Handle ``text`` if it is a parser directive; the first line that is not ends the directives."""
        if self.done:
            return
        match = _DIRECTIVE.match(text)
        if not match or match.group(1).lower() not in ("escape", "syntax", "check"):
            self.done = True
            return
        key, value = match.group(1).lower(), match.group(2)
        if key in self.seen:
            raise DockerfileError(f"only one {key} parser directive can be used", lineno)
        self.seen.add(key)
        if key == "escape":
            if value not in ("\\", "`"):
                raise DockerfileError(f"invalid escape token '{value}' does not match ` or \\", lineno)
            self.escape = value
            self.continuation = _continuation_regex(value)
        elif key == "syntax":
            self.syntax = value


def _continuation_regex(esc: str) -> re.Pattern[str]:
    e = re.escape(esc)
    return re.compile(rf"([^{e}]){e}[ \t]*$|^{e}[ \t]*$")


def _is_comment(text: str) -> bool:
    return text.lstrip().startswith("#")


def _trim_continuation(text: str, d: _Directives) -> tuple[str, bool]:
    """Remove a trailing escape character; returns (text, whether the logical line ends here)."""
    if d.continuation.search(text):
        return d.continuation.sub(r"\1", text, count=1), False
    return text, True


def parse_instructions(text: str) -> tuple[list[Instruction], _Directives, list[str]]:
    """Pass 1: logical instructions with their flags, args (unexpanded) and heredocs."""
    if text.startswith("\ufeff"):
        text = text[1:]
    src = _Lines(_physical_lines(text))
    d = _Directives()
    out: list[Instruction] = []
    warnings: list[str] = []
    while (raw := src.next()) is not None:
        lineno = src.pos
        stripped = raw.rstrip("\r\n").lstrip()
        d.check(stripped, lineno)
        content = "" if _is_comment(stripped) else stripped
        content, eol = _trim_continuation(content, d)
        if eol and content == "":
            continue
        buf = [content]
        empty_continuation = False
        while not eol:
            nxt = src.next()
            if nxt is None:
                break
            body = nxt.rstrip("\r\n")
            if _is_comment(body):
                continue
            if body.strip() == "":
                empty_continuation = True
                continue
            body, eol = _trim_continuation(body, d)
            buf.append(body)
        logical = "".join(buf)
        if empty_continuation:
            warnings.append(f"line {lineno}: empty continuation line (an error in a future Docker release)")
        instr = _parse_logical(logical, lineno, src.pos, d)  # a continuation at EOF ends the instruction there
        _read_heredocs(instr, src, d)
        out.append(instr)
    return out, d, warnings


MAX_LINE = 65535
"""BuildKit reads lines with Go's bufio.Scanner: a line of 64 KiB or more is an error, not a long instruction."""


def _physical_lines(text: str) -> list[str]:
    """Lines as BuildKit's scanner cuts them: at ``\n`` only (``\r\n`` too: one ``\r`` before it is dropped);
    a lone ``\r``, ``\v``, ``\f``, U+2028 ... stay inside the line, unlike Python's ``splitlines``."""
    lines = [line + "\n" for line in text.split("\n")]
    lines[-1] = lines[-1][:-1]
    if not lines[-1]:
        lines.pop()
    for number, line in enumerate(lines, 1):
        if len(line.rstrip("\n").encode()) > MAX_LINE:
            raise DockerfileError(f"dockerfile line greater than max allowed size of {MAX_LINE}", number)
    return [line[:-2] + "\n" if line.endswith("\r\n") else line for line in lines]


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not JSON")


def _finite(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise ValueError(f"{text} does not fit a float64")
    return value


def _split_flags(rest: str, esc: str) -> tuple[dict[str, str], list[str], str]:
    """Builder flags (``--from=x``) at the start of the arguments; returns (flags, flag words, the rest)."""
    words: list[str] = []
    pos = 0
    while True:
        match = re.match(r"[ \t]*", rest[pos:])
        pos += match.end() if match else 0
        if not rest.startswith("--", pos):
            break
        end = pos
        quote = ""
        chars: list[str] = []
        while end < len(rest):
            ch = rest[end]
            if quote:
                if ch == quote:
                    quote = ""
                elif ch == esc and end + 1 < len(rest):
                    end += 1
                    chars.append(rest[end])
                else:
                    chars.append(ch)
            elif ch.isspace():
                break
            elif ch in "'\"":
                quote = ch
            elif ch == esc and end + 1 < len(rest):
                end += 1
                chars.append(rest[end])
            else:
                chars.append(ch)
            end += 1
        pos = end
        text = "".join(chars)
        if text == "--":
            break
        words.append(text)
    flags: dict[str, str] = {}
    for flag_word in words:
        name, eq, value = flag_word[2:].partition("=")
        flags[name] = value if eq else "\0"  # "\0": given without a value
    return flags, words, rest[pos:].strip()


def _parse_words(rest: str, esc: str) -> list[str]:
    """Blank-separated words with quotes and escapes kept (ENV/LABEL/ARG; expanded later by the builder)."""
    words: list[str] = []
    buf: list[str] = []
    quote = ""
    blank_ok = False
    i = 0
    while i < len(rest):
        ch = rest[i]
        if ch == esc and quote != "'":
            # outside quotes and inside double ones alike, the escape and the character it escapes stay together
            # (an escape is never a blank or a quote, so this comes first); a trailing lone escape is dropped
            if i + 1 == len(rest):
                break
            buf.append(rest[i : i + 2])
            i += 2
            continue
        if quote:
            if ch == quote:
                quote = ""
            buf.append(ch)
        elif ch.isspace():
            if buf or blank_ok:
                words.append("".join(buf))
            buf, blank_ok = [], False
        else:
            if ch in "'\"":
                quote, blank_ok = ch, True
            buf.append(ch)
        i += 1
    if buf or blank_ok:
        words.append("".join(buf))
    return words


def _maybe_json(rest: str) -> list[str] | None:
    """The JSON array of ``rest``, or None when it is not valid JSON (then BuildKit takes it as shell form)."""
    if not rest.lstrip().startswith("["):
        return None
    try:  # Go's JSON: no NaN/Infinity, no float beyond float64; otherwise it is shell form
        value = json.loads(rest, parse_constant=_reject_constant, parse_float=_finite)
    except ValueError:
        return None
    if not isinstance(value, list):
        return None
    if not all(isinstance(v, str) for v in value):
        raise ValueError("when using JSON array syntax, arrays must be comprised of strings only")
    return value


def _parse_logical(logical: str, line: int, end_line: int, d: _Directives) -> Instruction:
    parts = _WHITESPACE.split(logical.strip(), maxsplit=1)
    keyword = parts[0].upper()
    rest = parts[1] if len(parts) > 1 else ""
    if keyword not in KNOWN:
        raise DockerfileError(f"unknown instruction: {parts[0]}", line)
    flags, words, rest = _split_flags(rest, d.escape)
    instr = Instruction(keyword, [], logical.strip(), line, end_line, flags=flags, flag_words=words)
    try:
        _fill_args(instr, rest, d)
    except ValueError as exc:
        raise DockerfileError(f"{keyword}: {exc}", line) from None
    return instr


def _fill_args(instr: Instruction, rest: str, d: _Directives) -> None:
    kw = instr.keyword
    if kw in ("RUN", "CMD", "ENTRYPOINT", "SHELL"):
        parsed = _maybe_json(rest)
        instr.json = parsed is not None
        instr.args = parsed if parsed is not None else ([rest] if rest else [])
    elif kw in ("COPY", "ADD", "VOLUME"):
        parsed = _maybe_json(rest)
        instr.json = parsed is not None
        instr.args = parsed if parsed is not None else (_WHITESPACE.split(rest) if rest else [])
    elif kw in ("FROM", "EXPOSE"):
        instr.args = _WHITESPACE.split(rest) if rest else []
    elif kw in ("ENV", "LABEL"):
        instr.pairs = _name_values(kw, rest, d.escape)
        instr.legacy_pair = bool(instr.pairs) and "=" not in (_parse_words(rest, d.escape) or ["="])[0]
        instr.args = [f"{k}={v}" for k, v in instr.pairs]
    elif kw == "ARG":
        instr.args = _parse_words(rest, d.escape)
    elif kw == "HEALTHCHECK":
        head = _WHITESPACE.split(rest, maxsplit=1)
        typ, cmd = head[0], (head[1].strip() if len(head) > 1 else "")
        parsed = _maybe_json(cmd) if cmd else None
        instr.json = parsed is not None
        instr.args = ([typ] if typ else []) + (parsed if parsed is not None else ([cmd] if cmd else []))
    elif kw == "ONBUILD":
        if rest:
            instr.trigger = _parse_logical(rest, instr.line, instr.end_line, d)
            instr.args = [rest]
    else:  # MAINTAINER STOPSIGNAL USER WORKDIR: the rest of the line is one argument
        instr.args = [rest] if rest else []


def _name_values(kw: str, rest: str, esc: str) -> list[tuple[str, str]]:
    words = _parse_words(rest, esc)
    if not words:
        return []
    if "=" not in words[0]:  # legacy form: ENV name value with blanks
        parts = _WHITESPACE.split(rest, maxsplit=1)
        if len(parts) < 2:
            raise ValueError(f"{kw} must have two arguments")
        return [(parts[0], parts[1])]
    pairs = []
    for word in words:
        if "=" not in word:
            raise ValueError(f"Syntax error - can't find = in {word!r}. Must be of the form: name=value")
        key, _, value = word.partition("=")
        pairs.append((key, value))
    return pairs


def _heredoc_markers(instr: Instruction) -> list[tuple[str, bool, bool, int]]:
    """(name, expand, chomp, fd) of each ``<<WORD`` in a RUN/COPY/ADD line, in order."""
    target = instr.trigger if instr.keyword == "ONBUILD" and instr.trigger else instr
    if target.keyword not in HEREDOC_KEYWORDS or target.json or "<<" not in target.original:
        return []
    raw = Lexer(raw_quotes=True, raw_escapes=True, skip_unset=True, heredoc_words=True)
    try:
        words = raw.words(target.original, {})
    except ExpansionError:
        return []
    out = []
    for word in words:
        marker = parse_heredoc_word(word)
        if marker is not None:
            digits = _HEREDOC_WORD.match(word)
            out.append((*marker, int(digits.group(1)) if digits and digits.group(1) else 0))
    return out


def parse_heredoc_word(word: str) -> tuple[str, bool, bool] | None:
    """(name, expand, chomp) if ``word`` is a heredoc marker such as ``<<EOF``, ``<<-'EOF'``, ``2<<EOF``."""
    match = _HEREDOC_WORD.match(word)
    if not match or not match.group(3):
        return None
    rest = match.group(3)
    try:
        plain = Lexer(skip_unset=True).words(rest, {})
        quoted = Lexer(raw_quotes=True, skip_unset=True).words(rest, {})
    except ExpansionError:
        return None
    if len(plain) != 1 or len(quoted) != 1:
        return None
    name = plain[0]
    expand = _quote_count(name) == _quote_count(quoted[0])
    return name, expand, match.group(2) == "-"


def _quote_count(text: str) -> int:
    return text.count("'") + text.count('"')


def _read_heredocs(instr: Instruction, src: _Lines, d: _Directives) -> None:
    for name, expand, chomp, fd in _heredoc_markers(instr):
        content: list[str] = []
        while True:
            raw = src.next()
            if raw is None:
                raise instr.fail(f"unterminated heredoc: no line {name!r} ends the <<{name} document")
            candidate = raw.rstrip("\r\n")
            if chomp:
                candidate = candidate.lstrip("\t")
            if candidate == name:
                break
            content.append(raw)
        instr.heredocs.append(Heredoc(name, "".join(content), expand, chomp, fd))
    instr.end_line = src.pos
    if instr.trigger is not None:
        instr.trigger.heredocs = instr.heredocs
