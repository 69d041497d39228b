"""Dockerfile parser: a table of good inputs (what each becomes) and of bad ones (line number + message)."""

from __future__ import annotations

import pytest

from runtime.build.errors import DockerfileError
from runtime.build.parser import Heredoc, Instruction, parse, parse_duration, parse_heredoc_word


def _one(text: str) -> Instruction:
    """The single instruction of the first stage after ``FROM x``."""
    df = parse("FROM x\n" + text)
    assert len(df.stages[0].instructions) == 1, df.stages[0].instructions
    return df.stages[0].instructions[0]


# (name, Dockerfile body after "FROM x", keyword, args, json)
GOOD = [
    ("continuation", "RUN echo a \\\n  b", "RUN", ["echo a   b"], False),
    ("continuation-comment-inside", "RUN a \\\n# note\n  b", "RUN", ["a   b"], False),
    ("continuation-indented-comment", "RUN a \\\n    # note\n b", "RUN", ["a  b"], False),
    ("continuation-blank-inside", "RUN a \\\n\n b", "RUN", ["a  b"], False),
    ("continuation-trailing-blanks", "RUN a \\   \n b", "RUN", ["a  b"], False),
    ("continuation-at-eof", "RUN something \\", "RUN", ["something"], False),
    ("escaped-backslash-not-continuation", "RUN echo a\\\\b", "RUN", ["echo a\\\\b"], False),
    ("keyword-case-insensitive", "run echo hi", "RUN", ["echo hi"], False),
    ("keyword-mixed-case", "rUn echo hi", "RUN", ["echo hi"], False),
    ("exec-form", 'CMD ["a", "b c"]', "CMD", ["a", "b c"], True),
    ("exec-form-tabs", 'CMD\t[\t"a",\t"b"\t]\t', "CMD", ["a", "b"], True),
    ("exec-form-empty", "CMD []", "CMD", [], True),
    ("exec-form-escapes", r'CMD ["\" \\ \/ \t"]', "CMD", ['" \\ / \t'], True),
    ("single-quotes-fallback-to-shell", "CMD ['echo','x']", "CMD", ["['echo','x']"], False),
    ("unterminated-bracket-fallback", 'CMD ["echo", "x"', "CMD", ['["echo", "x"'], False),
    ("entrypoint-shell", "ENTRYPOINT exec top -b", "ENTRYPOINT", ["exec top -b"], False),
    ("shell-json", 'SHELL ["/bin/sh", "-ec"]', "SHELL", ["/bin/sh", "-ec"], True),
    ("copy-shell-form", "COPY a b /dst/", "COPY", ["a", "b", "/dst/"], False),
    ("copy-json-form", 'COPY ["a b", "/d"]', "COPY", ["a b", "/d"], True),
    ("copy-flags", "COPY --from=build --chown=1:2 a /d", "COPY", ["a", "/d"], False),
    ("volume-json", 'VOLUME ["/a", "/b"]', "VOLUME", ["/a", "/b"], True),
    ("volume-words", "VOLUME /a /b", "VOLUME", ["/a", "/b"], False),
    ("expose", "EXPOSE 80/tcp 53/udp", "EXPOSE", ["80/tcp", "53/udp"], False),
    ("workdir-one-argument", "WORKDIR /a b", "WORKDIR", ["/a b"], False),
    ("arg-several", "ARG A B=2", "ARG", ["A", "B=2"], False),
    ("arg-quoted", 'ARG A="x y"', "ARG", ['A="x y"'], False),
    ("healthcheck-json", 'HEALTHCHECK --retries=3 CMD ["true"]', "HEALTHCHECK", ["CMD", "true"], True),
    ("healthcheck-none", "HEALTHCHECK NONE", "HEALTHCHECK", ["NONE"], False),
    ("crlf", "RUN a\r", "RUN", ["a"], False),
    ("crlf-continuation", "RUN a \\\r\n b\r", "RUN", ["a  b"], False),
]


@pytest.mark.parametrize(("name", "body", "keyword", "args", "is_json"), GOOD, ids=[g[0] for g in GOOD])
def test_good_instruction(name: str, body: str, keyword: str, args: list[str], is_json: bool) -> None:
    instr = _one(body)
    assert (instr.keyword, instr.args, instr.json) == (keyword, args, is_json)


def test_run_network_flag() -> None:
    instr = _one("RUN --network=none wget x")
    assert (instr.flags, instr.args) == ({"network": "none"}, ["wget x"])


