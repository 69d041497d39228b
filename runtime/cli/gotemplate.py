"""Go's text/template, as docker's ``--format`` runs it: the one template engine of the CLI.

Why: users paste docker's one-liners (``{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}``,
``{{if eq .State.Status "running"}}``, ``{{.Name | upper}}``). This is a parser (text, actions, ``if``/``else
if``/``else``, ``range`` with variables and ``else``, ``with``, pipelines, parentheses, variables, comments,
``{{-``/``-}}`` trimming) and an evaluator over the JSON-like data refrt prints.

Go evaluates typed structs; refrt has dicts. Where the two differ, docker's behaviour is kept by rule:
- a dict whose values are all strings, or a field named in :data:`MAP_FIELDS`, is a Go *map*: a missing key
  prints ``<no value>`` (``index`` on such a string map gives ``""``, an empty line, as docker's label maps do);
- any other dict is a struct: a missing field is docker's error ``map has no entry for key "X"``, and it prints
  as ``{v1 v2}``; ``None`` (a nil pointer) prints ``<nil>``.
docker's own functions are here too: ``json``, ``split``, ``join``, ``title``, ``lower``, ``upper``, ``pad``,
``truncate``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from runtime.cli.gofuncs import FUNCS, HEADER_FUNCS, NO_VALUE, TemplateError, go_string, is_map, truth
from runtime.cli.gofuncs import go_type as _go_type

__all__ = ["NO_VALUE", "TemplateError", "go_string", "parse", "render"]

# -- lexing --------------------------------------------------------------------------------------------------
_TOKEN = re.compile(r"""
    (?P<space>\s+)
  | (?P<string>"(?:[^"\\\n]|\\.)*")
  | (?P<raw>`[^`]*`)
  | (?P<char>'(?:[^'\\]|\\.)')
  | (?P<declare>:=)
  | (?P<assign>=)
  | (?P<number>[-+]?(?:0[xX][0-9a-fA-F_]+|\d[\d_]*(?:\.\d*)?(?:[eE][-+]?\d+)?|\.\d+(?:[eE][-+]?\d+)?))
  | (?P<field>(?:\.[A-Za-z_][A-Za-z0-9_]*)+|\.)
  | (?P<variable>\$[A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)
  | (?P<ident>[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)
  | (?P<punct>[()|,])
""", re.X)


@dataclass
class _Tok:
    kind: str
    text: str
    glued: bool = False  # directly after ")" (a field of a parenthesized pipeline)


def _tokens(action: str) -> list[_Tok]:
    out: list[_Tok] = []
    pos = 0
    while pos < len(action):
        match = _TOKEN.match(action, pos)
        if match is None:
            raise TemplateError(f"template: unexpected {action[pos]!r} in command")
        kind = match.lastgroup or ""
        if kind != "space":
            glued = bool(out) and out[-1].text == ")" and pos == match.start() and action[pos - 1] == ")"
            out.append(_Tok(kind, match.group(), glued and kind == "field"))
        pos = match.end()
    return out


# -- the tree ------------------------------------------------------------------------------------------------
@dataclass
class _Pipe:
    decl: list[str]
    assign: bool
    cmds: list[list[Any]]  # each command: operands (tuples, see _operand)


@dataclass
class _Node:
    kind: str  # text, action, if, range, with
    text: str = ""
    pipe: _Pipe | None = None
    body: list[_Node] = field(default_factory=list)
    orelse: list[_Node] = field(default_factory=list)


def _split(template: str) -> list[tuple[str, str]]:
    """("text", s) and ("action", s) pieces, with ``{{-``/``-}}`` trimming and comments applied."""
    pieces: list[tuple[str, str]] = []
    pos = 0
    trim_next = False
    while True:
        start = template.find("{{", pos)
        text = template[pos:] if start < 0 else template[pos:start]
        if trim_next:
            text = text.lstrip(" \t\r\n")
        if start < 0:
            pieces.append(("text", text))
            return pieces
        inner_start = start + 2
        if template.startswith("- ", inner_start) or template.startswith("-\t", inner_start) or \
                template.startswith("-\n", inner_start):
            text = text.rstrip(" \t\r\n")
            inner_start += 1
        pieces.append(("text", text))
        end = _action_end(template, inner_start)
        inner = template[inner_start:end]
        trim_next = False
        if len(inner) >= 2 and inner[-1] == "-" and inner[-2] in " \t\n":
            inner = inner[:-1]
            trim_next = True
        stripped = inner.strip()
        if not (stripped.startswith("/*") and stripped.endswith("*/")):
            pieces.append(("action", stripped))
        pos = end + 2


def _action_end(template: str, pos: int) -> int:
    quote = ""
    i = pos
    while i < len(template):
        ch = template[i]
        if quote:
            if ch == "\\" and quote != "`":
                i += 1
            elif ch == quote:
                quote = ""
        elif ch in "\"`'":
            quote = ch
        elif template.startswith("}}", i):
            return i
        i += 1
    raise TemplateError("template: unclosed action")


