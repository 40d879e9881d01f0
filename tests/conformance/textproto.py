"""A small reader for the protobuf text format, enough for cel-spec's SimpleTestFile.

Messages become lists of (field, value) pairs (fields repeat); scalars stay as text,
strings as bytes with escapes decoded. No protobuf dependency or descriptors needed.
"""

from __future__ import annotations

import re

_TOKEN = re.compile(r"""
    \s+|\#[^\n]*                           # whitespace, comments
  | (?P<str>"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*')
  | (?P<ext>\[[A-Za-z0-9_./]+\])
  | (?P<word>[-+]?[A-Za-z0-9_.+-]+)
  | (?P<punct>[{}<>:\[\],;])
""", re.X)

_ESC = re.compile(rb"\\(x[0-9a-fA-F]{1,2}|[0-7]{1,3}|u[0-9a-fA-F]{4}|U[0-9a-fA-F]{8}|.)", re.S)
_SIMPLE = {b"n": b"\n", b"t": b"\t", b"r": b"\r", b"a": b"\a", b"b": b"\b", b"f": b"\f",
           b"v": b"\v", b"\\": b"\\", b"'": b"'", b'"': b'"', b"?": b"?"}


def _unescape(body: str) -> bytes:
    def repl(m):
        e = m.group(1)
        if e in _SIMPLE:
            return _SIMPLE[e]
        if e[:1] == b"x":
            return bytes([int(e[1:], 16)])
        if e[:1] in (b"u", b"U"):
            return chr(int(e[1:], 16)).encode("utf-8")
        if e[:1].isdigit():
            return bytes([int(e, 8)])
        return b"\\" + e
    return _ESC.sub(repl, body.encode("utf-8"))


def _tokens(text: str) -> list[tuple[str, object]]:
    out = []
    pos = 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m:
            raise ValueError(f"textproto: cannot read at {text[pos:pos + 30]!r}")
        pos = m.end()
        if m.lastgroup == "str":
            out.append(("str", _unescape(m.group("str")[1:-1])))
        elif m.lastgroup:
            out.append((m.lastgroup, m.group(m.lastgroup)))
    return out


def parse(text: str) -> list:
    toks = _tokens(text)
    msg, pos = _message(toks, 0, None)
    return msg


def _message(toks, pos, end):
    fields = []
    while pos < len(toks) and toks[pos][1] != end:
        _, name = toks[pos]
        pos += 1
        if toks[pos][1] == ":":
            pos += 1
        value, pos = _value(toks, pos)
        fields.append((name, value))
        if pos < len(toks) and toks[pos][1] in (",", ";"):
            pos += 1
    return fields, pos + 1


def _value(toks, pos):
    kind_, tok = toks[pos]
    if tok in ("{", "<"):
        return _message(toks, pos + 1, "}" if tok == "{" else ">")
    if tok == "[":
        items, pos = [], pos + 1
        while toks[pos][1] != "]":
            item, pos = _value(toks, pos)
            items.append(item)
            if toks[pos][1] == ",":
                pos += 1
        return items, pos + 1
    if kind_ == "str":
        data = tok
        pos += 1
        while pos < len(toks) and toks[pos][0] == "str":  # adjacent literals concatenate
            data += toks[pos][1]
            pos += 1
        return data, pos
    return tok, pos + 1


def get(msg: list, name: str, default=None):
    for k, value in msg:
        if k == name:
            return value
    return default


def get_all(msg: list, name: str) -> list:
    return [value for k, value in msg if k == name]
