"""Outsider round (session 20, round 2): small contract items, each reproduced through the
`perkflow` CLI into a real DuckDB file and compared with semantics.md and scrip-reference.md,
worked out by hand (docs/decisions.md where both are silent)."""

from __future__ import annotations

import json
from decimal import Decimal as D

from tests.e2e.test_contract_audit import OK, Ledger, ev, on, op, program

EARN = on("earn", {"type": "CREDIT", "asset": "PTS", "amount": "event.n"})


def test_s2_2_a_text_timestamp_must_be_rfc_3339(tmp_path):
    """semantics.md 2.2: a text event_timestamp (and an operation's timestamp) is an "RFC 3339
    string". RFC 3339 5.6 spells an instant 4-digit year, 2-digit month, day, hour, minute and
    second, an optional fraction, and `Z` or `+hh:mm` / `-hh:mm` (T/Z in either case; a space for
    T by the RFC's note, docs/decisions.md "Time"). `+0100`, `+01`, `2025-3-1`, `+2025` and a
    leading space were read as instants; each is now quarantined as invalid_timestamp, its message
    showing the form. By hand: the five accepted rows credit 1 + 2 + 4 + 8 + 16 = 31 to u1; the
    seven others (five events, two operations) are rejected and credit nothing."""
    lg = Ledger(tmp_path, program([EARN]))
    good = ["2025-03-01T10:00:00Z", "2025-03-01t10:00:00.5z", "2025-03-01T11:00:00+01:00",
            "2025-03-01 10:00:00Z", "2025-03-01T05:00:00-05:00"]
    bad = ["2025-03-01T11:00:00+0100", "2025-03-01T11:00:00+01", "2025-3-1T10:00:00Z",
           "+2025-03-01T10:00:00Z", " 2025-03-01T10:00:00Z"]
    events = [ev(f"g{i}", "u1", t, "earn", n=2 ** i) for i, t in enumerate(good)]
    events += [ev(f"b{i}", "u1", t, "earn", n=100) for i, t in enumerate(bad)]
    adjust = {"type": "CREDIT", "asset": "PTS", "amount": "100", "description": "x"}
    ops = [op("adjust", "o1", "u1", "2025-03-01T12:00:00+0100", **adjust),
           op("adjust", "o2", "u1", "2025-03-01T1:00:00Z", **adjust)]
    report = lg.run(events, ops)
    assert (report["completed"], report["rejected"]) == (5, 7), report
    assert lg.balance("u1")[0] == D(31)
    rows = sorted((json.loads(raw)["idempotency_key"], r, m) for r, m, raw in
                  lg.sql("SELECT reason, message, raw FROM rejected_rows"))
    assert [(k, r) for k, r, _ in rows] == [(f"b{i}", "invalid_timestamp") for i in range(5)] + [
        ("o1", "invalid_timestamp"), ("o2", "invalid_timestamp")], rows
    assert all("2025-01-01T00:00:00Z" in m for _, _, m in rows), rows
    assert rows[-1][2].startswith("timestamp "), rows
