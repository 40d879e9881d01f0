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
- Weighted so that most cases write journal entries (about 70%; `python -m
  tests.differential.hit_rate` measures it, with how often each error, non-match and conflict
  occurs). An event fails as a whole when any action of a rule it matches fails, so two rules in
  three are *clean*: a condition most events meet (LIKELY_CONDITIONS) and only safe action values
  (`value`); the others take any condition (usually) and any value, odd ones (failing, zero,
  wrong type) one in three, and carry the errors and non-matches. Payloads usually hold `amount`
  and `qty`; CREDIT is the most common action; a REJECT shop comes with a CREATE club (alone it
  could only fail). Before this, about one case in ten wrote an entry.
- The simplest draw (0, False, the first element) is the ordinary, productive choice; rare
  branches are at the other end. Hypothesis often generates simplest-first and zero-heavy choice
  sequences (and shrinks towards them), so a rare branch on 0 (a SUSPENDED rule, every row for
  `ghost`, a payload without `type`) was far from rare.

`Flags` switches constructs off, so that a construct the engine is known to get wrong can be kept
out of the main property test while an xfail regression test pins the bug (see the test module).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from decimal import ROUND_DOWN, Decimal

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


def mostly(common: list, odd: list, one_in: int = 8) -> st.SearchStrategy:
    """One of `common`, or about one draw in `one_in` one of `odd`."""
    if not odd:
        return st.sampled_from(common)
    return st.integers(0, one_in - 1).flatmap(lambda k: st.sampled_from(odd if k == one_in - 1 else common))


def value(clean: bool, safe: list, risky: list = (), odd: list = (), odd_one_in: int = 3) -> st.SearchStrategy:
    """A value of an action. `safe`: valid for every payload and asset; `risky`: valid for most
    (a field that may be missing, a scale it may exceed); `odd`: usually fails or does nothing.
    A clean rule's actions take safe values; the other rules' take any, odd about one in
    `odd_one_in`. An event fails as a whole when any action of a rule it matches fails: the
    rules that usually match (clean ones) must usually work for most cases to write entries."""
    if clean:
        return st.sampled_from(list(safe))
    return mostly([*safe, *risky], list(odd), odd_one_in)


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
    # PARTICIPANT targets in a scenario with a REJECT program: a participant created as a target
    # and then named by a later event of the REJECT program in the same batch, or named by a REJECT
    # program's target before the event that creates it (were engine bugs, now fixed: on in the
    # main test; test_regression_participant_created_by_a_target_is_known_to_a_reject_program,
    # test_regression_a_reject_programs_target_does_not_find_a_participant_created_later_in_the_batch).
    targets_beside_reject: bool = True
    # A COUNTER `reset_after` in a program whose CREDIT/DEBIT actions have PARTICIPANT targets (a
    # due reset of the target). Off in the main test: see
    # test_bug_a_credit_target_does_not_get_its_due_counter_reset.
    resets_with_value_targets: bool = True
    # Two budgets of one rule on the same asset. Off in the main test: see
    # test_bug_two_budgets_on_one_asset_count_a_credit_twice_on_the_row_path.
    budgets_sharing_an_asset: bool = True
    # A third asset, GIFT, PREFUNDED: credited from its program's wallet, which a first run funds
    # (a `fund` operation, `Scenario.funds`) with little enough that some credits fail
    # insufficient_wallet, mid-batch, while later smaller ones (or ones after a DEBIT paid value
    # back) still fit. On in the running path's test (test_running_vs_oracle.py).
    prefunded: bool = False


# ---------------------------------------------------------------------------------------------
# Assets


#: The PREFUNDED asset of Flags.prefunded, and what a scenario's first run may fund its wallet with.
GIFT = "GIFT"
FUNDS = ["20", "50", "10", "100", "2.5"]


