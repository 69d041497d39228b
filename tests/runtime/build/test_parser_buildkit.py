"""refrt's Dockerfile parser against BuildKit's own parser tests.

BuildKit's test corpus (``testfiles*/``, Apache-2.0) lives beside the clone in ``../shared/buildkit-parser``
(CI has a copy there); it is read from there, never copied into the project. Each positive case holds a
Dockerfile and BuildKit's ``AST.Dump()`` of it; :func:`dump` prints refrt's pass-1 instructions
(``runtime.build.parser.parse_instructions``) in that format. Each negative Dockerfile must fail to parse.
The edge cases of issue 14 have tests of their own below.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from runtime.build.errors import DockerfileError
from runtime.build.parser import Instruction, parse, parse_instructions

REPO = Path(__file__).resolve().parents[3]
CORPUS = REPO.parent / "shared" / "buildkit-parser"


def go_quote(text: str) -> str:
    """Go's %q of a string."""
    out = ['"']
    for ch in text:
        code = ord(ch)
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch in "\a\b\f\n\r\t\v":
            out.append({"\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t",
                        "\v": "\\v"}[ch])
        elif code < 0x20 or code == 0x7F:
            out.append(f"\\x{code:02x}")
        elif not ch.isprintable():
            out.append(f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def _node(instr: Instruction) -> str:
    parts = [instr.keyword.lower()]
    if instr.flag_words:
        parts.append("[" + " ".join(go_quote(w) for w in instr.flag_words) + "]")
    if instr.keyword == "ONBUILD" and instr.trigger is not None:
        parts.append(_node(instr.trigger))
    elif instr.keyword in ("ENV", "LABEL"):
        legacy = bool(instr.pairs) and instr.legacy_pair
        for key, value in instr.pairs:
            parts += [go_quote(key), go_quote(value), go_quote("" if legacy else "=")]
    else:
        parts += [go_quote(a) for a in instr.args]
    return "(" + " ".join(parts) + ")"


def dump(text: str) -> list[str]:
    instructions, _, _ = parse_instructions(text)
    return [_node(i) for i in instructions]


def _cases(kind: str) -> list[Path]:
    if not CORPUS.is_dir():
        pytest.fail(f"BuildKit's parser corpus is missing: expected {CORPUS} (../shared/buildkit-parser)")
    return sorted(p for p in (CORPUS / kind).iterdir() if p.is_dir())


def _read(path: Path) -> str:
    return path.read_bytes().decode("utf-8")


def _ids(case: Path | None) -> str:
    return case.name if case is not None else "missing"


@pytest.mark.parametrize("case", _cases("testfiles") if CORPUS.is_dir() else [None], ids=_ids)
def test_dump_matches_buildkit(case: Path | None) -> None:
    if case is None:
        pytest.fail(f"BuildKit's parser corpus is missing: expected {CORPUS}")
    expected = _read(case / "result").splitlines()
    assert dump(_read(case / "Dockerfile")) == expected


@pytest.mark.parametrize("case", _cases("testfiles-negative") if CORPUS.is_dir() else [None], ids=_ids)
def test_negative_cases_fail(case: Path | None) -> None:
    if case is None:
        pytest.fail(f"BuildKit's parser corpus is missing: expected {CORPUS}")
    with pytest.raises(DockerfileError):
        parse(_read(case / "Dockerfile"))


def _vectors() -> list[dict[str, object]]:
    import json

    path = CORPUS / "extra" / "vectors.json"
    if not path.is_file():
        return [{"name": "missing"}]
    cases: list[dict[str, object]] = json.loads(path.read_text())["cases"]
    return cases


@pytest.mark.parametrize("case", _vectors(), ids=lambda c: str(c["name"]))
def test_vectors_from_buildkits_tests(case: dict[str, Any]) -> None:
    from runtime.build.parser import parse_heredoc_word

    if case["name"] == "missing":
        pytest.fail(f"BuildKit's parser vectors are missing: expected {CORPUS / 'extra' / 'vectors.json'}")
    expect = case["expect"]
    text = case["dockerfile"]
    if "heredoc_word" in expect:
        marker = parse_heredoc_word(case["word"])
        assert (marker[0] if marker else None) == expect["heredoc_word"]
        return
    if "error" in expect:
        with pytest.raises(DockerfileError) as info:
            parse(text)
        assert expect["error"] in str(info.value)
        return
    instructions, _, _ = parse_instructions(text)
    if "dump" in expect:
        assert [_node(i) for i in instructions] == expect["dump"]
    if "lines" in expect:
        assert [[i.line, i.end_line] for i in instructions] == expect["lines"]
    if "heredoc_names" in expect:
        assert [[h.name for h in i.heredocs] for i in instructions] == expect["heredoc_names"]
    if "heredocs" in expect:
        got = [[{"name": h.name, "content": h.content, "expand": h.expand, "chomp": h.chomp, "fd": h.fd}
                for h in i.heredocs] or None for i in instructions]
        assert got == expect["heredocs"]


# -- the edge cases of issue 14, each checked against docker 20.10's builder (BuildKit's parser) here ----------
def test_repeated_flags_are_kept_in_order() -> None:
    assert dump("FROM a\nRUN --mount=type=cache,target=/a --mount=type=tmpfs,target=/b echo\n")[1] == (
        '(run ["--mount=type=cache,target=/a" "--mount=type=tmpfs,target=/b"] "echo")')


def test_a_repeated_single_value_flag_is_refused() -> None:
    with pytest.raises(DockerfileError, match="Duplicate flag specified: from"):
        parse("FROM a AS x\nFROM a\nCOPY --from=x --from=a /x /y\n")
    with pytest.raises(DockerfileError, match="unknown flag: --nope"):  # the first problem, as BuildKit
        parse("FROM a\nCOPY --nope --from=x --from=y /x /y\n")


def test_only_newline_breaks_lines() -> None:
    assert dump("FROM a\nRUN echo a\rRUN echo b\n")[1:] == ['(run "echo a\\rRUN echo b")']
    assert dump("FROM a\nRUN echo a\x0bb\x0cc\u2028d\x85e\n")[1:] == ['(run "echo a\\vb\\fc\\u2028d\\u0085e")']
    assert dump("FROM a\r\nRUN echo a \\\r\n b\r\n") == ['(from "a")', '(run "echo a  b")']
    heredoc = parse_instructions("FROM a\r\nRUN <<EOF\r\nline\r\nEOF\r\n")[0][1].heredocs[0]
    assert heredoc.content == "line\n"


def test_line_limit_is_64_kib() -> None:
    fits = "FROM a\nLABEL x=" + "a" * (65535 - len("LABEL x=")) + "\n"
    assert len(parse_instructions(fits)[0]) == 2
    too_long = "FROM a\nLABEL x=" + "a" * (65536 - len("LABEL x=")) + "\n"
    with pytest.raises(DockerfileError, match="max allowed size of 65535"):
        parse(too_long)


@pytest.mark.parametrize("array", ["[NaN]", '["a", Infinity]', "[-Infinity]", "[1e999]"])
def test_json_that_go_rejects_is_shell_form(array: str) -> None:
    instr = parse_instructions(f"FROM a\nCMD {array}\n")[0][1]
    assert not instr.json and instr.args == [array]


def test_continuation_at_end_of_file() -> None:
    assert dump("FROM a\nRUN echo a \\") == ['(from "a")', '(run "echo a")']
    assert dump("FROM a\nRUN echo a \\\n\n\n") == ['(from "a")', '(run "echo a")']
    assert dump("FROM a\nLABEL a=b \\") == ['(from "a")', '(label "a" "b" "=")']
    assert dump("FROM a\nRUN \\\n") == ['(from "a")', "(run)"]  # BuildKit's AST; the instruction then fails
    with pytest.raises(DockerfileError, match="RUN requires at least one argument"):
        parse("FROM a\nRUN \\\n")