def test_flags_are_parsed() -> None:
    instr = _one("COPY --from=build --chown=1:2 --chmod=0755 --link a /d")
    assert instr.flags == {"from": "build", "chown": "1:2", "chmod": "0755", "link": "\0"}


# (name, text, keyword, pairs)
PAIRS = [
    ("env-equals", 'ENV A=1 B="two words" C=', "ENV", [("A", "1"), ("B", '"two words"'), ("C", "")]),
    ("env-legacy", "ENV NAME some value", "ENV", [("NAME", "some value")]),
    ("env-escaped-space", "ENV A=a\\ b", "ENV", [("A", "a\\ b")]),
    ("label-quoted-key", 'LABEL "com.x"="v" b=c', "LABEL", [('"com.x"', '"v"'), ("b", "c")]),
    ("env-continued", "ENV A=1 \\\n    B=2", "ENV", [("A", "1"), ("B", "2")]),
]


@pytest.mark.parametrize(("name", "body", "keyword", "pairs"), PAIRS, ids=[p[0] for p in PAIRS])
def test_name_value_pairs(name: str, body: str, keyword: str, pairs: list[tuple[str, str]]) -> None:
    instr = _one(body)
    assert (instr.keyword, instr.pairs) == (keyword, pairs)


# escape directive: (name, Dockerfile, expected args of the last instruction of the stage)
ESCAPE = [
    ("backtick", "# escape=`\nFROM x\nRUN dir c:\\ `\n  && echo hi", ["dir c:\\   && echo hi"]),
    ("backtick-spaces", "#escape = `\n\nFROM x\nENV GOPATH `\n\\go", ["GOPATH=\\go"]),
    ("after-comment-ignored", "# hello\n# escape=`\nFROM x\nENV P \\\n\\go", ["P=\\go"]),
    ("after-blank-ignored", "\n# escape=`\nFROM x\nRUN a \\\nb", ["a b"]),
    ("with-syntax", "# syntax=docker/dockerfile:1\n# escape=`\nFROM x\nRUN a `\nb", ["a b"]),
    ("backslash-literal-with-backtick", "# escape=`\nFROM x\nRUN echo a\\", ["echo a\\"]),
]


@pytest.mark.parametrize(("name", "text", "args"), ESCAPE, ids=[e[0] for e in ESCAPE])
def test_escape_directive(name: str, text: str, args: list[str]) -> None:
    df = parse(text)
    assert df.stages[0].instructions[-1].args == args


def test_byte_order_mark_ignored() -> None:
    assert parse("\ufeff# escape=`\nFROM x\n").escape == "`"


def test_directives_recorded() -> None:
    df = parse("# syntax=docker/dockerfile:1.4\n# escape=`\nFROM x\n")
    assert (df.syntax, df.escape) == ("docker/dockerfile:1.4", "`")
    assert parse("FROM x\n# escape=`\n").escape == "\\"


# heredocs: (name, body after FROM, args, [Heredoc...], end_line of the instruction)
HEREDOCS = [
    ("run-simple", "RUN <<EOF\necho hi\nEOF\n", ["<<EOF"], [Heredoc("EOF", "echo hi\n", True, False)], 4),
    (
        "run-quoted-no-expand",
        "RUN <<'EOF'\necho $HOME\nEOF",
        ["<<'EOF'"],
        [Heredoc("EOF", "echo $HOME\n", False, False)],
        4,
    ),
    (
        "run-double-quoted",
        'RUN <<"EOF"\nx\nEOF',
        ['<<"EOF"'],
        [Heredoc("EOF", "x\n", False, False)],
        4,
    ),
    (
        "chomp-tabs",
        "RUN <<-EOF\n\techo a\n\tEOF",
        ["<<-EOF"],
        [Heredoc("EOF", "\techo a\n", True, True)],
        4,
    ),
    (
        "with-command",
        "RUN python3 <<EOF > /out\nprint(1)\nEOF",
        ["python3 <<EOF > /out"],
        [Heredoc("EOF", "print(1)\n", True, False)],
        4,
    ),
    (
        "multiple",
        "COPY <<A <<B /d/\na1\nA\nb1\nb2\nB\n",
        ["<<A", "<<B", "/d/"],
        [Heredoc("A", "a1\n", True, False), Heredoc("B", "b1\nb2\n", True, False)],
        7,
    ),
    (
        "space-after-marker",
        "RUN << EOF\nx\nEOF",
        ["<< EOF"],
        [Heredoc("EOF", "x\n", True, False)],
        4,
    ),
    ("empty-body", "RUN <<EOF\nEOF", ["<<EOF"], [Heredoc("EOF", "", True, False)], 3),
    ("json-form-has-none", 'RUN ["echo", "<<EOF"]', ["echo", "<<EOF"], [], 2),
    ("not-a-heredoc-in-quotes", "RUN echo '<<EOF'", ["echo '<<EOF'"], [], 2),
]


