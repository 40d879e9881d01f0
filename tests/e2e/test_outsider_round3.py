"""An outsider's scenario tests, round 3: what the first two outsider rounds
(test_outsider_workloads.py, test_outsider_features.py) did not model, black box. Our own program
files, a seeded generator and an independent expected-result model in plain Python (Decimal),
written from semantics.md, writing-rules.md 5.10 and docs/decisions.md alone (no engine/,
tests/oracle or tests/differential code); every test runs the real CLI into a real DuckDB file.

- Automations (semantics.md 11): `immediate`, participant_state THRESHOLD (once per counter
  period, the period restarted by a `reset_after` reset or a `set_counter`), participant_state
  CRON with a `participant_filter` and a `guard_condition` that read state an earlier firing of
  the same instant left, a scope `program` cron whose rule BROADCASTs; day by day with
  maintenance between the days, against the model; and the same stream maintained at other
  spacings gives the same entries.
- Transfers at their edges (semantics.md 9.3), order and time under late and duplicate input
  (3, 4), a crashed run, replay, quarantine counts (13) and the report views (12) against the
  model.
"""

from __future__ import annotations

import json
import os
import random
from collections import defaultdict
from datetime import datetime, timedelta, timezone
from decimal import Decimal as D
from pathlib import Path

from tests.e2e.test_outsider_features import EVENT_COLS, OP_COLS, iso, write_rows
from tests.helpers.io import cli, query, write_program

UTC = timezone.utc


def ok(*args: str) -> str:
    res = cli(*args)
    assert res.returncode == 0, res.stdout + res.stderr
    return res.stdout


# ---------------------------------------------------------------------------------------------
# Automations day by day, against a model
# ---------------------------------------------------------------------------------------------

A0 = datetime(2025, 3, 7, tzinfo=UTC)  # a Friday; the weekly cron fires on Monday 10 March
DAYS = 3  # the last maintenance, at Monday 10 March 00:00, fires the weekly cron
CLUB = ["c0", "c1", "c2", "c3", "c4", "c5"]
RESET = timedelta(hours=48)
CLUB_PROGRAM = {
    "program": {"key": "club", "name": "Club", "on_unknown_participant": "CREATE", "status": "ACTIVE"},
    "assets": [{"symbol": "PTS", "name": "Points", "inventory_mode": "SIMPLE",
                "issuance_policy": "UNLIMITED", "scale": 0}],
    "rules": [
        {"name": "Buy", "key": "buy", "order": 10, "condition": 'event.type == "buy"',
         "actions": [{"type": "COUNTER", "key": "spent", "value": "event.amount", "reset_after": "48h"},
                     {"type": "CREDIT", "asset": "PTS", "amount": "event.amount"}]},
        {"name": "Big", "key": "big", "order": 20, "condition": 'event.type == "big"',
         "actions": [{"type": "CREDIT", "asset": "PTS", "amount": "50"}, {"type": "TAG", "tag": "vip"}]},
        {"name": "Welcome", "key": "welcome", "order": 30, "condition": 'event.type == "welcome"',
         "actions": [{"type": "CREDIT", "asset": "PTS", "amount": "event.pts"}]},
        {"name": "Daily", "key": "daily", "order": 40, "condition": 'event.type == "daily"',
         "actions": [{"type": "CREDIT", "asset": "PTS", "amount": "2"},
                     {"type": "COUNTER", "key": "dailies", "value": "1"}]},
        {"name": "Weekly", "key": "weekly", "order": 50, "condition": 'event.type == "weekly"',
         "actions": [{"type": "BROADCAST", "event_name": "weekly_point", "payload": {"n": 3}}]},
        {"name": "Weekly point", "key": "weekly_point", "order": 60, "condition": 'event.type == "weekly_point"',
         "actions": [{"type": "CREDIT", "asset": "PTS", "amount": "event.n"}]},
    ],
    # Keys sort in the order the model fires them at one instant (stream order: instant, program,
    # automation key), so the daily filter sees the tag a threshold firing of that instant gave.
    "automations": [
        {"name": "Welcome", "key": "a1_welcome", "event_name": "welcome", "scope": "participants",
         "trigger": {"type": "immediate"}, "payload": {"pts": 7}},
        {"name": "Big spender", "key": "a2_big", "event_name": "big", "scope": "participants",
         "trigger": {"type": "participant_state", "schedule_type": "THRESHOLD",
                     "schedule_config": {"counter": "spent", "operator": ">=", "threshold": 100}}},
        {"name": "Daily vip", "key": "a3_daily", "event_name": "daily", "scope": "participants",
         "trigger": {"type": "participant_state", "schedule_type": "CRON",
                     "schedule_config": {"cron_expression": "0 0 * * *"}},
         "participant_filter": '"vip" in participant.tags',
         "guard_condition": 'get(participant.counters, "dailies", 0.0) < 3.0 && participant.balances.PTS.available < 260.0'},
        {"name": "Weekly", "key": "a4_weekly", "event_name": "weekly", "scope": "program",
         "trigger": {"type": "cron", "cron_expression": "0 0 * * 1"}},
    ],
}


