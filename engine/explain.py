"""`perkflow explain`: one stored event, every rule's outcome.

What happened is read from the ledger (status, rule_evaluations, entries). Each rule's condition
is then re-evaluated on the row path: exactly for rules that read only `event` and `now`; against
the participant's *current* state for rules that read state (history of state is not kept), which
the output says.
"""

from __future__ import annotations

from decimal import Decimal

import duckdb
import polars as pl

from engine.automations import stored_catalog
from engine.catalog import Catalog
from engine.cel import CelEvalError, compile_cel
from engine.emit import cel_event
from engine.io import payload_types
from engine.io.events import event_dicts, strip_nulls
from engine.ledger.sqlfiles import statement
from engine.moves import plain
from engine.plan import reads_state


def explain(con: duckdb.DuckDBPyConnection, catalog: Catalog | None, ref: str) -> dict:
    """`catalog`: the program files given; the event's program is read from the ledger's stored
    programs (what its last run stored) when they are None or do not hold it."""
    rows = con.execute(statement("explain.sql", "event"), {"ref": ref}).fetchall()
    if not rows:
        raise LookupError(f"no event with id or idempotency key {ref!r}")
    if len(rows) > 1:
        # keys are unique per program only (semantics.md 2.2): it showed one of them, unsaid
        raise LookupError(f"idempotency key {ref!r} names events of several programs ("
                          + ", ".join(f"{r[1]}: {r[0]}" for r in rows) + "); give the event id")
    event_id, program_key, key, external_id, ts, data, status, code, message, source = rows[0]
    evaluations = dict(con.execute(statement("explain.sql", "evaluations"), {"id": event_id}).fetchall())
    # the rule version that evaluated each rule for this event, and its condition
    versions = {k: rest for k, *rest in con.execute(statement("explain.sql", "versions"), {"id": event_id}).fetchall()}
    entries = con.execute(statement("explain.sql", "entries"), {"id": event_id}).fetchall()
    tier_changes = con.execute(statement("explain.sql", "tier_changes"), {"id": event_id}).fetchall()
    emitted = con.execute(statement("explain.sql", "emitted"), {"source": f"system:{event_id}"}).fetchall()
    # Who made a SYSTEM event: the source of one a rule emitted is 'system:' || its emitter's id
    # (engine/emit.py); an automation's firing has 'automation:<program>/<automation>' (engine/automations.py).
    by = source if source.startswith("automation:") else None
    if source.startswith("system:"):
        found = con.execute(statement("explain.sql", "emitted_by"), {"source": source}).fetchall()
        by = found[0][0] if found else None
    program = catalog.programs.get(program_key) if catalog else None
    if program is None and (stored := stored_catalog(con)) is not None:
        program = stored.programs.get(program_key)
    event = _payload(con, event_id, data)
    outcomes = []
    stopped_by = _failed_before_rules(status, code)
    rules = list(program.rules) if program else []
    failed_at = _failed_at(rules, evaluations, status, code) if stopped_by is None else None
    for rule in rules:
        item = {"rule": rule.key, "order": rule.order, "status": rule.status, "recorded": evaluations.get(rule.key),
                "not_run": _not_run(rule, ts, stopped_by)}
        if stopped_by is None and rule.stop_after_match and (item["recorded"] or "").startswith("MATCHED"):
            stopped_by = f"stop_after_match of {rule.key}"
        if stopped_by is None and rule.key == failed_at:
            stopped_by = f"the event FAILED ({code}) in an action of {rule.key}"
        condition = rule.condition
        version, text, _, _ = versions.get(rule.key, (rule.version, None, None, None))
        if version != rule.version:  # the file changed the rule since: show what ran then
            item |= {"rule_version": version, "file_rule_version": rule.version}
            condition = compile_cel(text)
        outcomes.append(item | {"re_evaluated": _re_evaluated(condition, event, ts)})
    # A rule that evaluated the event and has left the files since (semantics.md 2.1: old versions
    # stay queryable): shown from the version that ran, in its order, rather than dropped beside
    # the entries it made.
    in_files = {rule.key for rule in rules}
    for rule_key, recorded in evaluations.items():
        if rule_key not in in_files and rule_key in versions:
            version, text, order, now_status = versions[rule_key]
            outcomes.append({"rule": rule_key, "order": order, "status": now_status, "recorded": recorded, "not_run": None,
                             "rule_version": version, "file_rule_version": None,
                             "re_evaluated": _re_evaluated(compile_cel(text), event, ts)})
    outcomes.sort(key=lambda item: item["order"])
    return {"event_id": event_id, "program": program_key, "idempotency_key": key, "external_id": external_id,
            "event_timestamp": ts.isoformat(), "status": status, "error_code": code, "error_message": message,
            "rules": outcomes, "entries": [{"rule": r, "type": t, "amount": plain(Decimal(a))} for r, t, a in entries],
            "tier_changes": [{"tier": t, "external_id": who, "from": f, "to": to, "reason": why}
                             for t, who, f, to, why in tier_changes],
            "emitted_by": by,  # the emitting event's idempotency key, or automation:<program>/<automation>
            "emitted": [{"idempotency_key": k, "event_name": name, "due": due.isoformat(), "status": st}
                        for k, name, due, st in emitted]}


def _re_evaluated(condition, event: dict, ts) -> str:
    """The condition on the stored event now: exact for one that reads only `event` and `now`."""
    if reads_state(condition):
        return "reads state: not re-evaluated (only the current state is kept)"
    try:
        return repr(condition.evaluate({"event": event, "now": ts}))
    except CelEvalError as e:
        return f"error: {e}"


def _not_run(rule, now, stopped_by: str | None) -> str | None:
    """Why a rule was not evaluated for the event (semantics.md 5 step 3), so that a rule without
    a recorded outcome is not shown as 'not matched' when it never ran."""
    if rule.status != "ACTIVE":
        return f"not run: {rule.status}"
    if (rule.active_from and now < rule.active_from) or (rule.active_to and now >= rule.active_to):
        return "not run: outside [active_from, active_to)"
    if stopped_by is not None:
        return f"not run: {stopped_by}"
    return None


#: Failures of semantics.md 5 step 1: the event's rules never ran.
STEP_ONE = ("participant_not_found", "participant_mismatch", "program_inactive")


def _failed_before_rules(status: str, code: str | None) -> str | None:
    """Why no rule ran, for an event that FAILED in step 1; else None."""
    return f"the event FAILED ({code}) before its rules" if status == "FAILED" and code in STEP_ONE else None


def _failed_at(rules: list, evaluations: dict, status: str, code: str | None) -> str | None:
    """The rule in whose actions a FAILED event stopped: evaluation stops at the failing action
    (semantics.md 5 step 5), and that rule is the last one recorded MATCHED, so the rules after
    it without a recorded outcome never ran (they were shown as 'not matched')."""
    if status != "FAILED" or code in STEP_ONE:
        return None
    matched = [r.key for r in rules if (evaluations.get(r.key) or "").startswith("MATCHED")]
    return matched[-1] if matched else None


def _payload(con: duckdb.DuckDBPyConnection, event_id: str, data: str) -> dict:
    """`event` as the run read it: with the type stored for a struct payload
    (engine/io/payload_types.py), else with JSON's mapping (every number a double)."""
    stored = con.execute(statement("lookups.sql", "stores_payload_types")).fetchall()[0][0] and con.execute(
        statement("lookups.sql", "payload_type"), {"id": event_id}).fetchall()
    if stored:
        return event_dicts(payload_types.typed(pl.Series([data]), stored[0][0]))[0]
    return strip_nulls(cel_event(data))
