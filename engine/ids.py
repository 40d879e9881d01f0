"""Deterministic identifiers.

Catalog ids are UUIDv5 under one project namespace, so the same files always give the same ids
(semantics.md 2.1). High-volume ids (events, journal entries, postings) are derived in SQL from
the same kind of names with MD5 (see sql/), which DuckDB computes set-wise far faster than Python
could build UUIDv5 per row; both are pure functions of their inputs.
"""

from __future__ import annotations

import hashlib
import json
import uuid

NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://perkflow.dev/ids")

#: System accounts are entities with fixed ids.
SYSTEM_ACCOUNTS = ("SYSTEM_ISSUANCE", "SYSTEM_BREAKAGE", "SYSTEM_REDEMPTION")


def name_id(kind: str, *parts: str) -> uuid.UUID:
    """UUIDv5 of `kind:part1:part2...`."""
    return uuid.uuid5(NAMESPACE, ":".join((kind, *parts)))


def program_id(program_key: str) -> uuid.UUID:
    return name_id("program", program_key)


def asset_id(symbol: str) -> uuid.UUID:
    return name_id("asset", symbol)


def rule_id(program_key: str, rule_key: str) -> uuid.UUID:
    return name_id("rule", program_key, rule_key)


def participant_id(external_id: str) -> uuid.UUID:
    return name_id("participant", external_id)


def system_account_id(name: str) -> uuid.UUID:
    return name_id("system", name)


def content_hash(obj: object, length: int = 16) -> str:
    """Short SHA-256 of an object's canonical JSON: the version of a rule."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:length]
