"""Reading one program file into plain data, refusing duplicate keys.

PyYAML and Python's JSON reader keep the last of two equal keys in a mapping without a word, so a
rule written with two `condition:` lines (or an action with two `amount:`) loaded with the second
and nobody was told. A program file is configuration of a ledger: such a file is an error that
names the file, the key and (YAML) the lines, like any other load error (semantics.md 2.1).
"""

from __future__ import annotations

import json

import yaml


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


def _unique_object(pairs: list[tuple[str, object]]) -> dict:
    out: dict = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"key {key!r} is written twice in one object")
        out[key] = value
    return out


def read_yaml(text: str) -> object:
    return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass


def read_json(text: str) -> object:
    return json.loads(text, object_pairs_hook=_unique_object)
