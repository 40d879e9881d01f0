"""Hypothesis strategies for the engine-vs-oracle differential test: random programs within the
oracle's scope (tests/oracle/README.md, "Covered") and random multi-batch event streams.

Everything generated here is plain data: program specs (dicts written as YAML) and event rows
(`Row`, which renders itself both as the oracle's input and as a Parquet row for the engine).

Design notes
- Two programs share the assets PTS and CASH (identically defined, so they are one asset each):
  `shop` (ACTIVE, usually CREATE) and, in some examples, `club` (random status and
  `on_unknown_participant`). Rows naming `ghost` exercise `unknown_program`.
- Event payloads are JSON object text, so every number is a double on both sides
  (decisions.md, "JSON payloads follow CEL's JSON mapping"); the oracle gets the same numbers
  as Python floats. Null fields are generated too (null = absent).
- Conditions and value fields mix `event` fields that are present, missing or null with `now`
  and state (tags, counters, attributes, balances, program state), so state written by earlier
  events, rules and actions feeds back into later evaluations.
- Timestamps come from a small grid (ties are common) spread over two days, which crosses
  INTERVAL budget periods and counter `reset_after` periods; later batches may hold events
  timestamped before earlier batches (late events).

`Flags` switches constructs off, so that a construct the engine is known to get wrong can be kept
out of the main property test while an xfail regression test pins the bug (see the test module).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from decimal import Decimal

from hypothesis import strategies as st

PROGRAM = "shop"
OTHER = "club"
GHOST = "ghost"  # never defined: rows naming it are rejected as unknown_program
USERS = ["u1", "u2", "u3", "u4"]
FRIENDS = USERS + ["u5", "u6"]  # u5, u6 only ever appear as targets / recipients
TYPES = ["purchase", "refund", "visit"]
COUNTER_KEYS = ["visits", "spend"]
ATTR_KEYS = ["level", "last"]
TAGS = ["vip", "promo"]

# Two days of half-hour slots with a few favourites, so ties are frequent.
_DAY1 = [f"2025-03-01T{h:02d}:{m:02d}:00Z" for h in (0, 8, 9, 12, 23) for m in (0, 30)]
_DAY2 = [f"2025-03-02T{h:02d}:{m:02d}:00Z" for h in (0, 1, 9, 10) for m in (0, 30)]
TIMES = _DAY1 + _DAY2 + ["2025-03-01T09:00:00.250Z", "2025-03-03T00:00:00Z"]
WINDOW_EDGES = ["2025-03-01T00:00:00Z", "2025-03-01T09:00:00Z", "2025-03-01T12:30:00Z",
                "2025-03-02T00:00:00Z", "2025-03-02T10:00:00Z", "2025-03-04T00:00:00Z"]
INTERVALS = ["1h", "90m", "24h", "12h30m"]
# CRON budget periods that the two-day TIMES grid crosses: hourly, every 30 minutes from 9 to 12,
# daily, Sundays-or-the-2nd (both day fields restricted: either matches), weekdays at 9.
CRONS = ["0 * * * *", "*/30 9-12 * * *", "@daily", "0 0 2 * SUN", "0 9 * * MON-FRI"]
RESETS = ["1h", "2h", "24h", "30m"]


def parse_ts(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(timezone.utc)


@dataclass(frozen=True)
class Flags:
    """Constructs the main property test may exclude. All default to on; each exclusion must be
    justified by an xfail(strict=True) regression test of the same construct."""

    program_state_in_conditions: bool = True
    recipients: bool = True
    targets: bool = True
    # COUNTER `reset_after` (a reset rolled back with a failed event was an engine bug, now fixed).
    reset_after: bool = True
    budgets: bool = True
    second_program: bool = True
    # A static amount that can never be valid for its asset ("-3", "0.125" at scale 0, "60" over a
    # max_transaction_amount of 50). Off in the main test: see
    # test_bug_static_invalid_amount_is_a_load_error in test_engine_vs_oracle.py.
    invalid_static_amounts: bool = True
    # An inactive (SUSPENDED/ARCHIVED) program with on_unknown_participant: REJECT, sent events of
    # unknown participants (was an engine bug, now fixed: on in the main test).
    inactive_reject_program: bool = True
    # A key repeated more than once (so a conflicting row can be followed by another repeat of the
    # same key in a later batch). Off in the main test: see
    # test_bug_repeat_after_conflict_in_a_later_batch_is_a_conflict.
    repeats_after_a_repeat: bool = True
    # An amount that parses as CEL but references no variable and calls no function
    # ("1.0 / 0.0", "(2 + 3)"): a literal string by the value-field rule, so a load error.
    # Off in the main test: see test_bug_operator_only_amount_is_accepted_as_an_expression.
    operator_only_amounts: bool = True
    # A string built with `+` as a target external_id. Off in the main test because the ORACLE
    # gets it wrong (cel-python returns a bare str for string concatenation, which the oracle's
    # target check does not accept): see test_oracle_bug_string_concatenation_target.
    string_concat_values: bool = True
    # A literal target external_id (`u2`: text that is not an expression by the value-field rule).
    # Off in the main test: see test_bug_literal_target_external_id_is_evaluated_as_cel.
    literal_targets: bool = True
    # INTERVAL budgets in multi-batch streams (a late event in a later batch consuming an earlier
    # period; was an engine bug, now fixed). When off, scenarios with an INTERVAL budget are a
    # single batch.
    late_interval_budgets: bool = True


# ---------------------------------------------------------------------------------------------
# Assets


@st.composite
def assets(draw) -> list[dict]:
    out = []
    for symbol, name in (("PTS", "Points"), ("CASH", "Cash")):
        a = {"symbol": symbol, "name": name, "inventory_mode": "SIMPLE", "issuance_policy": "UNLIMITED",
             "scale": draw(st.integers(0, 2))}
        if draw(st.integers(0, 2)) == 0:
            a["max_transaction_amount"] = draw(st.sampled_from(["5", "50", "12.5", "100"]))
        out.append(a)
    return out


# ---------------------------------------------------------------------------------------------
# CEL text


num_lit = st.sampled_from(["0", "1", "2", "3", "5", "10", "2.5", "0.5", "10.0", "-1", "49.99", "100"])
event_num = st.sampled_from(["event.amount", "event.qty", "event.missing", "event.amount"])


@st.composite
def num_expr(draw, flags: Flags, depth: int = 0) -> str:
    """A numeric CEL expression over event fields, counters and balances."""
    if depth >= 2 or draw(st.integers(0, 2)) == 0:
        return draw(st.one_of(
            num_lit, event_num,
            st.sampled_from([f'get(participant.counters, "{k}", 0.0)' for k in COUNTER_KEYS]),
            st.just("participant.balances.PTS.available"), st.just("participant.balances.CASH.available"),
            *([st.just('get(program.counters, "visits", 0)')] if flags.program_state_in_conditions else []),
        ))
    kind = draw(st.sampled_from(["arith", "round", "ternary", "minmax", "abs", "floor"]))
    a = draw(num_expr(flags, depth + 1))
    if kind == "arith":
        return f"({a} {draw(st.sampled_from(['+', '-', '*']))} {draw(num_expr(flags, depth + 1))})"
    if kind == "round":
        return f"round({a}, {draw(st.sampled_from(['0', '1', '2']))})"
    if kind == "ternary":
        return f"({draw(condition(flags, depth + 1))} ? {a} : {draw(num_expr(flags, depth + 1))})"
    if kind == "minmax":
        return f"{draw(st.sampled_from(['min', 'max']))}({a}, {draw(num_expr(flags, depth + 1))})"
    if kind == "abs":
        return f"abs({a})"
    return f"floor({a})"


@st.composite
def condition(draw, flags: Flags, depth: int = 0) -> str:
    if depth >= 2 or draw(st.integers(0, 2)) > 0:
        leaves = [
            st.sampled_from([f'event.type == "{t}"' for t in TYPES] + ["true", 'event.type in ["purchase", "refund"]']),
            st.builds(lambda a, op, b: f"{a} {op} {b}", event_num, st.sampled_from([">", ">=", "<", "=="]), num_lit),
            st.sampled_from(["has(event.sku)", "has(event.amount)", "has(event.friend)", "event.sku == null",
                             'event.sku.startsWith("a")', "size(event.sku) > 1"]),
            st.builds(lambda op, t: f'now {op} timestamp("{t}")', st.sampled_from(["<", ">="]),
                      st.sampled_from(WINDOW_EDGES)),
            st.sampled_from(["now.getHours() >= 9", "now.getDayOfMonth() == 1"]),
            st.builds(lambda t: f'"{t}" in participant.tags', st.sampled_from(TAGS)),
            st.builds(lambda k, op, n: f'get(participant.counters, "{k}", 0.0) {op} {n}',
                      st.sampled_from(COUNTER_KEYS), st.sampled_from([">=", "<", "=="]),
                      st.sampled_from(["1", "2", "3", "10"])),
            st.sampled_from(["has(participant.attributes.level)", 'participant.attributes.level == "gold"',
                             'get(participant.attributes, "last", "") == "purchase"',
                             'get(participant.attributes, "level", "none") != "none"']),
            st.builds(lambda s, op, n: f"participant.balances.{s}.available {op} {n}",
                      st.sampled_from(["PTS", "CASH"]), st.sampled_from([">=", "<", ">"]),
                      st.sampled_from(["0", "1", "5", "10", "20"])),
            st.builds(lambda a, op, b: f"{a} {op} {b}", num_expr(flags, depth + 1),
                      st.sampled_from([">", ">=", "<", "!="]), num_expr(flags, depth + 1)),
        ]
        if flags.program_state_in_conditions:
            leaves.append(st.sampled_from([
                '"promo" in program.tags', 'get(program.counters, "visits", 0.0) < 3',
                'get(program.counters, "spend", 0.0) >= 5', 'has(program.attributes.last)']))
        return draw(st.one_of(*leaves))
    kind = draw(st.sampled_from(["and", "or", "not"]))
    if kind == "not":
        return f"!({draw(condition(flags, depth + 1))})"
    op = "&&" if kind == "and" else "||"
    return f"({draw(condition(flags, depth + 1))} {op} {draw(condition(flags, depth + 1))})"


# ---------------------------------------------------------------------------------------------
# Actions and rules

_STATIC_AMOUNTS = ["0", "1", "2", "5", "10", "25", "0.5", "1.25", "0.125", "-3", "60", "150"]
_CEL_AMOUNTS = ["event.amount", "round(event.amount, 0)", "round(event.amount * 1.5, 0)", "round(event.amount, 2)",
                "event.amount * 2", "event.qty", "round(event.amount / 3.0, 1)", "event.amount * 0.1",
                "participant.balances.PTS.available", "get(participant.counters, \"visits\", 0.0) + 1",
                "event.missing", "double(size(participant.tags))", "int(event.qty)", "event.type",
                "event.amount / 0.0", "-event.amount"]
_OPERATOR_ONLY_AMOUNTS = ["1.0 / 0.0", "(2 + 3)"]


@st.composite
def amount(draw, flags: Flags) -> str:
    k = draw(st.integers(0, 5))
    if k <= 1:
        return draw(st.sampled_from(_STATIC_AMOUNTS))
    if k <= 4:
        return draw(st.sampled_from(_CEL_AMOUNTS + (_OPERATOR_ONLY_AMOUNTS if flags.operator_only_amounts else [])))
    a = draw(num_expr(flags))
    if not any(ref in a for ref in ("event.", "participant.", "program.", "get(", "round(", "min(", "max(",
                                    "abs(", "floor(")):
        # No variable and no call would make it a literal string, a load error for an amount
        # (decisions.md, value fields): keep it an expression.
        a = f"double({a})"
    return a


@st.composite
def target(draw, flags: Flags, state_action: bool) -> dict | None:
    if not flags.targets or draw(st.integers(0, 3)) > 0:
        return None
    choices = ["participant"] + (["program", "program"] if state_action else [])
    if draw(st.sampled_from(choices)) == "program":
        return {"type": "PROGRAM"}
    ext = draw(st.sampled_from(["event.friend", "participant.external_id", "event.qty"]
                               + (["u2", "u5"] if flags.literal_targets else [])
                               + (['participant.external_id + "-x"'] if flags.string_concat_values else [])))
    return {"type": "PARTICIPANT", "external_id": ext}


@st.composite
def action(draw, flags: Flags) -> dict:
    typ = draw(st.sampled_from(["CREDIT", "CREDIT", "CREDIT", "DEBIT", "DEBIT", "TAG", "UNTAG", "COUNTER",
                                "COUNTER", "SET_ATTRIBUTE"]))
    a: dict = {"type": typ}
    if typ in ("CREDIT", "DEBIT"):
        a["asset"] = draw(st.sampled_from(["PTS", "PTS", "CASH"]))
        a["amount"] = draw(amount(flags))
        if typ == "DEBIT" and draw(st.integers(0, 2)) == 0:
            a["allow_negative"] = True
    elif typ in ("TAG", "UNTAG"):
        a["tag"] = draw(st.sampled_from(["vip", "VIP", "promo", "Promo", "event.type", "event.sku", "5",
                                         "event.amount"]))
    elif typ == "COUNTER":
        a["key"] = draw(st.sampled_from(COUNTER_KEYS))
        a["value"] = draw(st.sampled_from(["1", "-1", "0.5", "event.amount", "event.qty", "round(event.amount, 1)",
                                           "2.25", "event.missing"]))
        if flags.reset_after and draw(st.integers(0, 2)) == 0:
            a["reset_after"] = draw(st.sampled_from(RESETS))
    else:
        a["key"] = draw(st.sampled_from(ATTR_KEYS))
        a["value"] = draw(st.sampled_from(["gold", "silver", "event.type", "event.amount", "now", "10.0", "49.99",
                                           "event.amount > 5.0", "event.tags", "participant.external_id",
                                           "event.missing"]))
    t = draw(target(flags, state_action=typ not in ("CREDIT", "DEBIT")))
    if t is not None:
        a["target"] = t
    return a


@st.composite
def rules(draw, flags: Flags, min_size: int = 1, max_size: int = 6) -> list[dict]:
    n = draw(st.integers(min_size, max_size))
    out = []
    for i in range(n):
        r: dict = {"name": f"Rule {i} {draw(st.sampled_from(['Bonus', 'base pts', 'X--y']))}"}
        if draw(st.integers(0, 3)) > 0:
            r["key"] = f"r{i}"  # else the default: a slug of the name (names are unique by `i`)
        r["condition"] = draw(condition(flags))
        r["actions"] = draw(st.lists(action(flags), min_size=1, max_size=3))
        if draw(st.booleans()):
            r["order"] = draw(st.integers(1, 8)) * 10
        if draw(st.integers(0, 3)) == 0:
            r["stop_after_match"] = True
        if draw(st.integers(0, 6)) == 0:
            r["status"] = draw(st.sampled_from(["SUSPENDED", "ARCHIVED"]))
        if draw(st.integers(0, 4)) == 0:
            lo, hi = sorted(draw(st.lists(st.sampled_from(WINDOW_EDGES), min_size=2, max_size=2, unique=True)))
            if draw(st.booleans()):
                r["active_from"] = lo
            if draw(st.booleans()):
                r["active_to"] = hi
        if flags.budgets and draw(st.integers(0, 3)) == 0:
            budgets = []
            for _ in range(draw(st.integers(1, 2))):
                b = {"asset": draw(st.sampled_from(["PTS", "CASH"])),
                     # Not "0": the engine refuses a limit that is not positive at load time
                     # (contract silent; reported, see README.md).
                     "limit": draw(st.sampled_from(["5", "10", "20", "12.5", "100"]))}
                kind = draw(st.sampled_from(["lifetime", "INTERVAL", "CRON"]))
                if kind == "INTERVAL":
                    b["schedule_type"] = "INTERVAL"
                    b["interval"] = draw(st.sampled_from(INTERVALS))
                elif kind == "CRON":
                    b["schedule_type"] = "CRON"
                    b["cron_expression"] = draw(st.sampled_from(CRONS))
                budgets.append(b)
            r["budgets"] = budgets
        out.append(r)
    _make_orders_valid(out)
    return out


def _make_orders_valid(rs: list[dict]) -> None:
    """Active rules need distinct orders (a load error otherwise); default orders are the highest
    order so far + 10. Move clashing explicit orders, or give a clashing default an explicit one."""
    while True:
        seen, highest, clash = set(), 0, None
        for i, r in enumerate(rs):
            order = r.get("order", highest + 10)
            highest = max(highest, order)
            if r.get("status", "ACTIVE") == "ACTIVE":
                if order in seen:
                    clash = i
                    break
                seen.add(order)
        if clash is None:
            return
        rs[clash]["order"] = highest + 1 + clash


@dataclass
class Scenario:
    programs: list[dict]  # program file specs
    batches: list[list["Row"]]
    flags: Flags = field(default_factory=Flags)

    @property
    def rows(self) -> list["Row"]:
        return [r for b in self.batches for r in b]


@st.composite
def programs(draw, flags: Flags) -> list[dict]:
    shared = draw(assets())
    main = {"program": {"key": PROGRAM, "name": "Shop",
                        "on_unknown_participant": draw(st.sampled_from(["CREATE"] * 4 + ["REJECT"]))},
            "assets": shared, "rules": draw(rules(flags))}
    out = [main]
    if flags.second_program and draw(st.integers(0, 2)) == 0:
        status = draw(st.sampled_from(["ACTIVE", "ACTIVE", "SUSPENDED", "ARCHIVED"]))
        policies = ["CREATE", "REJECT"] if status == "ACTIVE" or flags.inactive_reject_program else ["CREATE"]
        out.append({"program": {"key": OTHER, "name": "Club",
                                "on_unknown_participant": draw(st.sampled_from(policies)),
                                "status": status},
                    "assets": shared, "rules": draw(rules(flags, max_size=3))})
    if not flags.invalid_static_amounts:
        for spec in out:
            _valid_static_amounts(spec)
    return out


_STATIC = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)$")


def static_amount_is_valid(text: str, asset: dict) -> bool:
    """Would a static amount pass the checks of semantics.md 7 for this asset? (0 is a no-op.)"""
    d = Decimal(text)
    if d == 0:
        return True
    scale_ok = -d.normalize().as_tuple().exponent <= asset["scale"]
    limit = asset.get("max_transaction_amount")
    return d > 0 and scale_ok and (limit is None or d <= Decimal(limit))


def _valid_static_amounts(spec: dict) -> None:
    by_symbol = {a["symbol"]: a for a in spec["assets"]}
    for rule in spec["rules"]:
        for a in rule["actions"]:
            if a["type"] in ("CREDIT", "DEBIT") and _STATIC.match(a["amount"]):
                if not static_amount_is_valid(a["amount"], by_symbol[a["asset"]]):
                    a["amount"] = "1"


# ---------------------------------------------------------------------------------------------
# Events


@dataclass(frozen=True)
class Row:
    program_id: str
    idempotency_key: str
    external_id: str
    event_timestamp: str
    event_json: str  # JSON object text, exactly as written to Parquet
    recipient_external_id: str | None = None

    def for_oracle(self) -> dict:
        row = {"program_id": self.program_id, "idempotency_key": self.idempotency_key,
               "external_id": self.external_id, "event_timestamp": parse_ts(self.event_timestamp),
               "event_data": _as_doubles(json.loads(self.event_json))}
        if self.recipient_external_id is not None:
            row["recipient_external_id"] = self.recipient_external_id
        return row

    def for_parquet(self) -> dict:
        return {"program_id": self.program_id, "idempotency_key": self.idempotency_key,
                "external_id": self.external_id, "event_timestamp": self.event_timestamp,
                "event_data": self.event_json, "recipient_external_id": self.recipient_external_id}


def _as_doubles(value):
    """CEL's JSON mapping: every JSON number is a double (decisions.md)."""
    if isinstance(value, dict):
        return {k: _as_doubles(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_as_doubles(v) for v in value]
    if isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


_amounts = st.sampled_from([None, 0.0, 1.0, 2.5, 3.0, 10.0, 12.0, 49.99, 0.1, 1.005, 2.675, -4.0, 100.0, 7.5, 1e-7])


@st.composite
def payload(draw) -> dict:
    p: dict = {}
    if draw(st.integers(0, 9)) > 0:
        p["type"] = draw(st.sampled_from(TYPES))
    for name, strat in (
        ("amount", _amounts),
        ("qty", st.sampled_from([None, 0.0, 1.0, 2.0, 3.0, 12.0, 2.5])),
        ("sku", st.sampled_from([None, "ab-1", "x", "", "ABC"])),
        ("friend", st.sampled_from([None, *FRIENDS])),
        ("tags", st.lists(st.sampled_from(["a", "b"]), max_size=2)),
    ):
        if draw(st.booleans()):
            p[name] = draw(strat)
    return p


def _json(p: dict, style: int) -> str:
    if style == 0:
        return json.dumps(p)
    if style == 1:  # same payload, different text: key order and whitespace are not part of it
        return json.dumps(dict(reversed(list(p.items()))), indent=1)
    return json.dumps(p, separators=(",", ":"), sort_keys=True)


@st.composite
def streams(draw, flags: Flags, has_other: bool, min_size: int = 5, max_size: int = 40,
            max_batches: int = 3) -> list[list[Row]]:
    n = draw(st.integers(min_size, max_size))
    rows: list[Row] = []
    repeated: set[str] = set()
    for i in range(n):
        fresh = [r for r in rows if flags.repeats_after_a_repeat or r.idempotency_key not in repeated]
        if fresh and draw(st.integers(0, 7)) == 0:
            prev = draw(st.sampled_from(fresh))
            repeated.add(prev.idempotency_key)
            kind = draw(st.sampled_from(["same", "reformatted", "conflict_data", "conflict_time", "conflict_who"]))
            if kind == "same":
                rows.append(prev)
            elif kind == "reformatted":
                rows.append(Row(prev.program_id, prev.idempotency_key, prev.external_id, prev.event_timestamp,
                                _json(json.loads(prev.event_json), draw(st.integers(1, 2))),
                                prev.recipient_external_id))
            elif kind == "conflict_data":
                rows.append(Row(prev.program_id, prev.idempotency_key, prev.external_id, prev.event_timestamp,
                                json.dumps(draw(payload())), prev.recipient_external_id))
            elif kind == "conflict_time":
                rows.append(Row(prev.program_id, prev.idempotency_key, prev.external_id,
                                draw(st.sampled_from(TIMES)), prev.event_json, prev.recipient_external_id))
            else:
                rows.append(Row(prev.program_id, prev.idempotency_key, draw(st.sampled_from(USERS)),
                                prev.event_timestamp, prev.event_json, prev.recipient_external_id))
            continue
        prog = PROGRAM
        k = draw(st.integers(0, 19))
        if k == 0:
            prog = GHOST
        elif has_other and k <= 5:
            prog = OTHER
        recipient = None
        if flags.recipients and draw(st.integers(0, 6)) == 0:
            recipient = draw(st.sampled_from(FRIENDS))
        rows.append(Row(prog, f"k{i}", draw(st.sampled_from(USERS)), draw(st.sampled_from(TIMES)),
                        _json(draw(payload()), 0), recipient))
    # Cut into 1-3 batches (arrival order kept; timestamps are random, so later batches hold
    # late events).
    cuts = sorted(set(draw(st.lists(st.integers(1, max(1, n - 1)), max_size=max_batches - 1)))) if n > 1 else []
    bounds = [0, *cuts, n]
    return [rows[a:b] for a, b in zip(bounds, bounds[1:]) if b > a]


@st.composite
def scenarios(draw, flags: Flags = Flags()) -> Scenario:
    progs = draw(programs(flags))
    interval = any(b.get("schedule_type") in ("INTERVAL", "CRON")
                   for p in progs for r in p["rules"] for b in r.get("budgets", []))
    one_batch = interval and not flags.late_interval_budgets
    batches = draw(streams(flags, has_other=len(progs) > 1, max_batches=1 if one_batch else 3))
    return Scenario(progs, batches, flags)