@st.composite
def assets(draw, prefunded: bool = False) -> list[dict]:
    out = []
    if prefunded:
        out.append({"symbol": GIFT, "name": "Gift", "inventory_mode": "SIMPLE", "issuance_policy": "PREFUNDED",
                    "scale": draw(st.sampled_from([2, 2, 0]))})
    for symbol, name in (("PTS", "Points"), ("CASH", "Cash")):
        a = {"symbol": symbol, "name": name, "inventory_mode": "SIMPLE", "issuance_policy": "UNLIMITED",
             "scale": draw(st.sampled_from([2, 0, 1]))}  # unrounded amounts fail at scale 0 or 1
        if draw(st.integers(0, 2)) == 2:
            a["max_transaction_amount"] = draw(st.sampled_from(["100", "50", "12.5", "5"]))
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


#: Conditions most events meet (or that guard the field they read): a clean rule's condition (see
#: `rules`); the other rules take `condition`'s general leaves and combinations (errors on
#: missing fields, rare matches).
LIKELY_CONDITIONS = ["true", 'event.type == "purchase"', 'event.type in ["purchase", "refund"]',
                     'event.type != "visit"', "has(event.amount)", "has(event.amount) && event.amount > 0.0",
                     'now >= timestamp("2025-03-01T00:00:00Z")', '!("vip" in participant.tags)',
                     "participant.balances.PTS.available >= 0.0"]