def parse(template: str) -> list[_Node]:
    pieces = _split(template)
    nodes, end, _ = _parse_list(pieces, 0, ())
    if end < len(pieces):
        raise TemplateError(f"template: unexpected {{{{{pieces[end][1]}}}}}")
    return nodes


def _parse_list(pieces: list[tuple[str, str]], i: int, stops: tuple[str, ...]) -> tuple[list[_Node], int, str]:
    nodes: list[_Node] = []
    while i < len(pieces):
        kind, text = pieces[i]
        if kind == "text":
            if text:
                nodes.append(_Node("text", text))
            i += 1
            continue
        word = text.split(None, 1)[0] if text else ""
        if word in ("end", "else") and word in stops:
            return nodes, i, text
        if word in ("end", "else"):
            raise TemplateError(f"template: unexpected {{{{{word}}}}}")
        if word in ("if", "range", "with"):
            node, i = _parse_block(pieces, i, word, text[len(word):].strip())
            nodes.append(node)
            continue
        if word in ("define", "template", "block", "break", "continue"):
            raise TemplateError(f"template: {{{{{word}}}}} is not supported in --format")
        nodes.append(_Node("action", pipe=_parse_pipe(text)))
        i += 1
    if stops:
        raise TemplateError("template: unexpected EOF")
    return nodes, i, ""


def _parse_block(pieces: list[tuple[str, str]], i: int, word: str, rest: str) -> tuple[_Node, int]:
    if not rest:
        raise TemplateError(f"template: missing value for {word}")
    node = _Node(word, pipe=_parse_pipe(rest, allow_two=word == "range"))
    node.body, i, stop = _parse_list(pieces, i + 1, ("end", "else"))
    if stop.startswith("else"):
        tail = stop[4:].strip()
        if tail.split(None, 1)[:1] in (["if"], ["with"]) and word in ("if", "with"):
            inner_word = tail.split(None, 1)[0]
            inner, i = _parse_block(pieces, i, inner_word, tail[len(inner_word):].strip())
            node.orelse = [inner]
            return node, i  # the chain's one {{end}} closed the inner block
        if tail:
            raise TemplateError(f"template: unexpected {{{{else {tail}}}}}")
        node.orelse, i, stop = _parse_list(pieces, i + 1, ("end",))
    return node, i + 1


def _parse_pipe(text: str, allow_two: bool = False) -> _Pipe:
    toks = _tokens(text)
    decl: list[str] = []
    assign = False
    for n in ((2, 1) if allow_two else (1,)):
        names = toks[: 2 * n - 1]
        if len(toks) > 2 * n - 1 and all(t.kind == "variable" for t in names[::2]) and \
                all(t.text == "," for t in names[1::2]) and toks[2 * n - 1].kind in ("declare", "assign"):
            decl = [t.text for t in names[::2]]
            assign = toks[2 * n - 1].kind == "assign"
            toks = toks[2 * n:]
            break
    return _Pipe(decl, assign, _commands(toks, "template: missing command"))


