"""Reading one program file into plain data, refusing duplicate keys.

PyYAML and Python's JSON reader keep the last of two equal keys in a mapping without a word, so a
rule written with two `condition:` lines (or an action with two `amount:`) loaded with the second
and nobody was told. A program file is configuration of a ledger: such a file is an error that
names the file, the key and (YAML) the lines, like any other load error (semantics.md 2.1).

Both readers also keep a non-integer number as written (`WrittenNumber`): amounts are exact
(semantics.md 1), and a float drops digits past the 17th.
"""

from __future__ import annotations

import json
import re
from decimal import Decimal, InvalidOperation

import yaml

from engine.io.events import unique_object


class WrittenNumber(float):
    """A non-integer number of a program file that a float cannot hold: the float YAML and JSON
    make of it, whose repr is the number as written (`amount: 12345678901234567.5` reads as the
    float 12345678901234568.0). Amount, value and limit fields take a number by its repr
    (engine/catalog/models.py), so they get every written digit; whatever computes with it
    still has a float (CEL takes it as a double: engine/cel/values.py `kind`)."""

    __slots__ = ("_text",)

    def __new__(cls, text: str):
        self = super().__new__(cls, text)
        self._text = text
        return self

    def __repr__(self) -> str:
        return self._text

    __str__ = __repr__

    def __reduce__(self):
        return WrittenNumber, (self._text,)


def _number(text: str, value: float) -> float:
    """The float of a number as written, a WrittenNumber where the float loses digits of it. A
    plain float otherwise, so that the loaded data (rule versions are hashed over it, tier
    benefits reach CEL) is what it always was."""
    try:
        exact = Decimal(text)
    except InvalidOperation:  # `.inf`, `.nan`: no decimal text
        return value
    return value if not exact.is_finite() or Decimal(repr(value)) == exact else WrittenNumber(text)


def _sexagesimal(node: yaml.ScalarNode) -> bool:
    """`12:30`, `1:30.5`: YAML 1.1's base-60 numbers (750, 90.5). YAML 1.2 and JSON have none."""
    return ":" in node.value


def _float(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> float | str:
    if _sexagesimal(node):
        return node.value  # the text as written, as YAML 1.2 reads it (below, `_int`)
    return _number(node.value.replace("_", ""), loader.construct_yaml_float(node))


_OCTAL = re.compile(r"[-+]?0[0-7_]+")


def _int(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> int | str:
    """YAML 1.1 (PyYAML's) reads two unquoted forms as numbers the file does not show: `12:30` as
    the base-60 750 and `010` as the octal 8. A program file is read as JSON and YAML 1.2 read the
    same payload (semantics.md 2.1: fields as Scrip's JSON payloads): `value: 12:30` is the text
    "12:30" (YAML 1.2's reading; it stored the attribute "750"), and a number with a leading zero
    is refused, naming its line, because YAML 1.1 and 1.2 disagree on it (8 or 10) and JSON has no
    such number (`amount: 010` credited 8, silently). Hex and binary (`0x1F`, `0b11`) stay numbers."""
    if _sexagesimal(node):
        return node.value
    if _OCTAL.fullmatch(node.value):
        raise yaml.constructor.ConstructorError(
            None, None, f"{node.value} is a number with a leading zero, which YAML 1.1 reads as octal "
            f"({loader.construct_yaml_int(node)}) and YAML 1.2 as decimal; write it without the leading zero, or "
            f"quote it (\"{node.value}\") for text", node.start_mark)
    return loader.construct_yaml_int(node)


class _UniqueKeyLoader(yaml.SafeLoader):
    """yaml.safe_load's loader, with mappings that refuse a key written twice."""


def _mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    first: dict = {}
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *base` may be overridden: YAML's merge
            continue
        key = loader.construct_object(key_node, deep=deep)
        try:
            seen = key in first
        except TypeError:  # an unhashable key: yaml's own constructor says what is wrong with it
            continue
        if seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"key {key!r} is written twice in one mapping (first on line {first[key] + 1})",
                key_node.start_mark)
        first[key] = key_node.start_mark.line
    return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)
_UniqueKeyLoader.add_constructor("tag:yaml.org,2002:float", _float)
_UniqueKeyLoader.add_constructor("tag:yaml.org,2002:int", _int)
# `1e3`, `1.5e3` are numbers in JSON and YAML 1.2, text in YAML 1.1 (which wants `1.5e+3`): the same payload
# was 1000 in a JSON file and a load error ("neither a number nor a CEL expression") in YAML
_UniqueKeyLoader.add_implicit_resolver("tag:yaml.org,2002:float", re.compile(r"^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)[eE][-+]?[0-9]+$"),
                                       list("-+.0123456789"))


def _timestamp(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> str:
    """A bare YAML date or timestamp is its text, as written: the model parses the fields that are
    instants (all of its digits: yaml's own reader drops those past the sixth), and a value field
    keeps the text (`value: 2025-03-01` is the attribute "2025-03-01", `expires_at:
    2026-01-01T00:00:00Z` an RFC 3339 instant); yaml's date objects were refused there ("Input
    should be a valid string"). JSON program files have no such type either."""
    return node.value


_UniqueKeyLoader.add_constructor("tag:yaml.org,2002:timestamp", _timestamp)


def read_yaml(text: str) -> object:
    return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass


def read_json(text: str) -> object:
    return json.loads(text, object_pairs_hook=unique_object, parse_float=lambda t: _number(t, float(t)))
