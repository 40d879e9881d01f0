"""Tier expiry (semantics.md 3; docs/decisions.md "Tiers") against a model written from the
decisions, over random streams of purchases and `set_tier` operations with and without
`expires_at` (RFC 3339 or a Go duration; some at or before their operation: those fail), cut into
random batches with `perkflow maintain` at random instants between them, small batches allowed
on the running path. Whatever the cut and wherever maintenance runs, each participant's points,
tier_history rows (in order) and final level and expiry are the model's, and `verify` passes.

The program is the one of tests/e2e/test_tier_expiry.py: a buy counts a visit and earns 1, plus
10 while its participant holds a club level; silver at 3 visits, gold at 5, vip only by set_tier.

`PERKFLOW_TIER_EXPIRY_EXAMPLES` sets the number of cases (default 25, scaled by
PERKFLOW_EXAMPLES_SCALE: tests/helpers/examples.py).
"""

from __future__ import annotations

import json
import tempfile
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from hypothesis import given, settings
from hypothesis import strategies as st

from engine import running
from engine.ledger import db
from engine.maintain import maintain
from engine.run import run_batch
from engine.verify import verify
from tests.differential.test_engine_vs_oracle import SETTINGS
from tests.e2e.test_tier_expiry import RULES, TIER
from tests.helpers.examples import examples
from tests.helpers.io import program_spec, query, write_events, write_program

EXAMPLES = examples("PERKFLOW_TIER_EXPIRY_EXAMPLES", 25)
T0 = datetime(2025, 3, 1, tzinfo=timezone.utc)
WHO = ("a", "b", "c")
RANK = {"silver": 1, "gold": 2, "vip": 3}


