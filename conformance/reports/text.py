"""The one sanitiser every report renderer uses: text a container printed, made safe for XML 1.0 and HTML.

A container may print anything: NUL (``cat /proc/1/cmdline``), terminal escapes, U+FFFE, bytes that are not
UTF-8. XML 1.0 forbids most C0 controls, U+FFFE/U+FFFF and lone surrogates outright, so a single such character
makes a whole ``junit.xml`` unreadable to every CI system. Dropping them would hide what the runtime printed, so
each one is shown escaped instead, in Python's notation: ``\\x00``, ``\\x1b``, ``\\ufffe``. Bytes that were not
valid UTF-8 reach the harness as the lone surrogates U+DC80..U+DCFF when a target decodes with
``surrogateescape``; they are shown as the byte they stand for (``\\xff``). C1 controls (U+0080..U+009F) and DEL
are legal XML but are not text in HTML and move terminals around, so they are escaped too.

``results.json`` is not sanitised: JSON escapes every code point (lone surrogates as ``\\udcff``), and
``json.loads`` gives back exactly the text the target returned.
"""

from __future__ import annotations

import re
from typing import Any

# Everything XML 1.0's Char production excludes, plus DEL and the C1 controls.
_UNSAFE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff\ufffe\uffff]")


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    if code < 0x100:
        return f"\\x{code:02x}"
    if 0xDC80 <= code <= 0xDCFF:  # an undecodable byte, as surrogateescape carries it
        return f"\\x{code - 0xDC00:02x}"
    return f"\\u{code:04x}"


def visible(text: str) -> str:
    """``text`` with every character XML 1.0 or HTML cannot carry shown escaped (``\\x00``, ``\\ufffe``)."""
    return _UNSAFE.sub(_escape, text)


def visible_tree(value: Any) -> Any:
    """A copy of a results document (or any JSON-like value) with every string, keys included, :func:`visible`."""
    if isinstance(value, str):
        return visible(value)
    if isinstance(value, dict):
        return {visible_tree(k): visible_tree(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(visible_tree(v) for v in value)
    return value