@st.composite
def condition(draw, flags: Flags, depth: int = 0) -> str:
    if depth >= 2 or draw(st.integers(0, 2)) < 2:
        leaves = [
            st.sampled_from([f'event.type == "{t}"' for t in TYPES] + ["true", 'event.type in ["purchase", "refund"]']),
            st.builds(lambda a, op, b: f"{a} {op} {b}", event_num, st.sampled_from([">", ">=", "<", "=="]), num_lit),
            st.sampled_from(["has(event.sku)", "has(event.amount)", "has(event.friend)", "event.sku == null",
                             'event.sku.startsWith("a")', "size(event.sku) > 1",
                             "has(event.sku) && size(event.sku) > 1"]),
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

# Static amounts: safe (valid at every scale and under every max_transaction_amount), risky (more
# decimals than scale 0 or 1, over a max) and odd ("0" is a no-op, "0.125" has more decimals than
# any scale here, "-3" is not positive).
_STATIC_AMOUNTS = ["1", "2", "5"]
_RISKY_STATIC_AMOUNTS = ["10", "25", "0.5", "1.25", "60", "150"]
_ODD_STATIC_AMOUNTS = ["0", "0.125", "-3"]
# CEL amounts: valid for every payload (a missing, null or odd `amount` gives 1; a large one may
# still exceed a max_transaction_amount) ...
_CEL_AMOUNTS = ["has(event.amount) && event.amount >= 1.0 ? round(event.amount, 0) : 1.0",
                "has(event.qty) && event.qty >= 1.0 ? round(event.qty * 2.0, 0) : 2.0"]
# ... valid for most payloads (amount and qty are usually present and positive; the unrounded
# ones fail at a low scale) ...
_RISKY_CEL_AMOUNTS = ["round(event.amount, 0)", "event.amount", "round(event.amount * 1.5, 0)",
                      "round(event.amount, 2)", "event.amount * 2", "event.qty", "round(event.amount / 3.0, 1)",
                      "event.amount * 0.1", "max(round(event.amount, 0), 1.0)",
                      # no vectorised form: a clean rule with it would take most batches off the
                      # running path (test_running_vs_oracle's guard)
                      "get(participant.counters, \"visits\", 0.0) + 1"]
# ... and ones that fail (missing field, wrong type, division by zero, negative) or are usually 0.
_ODD_CEL_AMOUNTS = ["participant.balances.PTS.available", "event.missing", "double(size(participant.tags))",
                    "int(event.qty)", "event.type", "event.amount / 0.0", "-event.amount"]
_OPERATOR_ONLY_AMOUNTS = ["1.0 / 0.0", "(2 + 3)"]


@st.composite
def amount(draw, flags: Flags, clean: bool = False) -> str:
    k = draw(st.integers(0, 9))
    if k <= 3:
        return draw(value(clean, _STATIC_AMOUNTS, _RISKY_STATIC_AMOUNTS, _ODD_STATIC_AMOUNTS))
    if k <= 7 or clean:
        return draw(value(clean, _CEL_AMOUNTS, _RISKY_CEL_AMOUNTS, _ODD_CEL_AMOUNTS))
    # a load error: rare (about 1 amount in 30 of the rules that are not clean), or most programs
    # would not load
    if k == 8 and flags.operator_only_amounts and draw(st.integers(0, 2)) == 2:
        return draw(st.sampled_from(_OPERATOR_ONLY_AMOUNTS))
    a = draw(num_expr(flags))
    if not any(ref in a for ref in ("event.", "participant.", "program.", "get(", "round(", "min(", "max(",
                                    "abs(", "floor(")):
        # No variable and no call would make it a literal string, a load error for an amount
        # (decisions.md, value fields): keep it an expression.
        a = f"double({a})"
    return a


@st.composite
def target(draw, flags: Flags, state_action: bool, clean: bool = False) -> dict | None:
    if not flags.targets or draw(st.integers(0, 3)) < 3:
        return None
    choices = ["participant"] + (["program", "program"] if state_action else [])
    if draw(st.sampled_from(choices)) == "program":
        return {"type": "PROGRAM"}
    ext = draw(value(clean, ["participant.external_id"]
                     + (["u2", "u5"] if flags.literal_targets else [])
                     + (['participant.external_id + "-x"'] if flags.string_concat_values else []),
                     ["event.friend"], ["event.qty"]))
    return {"type": "PARTICIPANT", "external_id": ext}


@st.composite
def action(draw, flags: Flags, typ: str | None = None, clean: bool = False) -> dict:
    """One action; a clean one (of a rule that usually matches) takes only safe values (see
    `value`) and its DEBITs more often may overdraw."""
    typ = typ or draw(st.sampled_from(["CREDIT", "CREDIT", "CREDIT", "CREDIT", "DEBIT", "DEBIT", "TAG", "UNTAG",
                                       "COUNTER", "COUNTER", "SET_ATTRIBUTE"]))
    a: dict = {"type": typ}
    if typ in ("CREDIT", "DEBIT"):
        a["asset"] = draw(st.sampled_from(["PTS", "PTS", "CASH"] + [GIFT] * (3 if flags.prefunded else 0)))
        a["amount"] = draw(amount(flags, clean))
        # without allow_negative, a DEBIT fails until the participant's credits cover it
        if typ == "DEBIT" and draw(st.integers(0, 2)) >= (1 if clean else 2):
            a["allow_negative"] = True
    elif typ in ("TAG", "UNTAG"):
        a["tag"] = draw(value(clean, ["vip", "VIP", "promo", "Promo"], ["event.type"], ["event.sku", "5", "event.amount"]))
    elif typ == "COUNTER":
        a["key"] = draw(st.sampled_from(COUNTER_KEYS))
        a["value"] = draw(value(clean, ["1", "-1", "0.5", "2.25"], ["event.amount", "event.qty", "round(event.amount, 1)"],
                                ["event.missing"]))
        if flags.reset_after and draw(st.integers(0, 2)) == 2:
            a["reset_after"] = draw(st.sampled_from(RESETS))
    else:
        a["key"] = draw(st.sampled_from(ATTR_KEYS))
        a["value"] = draw(value(clean, ["gold", "silver", "now", "10.0", "49.99", "participant.external_id"],
                                ["event.type", "event.amount", "event.amount > 5.0"], ["event.tags", "event.missing"]))
    t = draw(target(flags, state_action=typ not in ("CREDIT", "DEBIT"), clean=clean))
    if t is not None:
        a["target"] = t
    return a


@st.composite
def rules(draw, flags: Flags, min_size: int = 1, max_size: int = 6) -> list[dict]:
    n = draw(st.integers(min_size, max_size))
    out = []
    for i in range(n):
        r: dict = {"name": f"Rule {i} {draw(st.sampled_from(['Bonus', 'base pts', 'X--y']))}"}
        if draw(st.integers(0, 3)) < 3:
            r["key"] = f"r{i}"  # else the default: a slug of the name (names are unique by `i`)
        # Two rules in three are clean: a condition most events meet, actions with safe values
        # (they usually match and usually work, so most cases write entries); the others draw
        # any values and mostly any condition, and carry the errors, non-matches and odd amounts.
        clean = draw(st.integers(0, 2)) < 2
        likely = clean or draw(st.integers(0, 2)) == 2  # some of the others match often too
        r["condition"] = draw(st.sampled_from(LIKELY_CONDITIONS) if likely else condition(flags))
        r["actions"] = draw(st.lists(action(flags, clean=clean), min_size=1, max_size=3))
        if not any(a["type"] in ("CREDIT", "DEBIT") for a in r["actions"]) and draw(st.integers(0, 2)) < 2:
            # most rules move value (state-only rules stay: a third of those drawn)
            r["actions"].insert(0, draw(action(flags, typ="CREDIT", clean=clean)))
        if draw(st.booleans()):
            r["order"] = draw(st.integers(1, 8)) * 10
        if draw(st.integers(0, 3)) == 3:
            r["stop_after_match"] = True
        if draw(st.integers(0, 6)) == 6:
            r["status"] = draw(st.sampled_from(["SUSPENDED", "ARCHIVED"]))
        if draw(st.integers(0, 4)) == 4:
            lo, hi = sorted(draw(st.lists(st.sampled_from(WINDOW_EDGES), min_size=2, max_size=2, unique=True)))
            if draw(st.booleans()):
                r["active_from"] = lo
            if draw(st.booleans()):
                r["active_to"] = hi
        if flags.budgets and draw(st.integers(0, 3)) == 3:
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
            if not flags.budgets_sharing_an_asset:
                budgets = list({b["asset"]: b for b in reversed(budgets)}.values())  # the first per asset
            # a budget of an asset the rule never credits could never be reached: a load error
            # (docs/decisions.md "Budgets"), so only those of assets it credits are kept
            credited = {a.get("asset") for a in r["actions"] if a["type"] == "CREDIT"}
            if budgets := [b for b in budgets if b["asset"] in credited]:
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
    #: (program key, symbol, amount) of the `fund` operations of a run before the batches
    funds: list[tuple[str, str, str]] = field(default_factory=list)

    def funding(self) -> list[dict]:
        """The funding run's operation rows (columns of `perkflow run --operations`)."""
        return [{"operation": "fund", "program_id": program, "idempotency_key": f"fund-{program}-{symbol}",
                 "external_id": None, "timestamp": "2025-03-01T00:00:00Z",
                 "params": json.dumps({"asset": symbol, "amount": amount})} for program, symbol, amount in self.funds]

    def funding_for_oracle(self) -> list[dict]:
        return [dict(r, timestamp=parse_ts(r["timestamp"]), params=json.loads(r["params"])) for r in self.funding()]

    @property
    def rows(self) -> list["Row"]:
        return [r for b in self.batches for r in b]


@st.composite
def programs(draw, flags: Flags) -> list[dict]:
    shared = draw(assets(flags.prefunded))
    policy = draw(st.sampled_from(["CREATE"] * 5 + ["REJECT"]))
    main = {"program": {"key": PROGRAM, "name": "Shop", "on_unknown_participant": policy},
            "assets": shared, "rules": draw(rules(flags))}
    if flags.prefunded and draw(st.integers(0, 2)):
        # a cashback most events earn, of amounts that vary around what the wallet holds: it runs
        # dry mid-batch, and a smaller credit after a failed one may still fit
        main["rules"].append({"name": "Cashback", "key": "cashback", "condition": draw(st.sampled_from(LIKELY_CONDITIONS)),
                              "actions": [{"type": "CREDIT", "asset": GIFT,
                                           "amount": draw(st.sampled_from(["event.qty", "5", "round(event.amount, 0)"]))}]})
        _make_orders_valid(main["rules"])
    out = [main]
    # A REJECT shop alone fails every event (nobody creates participants): it comes with an
    # ACTIVE, CREATE club, whose events create the participants the shop's later events find.
    creator = policy == "REJECT"
    if flags.second_program and (creator or draw(st.integers(0, 2)) == 2):
        status = "ACTIVE" if creator else draw(st.sampled_from(["ACTIVE", "ACTIVE", "SUSPENDED", "ARCHIVED"]))
        policies = ["CREATE", "REJECT"] if status == "ACTIVE" or flags.inactive_reject_program else ["CREATE"]
        out.append({"program": {"key": OTHER, "name": "Club",
                                "on_unknown_participant": "CREATE" if creator else draw(st.sampled_from(policies)),
                                "status": status},
                    "assets": shared, "rules": draw(rules(flags, max_size=3))})
    for spec in out:
        _limits_within_scale(spec)
    if not flags.invalid_static_amounts:
        for spec in out:
            _valid_static_amounts(spec)
    if not flags.targets_beside_reject and any(spec["program"]["on_unknown_participant"] == "REJECT" for spec in out):
        for spec in out:
            _drop_participant_targets(spec)
    actions = [a for spec in out for r in spec["rules"] for a in r["actions"]]
    if not flags.resets_with_value_targets and any(
            a["type"] in ("CREDIT", "DEBIT") and a.get("target", {}).get("type") == "PARTICIPANT" for a in actions):
        for a in actions:
            a.pop("reset_after", None)
    return out


def _drop_participant_targets(spec: dict) -> None:
    for rule in spec["rules"]:
        for a in rule["actions"]:
            if a.get("target", {}).get("type") == "PARTICIPANT":
                del a["target"]


_STATIC = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)$")