def _commands(toks: list[_Tok], missing: str) -> list[list[Any]]:
    """A pipeline's commands: the operands between ``|`` (an empty command anywhere is an error, as in Go)."""
    cmds: list[list[Any]] = [[]]
    pos = 0
    while pos < len(toks):
        if toks[pos].text == "|":
            if not cmds[-1]:
                raise TemplateError("template: missing command before |")
            cmds.append([])
            pos += 1
            continue
        operand, pos = _operand(toks, pos)
        cmds[-1].append(operand)
    if not cmds[-1]:
        raise TemplateError(missing)
    return cmds


def _operand(toks: list[_Tok], pos: int) -> tuple[Any, int]:
    tok = toks[pos]
    if tok.text == "(":
        depth, end = 0, pos
        while end < len(toks):
            depth += {"(": 1, ")": -1}.get(toks[end].text, 0)
            if depth == 0:
                break
            end += 1
        if end >= len(toks):
            raise TemplateError("template: unclosed left paren")
        inner = _parse_tokens_pipe(toks[pos + 1:end])
        chain: list[str] = []
        pos = end + 1
        while pos < len(toks) and toks[pos].glued:
            chain += toks[pos].text.split(".")[1:]
            pos += 1
        return ("sub", inner, chain), pos
    if tok.kind == "field":
        return ("field", [] if tok.text == "." else tok.text.split(".")[1:]), pos + 1
    if tok.kind == "variable":
        name, *chain = tok.text.split(".")
        return ("var", name, chain), pos + 1
    if tok.kind in ("string", "raw", "char", "number"):
        return ("lit", _literal(tok)), pos + 1
    if tok.kind == "ident":
        if tok.text in ("true", "false"):
            return ("lit", tok.text == "true"), pos + 1
        if tok.text == "nil":
            return ("lit", None), pos + 1
        return ("fn", tok.text), pos + 1
    raise TemplateError(f"template: unexpected {tok.text!r} in operand")


def _parse_tokens_pipe(toks: list[_Tok]) -> _Pipe:
    return _Pipe([], False, _commands(toks, "template: missing command in parenthesized pipeline"))


def _literal(tok: _Tok) -> Any:
    if tok.kind == "raw":
        return tok.text[1:-1]
    if tok.kind == "string":
        return json.loads(tok.text) if "\\x" not in tok.text else tok.text[1:-1].encode().decode("unicode_escape")
    if tok.kind == "char":
        return ord(tok.text[1:-1].encode().decode("unicode_escape"))
    text = tok.text.replace("_", "")
    try:
        return int(text, 0)
    except ValueError:
        return float(text)


class _State:
    def __init__(self, root: Any, funcs: dict[str, Callable[..., Any]]) -> None:
        self.vars: list[tuple[str, Any]] = [("$", root)]
        self.funcs = funcs

    def lookup(self, name: str) -> Any:
        for key, value in reversed(self.vars):
            if key == name:
                return value
        raise TemplateError(f'template: undefined variable "{name}"')

    def set(self, name: str, value: Any) -> None:
        for i in range(len(self.vars) - 1, -1, -1):
            if self.vars[i][0] == name:
                self.vars[i] = (name, value)
                return
        raise TemplateError(f'template: undefined variable "{name}"')


def _fields(value: Any, chain: list[str], origin: str = "") -> Any:
    name = origin
    for part in chain:
        if value is NO_VALUE:
            return NO_VALUE
        if isinstance(value, Mapping):
            if part in value:
                value, name = value[part], part
                continue
            folded = {str(k).lower(): k for k in value}
            if part.lower() in folded:  # as docker's JSON decoding, which ignores case
                name = folded[part.lower()]
                value = value[name]
                continue
            if is_map(value, name):
                return NO_VALUE
            raise TemplateError(f'map has no entry for key "{part}"')
        if value is None:
            raise TemplateError(f"nil pointer evaluating interface {{}}.{part}")
        raise TemplateError(f"can't evaluate field {part} in type {_go_type(value)}")
    return value


