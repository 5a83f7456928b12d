"""Escaping for every string that lands in generated source: nothing from a recipe or a model may
change the meaning of the code around it (DESIGN §6)."""

from __future__ import annotations

import re
import shlex
import unicodedata
from xml.sax.saxutils import escape

_KOTLIN_ESCAPES = {"\\": "\\\\", '"': '\\"', "$": "\\$", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\b": "\\b"}


def _unicode_escape(code: int) -> str:
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    code -= 0x10000  # outside the BMP: a UTF-16 surrogate pair, as Kotlin strings are UTF-16
    return f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}"


def kotlin_string(value: str) -> str:
    """A Kotlin string literal holding exactly `value`; printable ASCII stays readable, the rest is \\u."""
    out = ['"']
    for ch in str(value):
        if ch in _KOTLIN_ESCAPES:
            out.append(_KOTLIN_ESCAPES[ch])
        elif " " <= ch <= "~":
            out.append(ch)
        else:
            out.append(_unicode_escape(ord(ch)))
    out.append('"')
    return "".join(out)


def shell_quote(value: str) -> str:
    return shlex.quote(str(value))


def xml_text(value: str) -> str:
    """Text for an XML attribute or element (quotes included), with Android resource escapes."""
    text = escape(str(value), {'"': "&quot;", "'": "&apos;"})
    return re.sub(r"^([@?])", r"\\\1", text)  # a leading @ or ? would make Android read a reference


_SWIFT_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t", "\0": "\\0"}


def swift_string(value: str) -> str:
    """A Swift string literal holding exactly `value`: the backslash is escaped, so `\\(` cannot interpolate."""
    out = ['"']
    for ch in str(value):
        code = ord(ch)
        if 0xD800 <= code <= 0xDFFF:  # Swift strings hold Unicode scalars only
            raise ValueError(f"{value!r} holds a lone UTF-16 surrogate, which no Swift string can")
        if ch in _SWIFT_ESCAPES:
            out.append(_SWIFT_ESCAPES[ch])
        elif " " <= ch <= "~":
            out.append(ch)
        else:
            out.append(f"\\u{{{code:x}}}")
    out.append('"')
    return "".join(out)


def comment_text(value: str) -> str:
    """Text for a one-line `//` comment: every line break and control character becomes a space, so the
    text cannot end the comment and start code."""
    return "".join(" " if unicodedata.category(ch) in ("Cc", "Zl", "Zp") else ch for ch in str(value))