def club_stream(seed: int) -> list[tuple]:
    """(kind, key, who, t, payload): kind 'ev' (event_data) or 'op' (operation name, params), in
    time order, never at a midnight (the firing instants), no two rows at one instant."""
    rng = random.Random(seed)
    minutes = sorted(rng.sample([m for m in range(1, DAYS * 1440) if m % 1440], 70))
    rows: list[tuple] = []
    seen: set[str] = set()
    for i, m in enumerate(minutes):
        t, who, r = A0 + timedelta(minutes=m), rng.choice(CLUB), rng.random()
        if r < 0.75 or who not in seen:
            rows.append(("ev", f"b{i}", who, t, {"type": "buy", "amount": rng.choice([5, 12, 20, 33, 48])}))
            seen.add(who)
        elif r < 0.83:
            rows.append(("op", f"o{i}", who, t, "set_participant_status",
                         {"status": rng.choice(["SUSPENDED", "ACTIVE"])}))
        elif r < 0.92:
            rows.append(("op", f"o{i}", who, t, "set_counter", {"key": "spent", "value": "0", "reset_after": "48h"}))
        else:
            rows.append(("op", f"o{i}", who, t, "tag", {"tag": "VIP"}))
    return rows


class Club:
    """The model: per participant enrolment, status, tags, counters (value, period start) and PTS."""

    def __init__(self) -> None:
        self.enrolled: dict[str, datetime] = {}
        self.status: dict[str, str] = {}
        self.tags: dict[str, set] = defaultdict(set)
        self.spent: dict[str, list] = {}  # who -> [value, last_reset_at]
        self.dailies: dict[str, D] = defaultdict(D)
        self.pts: dict[str, D] = defaultdict(D)
        self.fired_big: dict[str, datetime] = {}  # last THRESHOLD firing instant
        self.outcome: dict[str, str] = {}
        self.system: list[tuple[str, str, datetime]] = []  # (event type, who or 'program', instant)
        self.first: datetime | None = None
        self.planned: datetime | None = None

    def due(self, who: str, t: datetime) -> None:
        c = self.spent.get(who)
        if c and c[1] + RESET <= t:
            k = (t - c[1]) // RESET
            c[0], c[1] = D(0), c[1] + k * RESET

    def row(self, kind, key, who, t, *rest) -> None:
        self.first = self.first or t
        if kind == "ev":
            self.enrolled.setdefault(who, t)
            self.status.setdefault(who, "ACTIVE")
        if who not in self.enrolled:
            self.outcome[key] = "FAILED"
            return
        self.due(who, t)
        if kind == "ev":
            if self.status[who] != "ACTIVE":
                self.outcome[key] = "FAILED"
                return
            amount = D(rest[0]["amount"])
            self.spent.setdefault(who, [D(0), t])[0] += amount
            self.pts[who] += amount
        else:
            name, params = rest
            if name == "set_participant_status":
                self.status[who] = params["status"]
            elif name == "set_counter":  # a counter change, refused as COUNTER is (semantics.md 7)
                if self.status[who] != "ACTIVE":
                    self.outcome[key] = "FAILED"
                    return
                self.spent[who] = [D(params["value"]), t]
            else:
                self.tags[who].add(params["tag"].lower())
        self.outcome[key] = "COMPLETED"

    def active_at(self, t: datetime) -> list[str]:
        return sorted(w for w, e in self.enrolled.items() if e <= t and self.status[w] == "ACTIVE")

    def maintain(self, as_of: datetime) -> None:
        """Every row before as_of is loaded; the firings at as_of in automation-key order."""
        for w in self.enrolled:
            self.due(w, as_of)
        if self.planned is None:  # immediate: at the first maintenance's as-of
            for w in self.active_at(as_of):
                self.pts[w] += 7
                self.system.append(("welcome", w, as_of))
        for w in self.active_at(as_of):  # THRESHOLD: once per counter period
            c = self.spent.get(w)
            if c and c[0] >= 100 and not (w in self.fired_big and self.fired_big[w] >= c[1]):
                self.fired_big[w] = as_of
                self.pts[w] += 50
                self.tags[w].add("vip")
                self.system.append(("big", w, as_of))
        if self.first is not None and as_of >= self.first:  # daily at 00:00: as_of is one
            for w in self.active_at(as_of):
                if "vip" in self.tags[w] and self.dailies[w] < 3 and self.pts[w] < 260:
                    self.pts[w] += 2
                    self.dailies[w] += 1
                    self.system.append(("daily", w, as_of))
            if as_of.weekday() == 0:
                self.system.append(("weekly", "program", as_of))
                for w in self.active_at(as_of):
                    self.pts[w] += 3
                    self.system.append(("weekly_point", w, as_of))
        self.planned = as_of


def run_club(tmp_path: Path, rows: list[tuple], db: Path, programs: Path, model: Club | None, days: int = DAYS) -> None:
    for d in range(days):
        day = [r for r in rows if A0 + timedelta(days=d) <= r[3] < A0 + timedelta(days=d + 1)]
        evs = [{"program_id": "club", "idempotency_key": k, "external_id": w, "event_timestamp": iso(t),
                "event_data": json.dumps(p)} for kind, k, w, t, p, *_ in day if kind == "ev"]
        ops = [{"operation": r[4], "program_id": "club", "idempotency_key": r[1], "external_id": r[2],
                "timestamp": iso(r[3]), "params": json.dumps(r[5])} for r in day if r[0] == "op"]
        args = ["run", "--programs", str(programs), "--db", str(db)]
        if evs:
            args += ["--events", str(write_rows(tmp_path / f"d{d}" / "ev.parquet", evs, EVENT_COLS))]
        if ops:
            args += ["--operations", str(write_rows(tmp_path / f"d{d}" / "ops.parquet", ops, OP_COLS))]
        if evs or ops:
            ok(*args)
        if model:
            for r in day:
                model.row(*r)
            model.maintain(A0 + timedelta(days=d + 1))
        ok("maintain", "--as-of", iso(A0 + timedelta(days=d + 1)), "--db", str(db))