def _run(nodes: list[_Node], dot: Any, state: _State, out: list[str]) -> None:
    for node in nodes:
        if node.kind == "text":
            out.append(node.text)
            continue
        assert node.pipe is not None
        mark = len(state.vars)
        if node.kind == "action":
            value = _pipe(node.pipe, dot, state)
            if not node.pipe.decl:
                out.append(go_string(value))
            continue  # a declaration lives until the end of the enclosing block
        if node.kind == "range":
            _range(node, dot, state, out)
        else:
            value = _pipe(node.pipe, dot, state, declare=True)
            if truth(value):
                _run(node.body, value if node.kind == "with" else dot, state, out)
            else:
                _run(node.orelse, dot, state, out)
        del state.vars[mark:]


def _range(node: _Node, dot: Any, state: _State, out: list[str]) -> None:
    assert node.pipe is not None
    value = _pipe(_Pipe([], False, node.pipe.cmds), dot, state)
    if isinstance(value, Mapping):
        items = sorted(value.items())
    elif isinstance(value, (list, tuple)):
        items = list(enumerate(value))
    elif isinstance(value, int) and not isinstance(value, bool):
        items = [(i, i) for i in range(value)]
    elif value is None or value is NO_VALUE:
        items = []
    else:
        raise TemplateError(f"range can't iterate over {go_string(value)}")
    if not items:
        _run(node.orelse, dot, state, out)
        return
    decl = node.pipe.decl
    for key, element in items:
        mark = len(state.vars)
        if len(decl) == 1:
            state.vars.append((decl[0], element))
        elif len(decl) == 2:
            state.vars += [(decl[0], key), (decl[1], element)]
        _run(node.body, element, state, out)
        del state.vars[mark:]


def _pipe(pipe: _Pipe, dot: Any, state: _State, declare: bool = True) -> Any:
    value: Any = NO_VALUE
    for i, cmd in enumerate(pipe.cmds):
        value = _command(cmd, dot, state, value if i else NO_VALUE, piped=i > 0)
    if pipe.decl:
        if pipe.assign:
            state.set(pipe.decl[0], value)
        elif declare:
            state.vars.append((pipe.decl[0], value))
    return value


def _command(cmd: list[Any], dot: Any, state: _State, final: Any, piped: bool) -> Any:
    head = cmd[0]
    if head[0] == "fn":
        name = head[1]
        if name in ("and", "or"):
            args = [_operand_value(a, dot, state) for a in cmd[1:]] + ([final] if piped else [])
            if not args:
                raise TemplateError(f"wrong number of args for {name}: want at least 1 got 0")
            for arg in args[:-1]:
                if truth(arg) == (name == "or"):
                    return arg
            return args[-1]
        func = state.funcs.get(name)
        if func is None:
            raise TemplateError(f'template: function "{name}" not defined')
        args = [_operand_value(a, dot, state) for a in cmd[1:]] + ([final] if piped else [])
        try:
            return func(*args)
        except TypeError:
            raise TemplateError(f"wrong number of args for {name}: got {len(args)}") from None
    if len(cmd) > 1 or piped:
        raise TemplateError(f"can't give argument to non-function {_describe(head)}")
    return _operand_value(head, dot, state)


def _describe(operand: Any) -> str:
    if operand[0] == "field":
        return "." + ".".join(operand[1])
    return str(operand[1])


def _operand_value(operand: Any, dot: Any, state: _State) -> Any:
    kind = operand[0]
    if kind == "lit":
        return operand[1]
    if kind == "field":
        return _fields(dot, operand[1])
    if kind == "var":
        return _fields(state.lookup(operand[1]), operand[2])
    if kind == "sub":
        return _fields(_pipe(operand[1], dot, state), operand[2])
    if kind == "fn":
        return _command([operand], dot, state, NO_VALUE, False)
    raise TemplateError(f"template: bad operand {operand!r}")


def render(template: str, data: Any, header: bool = False) -> str:
    """Execute ``template`` on ``data``; a template or execution error is a :class:`TemplateError`.
    ``header``: docker's functions pass their argument through (a ``table`` header row)."""
    nodes = parse(template)
    out: list[str] = []
    try:
        _run(nodes, data, _State(data, HEADER_FUNCS if header else FUNCS), out)
    except TemplateError as exc:
        message = str(exc)
        raise TemplateError(message if message.startswith("template:") else f"template: {message}") from None
    except RecursionError:
        raise TemplateError("template: nested too deeply") from None
    return "".join(out)
