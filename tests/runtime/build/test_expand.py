"""Variable expansion and shell-word rules of Dockerfile instructions."""

from __future__ import annotations

import pytest

from runtime.build.errors import ExpansionError
from runtime.build.expand import Lexer

ENV = {"A": "x y", "E": "", "P": "/usr/local/bin", "N": "1"}

# (text, expanded as one word, split into words)
CASES = [
    ("$A", "x y", ["x", "y"]),
    ("${A}", "x y", ["x", "y"]),
    ('"$A"', "x y", ["x y"]),
    ("'$A'", "$A", ["$A"]),
    ("pre${N}post", "pre1post", ["pre1post"]),
    ("$UNSET", "", []),
    ("${UNSET:-d}", "d", ["d"]),
    ("${E:-d}", "d", ["d"]),
    ("${E-d}", "", []),
    ("${UNSET-d}", "d", ["d"]),
    ("${A:+set}", "set", ["set"]),
    ("${E:+set}", "", []),
    ("${E+set}", "set", ["set"]),
    ("${UNSET:+set}", "", []),
    ("${UNSET:-$N}", "1", ["1"]),
    ("\\$A", "$A", ["$A"]),
    ("a\\ b", "a b", ["a b"]),
    ('"a\\"b"', 'a"b', ['a"b']),
    ('"a\\b"', "a\\b", ["a\\b"]),
    ("$", "$", ["$"]),
    ("$1", "", []),
    ("${P#*/}", "usr/local/bin", ["usr/local/bin"]),
    ("${P##*/}", "bin", ["bin"]),
    ("${P%/*}", "/usr/local", ["/usr/local"]),
    ('""', "", []),
    ("a  b", "a  b", ["a", "b"]),
]


@pytest.mark.parametrize(("text", "word", "words"), CASES)
def test_expansion(text: str, word: str, words: list[str]) -> None:
    lexer = Lexer()
    assert lexer.word(text, ENV) == word
    assert lexer.words(text, ENV) == words


def test_backtick_escape() -> None:
    lexer = Lexer("`")
    assert lexer.word("`$A c:\\dir", ENV) == "$A c:\\dir"


def test_skip_unset_keeps_text() -> None:
    assert Lexer(skip_unset=True).word("$U ${U} ${U:-x} $N", ENV) == "$U ${U} ${U:-x} 1"


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("${A", "missing '}'"),
        ("${}", "bad substitution"),
        ("${:x}", "bad substitution"),
        ("${A:?}", None),
        ("${UNSET:?need it}", "UNSET: need it"),
        ("${UNSET?}", "is not allowed to be unset"),
        ("${E:?}", "is not allowed to be empty"),
        ("'open", "single-quote"),
        ('"open', "double-quote"),
        ("${A!x}", "unsupported modifier"),
    ],
)
def test_expansion_errors(text: str, fragment: str | None) -> None:
    if fragment is None:
        assert Lexer().word(text, ENV) == "x y"
        return
    with pytest.raises(ExpansionError, match=fragment.replace("?", r"\?")):
        Lexer().word(text, ENV)