@pytest.mark.parametrize(("name", "body", "args", "docs", "end"), HEREDOCS, ids=[h[0] for h in HEREDOCS])
def test_heredocs(name: str, body: str, args: list[str], docs: list[Heredoc], end: int) -> None:
    instr = _one(body)
    assert (instr.args, instr.heredocs, instr.end_line) == (args, docs, end)


def test_heredoc_then_next_instruction_lines() -> None:
    df = parse("FROM x\nRUN <<EOF\na\nEOF\nRUN b\n")
    second = df.stages[0].instructions[1]
    assert (second.args, second.line) == (["b"], 5)


def test_chomped_heredoc_text() -> None:
    assert Heredoc("E", "\t\ta\n\tb\n", True, True).text() == "a\nb\n"


@pytest.mark.parametrize(
    ("word", "expected"),
    [
        ("<<EOF", ("EOF", True, False)),
        ("<<-EOF", ("EOF", True, True)),
        ("<<'EOF'", ("EOF", False, False)),
        ('<<E"O"F', ("EOF", False, False)),
        ("2<<EOF", ("EOF", True, False)),
        ("<<", None),
        ("echo", None),
    ],
)
def test_heredoc_word(word: str, expected: tuple[str, bool, bool] | None) -> None:
    assert parse_heredoc_word(word) == expected


# ARG scoping and stages
def test_meta_args_and_stages() -> None:
    df = parse("ARG BASE=busybox\nARG V\nFROM $BASE AS Build\nARG BASE\nRUN x\nFROM build\nCOPY --from=0 a b\n")
    assert [a.args for a in df.meta_args] == [["BASE=busybox"], ["V"]]
    assert [(s.name, s.base, s.line) for s in df.stages] == [("build", "$BASE", 3), (None, "build", 6)]
    assert [i.keyword for i in df.stages[0].instructions] == ["ARG", "RUN"]
    assert df.stage("BUILD") is df.stages[0]
    assert df.stage("1") is df.stages[1]
    assert df.stage("nope") is None


def test_onbuild_trigger_parsed() -> None:
    instr = _one("ONBUILD RUN echo hi")
    assert instr.trigger is not None
    assert (instr.args, instr.trigger.keyword, instr.trigger.args) == (["RUN echo hi"], "RUN", ["echo hi"])


def test_comments_and_blank_lines_skipped() -> None:
    df = parse("# c\n\nFROM x\n   # indented comment\n\nRUN a\n")
    assert [(i.keyword, i.line) for i in df.stages[0].instructions] == [("RUN", 6)]


def test_durations() -> None:
    assert parse_duration("1m30s") == 90 * 10**9
    assert parse_duration("500ms") == 5 * 10**8
    with pytest.raises(ValueError):
        parse_duration("10")