def test_automations_day_by_day_match_the_model(tmp_path):
    programs = write_program(tmp_path / "club.yaml", CLUB_PROGRAM)
    for seed in [int(x) for x in os.environ.get("OUTSIDER3_SEEDS", "11").split(",")]:
        rows, model, db = club_stream(seed), Club(), tmp_path / f"club{seed}.duckdb"
        run_club(tmp_path / f"s{seed}", rows, db, programs, model)
        ids = dict(query(db, "SELECT external_id, id::VARCHAR FROM participants"))
        got = {k: s for k, s in query(db, "SELECT idempotency_key, status FROM events WHERE idempotency_key NOT LIKE 'system:%' "
                                          "UNION ALL SELECT idempotency_key, status FROM operations")}
        assert got == model.outcome, seed
        system = sorted((json.loads(d)["type"], e or "program", t.astimezone(UTC), s) for d, e, t, s in query(
            db, "SELECT event_data, external_id, event_timestamp, status FROM events WHERE idempotency_key LIKE 'system:%'"))
        assert system == sorted((ty, w, t, "COMPLETED") for ty, w, t in model.system), seed
        keys = {k for (k,) in query(db, "SELECT idempotency_key FROM events WHERE idempotency_key LIKE 'system:automation:%'")}
        assert keys == {f"system:automation:a{'1234'['welcome big daily weekly'.split().index(ty)]}_{ty}:"
                        f"{'program' if w == 'program' else ids[w]}:{iso(t)}"
                        for ty, w, t in model.system if ty != "weekly_point"}, seed
        bal = {e: a for e, a in query(db, "SELECT external_id, available FROM balances WHERE entity_type = 'PARTICIPANT'")}
        assert bal == {w: v for w, v in model.pts.items() if w in model.enrolled}, seed
        spent = {e: (v, t.astimezone(UTC)) for e, v, t in query(
            db, "SELECT external_id, number_value, last_reset_at FROM participant_state WHERE key = 'spent'")}
        assert spent == {w: (c[0], c[1]) for w, c in model.spent.items()}, seed
        # a second maintenance of the last instant plans nothing
        before = query(db, "SELECT count(*) FROM journal_entries")
        ok("maintain", "--as-of", iso(A0 + timedelta(days=DAYS)), "--db", str(db))
        assert query(db, "SELECT count(*) FROM journal_entries") == before


# ---------------------------------------------------------------------------------------------
# Hostile input over several batches: late rows, duplicates and conflicts across files and
# batches, malformed rows, REJECT and SUSPENDED programs, LOT transfers; against a model
# ---------------------------------------------------------------------------------------------

H0 = datetime(2025, 6, 2, tzinfo=UTC)
SHOPPERS = ["u0", "u1", "u2", "u3", "u4"]
PTS = {"symbol": "PTS", "name": "Points", "inventory_mode": "SIMPLE", "issuance_policy": "UNLIMITED", "scale": 2}
LPA = {"symbol": "LP", "name": "Lot points", "inventory_mode": "LOT", "issuance_policy": "UNLIMITED", "scale": 0}
SHOP = {"program": {"key": "shop", "name": "Shop", "on_unknown_participant": "CREATE", "status": "ACTIVE"},
        "assets": [PTS, LPA],
        "rules": [
            {"name": "Buy", "key": "buy", "order": 10, "condition": 'event.type == "buy"',
             "actions": [{"type": "CREDIT", "asset": "PTS", "amount": "round(event.amount * 0.1, 2)"},
                         {"type": "CREDIT", "asset": "LP", "amount": "event.units", "expires_at": "72h"}]},
            {"name": "Spend", "key": "spend", "order": 20,
             "condition": 'event.type == "spend" && participant.balances.LP.available >= double(event.n)',
             "actions": [{"type": "DEBIT", "asset": "LP", "amount": "event.n"}]}]}
VIP = {"program": {"key": "vip", "name": "Vip", "on_unknown_participant": "REJECT", "status": "ACTIVE"},
       "assets": [PTS],
       "rules": [{"name": "Visit", "key": "visit", "order": 10, "condition": 'event.type == "visit"',
                  "actions": [{"type": "CREDIT", "asset": "PTS", "amount": "1.25"}]}]}
OLD = {"program": {"key": "old", "name": "Old", "on_unknown_participant": "CREATE", "status": "SUSPENDED"},
       "assets": [PTS],
       "rules": [{"name": "Any", "key": "any", "order": 10, "condition": "true",
                  "actions": [{"type": "CREDIT", "asset": "PTS", "amount": "5"}]}]}
LOT_LIFE = timedelta(hours=72)


def reformat(data: dict, rng: random.Random) -> str:
    """The same payload as other text: keys reordered, spaces, integers as 12.0 (by value)."""
    items = list(data.items())
    rng.shuffle(items)
    parts = [f'{json.dumps(k)} :  {json.dumps(float(v) if isinstance(v, int) else v)}' for k, v in items]
    return "{ " + " ,".join(parts) + " }"