def static_amount_is_valid(text: str, asset: dict) -> bool:
    """Would a static amount pass the checks of semantics.md 7 for this asset? (0 is a no-op.)"""
    d = Decimal(text)
    if d == 0:
        return True
    scale_ok = -d.normalize().as_tuple().exponent <= asset["scale"]
    limit = asset.get("max_transaction_amount")
    return d > 0 and scale_ok and (limit is None or d <= Decimal(limit))


def _limits_within_scale(spec: dict) -> None:
    """A max_transaction_amount or budget limit drawn with more decimals than its asset's scale
    (12.5 on a scale-0 asset) cut to the scale (12): the loader refuses such a limit
    (docs/decisions.md), so it would make the whole example a load error."""
    scales = {a["symbol"]: a["scale"] for a in spec["assets"]}

    def fit(text: str, scale: int) -> str:
        return str(Decimal(text).quantize(Decimal(1).scaleb(-scale), rounding=ROUND_DOWN)) \
            if -Decimal(text).as_tuple().exponent > scale else text

    for a in spec["assets"]:
        if "max_transaction_amount" in a:
            a["max_transaction_amount"] = fit(a["max_transaction_amount"], a["scale"])
    for r in spec["rules"]:
        for b in r.get("budgets") or []:
            b["limit"] = fit(b["limit"], scales[b["asset"]])


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