def _text(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


@st.composite
def streams(draw):
    """Rows in stream order (one per hour from T0 + 1h, so no two share an instant; expiries
    land on rows' instants too), the batch cuts, and maintenance instants between batches. The
    last batch is purchases only, after the others (a batch the running path may take)."""
    n = draw(st.integers(1, 20))
    tail = draw(st.integers(1, 6))
    hours = sorted(draw(st.lists(st.integers(1, 120), min_size=n, max_size=n, unique=True)))
    hours += sorted(draw(st.lists(st.integers(121, 180), min_size=tail, max_size=tail, unique=True)))
    rows = []
    for i, h in enumerate(hours):
        who = draw(st.sampled_from(WHO))
        at = T0 + timedelta(hours=h)
        if i >= n or draw(st.sampled_from(("set", "buy", "buy"))) == "buy":
            rows.append(("buy", f"r{i}", who, at, None, None))
            continue
        level = draw(st.sampled_from(sorted(RANK)))
        ahead = draw(st.integers(-2, 60) | st.none())  # hours after the operation; <= 0 fails it
        if ahead is None:
            expires = None
        elif draw(st.booleans()):
            expires = f"{ahead}h"
        else:
            expires = _text(at + timedelta(hours=ahead))
        rows.append(("set", f"r{i}", who, at, level, expires))
    cuts = sorted({*draw(st.lists(st.integers(1, n), max_size=3)), n})
    # maintenance after a batch: none, or at an instant up to the next batch's first row
    maint = [draw(st.none() | st.integers(0, 48)) for _ in range(len(cuts) + 1)]
    return rows, cuts, maint


def _due(at: str | None, now: datetime) -> datetime | None:
    if at is None:
        return None
    return now + timedelta(hours=int(at[:-1])) if at.endswith("h") else datetime.fromisoformat(at.replace("Z", "+00:00"))


def model(rows, end: datetime):
    """Points, history rows per participant, and final (level, expires_at) per participant."""
    points = {w: Decimal(0) for w in WHO}
    visits = {w: 0 for w in WHO}
    held: dict[str, tuple[str, datetime | None]] = {}
    history = {w: [] for w in WHO}

    def expire(w: str, now: datetime) -> None:
        if w in held and held[w][1] is not None and held[w][1] <= now:
            history[w].append((held[w][0], None, "EXPIRY", held[w][1]))
            del held[w]
    for kind, _key, w, at, level, expires in rows:
        expire(w, at)
        if kind == "buy":
            visits[w] += 1
            points[w] += 1 + (10 if w in held else 0)
            best = "gold" if visits[w] >= 5 else "silver" if visits[w] >= 3 else None
            if best and (w not in held or RANK[best] > RANK[held[w][0]]):
                history[w].append((held[w][0] if w in held else None, best, "AUTO", at))
                held[w] = (best, None)
            continue
        due = _due(expires, at)
        if due is not None and due <= at:
            continue  # invalid_operation: nothing changes
        before = held.get(w, (None, None))[0]
        if before != level:
            history[w].append((before, level, "OPERATION", at))
        held[w] = (level, due)
    for w in WHO:
        expire(w, end)
    return points, history, held


def _write(tmp: Path, n: int, rows) -> tuple[Path | None, Path | None]:
    events = [r for r in rows if r[0] == "buy"]
    ops = [r for r in rows if r[0] == "set"]
    ev_path = op_path = None
    if events:
        ev_path = write_events(tmp / f"events-{n}.parquet", [
            {"program_id": "shop", "idempotency_key": k, "external_id": w, "event_timestamp": _text(at),
             "event_data": json.dumps({"type": "buy"})} for _, k, w, at, _, _ in events])
    if ops:
        op_path = tmp / f"ops-{n}.parquet"
        cols = ("operation", "program_id", "idempotency_key", "external_id", "timestamp", "params")
        pq.write_table(pa.Table.from_pylist(
            [{"operation": "set_tier", "program_id": "shop", "idempotency_key": k, "external_id": w,
              "timestamp": _text(at), "params": json.dumps({"tier": "club", "level": level, "expires_at": exp})}
             for _, k, w, at, level, exp in ops], schema=pa.schema([(c, pa.string()) for c in cols])), op_path)
    return ev_path, op_path


def _ledger(dbf: Path):
    q = lambda sql: query(dbf, sql)  # noqa: E731
    points = {w: Decimal(0) for w in WHO} | {w: Decimal(a) for w, a in q(
        "SELECT external_id, available FROM balances WHERE entity_type = 'PARTICIPANT'")}
    history = {w: [] for w in WHO}
    for w, f, t, reason, at in q("SELECT p.external_id, h.from_level, h.to_level, h.reason, h.effective_at "
                                 "FROM tier_history h JOIN participants p ON p.id = h.participant_id ORDER BY h.seq"):
        history[w].append((f, t, reason, at))
    held = {w: (level, exp) for w, level, exp in q(
        "SELECT p.external_id, t.level, t.expires_at FROM participant_tiers t JOIN participants p ON p.id = t.participant_id")}
    return points, history, held


@settings(max_examples=EXAMPLES, **SETTINGS)
@given(streams())
def test_tier_expiry_matches_the_model_however_batches_and_maintenance_fall(case):
    rows, cuts, maint = case
    end = T0 + timedelta(days=30)
    old = running.MIN_EVENTS
    running.MIN_EVENTS = 0  # every batch without operations may take the running path
    try:
        with tempfile.TemporaryDirectory() as d:
            tmp = Path(d)
            programs = tmp / "programs"
            write_program(programs / "shop.yaml", program_spec("shop", RULES, assets=[
                {"symbol": "PTS", "name": "Points", "inventory_mode": "SIMPLE", "issuance_policy": "UNLIMITED",
                 "scale": 0}]) | {"tiers": [TIER]})
            dbf = tmp / "ledger.duckdb"
            run_batch(programs, write_events(tmp / "joins.parquet", [
                {"program_id": "shop", "idempotency_key": f"join-{w}", "external_id": w, "event_timestamp": _text(T0),
                 "event_data": json.dumps({"type": "join"})} for w in WHO]), dbf)
            bounds = [0, *cuts, len(rows)]
            for n, (lo, hi) in enumerate(zip(bounds, bounds[1:])):
                events, operations = _write(tmp, n, rows[lo:hi])
                run_batch(programs, events, dbf, operations=operations)
                if maint[n] is not None:
                    limit = rows[hi][3] if hi < len(rows) else end
                    maintain(min(rows[hi - 1][3] + timedelta(hours=maint[n]), limit), dbf)
            maintain(end, dbf)
            con = db.connect(dbf, read_only=True)
            try:
                report = verify(con)
            finally:
                con.close()
            assert report.ok, [(v.check, v.rows) for v in report.violations]
            assert _ledger(dbf) == model(rows, end)
    finally:
        running.MIN_EVENTS = old