def hostile_stream(seed: int, batches: int = 4) -> list[list[dict]]:
    """Batches of rows {file, ...columns} plus the model's label `_is`: 'new' (a row the model
    processes), 'dup', or a reject reason."""
    rng = random.Random(seed)
    used = set()
    valid: list[dict] = []  # first rows of keys, for duplicates and conflicts
    out = []
    n = 0

    def instant(day_lo: int, day_hi: int) -> datetime:
        while True:
            t = H0 + timedelta(minutes=rng.randrange(day_lo * 1440, day_hi * 1440))
            if t not in used:
                used.add(t)
                return t

    for b in range(batches):
        rows = []
        for _ in range(30):
            n += 1
            late = b > 0 and rng.random() < 0.2
            day = rng.randrange(0, b) if late else b
            t = instant(day, day + 1)
            who, r = rng.choice(SHOPPERS), rng.random()
            file = rng.choice(["ev_a", "ev_b"])
            if r < 0.45:
                row = {"program_id": "shop", "idempotency_key": f"k{n}", "external_id": who, "t": t,
                       "data": {"type": "buy", "amount": rng.choice([12, 33.3, 7.05, 100, 0.5]),
                                "units": rng.choice([4, 10, 25])}}
            elif r < 0.6:
                row = {"program_id": "shop", "idempotency_key": f"k{n}", "external_id": who, "t": t,
                       "data": {"type": "spend", "n": rng.choice([3, 8, 20])}}
            elif r < 0.68:
                row = {"program_id": "vip", "idempotency_key": f"k{n}", "external_id": rng.choice(SHOPPERS + ["x1"]),
                       "t": t, "data": {"type": "visit"}}
            elif r < 0.72:
                row = {"program_id": "old", "idempotency_key": f"k{n}", "external_id": who, "t": t,
                       "data": {"type": "buy"}}
            elif r < 0.88:
                others = rng.sample([w for w in SHOPPERS + ["x2"] if w != who or rng.random() < 0.2], rng.choice([1, 2, 3]))
                row = {"op": "transfer", "program_id": "shop", "idempotency_key": f"t{n}", "external_id": who, "t": t,
                       "params": {"asset": "LP", "recipients": [{"external_id": w, "amount": str(rng.choice([2, 5, 9]))}
                                                                for w in others]}}
                file = "ops"
            elif r < 0.94 and valid:
                src = rng.choice(valid)
                row = dict(src)
                if rng.random() < 0.5:
                    # arrival after its first row: a later batch, or the same file or one after it
                    row["_is"], row["file"] = "dup", src["file"] if src["file"] != "ev_a" else rng.choice(["ev_a", "ev_b"])
                    if "data" in src:
                        row["text"] = reformat(src["data"], rng)
                        row["ts"] = src["t"].astimezone(timezone(timedelta(hours=2))).isoformat()
                else:
                    row["_is"], row["file"] = "idempotency_conflict", src["file"]
                    if "data" in src:
                        row["data"] = dict(src["data"], type="other")
                    else:
                        row["params"] = dict(src["params"], asset="PTS")
                rows.append(row)
                continue
            else:
                bad = rng.choice(["missing_required_field", "invalid_timestamp", "invalid_event_data",
                                  "idempotency_key_too_long", "unknown_program"])
                row = {"program_id": "shop", "idempotency_key": f"k{n}", "external_id": who, "t": t,
                       "data": {"type": "buy", "amount": 1, "units": 1}, "_is": bad}
                if bad == "missing_required_field":
                    row["external_id"] = None
                elif bad == "invalid_timestamp":
                    row["ts"] = "not a time"
                elif bad == "invalid_event_data":
                    row["text"] = "[1, 2]"
                elif bad == "idempotency_key_too_long":
                    row["idempotency_key"] = "k" * 256
                else:
                    row["program_id"] = "nope"
                rows.append(dict(row, file=file))
                continue
            row |= {"_is": "new", "file": file}
            valid.append(row)
            rows.append(row)
        out.append(rows)
    return out


def write_batch(dirpath: Path, rows: list[dict]) -> tuple[Path | None, Path | None]:
    evs = {"ev_a": [], "ev_b": []}
    ops = []
    for r in rows:
        if r["file"] == "ops":
            ops.append({"operation": r["op"], "program_id": r["program_id"], "idempotency_key": r["idempotency_key"],
                        "external_id": r["external_id"], "timestamp": r.get("ts") or iso(r["t"]),
                        "params": json.dumps(r["params"])})
        else:
            evs[r["file"]].append({"program_id": r["program_id"], "idempotency_key": r["idempotency_key"],
                                   "external_id": r["external_id"], "event_timestamp": r.get("ts") or iso(r["t"]),
                                   "event_data": r.get("text") or json.dumps(r["data"])})
    for name, part in evs.items():
        if part:
            write_rows(dirpath / "events" / f"{name}.parquet", part, EVENT_COLS)
    if ops:
        write_rows(dirpath / "ops.parquet", ops, OP_COLS)
    return (dirpath / "events" if any(evs.values()) else None), (dirpath / "ops.parquet" if ops else None)