_amounts = mostly([10.0, 1.0, 2.5, 3.0, 12.0, 49.99, 100.0, 7.5, 0.1, 1.005, 2.675], [None, 0.0, -4.0, 1e-7], 6)


@st.composite
def payload(draw) -> dict:
    p: dict = {}
    if draw(st.integers(0, 9)) < 9:
        p["type"] = draw(st.sampled_from(TYPES))
    # (field, values, present in how many of 8 payloads): amount and qty usually, so that the
    # amounts reading them mostly evaluate; absent and null fields still occur.
    for name, strat, present in (
        ("amount", _amounts, 7),
        ("qty", mostly([1.0, 2.0, 3.0, 12.0, 2.5], [None, 0.0]), 6),
        ("sku", st.sampled_from(["ab-1", "x", "ABC", "", None]), 4),
        ("friend", mostly(FRIENDS, [None]), 6),
        ("tags", st.lists(st.sampled_from(["a", "b"]), max_size=2), 4),
    ):
        if draw(st.integers(0, 7)) < present:
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
        if fresh and draw(st.integers(0, 7)) == 7:
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
        if k == 19:
            prog = GHOST
        elif has_other and k >= 14:
            prog = OTHER
        recipient = None
        if flags.recipients and draw(st.integers(0, 6)) == 6:
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
    # the shop's wallet, usually funded (a wallet never funded fails every credit it is asked for)
    funds = [(PROGRAM, GIFT, draw(st.sampled_from(FUNDS)))] if flags.prefunded and draw(st.integers(0, 5)) else []
    return Scenario(progs, batches, flags, funds)
