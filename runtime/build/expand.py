"""Shell-word rules of the Dockerfile: quotes, the escape character and ``$VAR`` expansion.

Docker does not run a shell for ``COPY``, ``ENV``, ``WORKDIR``... but expands variables in them with a small
shell-like lexer of its own; Dockerfiles in the wild depend on its exact rules, so this module follows BuildKit's
behaviour (learnt from its documentation and tests, written anew): single quotes are literal, double quotes allow
``$`` and escape only ``"``, ``$`` and the escape character, an unquoted escape character makes the next character
literal, ``$VAR``/``${VAR}`` expand (unset means empty), and ``${VAR:-w}`` ``${VAR-w}`` ``${VAR:+w}`` ``${VAR+w}``
``${VAR:?w}`` ``${VAR?w}`` ``${VAR#p}`` ``${VAR##p}`` ``${VAR%p}`` ``${VAR%%p}`` are supported.

The same lexer, with quotes and escapes kept raw and unset variables left alone, finds heredoc markers
(``<<EOF``, ``<<-"EOF"``) in RUN/COPY/ADD lines for the parser.

Expansion is bounded: 43 lines of ``ARG A=$A$A`` double a value 40 times (a terabyte). A word may not grow past
``MAX_WORD`` (the kernel's limit for one exec argument or environment string, so nothing longer could reach a
process anyway), and one expansion pass may not produce more than ``MAX_EXPANDED`` bytes of variable values - both
checked while expanding, before anything large is built.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from runtime.build.errors import ExpansionError

_SPECIAL_PARAMS = frozenset("@*#?-$!0")
#: Longest word after expansion: Linux's MAX_ARG_STRLEN (one argv or environment string).
MAX_WORD = 128 << 10
#: Most bytes of variable values one instruction may expand to (below Linux's ARG_MAX of 2 MiB).
MAX_EXPANDED = 1 << 20
#: Longest value ``${VAR#p}`` ``${VAR%p}`` and their greedy forms cut: every cut point is tried, each a match.
MAX_PATTERN_VALUE = 16 << 10


@dataclass
class _Words:
    """Splits the expanded text into words as the shell would: unquoted blanks separate, quoted ones do not."""

    words: list[str] = field(default_factory=list)
    buf: list[str] = field(default_factory=list)
    in_word: bool = False

    def add_char(self, ch: str) -> None:
        if ch.isspace():
            if self.in_word and self.buf:
                self.words.append("".join(self.buf))
                self.buf = []
                self.in_word = False
        else:
            self.add_raw(ch)

    def add_raw(self, text: str) -> None:
        self.buf.append(text)
        self.in_word = True

    def add_string(self, text: str) -> None:
        for ch in text:
            self.add_char(ch)

    def finish(self) -> list[str]:
        if self.buf and "".join(self.buf):
            self.words.append("".join(self.buf))
        self.buf = []
        return self.words


class _Scan:
    """One pass over one word; ``peek``/``next`` return "" at the end."""

    def __init__(self, lexer: Lexer, text: str, env: Mapping[str, str]) -> None:
        self.lx = lexer
        self.text = text
        self.pos = 0
        self.env = env
        self.expanded = 0

    def grew(self, value: str, name: str) -> str:
        """Count an expanded value against the bounds; refuse it before the text that holds it is built."""
        self.expanded += len(value)
        if len(value) > MAX_WORD or self.expanded > MAX_EXPANDED:
            raise ExpansionError(
                f"expanding ${name} makes the instruction too long: more than {MAX_WORD} bytes in a word or "
                f"{MAX_EXPANDED} bytes of expanded values"
            )
        return value

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def next(self) -> str:
        ch = self.peek()
        if ch:
            self.pos += 1
        return ch

    def process(self, stop: str = "", raw_escapes: bool | None = None) -> tuple[str, list[str]]:
        """Consume up to ``stop`` (or the end) and return the processed text and its words."""
        raw_esc = self.lx.raw_escapes if raw_escapes is None else raw_escapes
        esc = self.lx.escape
        result: list[str] = []
        words = _Words()
        while self.peek():
            ch = self.peek()
            if stop and ch == stop:
                self.next()
                return "".join(result), words.finish()
            if ch == "$":
                tmp = self.dollar()
                result.append(tmp)
                words.add_string(tmp)
            elif ch == "'" and not self.lx.skip_quotes:
                tmp = self.single_quote()
                result.append(tmp)
                words.add_raw(tmp)
            elif ch == '"' and not self.lx.skip_quotes:
                tmp = self.double_quote(raw_esc)
                result.append(tmp)
                words.add_raw(tmp)
            elif ch == "<" and self.lx.heredoc_words and self.text.startswith("<<", self.pos):
                # "<< EOF" is one word for heredoc detection, as BuildKit reads it.
                self.pos += 2
                start = self.pos
                while self.peek() in (" ", "\t"):
                    self.next()
                tmp = "<<" + self.text[start : self.pos]
                result.append(tmp)
                words.add_raw(tmp)
            else:
                self.next()
                if ch == esc:
                    if raw_esc:
                        words.add_raw(ch)
                        result.append(ch)
                    ch = self.next()
                    if not ch:
                        break
                    words.add_raw(ch)
                else:
                    words.add_char(ch)
                result.append(ch)
        if stop:
            raise ExpansionError(f"unexpected end of statement while looking for matching {stop}")
        return "".join(result), words.finish()

    def single_quote(self) -> str:
        opening = self.next()
        out = [opening] if self.lx.raw_quotes else []
        while True:
            ch = self.next()
            if not ch:
                raise ExpansionError("unexpected end of statement while looking for matching single-quote")
            if ch == "'":
                if self.lx.raw_quotes:
                    out.append(ch)
                return "".join(out)
            out.append(ch)

    def double_quote(self, raw_esc: bool) -> str:
        opening = self.next()
        out = [opening] if self.lx.raw_quotes else []
        esc = self.lx.escape
        while True:
            ch = self.peek()
            if not ch:
                raise ExpansionError("unexpected end of statement while looking for matching double-quote")
            if ch == '"':
                self.next()
                if self.lx.raw_quotes:
                    out.append(ch)
                return "".join(out)
            if ch == "$":
                out.append(self.dollar())
                continue
            ch = self.next()
            if ch == esc:
                if raw_esc:
                    out.append(ch)
                nxt = self.peek()
                if not nxt:
                    continue
                if nxt in ('"', "$", esc):
                    ch = self.next()
            out.append(ch)

    def name(self) -> str:
        out: list[str] = []
        while self.peek():
            ch = self.peek()
            if not out and ch.isdigit():
                while self.peek().isdigit():
                    out.append(self.next())
                return "".join(out)
            if not out and ch in _SPECIAL_PARAMS:
                return self.next()
            if not (ch.isalnum() or ch == "_"):
                break
            out.append(self.next())
        return "".join(out)

    def lookup(self, name: str) -> str | None:
        return self.env.get(name)

    def dollar(self) -> str:
        self.next()  # the '$'
        if self.peek() != "{":
            name = self.name()
            if not name:
                return "$"
            value = self.lookup(name)
            if value is None:
                return "$" + name if self.lx.skip_unset else ""
            return self.grew(value, name)
        self.next()  # the '{'
        if not self.peek():
            raise ExpansionError("syntax error: missing '}'")
        if self.peek() in "{}:":
            raise ExpansionError("syntax error: bad substitution")
        name = self.name()
        ch = self.next()
        if not ch:
            raise ExpansionError("syntax error: missing '}'")
        if ch == "}":
            value = self.lookup(name)
            if value is None:
                return "${" + name + "}" if self.lx.skip_unset else ""
            return self.grew(value, name)
        modifier = ch
        null_is_unset = False
        if ch == ":":
            null_is_unset = True
            ch = self.next()
            modifier += ch
        if ch not in ("+", "-", "?", "#", "%"):
            raise ExpansionError(f"unsupported modifier ({modifier}) in substitution")
        pattern_like = ch in ("#", "%")
        if null_is_unset and pattern_like:
            raise ExpansionError(f"unsupported modifier ({modifier}) in substitution")
        try:
            word, _ = self.process("}", raw_escapes=pattern_like)
        except ExpansionError:
            if not self.peek():
                raise ExpansionError("syntax error: missing '}'") from None
            raise
        value = self.lookup(name)
        if value is None and self.lx.skip_unset:
            return "${" + name + modifier + word + "}"
        return self.grew(_apply_modifier(name, value, ch, null_is_unset, word), name)


def _apply_modifier(name: str, value: str | None, op: str, null_is_unset: bool, word: str) -> str:
    unset = value is None or (null_is_unset and value == "")
    if op == "-":
        return word if unset else (value or "")
    if op == "+":
        return "" if unset else word
    if op == "?":
        if value is None:
            raise ExpansionError(f"{name}: {word or 'is not allowed to be unset'}")
        if null_is_unset and value == "":
            raise ExpansionError(f"{name}: {word or 'is not allowed to be empty'}")
        return value
    text = value or ""
    if len(text) > MAX_PATTERN_VALUE:
        # Each cut point is a regex match of its own: quadratic in the value's length.
        raise ExpansionError(f"${{{name}{op}...}}: a value of {len(text)} bytes (at most {MAX_PATTERN_VALUE})")
    greedy = word.startswith(op)
    pattern = word[1:] if greedy else word
    regex = re.compile(fnmatch.translate(pattern).removeprefix("(?s:").removesuffix(")\\Z"), re.S)
    cuts = range(len(text) + 1)
    if op == "#":  # the shortest (or, greedy, longest) prefix that matches goes
        for i in reversed(cuts) if greedy else cuts:
            if regex.fullmatch(text, 0, i):
                return text[i:]
        return text
    for i in cuts if greedy else reversed(cuts):  # the longest (greedy) or shortest suffix that matches goes
        if regex.fullmatch(text, i):
            return text[:i]
    return text


@dataclass(frozen=True)
class Lexer:
    """Dockerfile word processing for one escape character (``\\`` or the ``# escape=`` directive's `````).

    ``raw_quotes``/``raw_escapes`` keep quotes and escape characters in the output (used to find heredocs),
    ``skip_unset`` leaves ``$UNSET`` as written instead of expanding it to "", ``skip_quotes`` takes quotes
    literally (a COPY heredoc's body is expanded that way).
    """

    escape: str = "\\"
    raw_quotes: bool = False
    raw_escapes: bool = False
    skip_unset: bool = False
    heredoc_words: bool = False
    skip_quotes: bool = False

    def word(self, text: str, env: Mapping[str, str]) -> str:
        """Expand ``text`` as one word: quotes removed, blanks kept (ENV values, WORKDIR, COPY paths...)."""
        return _bounded([_Scan(self, text, env).process()[0]])[0]

    def words(self, text: str, env: Mapping[str, str]) -> list[str]:
        """Expand ``text`` and split it on unquoted blanks (after expansion, as the shell does)."""
        return _bounded(_Scan(self, text, env).process()[1])


def _bounded(words: list[str]) -> list[str]:
    for word in words:
        if len(word) > MAX_WORD:
            raise ExpansionError(f"a word of {len(word)} bytes after expansion is too long (at most {MAX_WORD})")
    return words


def expand(text: str, env: Mapping[str, str], escape: str = "\\") -> str:
    """Shorthand for ``Lexer(escape).word(text, env)``."""
    return Lexer(escape).word(text, env)