class Shop:
    """Balances per (who, asset): PTS simple, LP as FIFO lots that expire 72 h after their credit
    (transferred lots never expire); statuses per key; participants known project-wide."""

    def __init__(self) -> None:
        self.pts: dict[str, D] = defaultdict(D)
        self.lots: dict[str, list[list]] = defaultdict(list)  # [created, rem, expires | None, expired]
        self.known: set[str] = set()
        self.status: dict[str, str] = {}
        self.expired = D(0)
        self.issued: dict[tuple, D] = defaultdict(D)
        self.redeemed = D(0)
        self.rows: dict[str, dict] = {}
        self.flows: list[tuple] = []  # (effective_at, program, asset, category, amount)

    def due(self, who: str, t: datetime) -> None:
        for lot in self.lots[who]:
            if lot[2] is not None and lot[2] <= t and not lot[3]:
                self.expired += lot[1]
                self.flows.append((lot[2], "shop", "LP", "expired", lot[1]))
                lot[1], lot[3] = D(0), True

    def available(self, who: str) -> D:
        return sum((lot[1] for lot in self.lots[who] if not lot[3]), D(0))

    def take(self, who: str, amount: D) -> None:
        for lot in sorted((x for x in self.lots[who] if not x[3] and x[1] > 0), key=lambda x: x[0]):
            x = min(lot[1], amount)
            lot[1] -= x
            amount -= x
        assert amount == 0

    def row(self, r: dict) -> None:
        key, who, t, prog = r["idempotency_key"], r["external_id"], r["t"], r["program_id"]
        self.rows[key] = r
        if "op" in r:
            recipients = r["params"]["recipients"]
            names = [x["external_id"] for x in recipients]
            if who not in self.known or any(w not in self.known for w in names) or who in names:
                self.status[key] = "FAILED"
                return
            for w in [who, *names]:
                self.due(w, t)
            total = sum((D(x["amount"]) for x in recipients), D(0))
            if self.available(who) < total:
                self.status[key] = "FAILED"
                return
            self.take(who, total)
            for x in recipients:
                self.lots[x["external_id"]].append([t, D(x["amount"]), None, False])
            self.status[key] = "COMPLETED"
            return
        if prog == "old" or (prog == "vip" and who not in self.known):  # inactive programs create nobody
            self.status[key] = "FAILED"
            return
        self.known.add(who)
        self.due(who, t)
        data = r["data"]
        if data["type"] == "buy":
            amount = D(repr(data["amount"] * 0.1)).quantize(D("0.01"), rounding="ROUND_HALF_UP")
            self.pts[who] += amount
            self.issued[(prog, "PTS")] += amount
            self.lots[who].append([t, D(data["units"]), t + LOT_LIFE, False])
            self.issued[(prog, "LP")] += data["units"]
            self.flows += [(t, prog, "PTS", "issued", amount), (t, prog, "LP", "issued", D(data["units"]))]
        elif data["type"] == "spend" and self.available(who) >= data["n"]:
            self.take(who, D(data["n"]))
            self.redeemed += data["n"]
            self.flows.append((t, prog, "LP", "redeemed", D(data["n"])))
        elif data["type"] == "visit":
            self.pts[who] += D("1.25")
            self.issued[(prog, "PTS")] += D("1.25")
            self.flows.append((t, prog, "PTS", "issued", D("1.25")))
        self.status[key] = "COMPLETED"

    def batch(self, rows: list[dict]) -> dict[str, int]:
        counts = {"read": len(rows), "completed": 0, "failed": 0, "duplicates": 0, "rejected": 0}
        new = [r for r in rows if r["_is"] == "new"]
        order = {"ev_a": 0, "ev_b": 1, "ops": 2}  # arrival: event files in name order, then operations
        arrival = sorted(range(len(new)), key=lambda i: (order[new[i]["file"]], i))
        rank = {i: n for n, i in enumerate(arrival)}
        for i in sorted(range(len(new)), key=lambda i: (new[i]["t"], rank[i])):
            self.row(new[i])
            counts["completed" if self.status[new[i]["idempotency_key"]] == "COMPLETED" else "failed"] += 1
        counts["duplicates"] = sum(r["_is"] == "dup" for r in rows)
        counts["rejected"] = len(rows) - counts["completed"] - counts["failed"] - counts["duplicates"]
        return counts


