"""The catalog rows an entry's meaning depends on, checked against what the hash chain covers
(`perkflow verify`, check `catalog_hashes`; semantics.md 8).

An entry's hash covers the ids it names (program, rule, accounts' assets and groups) and its
rule version, but not the catalog rows behind them. Those rows need no hash of their own to be
tamper-evident: each id is UUIDv5 of the row's keys, and a rule version is the content hash of its
program's key and its stored definition (`rule_version`). Recomputed here from the stored rows,
they must give the ids and versions the chain vouches for, so a definition, key or symbol edited
after commit is a break, and so is a version that entries name deleted. The ledger's hashes and
ids are untouched: this reads what every ledger (the oldest included) already stores.

Not covered (nothing chained derives from them): an asset's name, scale, modes and limit, a
program's name and settings, and the descriptive columns of `rules` beyond its current version's
key, name, order and stop_after_match (docs/decisions.md, "Catalog rows under the chain").
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import duckdb

from engine import ids
from engine.ledger.sqlfiles import statement

from .compiled import rule_version

COLUMNS = ["batch_id", "table", "key", "problem", "stored", "recomputed"]

#: Catalog tables a ledger written before them may lack, each with its id query.
OPTIONAL_TABLES = {"tiers": "catalog_ids_tiers", "groups": "catalog_ids_groups",
                   "automations": "catalog_ids_automations"}


def catalog_breaks(con: duckdb.DuckDBPyConnection) -> list[tuple]:
    """The breaks, as rows of COLUMNS: those naming a batch (rule versions: the batch that first
    used it; entries: the first batch naming a lost version) by batch, then the others."""
    found = [*_ids(con), *_versions(con), *_named(con)]
    return sorted(found, key=lambda r: (r[0] is None, r[0] or 0))


def _ids(con) -> Iterator[tuple]:
    present = {r[0] for r in con.execute(statement("verify.sql", "ledger_tables")).fetchall()}
    queries = ["catalog_ids", *(q for t, q in OPTIONAL_TABLES.items() if t in present)]
    for query in queries:
        for table, stored, name in con.execute(statement("verify.sql", query)).fetchall():
            if any(part is None for part in name):
                yield None, table, stored, "its program is not in programs", stored, None
                continue
            recomputed = str(ids.name_id(*name))
            if recomputed != stored:
                yield None, table, ":".join(name[1:]), "id is not UUIDv5 of its keys", stored, recomputed


def _versions(con) -> Iterator[tuple]:
    cur = con.execute(statement("verify.sql", "catalog_rule_versions"))
    cols = [d[0] for d in cur.description]
    for row in map(lambda r: dict(zip(cols, r)), cur.fetchall()):
        where = f"{row['rule_id']}/{row['version']}"
        if row["program_key"] is None:
            yield (row["first_batch_id"], "rule_versions", where,
                   "its rule or the rule's program is not in rules / programs", row["version"], None)
            continue
        try:
            definition = json.loads(row["definition"])
            recomputed = rule_version(row["program_key"], definition)
            key = definition["key"]
        except (ValueError, TypeError, KeyError) as e:
            yield row["first_batch_id"], "rule_versions", where, f"definition unreadable: {e}", row["version"], None
            continue
        if recomputed != row["version"]:
            yield (row["first_batch_id"], "rule_versions", where,
                   "version is not the content hash of the stored definition", row["version"], recomputed)
        elif str(ids.rule_id(row["program_key"], str(key))) != row["rule_id"]:
            yield (row["first_batch_id"], "rule_versions", where, "definition is of another rule",
                   row["rule_id"], str(ids.rule_id(row["program_key"], str(key))))
        else:
            # the `rules` row of the current version says what its definition says
            for field in ("key", "name", "order", "stop_after_match"):
                stored = row[f"current_{field}"]
                if stored is not None and stored != definition.get(field):
                    yield (row["first_batch_id"], "rules", where, f"{field} differs from its current version's",
                           stored, definition.get(field))


def _named(con) -> Iterator[tuple]:
    for batch_id, where, rule_id, version in con.execute(statement("verify.sql", "catalog_versions_named")).fetchall():
        yield batch_id, where, f"{rule_id}/{version}", "names a rule version that rule_versions lacks", version, None
