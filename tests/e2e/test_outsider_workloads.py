"""An outsider's scenario tests of the reference workloads' features (performance.md, "Reference
workloads"), black box: our own program files, our own seeded event generator and an independent
expected-result model in plain Python (Decimal), written from semantics.md alone; none of
engine/workloads.py, engine/generate.py or tests/oracle is used. Each test runs the real CLI into
a real DuckDB file and compares every participant's balances per bucket, lots, counters, tags,
tiers, event outcomes (reason codes), the wallet, breakage, budget consumption, time-driven
entries (instant and amount) and entry counts per action_type with the model.

- W1-like: stateless rules (type/category filters, amount thresholds, a `now` window and an
  `active_from`/`active_to` window with events exactly at their bounds, a time-zone hour,
  `stop_after_match` multipliers, `round()` on ties, `ceil`), one SIMPLE asset of scale 2 with a
  `max_transaction_amount`, DEBITs with and without `allow_negative`.
- W2-like: a tag-gated welcome bonus from a PREFUNDED wallet that runs dry, a 5th-purchase bonus
  on a counter under a lifetime budget that runs out, a tier multiplier from `participant.tiers`,
  refunds as DEBITs of a LOT asset (365-day expiry, 30-day maturity) that fail when short, events
  exactly at maturity and expiry instants, `perkflow maintain`.
- W3-like: the same stream in time-cut batches, in chunks, and re-run, against one batch and the
  model.

The model's rules (semantics.md): stream order (timestamp, arrival); time-driven changes of a
participant happen before its event at or after their instant (3); a failed action rolls the
whole event back (5.5); CEL numbers become decimals through their shortest text (7) and `round`
is half away from zero on that decimal value (6); JSON numbers are doubles (docs/decisions.md
"Input"); lots are spent FIFO by created_at, then lot id (9.1); an expired lot's remainder goes to
breakage and its `remaining` is 0; a budget may be reached exactly (docs/decisions.md "Budgets").
"""

from __future__ import annotations

import copy
import json
import math
import random
from collections import Counter, defaultdict
from datetime import datetime, timedelta, timezone
from decimal import ROUND_HALF_UP, Decimal as D
from pathlib import Path
from zoneinfo import ZoneInfo

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.helpers.io import cli, query, write_program

UTC = timezone.utc
PARIS = ZoneInfo("Europe/Paris")
EVENT_COLS = ("program_id", "idempotency_key", "external_id", "event_timestamp", "event_data")
OP_COLS = ("operation", "program_id", "idempotency_key", "external_id", "timestamp", "params")