def test_hostile_batches_count_place_and_balance_every_row_as_the_model(tmp_path):
    for seed in [int(x) for x in os.environ.get("OUTSIDER3_SEEDS", "5").split(",")]:
        programs = tmp_path / f"p{seed}"
        for spec in (SHOP, VIP, OLD):
            write_program(programs / f"{spec['program']['key']}.yaml", spec)
        db, model = tmp_path / f"h{seed}.duckdb", Shop()
        stream = hostile_stream(seed)
        for b, rows in enumerate(stream):
            ev, op = write_batch(tmp_path / f"s{seed}" / f"b{b}", rows)
            args = ["run", "--programs", str(programs), "--db", str(db), "--json"]
            args += ["--events", str(ev)] if ev else []
            args += ["--operations", str(op)] if op else []
            got = json.loads(ok(*args).strip().splitlines()[-1])
            want = model.batch(rows)
            assert {k: got[k] for k in want} == want, (seed, b)
        # every input row in exactly one place (semantics.md 1.7)
        placed = {k: s for k, s in query(db, "SELECT idempotency_key, status FROM events UNION ALL "
                                             "SELECT idempotency_key, status FROM operations")}
        assert placed == model.status, seed
        # the report views a user reads (semantics.md 12; docs/reports.md)
        transfers = sorted(query(db, "SELECT idempotency_key, status, recipient_external_id, amount FROM transfers"),
                           key=str)
        assert transfers == sorted([(k, "COMPLETED", x["external_id"], D(x["amount"]))
                                    for k, r in model.rows.items() if "op" in r and model.status[k] == "COMPLETED"
                                    for x in r["params"]["recipients"]] +
                                   [(k, "FAILED", None, None) for k, r in model.rows.items()
                                    if "op" in r and model.status[k] == "FAILED"], key=str), seed
        activity = {(p, d): c for p, d, *c in query(
            db, "SELECT program_key, day, events_completed, events_failed, operations_completed, operations_failed "
                "FROM program_activity") if any(c)}
        want_activity: dict = defaultdict(lambda: [0, 0, 0, 0])
        for k, r in model.rows.items():
            want_activity[(r["program_id"], r["t"].date())][("op" in r) * 2 + (model.status[k] == "FAILED")] += 1
        assert activity == {k: v for k, v in want_activity.items()}, seed
        reasons = sorted(r for (r,) in query(db, "SELECT reason FROM rejected_rows"))
        assert reasons == sorted(r["_is"] for rows in stream for r in rows if r["_is"] not in ("new", "dup")), seed
        # everything due, then the outputs
        end = H0 + timedelta(days=30)
        ok("maintain", "--as-of", iso(end), "--db", str(db))
        for who in list(model.lots):
            model.due(who, end)
        bal = {(e, s): a for e, s, a in query(db, "SELECT external_id, asset_symbol, available FROM balances "
                                                  "WHERE entity_type = 'PARTICIPANT' AND held = 0 AND deferred = 0")}
        want = {(w, "PTS"): v for w, v in model.pts.items()} | {(w, "LP"): model.available(w) for w in model.lots}
        assert {k: v for k, v in bal.items() if v} == {k: v for k, v in want.items() if v}, seed
        summary = {(p, s): (i, r, x) for p, s, i, r, x in query(
            db, "SELECT program_key, asset_symbol, total_issued, total_redeemed, total_expired FROM ledger_summary")}
        assert summary[("shop", "LP")] == (model.issued[("shop", "LP")], model.redeemed, model.expired), seed
        assert summary[("shop", "PTS")][0] == model.issued[("shop", "PTS")], seed
        assert summary.get(("vip", "PTS"), (D(0),))[0] == model.issued[("vip", "PTS")], seed
        last = {(e, s): a for e, s, a in query(db, "SELECT external_id, asset_symbol, last(running_available ORDER BY seq, "
                                                   "effective_at) FROM participant_statement GROUP BY ALL")}
        assert {k: v for k, v in last.items() if v} == {k: v for k, v in want.items() if v}, seed
        # the period variant, cut at a stream instant: entries by effective_at (late rows' at their own)
        cut = H0 + timedelta(days=2, hours=7)
        for lo, hi in ((None, cut), (cut, None)):
            got = {(p, a): (i, r, x) for p, a, i, r, x in query(
                db, "SELECT program_key, asset_symbol, total_issued, total_redeemed, total_expired "
                    "FROM ledger_summary_between(?, ?)", [lo, hi])}
            flows: dict = defaultdict(lambda: [D(0), D(0), D(0)])
            for t, p, a, cat, amount in model.flows:
                if (lo is None or t >= lo) and (hi is None or t < hi):
                    flows[(p, a)][["issued", "redeemed", "expired"].index(cat)] += amount
            assert {k: v for k, v in got.items() if any(v)} == {k: tuple(v) for k, v in flows.items() if any(v)}, (seed, lo)
        ok("verify", "--db", str(db))
        # replay (semantics.md 3): the stored rows in pure timestamp order into a fresh ledger
        fresh, again = tmp_path / f"r{seed}.duckdb", Shop()
        for r in sorted((r for rows in stream for r in rows if r["_is"] == "new"), key=lambda r: r["t"]):
            again.row(r)
        for who in list(again.lots):
            again.due(who, end)
        ok("replay", "--from", str(db), "--db", str(fresh))
        ok("maintain", "--as-of", iso(end), "--db", str(fresh))
        assert dict(query(fresh, "SELECT idempotency_key, status FROM events UNION ALL "
                                 "SELECT idempotency_key, status FROM operations")) == again.status, seed
        bal = {(e, s): a for e, s, a in query(fresh, "SELECT external_id, asset_symbol, available FROM balances "
                                                     "WHERE entity_type = 'PARTICIPANT'")}
        want = {(w, "PTS"): v for w, v in again.pts.items()} | {(w, "LP"): again.available(w) for w in again.lots}
        assert {k: v for k, v in bal.items() if v} == {k: v for k, v in want.items() if v}, seed


SPACED = {
    "program": CLUB_PROGRAM["program"], "assets": CLUB_PROGRAM["assets"],
    "rules": [
        {"name": "Buy", "key": "buy", "order": 10, "condition": 'event.type == "buy"',
         "actions": [{"type": "CREDIT", "asset": "PTS", "amount": "event.amount"}]},
        {"name": "Tick", "key": "tick", "order": 20, "condition": 'event.type in ["daily", "every36h", "once"]',
         "actions": [{"type": "CREDIT", "asset": "PTS", "amount": "event.n"}, {"type": "COUNTER", "key": "ticks", "value": "1"}]},
        {"name": "Weekly", "key": "weekly", "order": 30, "condition": 'event.type == "weekly"',
         "actions": [{"type": "BROADCAST", "event_name": "weekly_point", "payload": {"n": 3}}]},
        {"name": "Weekly point", "key": "weekly_point", "order": 40, "condition": 'event.type == "weekly_point"',
         "actions": [{"type": "CREDIT", "asset": "PTS", "amount": "event.n"}]},
    ],
    "automations": [
        {"name": "Daily", "key": "daily", "event_name": "daily", "scope": "participants", "payload": {"n": 2},
         "trigger": {"type": "participant_state", "schedule_type": "CRON",
                     "schedule_config": {"cron_expression": "30 6 * * *"}}},
        {"name": "Every 36h", "key": "every36h", "event_name": "every36h", "scope": "participants", "payload": {"n": 5},
         "trigger": {"type": "participant_state", "schedule_type": "INTERVAL", "schedule_config": {"interval": "36h"}}},
        {"name": "Once", "key": "once", "event_name": "once", "scope": "participants", "payload": {"n": 11},
         "trigger": {"type": "one_time", "trigger_at": iso(A0 + timedelta(days=1, hours=12))}},
        {"name": "Weekly", "key": "weekly", "event_name": "weekly", "scope": "program",
         "trigger": {"type": "cron", "cron_expression": "0 0 * * 6"}},  # Saturday 8 March, A0 + 1 day
    ],
}


