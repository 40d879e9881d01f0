"""Deterministic identifiers.

Catalog ids are UUIDv5 under one project namespace, so the same files always give the same ids
(semantics.md 2.1). High-volume ids (events, journal entries, postings) are derived in SQL from
the same kind of names by sql/schema.sql's `name_uuid`, the same UUIDv5 computed set-wise by
DuckDB, far faster than Python could build them per row (ledgers written before session 19 hold
md5 digests there, docs/decisions.md "Ledger").
"""

from __future__ import annotations

import hashlib
import json
import uuid

NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://perkflow.dev/ids")
_NAMESPACE_BYTES = NAMESPACE.bytes

#: System accounts are entities with fixed ids.
SYSTEM_ACCOUNTS = ("SYSTEM_ISSUANCE", "SYSTEM_BREAKAGE", "SYSTEM_REDEMPTION")


def name_id(kind: str, *parts: str) -> uuid.UUID:
    """UUIDv5 of `kind:part1:part2...`."""
    return uuid.uuid5(NAMESPACE, ":".join((kind, *parts)))


def name_id_text(kind: str, *parts: str) -> str:
    """str(name_id(...)), for ids made per event or per lot: the same UUIDv5 (RFC 4122: SHA-1 of
    namespace and name, version and variant bits set) without building UUID objects, ~3x faster."""
    b = bytearray(hashlib.sha1(_NAMESPACE_BYTES + ":".join((kind, *parts)).encode()).digest()[:16])
    b[6] = (b[6] & 0x0F) | 0x50
    b[8] = (b[8] & 0x3F) | 0x80
    h = b.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def row_id_text(kind: str, program_id: str, key: str) -> str:
    """name_uuid(kind ':' program_id ':' idempotency_key), as sql/write_batch.sql names an input row:
    `event`s, and `operation`s (a redemption's id is its operation's); the UUIDv5 of name_id_text."""
    return name_id_text(kind, program_id, key)


def uuid_text(text) -> str | None:
    """A UUID as perkflow prints it (lowercase, dashed), from any RFC 9562 spelling; None if `text`
    is none."""
    try:
        return str(uuid.UUID(text.strip())) if isinstance(text, str) else None
    except ValueError:
        return None


def program_id(program_key: str) -> uuid.UUID:
    return name_id("program", program_key)


def asset_id(symbol: str) -> uuid.UUID:
    return name_id("asset", symbol)


def rule_id(program_key: str, rule_key: str) -> uuid.UUID:
    return name_id("rule", program_key, rule_key)


def participant_id(external_id: str) -> uuid.UUID:
    return name_id("participant", external_id)


def participant_id_text(external_id: str) -> str:
    """str(participant_id(...)), made per new participant of a batch (name_id_text)."""
    return name_id_text("participant", external_id)


def group_id(group_key: str) -> uuid.UUID:
    return name_id("group", group_key)


def system_account_id(name: str) -> uuid.UUID:
    return name_id("system", name)


def content_hash(obj: object, length: int = 16) -> str:
    """Short SHA-256 of an object's canonical JSON: the version of a rule."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:length]