def iso(t: datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


def cel_round(x: float, n: int) -> D:
    """semantics.md 6: half away from zero, on the decimal value (7: the shortest round-trip text)."""
    return D(repr(float(x))).quantize(D(1).scaleb(-n), rounding=ROUND_HALF_UP)


def dec(x: float | int) -> D:
    return D(repr(float(x)))  # a JSON number is a double (docs/decisions.md "Input")


def write_events(path: Path, rows: list[dict], struct: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [{c: r[c] for c in EVENT_COLS} for r in rows]
    if struct:  # a Parquet struct event_data column, its field types as pyarrow infers them
        table = pa.Table.from_pylist(rows)
    else:
        table = pa.Table.from_pylist([{**r, "event_data": json.dumps(r["event_data"])} for r in rows],
                                     schema=pa.schema([(c, pa.string()) for c in EVENT_COLS]))
    pq.write_table(table, path)
    return path


def write_ops(path: Path, rows: list[dict]) -> Path:
    table = pa.Table.from_pylist([{**{c: r[c] for c in OP_COLS}, "params": json.dumps(r["params"])} for r in rows],
                                 schema=pa.schema([(c, pa.string()) for c in OP_COLS]))
    pq.write_table(table, path)
    return path


def run(programs: Path, db: Path, events: Path | None = None, ops: Path | None = None, *extra: str) -> dict:
    args = ["run", "--programs", str(programs), "--db", str(db), "--json", *extra]
    args += ["--events", str(events)] if events else []
    args += ["--operations", str(ops)] if ops else []
    res = cli(*args)
    assert res.returncode == 0, res.stdout + res.stderr
    return json.loads(res.stdout.strip().splitlines()[-1])


def maintain_and_verify(db: Path, as_of: datetime) -> None:
    res = cli("maintain", "--as-of", iso(as_of), "--db", str(db))
    assert res.returncode == 0, res.stdout + res.stderr
    res = cli("verify", "--db", str(db))
    assert res.returncode == 0, res.stdout + res.stderr


def outcomes(db: Path) -> dict[str, tuple[str, str | None]]:
    return {k: (s, c) for k, s, c in query(db, "SELECT idempotency_key, status, error_code FROM events UNION ALL "
                                               "SELECT idempotency_key, status, error_code FROM operations")}


def entry_counts(db: Path) -> dict[str, int]:
    return dict(query(db, "SELECT action_type, count(*) FROM journal_entries GROUP BY 1"))


# ---------------------------------------------------------------------------------------------
# W1-like: rules that read only event and now
# ---------------------------------------------------------------------------------------------

JUNE_FROM, JUNE_TO = datetime(2025, 6, 1, tzinfo=UTC), datetime(2025, 6, 8, tzinfo=UTC)
JULY_FROM, JULY_TO = datetime(2025, 7, 1, tzinfo=UTC), datetime(2025, 7, 2, tzinfo=UTC)


def _rule(order: int, key: str, condition: str, actions: list[dict], **more) -> dict:
    return {"name": key.replace("_", " "), "key": key, "order": order, "condition": condition, "actions": actions, **more}


def _credit(asset: str, amount: str, **more) -> dict:
    return {"type": "CREDIT", "asset": asset, "amount": amount, **more}


W1 = {"program": {"key": "w1shop", "name": "W1 shop"},
      "assets": [{"symbol": "PTS", "name": "Points", "inventory_mode": "SIMPLE", "issuance_policy": "UNLIMITED",
                  "scale": 2, "max_transaction_amount": "500"}],
      "rules": [
          _rule(10, "electronics_3x", 'event.type == "purchase" && event.category == "electronics"',
                [_credit("PTS", "round(event.amount * 3, 2)")], stop_after_match=True),
          _rule(20, "grocery_2x", 'event.type == "purchase" && event.category in ["grocery", "pharmacy"]',
                [_credit("PTS", "round(event.amount * 2, 2)")], stop_after_match=True),
          _rule(30, "base", 'event.type == "purchase"', [_credit("PTS", "round(event.amount, 2)")]),
          _rule(40, "big_basket", 'event.type == "purchase" && event.amount >= 200', [_credit("PTS", "10")]),
          _rule(50, "june_week", 'event.type == "purchase" && now >= timestamp("2025-06-01T00:00:00Z") '
                                 '&& now < timestamp("2025-06-08T00:00:00Z")', [_credit("PTS", "5")]),
          _rule(60, "july_first", 'event.type == "purchase"', [_credit("PTS", "7")],
                active_from="2025-07-01T00:00:00Z", active_to="2025-07-02T00:00:00Z"),
          _rule(70, "paris_six_pm", 'event.type == "purchase" && now.getHours("Europe/Paris") == 18',
                [_credit("PTS", "1.5")]),
          _rule(80, "returns", 'event.type == "return"',
                [{"type": "DEBIT", "asset": "PTS", "amount": "round(event.amount, 2)"}]),
          _rule(85, "chargeback", 'event.type == "chargeback"',
                [{"type": "DEBIT", "asset": "PTS", "amount": "round(event.amount, 2)", "allow_negative": True}]),
          _rule(90, "signup", 'event.type == "signup"', [_credit("PTS", "100")]),
          _rule(100, "review", 'event.type == "review" && event.stars >= 3', [_credit("PTS", "ceil(event.stars * 1.25)")]),
      ]}


def gen_w1(seed: int, n: int, people: int = 60) -> list[dict]:
    r = random.Random(seed)
    us, s = timedelta(microseconds=1), timedelta(seconds=1)
    bounds = [JUNE_FROM, JUNE_TO, JUNE_TO - us, JUNE_FROM - us, JULY_FROM, JULY_TO, JULY_TO - us, JULY_FROM - s,
              datetime(2025, 3, 30, 16, tzinfo=UTC), datetime(2025, 3, 30, 17, tzinfo=UTC),  # Paris changes to summer time
              datetime(2025, 10, 26, 16, 59, 59, tzinfo=UTC), datetime(2025, 10, 26, 17, tzinfo=UTC)]
    rows = []
    for i in range(n):
        when = bounds[i % len(bounds)] if i < 3 * len(bounds) else \
            datetime(2025, 1, 1, tzinfo=UTC) + timedelta(seconds=r.randrange(365 * 86400))
        kind = r.choices(["purchase", "return", "chargeback", "signup", "review", "other"], [68, 9, 4, 5, 9, 5])[0]
        data: dict = {"type": kind}
        if kind in ("purchase", "return", "chargeback"):
            data["amount"] = r.choice([r.randrange(1, 400), r.randrange(1, 40000) / 100,
                                       (r.randrange(0, 4000) * 10 + 5) / 1000,  # x.xx5: a tie for round(., 2)
                                       r.choice([200, 199.999, 166.665, 0.004, 0.005])])
            if kind == "purchase":
                data["category"] = r.choice(["electronics", "grocery", "pharmacy", "books", "toys"])
        if kind == "review":
            data["stars"] = r.choice([1, 2, 3, 4, 5, 3.5, 4.2])
        rows.append({"program_id": "w1shop", "idempotency_key": f"e{i:05d}", "external_id": f"p{r.randrange(people):02d}",
                     "event_timestamp": iso(when), "event_data": data, "when": when})
    return rows


def model_w1(rows: list[dict]) -> tuple[dict, dict, Counter, Counter]:
    balance: dict[str, D] = defaultdict(D)
    status, entries, matched = {}, Counter(), Counter()
    for row in sorted(rows, key=lambda x: x["when"]):  # stable: arrival order breaks ties
        e, now, who = row["event_data"], row["when"], row["external_id"]
        kind, amount = e["type"], e.get("amount")
        hits = [  # (rule key, matches, amount thunk, stop_after_match), in `order`
            ("electronics_3x", kind == "purchase" and e.get("category") == "electronics", lambda: cel_round(amount * 3, 2), True),
            ("grocery_2x", kind == "purchase" and e.get("category") in ("grocery", "pharmacy"), lambda: cel_round(amount * 2, 2), True),
            ("base", kind == "purchase", lambda: cel_round(amount, 2), False),
            ("big_basket", kind == "purchase" and amount >= 200, lambda: D(10), False),
            ("june_week", kind == "purchase" and JUNE_FROM <= now < JUNE_TO, lambda: D(5), False),
            ("july_first", kind == "purchase" and JULY_FROM <= now < JULY_TO, lambda: D(7), False),
            ("paris_six_pm", kind == "purchase" and now.astimezone(PARIS).hour == 18, lambda: D("1.5"), False),
            ("returns", kind == "return", lambda: -cel_round(amount, 2), False),
            ("chargeback", kind == "chargeback", lambda: -cel_round(amount, 2), False),
            ("signup", kind == "signup", lambda: D(100), False),
            ("review", kind == "review" and e["stars"] >= 3, lambda: dec(math.ceil(e["stars"] * 1.25)), False),
        ]
        actions = []
        for key, hit, value, stop in hits:
            if hit:
                matched[key] += 1
                actions.append((key, value()))
                if stop:
                    break
        fail, running = None, balance[who]
        for key, a in actions:
            if abs(a) > 500:
                fail = "max_transaction_amount_exceeded"
                break
            running += a
            if a < 0 and running < 0 and key != "chargeback":
                fail = "insufficient_balance"
                break
        status[row["idempotency_key"]] = ("FAILED", fail) if fail else ("COMPLETED", None)
        if not fail:
            balance[who] = running
            entries.update("CREDIT" if a > 0 else "DEBIT" for _, a in actions if a != 0)
    return {w: b for w, b in balance.items() if b != 0}, status, entries, matched


@pytest.mark.parametrize("struct", [False, True], ids=["json", "struct"])
def test_w1_stateless_rules_match_an_independent_model(tmp_path, struct):
    rows = gen_w1(seed=11 + struct, n=700)
    programs = write_program(tmp_path / "programs" / "w1shop.yaml", W1).parent
    db = tmp_path / "w.duckdb"
    report = run(programs, db, write_events(tmp_path / "events.parquet", rows, struct))
    balances, status, entries, matched = model_w1(rows)
    assert {w: D(a) for w, a in query(db, "SELECT external_id, available FROM balances "
                                          "WHERE entity_type = 'PARTICIPANT' AND available <> 0")} == balances
    assert query(db, "SELECT count(*) FROM balances WHERE held <> 0 OR deferred <> 0") == [(0,)]
    assert outcomes(db) == status
    assert entry_counts(db) == entries
    # every rule that matched, also in an event that then failed (semantics.md 5: recorded per event)
    assert dict(query(db, "SELECT r.key, count(*) FROM rule_evaluations v JOIN rules r ON r.id = v.rule_id "
                          "WHERE v.outcome = 'MATCHED' GROUP BY 1")) == matched
    assert query(db, "SELECT sum(amount) FROM postings WHERE entity_type = 'SYSTEM_ISSUANCE'") == [(-sum(balances.values()),)]
    # the scenario reaches what it is about
    codes = Counter(c for s, c in status.values())
    assert codes["max_transaction_amount_exceeded"] > 5 and codes["insufficient_balance"] > 5
    assert min(matched.values()) > 0 and len(matched) == len(W1["rules"])
    assert (report["completed"], report["failed"]) == (codes[None], len(rows) - codes[None])


# ---------------------------------------------------------------------------------------------
# W2-like: rules that read state; W3-like: the same stream cut into batches and chunks
# ---------------------------------------------------------------------------------------------

MATURES, EXPIRES = timedelta(days=30), timedelta(days=365)
LOT_TIMES = {"expires_at": "8760h", "matures_at": "720h"}
BUDGET = D(400)
LEVELS = {"silver": (1, D("1.5"), lambda c: c["spend"] >= 300),
          "gold": (2, D(2), lambda c: c["spend"] >= 1500 and c["purchases"] >= 8)}


def w2_spec(refund_asset: str) -> dict:
    """refund_asset PTS: refunds debit the LOT points (the kernel's path); GIFT: they debit 5% of
    the amount from the PREFUNDED gift balance, which keeps the running-state path open."""
    refund = {"type": "DEBIT", "asset": "PTS", "amount": "round(event.amount, 0)"} if refund_asset == "PTS" else \
        {"type": "DEBIT", "asset": "GIFT", "amount": "round(event.amount * 0.05, 2)"}
    return {
        "program": {"key": "w2club", "name": "W2 club"},
        "assets": [{"symbol": "PTS", "name": "Points", "inventory_mode": "LOT", "issuance_policy": "UNLIMITED", "scale": 0},
                   {"symbol": "GIFT", "name": "Gift", "inventory_mode": "SIMPLE", "issuance_policy": "PREFUNDED", "scale": 2}],
        "tiers": [{"key": "status", "name": "Status", "levels": [
            {"key": "silver", "rank": 1, "benefits": {"mult": 1.5},
             "qualification": {"mode": "ANY", "criteria": [{"counter": "spend", "operator": ">=", "threshold": 300}]}},
            {"key": "gold", "rank": 2, "benefits": {"mult": 2},
             "qualification": {"mode": "ALL", "criteria": [{"counter": "spend", "operator": ">=", "threshold": 1500},
                                                           {"counter": "purchases", "operator": ">=", "threshold": 8}]}}]}],
        "rules": [
            _rule(10, "welcome", 'event.type == "purchase" && !("welcomed" in participant.tags)',
                  [{"type": "TAG", "tag": "welcomed"}, _credit("GIFT", "5.00")]),
            _rule(20, "count", 'event.type == "purchase"',
                  [{"type": "COUNTER", "key": "purchases", "value": "1"},
                   {"type": "COUNTER", "key": "spend", "value": "event.amount"}]),
            _rule(30, "fifth", 'event.type == "purchase" && participant.counters.purchases == 5',
                  [_credit("PTS", "50", **LOT_TIMES)], budgets=[{"asset": "PTS", "limit": str(BUDGET)}]),
            _rule(40, "points", 'event.type == "purchase"',
                  [_credit("PTS", "round(event.amount * (has(participant.tiers.status) ? "
                                  "participant.tiers.status.benefits.mult : 1.0), 0)", **LOT_TIMES)]),
            _rule(50, "refund", 'event.type == "refund"',
                  [{"type": "COUNTER", "key": "spend", "value": "0 - event.amount"}, refund]),
            _rule(60, "gift_spend", 'event.type == "gift_spend"', [{"type": "DEBIT", "asset": "GIFT", "amount": "event.amount"}]),
        ]}


def gen_w2(seed: int, n: int, people: int = 30) -> list[dict]:
    r = random.Random(seed)
    start = datetime(2025, 1, 1, tzinfo=UTC)
    base = []
    for _ in range(n):
        kind = r.choices(["purchase", "refund", "gift_spend", "visit"], [65, 15, 12, 8])[0]
        data: dict = {"type": kind}
        if kind == "purchase":
            data["amount"] = r.choice([r.randrange(5, 200), r.randrange(500, 30000) / 100])
        elif kind == "refund":
            data["amount"] = r.choice([r.randrange(1, 100), r.randrange(100, 800), r.randrange(100, 5000) / 10])
        elif kind == "gift_spend":
            data["amount"] = r.randrange(50, 800) / 100
        base.append((f"m{r.randrange(people):02d}", start + timedelta(seconds=r.randrange(485 * 86400)), data))
    base.sort(key=lambda x: x[1])
    more = []
    for who, when, _ in r.sample([b for b in base if b[2]["type"] == "purchase"], n // 30):
        # refunds exactly at (and just before) a lot's maturity and expiry instants
        delta = r.choice([MATURES, EXPIRES, MATURES - timedelta(microseconds=1), EXPIRES - timedelta(microseconds=1)])
        more.append((who, when + delta, {"type": "refund", "amount": r.randrange(1, 60)}))
    for who, when, _ in r.sample(base, n // 100):  # the same participant and instant: arrival order decides
        more.append((who, when, {"type": "purchase", "amount": r.randrange(5, 50)}))
    return [{"program_id": "w2club", "idempotency_key": f"e{i:05d}", "external_id": who, "event_timestamp": iso(when),
             "event_data": data, "when": when} for i, (who, when, data) in enumerate(base + more)]


def fund(key: str, when: datetime, amount: str) -> dict:
    return {"operation": "fund", "program_id": "w2club", "idempotency_key": key, "external_id": None,
            "timestamp": iso(when), "params": {"asset": "GIFT", "amount": amount}, "when": when}


class Club:
    """The expected state of the W2 program, one event at a time (semantics.md 3, 5, 7, 9, 10)."""

    def __init__(self, refund_asset: str, lot_ids: dict):
        self.refund_asset, self.lot_ids = refund_asset, lot_ids  # lot ids only order lots of one instant (9.1)
        self.tags, self.tier, self.gift = defaultdict(set), {}, defaultdict(D)
        self.counters: dict = defaultdict(lambda: defaultdict(D))
        self.lots: dict = defaultdict(list)
        self.wallet = self.budget = self.breakage = D(0)
        self.status: dict = {}
        self.entries: Counter = Counter()
        self.timed: dict = defaultdict(D)  # (who, MATURITY|EXPIRATION, instant) -> amount

    def due(self, who: str, t: datetime) -> None:
        for lot in self.lots[who]:
            if lot["status"] == "DEFERRED" and lot["matures"] <= t:
                lot["status"] = "AVAILABLE"
                self.entries["MATURITY"] += 1
                self.timed[(who, "MATURITY", lot["matures"])] += lot["remaining"]
            if lot["status"] == "AVAILABLE" and lot["expires"] <= t:
                self.breakage += lot["remaining"]
                self.entries["EXPIRATION"] += 1
                self.timed[(who, "EXPIRATION", lot["expires"])] += lot["remaining"]
                lot["status"], lot["remaining"] = "EXPIRED", D(0)

    def maintain(self, t: datetime) -> None:
        for who in list(self.lots):
            self.due(who, t)

    def operation(self, op: dict) -> None:
        self.wallet += D(op["params"]["amount"])
        self.entries["FUND"] += 1
        self.status[op["idempotency_key"]] = ("COMPLETED", None)

    def event(self, ev: dict) -> None:
        who, t, e = ev["external_id"], ev["when"], ev["event_data"]
        self.due(who, t)
        tags, counters = set(self.tags[who]), defaultdict(D, self.counters[who])
        lots, gift, wallet, budget = copy.deepcopy(self.lots[who]), self.gift[who], self.wallet, self.budget
        entries: Counter = Counter()
        level, fail = self.tier.get(who), None

        def credit_points(amount: D) -> None:
            if amount:
                lots.append({"created": t, "amount": amount, "remaining": amount, "status": "DEFERRED",
                             "matures": t + MATURES, "expires": t + EXPIRES, "id": self.lot_ids.get((who, t, amount), "")})
                entries["CREDIT"] += 1

        def debit_points(amount: D) -> str | None:
            usable = [lot for lot in lots if lot["status"] == "AVAILABLE"]
            if sum(lot["remaining"] for lot in usable) < amount:
                return "insufficient_balance"
            for lot in sorted(usable, key=lambda x: (x["created"], x["id"])):
                take = min(amount, lot["remaining"])
                lot["remaining"] -= take
                amount -= take
                if lot["remaining"] == 0:
                    lot["status"] = "CONSUMED"
            entries["DEBIT"] += 1
            return None

        kind = e["type"]
        if kind == "purchase":
            if "welcomed" not in tags:
                tags.add("welcomed")
                if wallet < 5:
                    fail = "insufficient_wallet"
                else:
                    wallet, gift = wallet - 5, gift + 5
                    entries["CREDIT"] += 1
            if not fail:
                counters["purchases"] += 1
                counters["spend"] += dec(e["amount"])
                if counters["purchases"] == 5 and budget + 50 <= BUDGET:
                    budget += 50
                    credit_points(D(50))
                credit_points(cel_round(e["amount"] * float(LEVELS[level][1] if level else 1), 0))
        elif kind == "refund":
            counters["spend"] -= dec(e["amount"])
            if self.refund_asset == "PTS":
                amount = cel_round(e["amount"], 0)
                fail = debit_points(amount) if amount else None
            else:
                amount = cel_round(e["amount"] * 0.05, 2)
                if amount and gift < amount:
                    fail = "insufficient_balance"
                elif amount:
                    gift, wallet = gift - amount, wallet + amount
                    entries["DEBIT"] += 1
        elif kind == "gift_spend":
            amount = dec(e["amount"])
            if gift < amount:
                fail = "insufficient_balance"
            else:
                gift, wallet = gift - amount, wallet + amount
                entries["DEBIT"] += 1
        self.status[ev["idempotency_key"]] = ("FAILED", fail) if fail else ("COMPLETED", None)
        if fail:
            return  # semantics.md 5.5: no state change, no budget consumption
        self.tags[who], self.counters[who], self.lots[who], self.gift[who] = tags, counters, lots, gift
        self.wallet, self.budget = wallet, budget
        self.entries.update(entries)
        qualified = [name for name, (_, _, ok) in LEVELS.items() if ok(counters)]
        best = max(qualified, key=lambda name: LEVELS[name][0], default=None)
        if best and (level is None or LEVELS[best][0] > LEVELS[level][0]):  # upgrades only (10)
            self.tier[who] = best

    def run(self, events: list[dict], ops: list[dict]) -> "Club":
        stream = [(o["when"], 0, i, o) for i, o in enumerate(ops)] + [(e["when"], 1, i, e) for i, e in enumerate(events)]
        for _, is_event, _, row in sorted(stream, key=lambda x: x[:3]):
            self.event(row) if is_event else self.operation(row)
        return self

    def state(self) -> dict:
        balances = {}
        for who in set(self.lots) | set(self.gift):
            lots = self.lots[who]
            available = sum((x["remaining"] for x in lots if x["status"] == "AVAILABLE"), D(0))
            deferred = sum((x["remaining"] for x in lots if x["status"] == "DEFERRED"), D(0))
            if available or deferred:
                balances[(who, "PTS")] = (available, deferred)
            if self.gift[who]:
                balances[(who, "GIFT")] = (self.gift[who], D(0))
        return {
            "balances": balances,
            "lots": sorted((who, x["created"], x["amount"], x["remaining"], x["status"])
                           for who, lots in self.lots.items() for x in lots),
            "counters": {(w, k): v for w, c in self.counters.items() for k, v in c.items()},
            "tags": {(w, t) for w, ts in self.tags.items() for t in ts},
            "tiers": dict(self.tier), "status": dict(self.status), "wallet": self.wallet,
            "breakage": self.breakage, "budget": self.budget, "entries": dict(self.entries),
            "timed": {k: v for k, v in self.timed.items()},
        }


def observe(db: Path) -> dict:
    ext = dict(query(db, "SELECT id, external_id FROM participants"))
    timed: dict = defaultdict(D)
    for who, kind, at, amount in query(db, """
            SELECT p.entity_id, j.action_type, j.effective_at, p.amount FROM journal_entries j
            JOIN postings p ON p.journal_entry_id = j.id
            WHERE p.entity_type = 'PARTICIPANT' AND (j.action_type = 'MATURITY' AND p.amount > 0
                                                     OR j.action_type = 'EXPIRATION')"""):
        timed[(ext[who], kind, at)] += abs(D(amount))
    return {
        "balances": {(w, s): (D(a), D(d)) for w, s, a, d in query(db, """
            SELECT external_id, asset_symbol, available, deferred FROM balances
            WHERE entity_type = 'PARTICIPANT' AND (available <> 0 OR deferred <> 0)""")},
        "lots": sorted((ext[w], c, D(a), D(r), s) for w, c, a, r, s in query(db, """
            SELECT entity_id, created_at, amount, remaining, status FROM lots WHERE entity_type = 'PARTICIPANT'""")),
        "counters": {(w, k): D(v) for w, k, v in query(db, "SELECT external_id, key, number_value FROM participant_state "
                                                           "WHERE kind = 'COUNTER'")},
        "tags": set(query(db, "SELECT external_id, key FROM participant_state WHERE kind = 'TAG'")),
        "tiers": dict(query(db, "SELECT p.external_id, t.level FROM participant_tiers t "
                                "JOIN participants p ON p.id = t.participant_id")),
        "status": outcomes(db),
        "wallet": D(query(db, "SELECT coalesce(sum(available), 0) FROM balances WHERE entity_type = 'PROGRAM_WALLET'")[0][0]),
        "breakage": D(query(db, "SELECT coalesce(sum(amount), 0) FROM postings WHERE entity_type = 'SYSTEM_BREAKAGE'")[0][0]),
        "budget": D(query(db, "SELECT coalesce(sum(consumed), 0) FROM budget_consumption")[0][0]),
        "entries": entry_counts(db),
        "timed": dict(timed),
    }


def lot_ids(db: Path) -> dict:
    """(holder, created_at, amount) -> lot id: the tie-break of FIFO among lots of one instant."""
    return {(w, c, D(a)): i for w, c, a, i in query(db, """
        SELECT p.external_id, l.created_at, l.amount, l.id FROM lots l JOIN participants p ON p.id = l.entity_id""")}


def assert_state(got: dict, want: dict) -> None:
    for key in want:
        assert got[key] == want[key], key


def test_w2_stateful_rules_match_an_independent_model(tmp_path):
    events = gen_w2(seed=21, n=900)
    ops = [fund("f0", datetime(2025, 1, 1, tzinfo=UTC), "60.00"), fund("f1", datetime(2025, 4, 1, tzinfo=UTC), "30.00"),
           fund("f2", datetime(2025, 9, 1, tzinfo=UTC), "40.00")]
    programs = write_program(tmp_path / "programs" / "w2club.yaml", w2_spec("PTS")).parent
    db = tmp_path / "w.duckdb"
    run(programs, db, write_events(tmp_path / "events.parquet", events), write_ops(tmp_path / "ops.parquet", ops))
    club = Club("PTS", lot_ids(db)).run(events, ops)
    want = club.state()
    assert_state(observe(db), want)  # before maintenance: changes due after a participant's last event wait
    maintain_and_verify(db, datetime(2027, 6, 1, tzinfo=UTC))
    club.maintain(datetime(2027, 6, 1, tzinfo=UTC))
    assert_state(observe(db), club.state())
    # the scenario reaches what it is about
    codes = Counter(c for _, c in want["status"].values())
    assert codes["insufficient_wallet"] > 5 and codes["insufficient_balance"] > 20
    assert want["budget"] == BUDGET and set(want["tiers"].values()) == {"silver", "gold"}
    assert query(db, "SELECT count(*) FROM rule_evaluations WHERE outcome = 'BUDGET_EXCEEDED'")[0][0] > 0
    assert want["entries"]["EXPIRATION"] > 20 and want["entries"]["MATURITY"] > 100


def test_w3_batches_chunks_and_reruns_equal_one_batch_and_the_model(tmp_path):
    """The running-state path (one batch of 700+ events) and the kernel (small batches and
    chunks) give the model's state; the cuts give byte-identical entries; a re-run is a no-op."""
    events = gen_w2(seed=31, n=700)
    ops = [fund("f0", datetime(2024, 12, 31, tzinfo=UTC), "5000.00")]
    programs = write_program(tmp_path / "programs" / "w2club.yaml", w2_spec("GIFT")).parent
    ops_file = write_ops(tmp_path / "ops.parquet", ops)
    ledgers = {name: tmp_path / f"{name}.duckdb" for name in ("one", "chunked", "batches")}
    for name in ("one", "chunked", "batches"):
        run(programs, ledgers[name], None, ops_file)  # the wallet is funded in a batch of its own
    whole = write_events(tmp_path / "all.parquet", events)
    report = run(programs, ledgers["one"], whole)
    assert report["running_rounds"] > 0  # the running-state path decided this batch
    run(programs, ledgers["chunked"], whole, None, "--chunk-rows", "97")
    ordered = sorted(events, key=lambda e: e["when"])
    cuts = [datetime(2025, 3, 1, tzinfo=UTC), datetime(2025, 7, 1, tzinfo=UTC), datetime(2026, 1, 1, tzinfo=UTC),
            ordered[-1]["when"]]
    files, lo = [], datetime.min.replace(tzinfo=UTC)
    for i, hi in enumerate(cuts):
        part = [e for e in ordered if lo <= e["when"] < hi or (hi is cuts[-1] and e["when"] == hi)]
        files.append(write_events(tmp_path / f"batch{i}.parquet", part))
        run(programs, ledgers["batches"], files[-1])
        lo = hi
    rerun = run(programs, ledgers["batches"], files[1])
    assert rerun["already_committed"] and rerun["completed"] == rerun["failed"] == 0

    def journal(db: Path) -> list[tuple]:
        return query(db, "SELECT seq, id, action_type, effective_at, entry_hash FROM journal_entries ORDER BY seq")

    assert journal(ledgers["chunked"]) == journal(ledgers["one"])
    assert [r[:4] for r in journal(ledgers["batches"])] == [r[:4] for r in journal(ledgers["one"])]
    club = Club("GIFT", lot_ids(ledgers["one"])).run(events, ops)
    for db in ledgers.values():
        assert_state(observe(db), club.state())
    club.maintain(datetime(2027, 6, 1, tzinfo=UTC))
    for db in (ledgers["one"], ledgers["batches"]):  # the chunked ledger's entries are the one batch's, byte for byte
        maintain_and_verify(db, datetime(2027, 6, 1, tzinfo=UTC))
        assert_state(observe(db), club.state())


# ---------------------------------------------------------------------------------------------
# A lot's maturity or expiry is one fact, whoever writes it (semantics.md 3, 4; docs/decisions.md
# "Automations": "Entry ids and amounts do not depend on how maintenance runs are spaced")
# ---------------------------------------------------------------------------------------------

def test_time_driven_entry_ids_do_not_depend_on_which_run_writes_them(tmp_path):
    """Two lots of one holder mature and expire at four instants. Written by one maintenance
    run, by two spaced ones, or in-stream by the holder's next event, each lot's MATURITY and
    EXPIRATION entry has the same id. They were numbered in the order each pass wrote them, so
    the second lot's maturity was 'entry #1' of one pass and 'entry #0' of another."""
    spec = {"program": {"key": "lots", "name": "Lots"},
            "assets": [{"symbol": "PTS", "name": "Points", "inventory_mode": "LOT", "issuance_policy": "UNLIMITED", "scale": 0}],
            "rules": [_rule(10, "earn", 'event.type == "earn"', [_credit("PTS", "event.n", matures_at="720h", expires_at="1440h")])]}
    programs = write_program(tmp_path / "programs" / "lots.yaml", spec).parent
    day = lambda d: datetime(2025, 1, 1, tzinfo=UTC) + timedelta(days=d)
    earn = [{"program_id": "lots", "idempotency_key": k, "external_id": "u", "event_timestamp": iso(day(d)),
             "event_data": {"type": "earn", "n": n}, "when": day(d)} for k, d, n in (("a", 0, 10), ("b", 4, 20))]
    visit = [{"program_id": "lots", "idempotency_key": "v", "external_id": "u", "event_timestamp": iso(day(90)),
              "event_data": {"type": "visit"}, "when": day(90)}]

    def timed(name: str, as_ofs: list[datetime], events: list[dict]) -> list[tuple]:
        db = tmp_path / f"{name}.duckdb"
        run(programs, db, write_events(tmp_path / f"{name}.parquet", events))
        for as_of in as_ofs:
            maintain_and_verify(db, as_of)
        return query(db, "SELECT id, action_type, effective_at, action_index FROM journal_entries "
                         "WHERE action_type IN ('MATURITY', 'EXPIRATION') ORDER BY effective_at")

    once = timed("once", [day(90)], earn)
    assert [(t, at) for _, t, at, _ in once] == [("MATURITY", day(30)), ("MATURITY", day(34)),
                                                 ("EXPIRATION", day(60)), ("EXPIRATION", day(64))]
    assert timed("spaced", [day(31), day(61), day(90)], earn) == once
    assert timed("in_stream", [], earn + visit) == once