def test_automation_ids_and_amounts_do_not_depend_on_maintenance_spacing(tmp_path):
    """Cron, one_time, INTERVAL and participant_state CRON firings, fired by maintenance every
    day (events loaded day by day), or at an odd instant and the end after all events were
    loaded (late firings): the same SYSTEM event keys, entries (ids and postings) and balances (semantics.md
    1.4, 11: deterministic idempotency keys (automation, participant, instant))."""
    programs = write_program(tmp_path / "club.yaml", SPACED)
    days = DAYS
    rows = [r for r in club_stream(17) if r[0] == "ev" and r[3] < A0 + timedelta(days=days)]
    end = A0 + timedelta(days=days)

    def ledger(db: Path):
        keys = set(query(db, "SELECT idempotency_key, event_timestamp, status FROM events"))
        entries = set(query(db, "SELECT j.id, p.entity_id, p.bucket, p.amount, j.effective_at FROM journal_entries j "
                                "JOIN postings p ON p.journal_entry_id = j.id"))
        return keys, entries

    daily = tmp_path / "daily.duckdb"
    run_club(tmp_path / "a", rows, daily, programs, None, days)
    ev = write_rows(tmp_path / "all.parquet", [
        {"program_id": "club", "idempotency_key": k, "external_id": w, "event_timestamp": iso(t),
         "event_data": json.dumps(p)} for _, k, w, t, p in rows], EVENT_COLS)
    results = {}
    for name, as_ofs in {"odd": [A0 + timedelta(days=1, hours=7, minutes=13), end]}.items():
        db = tmp_path / f"{name}.duckdb"
        ok("run", "--programs", str(programs), "--events", str(ev), "--db", str(db))
        for t in as_ofs:
            ok("maintain", "--as-of", iso(t), "--db", str(db))
        results[name] = ledger(db)
    want = ledger(daily)
    kinds = {k.split(":")[2] for k, _, _ in want[0] if k.startswith("system:automation:")}
    assert kinds == {"daily", "every36h", "once", "weekly"}
    assert results["odd"] == want


# ---------------------------------------------------------------------------------------------
# Numbers in operation params
# ---------------------------------------------------------------------------------------------

def test_operation_amounts_are_decimal_text_not_python_literals(tmp_path):
    """An operation's amount is a decimal number (semantics.md 2.3: Scrip's decimal strings; 13:
    bad input fails with a clear error). Python's Decimal also reads digit separators and
    non-ASCII digits: '1_00' (a typo for '1.00') moved 100 and a set_counter '1_0' set 10, while
    the same text in a program file is "neither a number nor a CEL expression"."""
    programs = write_program(tmp_path / "shop.yaml", {
        "program": {"key": "shop", "name": "Shop"},
        "assets": [{"symbol": "PTS", "name": "Points", "inventory_mode": "SIMPLE",
                    "issuance_policy": "UNLIMITED", "scale": 2}],
        "rules": [{"name": "Hi", "key": "hi", "condition": 'event.type == "hi"',
                   "actions": [{"type": "CREDIT", "asset": "PTS", "amount": "50"}]}],
        "rewards": [{"key": "mug", "name": "Mug", "redemption_type": "UNIT_BASED", "asset": "PTS", "unit_cost": "1"}]})
    db = tmp_path / "l.duckdb"
    ev = write_rows(tmp_path / "ev.parquet", [
        {"program_id": "shop", "idempotency_key": f"e{w}", "external_id": w, "event_timestamp": "2025-01-01T00:00:00Z",
         "event_data": '{"type": "hi"}'} for w in ("a", "b")], EVENT_COLS)
    t = "2025-01-02T00:00:00Z"
    bad = [("adjust", {"type": "CREDIT", "asset": "PTS", "amount": "1_00"}),
           ("adjust", {"type": "DEBIT", "asset": "PTS", "amount": "\u0661\u0662"}),  # Arabic-Indic 12
           ("hold", {"asset": "PTS", "amount": "2_0"}),
           ("transfer", {"asset": "PTS", "recipients": [{"external_id": "b", "amount": "3_0"}]}),
           ("set_counter", {"key": "visits", "value": "1_0"}),
           ("redeem_item", {"reward": "mug", "quantity": "\u0661\u0662"}),  # 12 units
           ("redeem_item", {"reward": "mug", "quantity": "\u00b2"})]  # a superscript 2: a Python ValueError
    good = [("adjust", {"type": "CREDIT", "asset": "PTS", "amount": a}) for a in ["+1.50", " 2 ", "1e1", "0.50"]]
    ops = write_rows(tmp_path / "ops.parquet", [
        {"operation": name, "program_id": "shop", "idempotency_key": f"o{i}", "external_id": "a", "timestamp": t,
         "params": json.dumps(params)} for i, (name, params) in enumerate(bad + good)], OP_COLS)
    ok("run", "--programs", str(programs), "--events", str(ev), "--operations", str(ops), "--db", str(db))
    got = query(db, "SELECT idempotency_key, status, error_code, error_message FROM operations ORDER BY arrival_seq")
    for (key, status, code, message), (name, _) in zip(got[:len(bad)], bad):
        assert (status, code) == ("FAILED", "invalid_operation"), (key, name, message)
        assert "is not a number" in message or "must be a positive integer" in message, (key, name, message)
    assert [s for _, s, _, _ in got[len(bad):]] == ["COMPLETED"] * len(good)  # a sign, spaces, an exponent, zeros
    out = json.loads(ok("op", "adjust", "--programs", str(programs), "--program", "shop", "--key", "cli",
                        "--external-id", "b", "--timestamp", t, "--db", str(db), "--json", "--param", "type=CREDIT",
                        "--param", "asset=PTS", "--param", "amount=5_0").strip().splitlines()[-1])
    assert (out["status"], out["error_code"]) == ("FAILED", "invalid_operation"), out
    bal = dict(query(db, "SELECT external_id, available FROM balances WHERE entity_type = 'PARTICIPANT'"))
    assert bal == {"a": D("64"), "b": D("50")}
    assert query(db, "SELECT count(*) FROM participant_state WHERE key = 'visits'") == [(0,)]


# ---------------------------------------------------------------------------------------------
# Transfers at their edges (semantics.md 9.3)
# ---------------------------------------------------------------------------------------------