# Bad Dockerfiles: (name, text, line, message fragment)
BAD = [
    ("unknown-instruction", "FROM x\nRUN a\nFOO bar\n", 3, "unknown instruction: FOO"),
    ("no-from", "RUN a\n", 1, "only ARG may come before FROM"),
    ("copy-before-from", "ARG A\n\nCOPY a b\nFROM x\n", 3, "COPY before the first FROM"),
    ("only-args", "ARG A\nARG B\n", 2, "no FROM instruction"),
    ("empty-file", "\n\n# only a comment\n", 3, "file with no instructions"),
    ("from-two-args", "FROM x y\n", 1, "FROM requires either one or three arguments"),
    ("from-bad-as", "FROM x AS\n", 1, "FROM requires either one or three arguments"),
    ("from-not-as", "FROM x TO y\n", 1, "FROM requires either one or three arguments"),
    ("stage-name-digit", "FROM x AS 1abc\n", 1, "invalid name for build stage"),
    ("duplicate-stage", "FROM x AS a\nRUN b\nFROM y AS A\n", 3, "duplicate stage name 'a'"),
    ("arg-empty", "FROM x\nARG\n", 2, "ARG requires at least one argument"),
    ("arg-blank-name", "FROM x\nARG =v\n", 2, "ARG names can not be blank"),
    ("env-one-word", "FROM x\nENV A\n", 2, "ENV must have two arguments"),
    ("env-missing-equals", "FROM x\nENV A=1 B\n", 2, "can't find = in 'B'"),
    ("unterminated-heredoc", "FROM x\nRUN <<EOF\necho\n", 2, "unterminated heredoc"),
    ("unterminated-second-heredoc", "FROM x\n\nCOPY <<A <<B /d/\na\nA\nb\n", 3, "<<B"),
    ("empty-continuation-at-eof", "FROM x\nRUN \\\n", 2, "RUN requires at least one argument"),
    ("empty-continuation-blank-eof", "FROM x\nRUN a\nRUN \\\n\n\n", 3, "RUN requires at least one argument"),
    ("run-empty", "FROM x\nRUN\n", 2, "RUN requires at least one argument"),
    ("copy-one-arg", "FROM x\nCOPY a\n", 2, "COPY requires at least two arguments"),
    ("copy-heredoc-dest", "FROM x\nCOPY a <<EOF\nx\nEOF\n", 2, "cannot accept a heredoc as a destination"),
    ("workdir-empty", "FROM x\nWORKDIR\n", 2, "WORKDIR requires exactly one argument"),
    ("shell-not-json", "FROM x\nSHELL /bin/bash -c\n", 2, "SHELL requires the arguments to be in JSON form"),
    ("json-non-string", 'FROM x\nCMD ["a", 1]\n', 2, "arrays must be comprised of strings only"),
    ("unknown-flag", "FROM x\nCOPY --frm=a b c\n", 2, "unknown flag: --frm"),
    ("flag-without-value", "FROM x\nCOPY --from a b\n", 2, "missing a value on flag: --from"),
    ("run-mount", "FROM x\nRUN --mount=type=cache,target=/c true\n", 2, "RUN --mount is not supported"),
    ("run-network", "FROM x\nRUN --network=bridge true\n", 2, "only default, none and host"),
    ("healthcheck-type", "FROM x\nHEALTHCHECK FOO true\n", 2, "Unknown type 'FOO' in HEALTHCHECK"),
    ("healthcheck-interval", "FROM x\nHEALTHCHECK --interval=5 CMD true\n", 2, "invalid duration"),
    ("healthcheck-none-args", "FROM x\nHEALTHCHECK NONE true\n", 2, "HEALTHCHECK NONE takes no arguments"),
    # docker 20.10 has no --start-interval (docker 25 added it): an unknown flag, not a check that never starts
    ("healthcheck-start-interval", "FROM x\nHEALTHCHECK --interval=5s --start-interval=1s CMD true\n", 2,
     "unknown flag: --start-interval"),
    ("onbuild-onbuild", "FROM x\nONBUILD ONBUILD RUN a\n", 2, "Chaining ONBUILD"),
    ("onbuild-from", "FROM x\nONBUILD FROM y\n", 2, "FROM isn't allowed as an ONBUILD trigger"),
    ("escape-invalid", "# escape=x\nFROM x\n", 1, "invalid escape token"),
    ("escape-twice", "# escape=`\n# escape=`\nFROM x\n", 2, "only one escape parser directive"),
    ("error-line-after-continuation", "FROM x\nRUN a \\\n b \\\n c\nBAD x\n", 5, "unknown instruction: BAD"),
    ("error-line-of-continued-start", "FROM x\n\nENV \\\n  A\n", 3, "ENV must have two arguments"),
    ("error-after-heredoc", "FROM x\nRUN <<E\n1\n2\nE\nNOPE\n", 6, "unknown instruction: NOPE"),
]


@pytest.mark.parametrize(("name", "text", "line", "fragment"), BAD, ids=[b[0] for b in BAD])
def test_bad_dockerfile(name: str, text: str, line: int, fragment: str) -> None:
    with pytest.raises(DockerfileError) as info:
        parse(text)
    assert info.value.line == line, str(info.value)
    assert fragment in str(info.value)
    assert str(info.value).startswith(f"Dockerfile:{line}: ")
    assert info.value.exit_code == 1


def test_commit_change_refuses_start_interval_as_a_dockerfile_does() -> None:
    """``commit -c`` reads HEALTHCHECK with the same parser (runtime.build.changes): same refusal, as a usage
    error naming the change."""
    from runtime.build.changes import parse_changes
    from runtime.errors import UsageError

    with pytest.raises(UsageError, match="unknown flag: --start-interval"):
        parse_changes(["HEALTHCHECK --start-interval=1s CMD true"])
    (accepted,) = parse_changes(["HEALTHCHECK --interval=5s --start-period=1s --timeout=2s --retries=2 CMD true"])
    assert accepted.flags == {"interval": "5s", "start-period": "1s", "timeout": "2s", "retries": "2"}