def test_transfers_at_their_edges_are_atomic_zero_sum_and_date_new_lots(tmp_path):
    """100 recipients exactly, 101 refused, an empty list refused, self-transfer refused, one
    recipient short of AVAILABLE refuses all of it, the source's lot expired exactly at the
    transfer instant is not spendable; LOT recipients' lots are dated at the transfer without an
    expiry, and are spent FIFO before a later earned lot."""
    programs = write_program(tmp_path / "shop.yaml", {
        "program": {"key": "shop", "name": "Shop"}, "assets": [dict(LPA, scale=2)],
        "rules": [{"name": "Earn", "key": "earn", "order": 10, "condition": 'event.type == "earn"',
                   "actions": [{"type": "CREDIT", "asset": "LP", "amount": "event.n", "expires_at": "48h"}]},
                  {"name": "Spend", "key": "spend", "order": 20, "condition": 'event.type == "spend"',
                   "actions": [{"type": "DEBIT", "asset": "LP", "amount": "event.n"}]}]})
    t0 = datetime(2025, 1, 1, tzinfo=UTC)
    people = [f"r{i:03}" for i in range(101)]
    evs = [{"program_id": "shop", "idempotency_key": "src", "external_id": "s", "event_timestamp": iso(t0),
            "event_data": json.dumps({"type": "earn", "n": 500})},
           {"program_id": "shop", "idempotency_key": "late-src", "external_id": "q", "event_timestamp": iso(t0),
            "event_data": json.dumps({"type": "earn", "n": 5})}]
    evs += [{"program_id": "shop", "idempotency_key": f"hi-{w}", "external_id": w, "event_timestamp": iso(t0 + timedelta(seconds=1)),
             "event_data": json.dumps({"type": "earn", "n": 0})} for w in people]
    evs += [{"program_id": "shop", "idempotency_key": "r001-earn", "external_id": "r001",
             "event_timestamp": iso(t0 + timedelta(hours=20)), "event_data": json.dumps({"type": "earn", "n": 7})},
            {"program_id": "shop", "idempotency_key": "r001-spend", "external_id": "r001",
             "event_timestamp": iso(t0 + timedelta(hours=21)), "event_data": json.dumps({"type": "spend", "n": 300.5})}]

    def transfer(key, hours, recipients, source="s"):
        return {"operation": "transfer", "program_id": "shop", "idempotency_key": key, "external_id": source,
                "timestamp": iso(t0 + timedelta(hours=hours)),
                "params": json.dumps({"asset": "LP", "recipients": [{"external_id": w, "amount": a} for w, a in recipients]})}
    ops = [transfer("t100", 1, [(w, "1") for w in people[:100]]),
           transfer("t101", 2, [(w, "1") for w in people]),
           transfer("empty", 3, []),
           transfer("self", 4, [("r001", "1"), ("s", "1")]),
           transfer("short", 5, [("r001", "300"), ("r002", "100.01")]),  # 400 left: 400.01 asked
           transfer("exact", 6, [("r001", "300"), ("r002", "100")]),
           transfer("expired", 48, [("r003", "1")], source="q")]  # q's lot expires at exactly 48h
    ok("run", "--programs", str(programs), "--db", str(tmp_path / "l.duckdb"),
       "--events", str(write_rows(tmp_path / "ev.parquet", evs, EVENT_COLS)),
       "--operations", str(write_rows(tmp_path / "ops.parquet", ops, OP_COLS)))
    db = tmp_path / "l.duckdb"
    status = dict(query(db, "SELECT idempotency_key, status || coalesce(':' || error_code, '') FROM operations"))
    assert status == {"t100": "COMPLETED", "t101": "FAILED:invalid_operation", "empty": "FAILED:invalid_operation",
                      "self": "FAILED:self_transfer", "short": "FAILED:insufficient_balance", "exact": "COMPLETED",
                      "expired": "FAILED:insufficient_balance"}
    # one entry per transfer, zero-sum
    assert query(db, "SELECT count(DISTINCT j.id), sum(p.amount) FROM journal_entries j JOIN postings p "
                     "ON p.journal_entry_id = j.id WHERE j.action_type = 'TRANSFER'") == [(2, D(0))]
    lots = query(db, "SELECT pa.external_id, l.amount, l.remaining, l.created_at, l.expires_at FROM lots l "
                     "JOIN participants pa ON pa.id = l.entity_id WHERE pa.external_id IN ('r001', 'r002', 'r100') "
                     "AND l.amount > 0 ORDER BY 1, 4")
    t1, t6, t20 = t0 + timedelta(hours=1), t0 + timedelta(hours=6), t0 + timedelta(hours=20)
    assert [(w, a, r, c.astimezone(UTC), e and e.astimezone(UTC)) for w, a, r, c, e in lots] == [
        # r001 spends 300.5 FIFO: the 1 from t100, then 299.5 of the 300 from `exact`; its own
        # earned lot (t0 + 20 h, expiring) is untouched
        ("r001", D(1), D(0), t1, None), ("r001", D(300), D("0.5"), t6, None),
        ("r001", D(7), D(7), t20, t20 + timedelta(hours=48)),
        ("r002", D(1), D(1), t1, None), ("r002", D(100), D(100), t6, None)]
    assert query(db, "SELECT count(*) FROM lots l JOIN participants pa ON pa.id = l.entity_id "
                     "WHERE pa.external_id = 'r100' AND l.amount > 0") == [(0,)]
    bal = dict(query(db, "SELECT external_id, available FROM balances WHERE external_id IN ('s', 'r001', 'r099', 'r100')"))
    assert bal == {"s": D(0), "r001": D("7.5"), "r099": D(1)}  # r100: nothing ever posted
